-- One row per open Subscribe stream, so an agency's cap on open streams
-- holds across every replica. The replica holding the stream renews the
-- row while it stays open and deletes it when it closes; a replica that
-- dies leaves rows that expire.
CREATE TABLE stream_lease (
    stream_id  uuid        PRIMARY KEY,
    agency_id  text        NOT NULL,
    opened_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

CREATE INDEX stream_lease_agency ON stream_lease (agency_id, expires_at);
