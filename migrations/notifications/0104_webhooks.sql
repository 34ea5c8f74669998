-- Webhooks as receivers expect them: signed (Standard Webhooks), retried
-- over a window with back-off, guarded by a per-endpoint circuit breaker,
-- dead-lettered after the window and redeliverable, every attempt logged.

-- The signing secret, sealed at rest: a data key wrapped by the platform's
-- master key, and the secret sealed with it (bound to the webhook ID). During
-- a rotation the previous secret stays valid until `previous_secret_until`.
-- Webhooks registered before this migration have no secret until rotated.
ALTER TABLE webhook ADD COLUMN secret_key bytea;
ALTER TABLE webhook ADD COLUMN secret_sealed bytea;
ALTER TABLE webhook ADD COLUMN previous_secret_sealed bytea;
ALTER TABLE webhook ADD COLUMN previous_secret_until timestamptz;
ALTER TABLE webhook ADD COLUMN secret_rotated_at timestamptz;
-- Soft delete: a deleted webhook is never listed or posted to again.
ALTER TABLE webhook ADD COLUMN deleted_at timestamptz;
-- The circuit breaker: failures in a row, and until when it is open.
ALTER TABLE webhook ADD COLUMN consecutive_failures integer NOT NULL DEFAULT 0;
ALTER TABLE webhook ADD COLUMN circuit_open_until timestamptz;
-- A worker's claim on the endpoint: at most one batch in flight per webhook;
-- a claim left by a worker that died expires.
ALTER TABLE webhook ADD COLUMN leased_until timestamptz;

-- When the delivery was queued (or queued again by a redelivery): its
-- retry window runs from then. cpm.v1.DeliveryState adds DEAD (4, the
-- window passed) and CANCELLED (5, the webhook was deleted).
ALTER TABLE delivery ADD COLUMN queued_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE delivery ADD COLUMN first_attempt_at timestamptz;

CREATE INDEX delivery_by_webhook ON delivery (webhook_id, state);

-- Every attempt to post a delivery: when, the HTTP status (0 when none came
-- back), how long it took, and the error as a category
-- (cpm.v1.DeliveryErrorKind) — never an address or a message that would
-- describe the agency's network.
CREATE TABLE delivery_attempt (
    attempt_id    uuid PRIMARY KEY,
    delivery_id   uuid        NOT NULL REFERENCES delivery (delivery_id),
    attempted_at  timestamptz NOT NULL,
    channel       text        NOT NULL,
    status_code   integer     NOT NULL,
    latency_ms    integer     NOT NULL,
    error_kind    integer     NOT NULL
);

CREATE INDEX delivery_attempt_by_delivery ON delivery_attempt (delivery_id, attempted_at);
