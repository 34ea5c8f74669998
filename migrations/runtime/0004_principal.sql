-- The latest standing of every agency, referrer and mentor, as the service
-- that registers them published it (`principal.status_changed`). The guard
-- of every service consults it, so a suspended agency's referrers and a
-- mentor who has left are refused on every RPC. A referrer's `id` is
-- `<agency_id>/<subject>`.
CREATE TABLE principal (
    kind       text        NOT NULL,
    id         text        NOT NULL,
    active     boolean     NOT NULL,
    changed_at timestamptz NOT NULL,
    PRIMARY KEY (kind, id)
);
