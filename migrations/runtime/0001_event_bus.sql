-- The event bus tables every service has in its own schema.

-- Events written in the same transaction as the change they describe. The
-- relay publishes due rows and deletes them once RabbitMQ confirms; a row
-- the broker could not route waits until `next_attempt_at` and is retried.
CREATE TABLE outbox (
    outbox_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id         uuid        NOT NULL UNIQUE,
    event_type       text        NOT NULL,
    envelope         bytea       NOT NULL,
    -- W3C trace context of the writer, sent as AMQP headers.
    trace_context    jsonb       NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    publish_attempts integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text
);

CREATE INDEX outbox_due ON outbox (next_attempt_at, outbox_id);

-- Events a consumer has already applied. The row is written in the same
-- transaction as the effect, so a redelivered event is acknowledged and ignored.
CREATE TABLE inbox (
    consumer     text        NOT NULL,
    event_id     uuid        NOT NULL,
    event_type   text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
