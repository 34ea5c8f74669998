-- What referring agencies are told, and the webhook deliveries that tell them.

-- A per-agency counter: taking the next number locks the agency's row, so an
-- agency's notifications commit in sequence order and a stream resuming
-- "after N" never skips one committed late.
CREATE TABLE agency_sequence (
    agency_id     text   PRIMARY KEY,
    last_sequence bigint NOT NULL
);

-- One row per referrer-visible event; IDs and statuses only, never personal data.
CREATE TABLE notification (
    notification_id uuid PRIMARY KEY,
    agency_id       text        NOT NULL,
    sequence        bigint      NOT NULL,
    referral_id     uuid        NOT NULL,
    kind            integer     NOT NULL,
    status          integer     NOT NULL,
    -- The event it came from: one notification per event.
    event_id        uuid        NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agency_id, sequence)
);

CREATE TABLE webhook (
    webhook_id  uuid PRIMARY KEY,
    agency_id   text        NOT NULL,
    url         text        NOT NULL,
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    active      boolean     NOT NULL DEFAULT true,
    UNIQUE (agency_id, url)
);

-- One delivery per webhook and notification: a redelivered event finds it
-- and sends nothing twice. cpm.v1.DeliveryState in `state`.
CREATE TABLE delivery (
    delivery_id      uuid PRIMARY KEY,
    webhook_id       uuid        NOT NULL REFERENCES webhook (webhook_id),
    notification_id  uuid        NOT NULL REFERENCES notification (notification_id),
    state            integer     NOT NULL,
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz,
    last_error       text,
    UNIQUE (webhook_id, notification_id)
);

CREATE INDEX delivery_due ON delivery (next_attempt_at) WHERE state = 1;
