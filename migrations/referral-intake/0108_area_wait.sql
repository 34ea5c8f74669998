-- Each area's current wait as mentor matching last quoted it
-- (`matching.area_wait_quoted`): a referral is acknowledged with it.
CREATE TABLE area_wait (
    -- Lower case, as areas are compared letter case aside.
    area      text        PRIMARY KEY,
    p50_days  integer     NOT NULL,
    p90_days  integer     NOT NULL,
    quoted_at timestamptz NOT NULL
);
