-- Urgent concerns raised at contacts (`concern.raised` with urgency
-- URGENT), kept once each by the concern's ID for the area's coordinators
-- until they are delivered. Categories only: the note stays sealed in
-- contact logging.
CREATE TABLE concern_alert (
    concern_id   uuid PRIMARY KEY,
    area         text        NOT NULL,
    referral_id  uuid        NOT NULL,
    -- cpm.v1.ConcernCategory.
    category     integer     NOT NULL,
    raised_at    timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);

CREATE INDEX concern_alert_undelivered ON concern_alert (area, raised_at) WHERE delivered_at IS NULL;
