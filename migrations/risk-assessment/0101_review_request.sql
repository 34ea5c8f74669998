-- Suitability is re-assessed after every visit and whenever a concern is
-- raised: each such contact logged in contact-logging asks a coordinator
-- for a review. One request per contact, so a redelivered event adds none.
CREATE TABLE review_request (
    review_request_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    assessment_id     uuid        NOT NULL REFERENCES assessment (assessment_id),
    contact_id        uuid        NOT NULL UNIQUE,
    -- 'home_visit' or 'concern_raised'.
    trigger           text        NOT NULL,
    requested_at      timestamptz NOT NULL DEFAULT now(),
    resolved_at       timestamptz,
    resolved_by       text
);

CREATE INDEX review_request_open ON review_request (assessment_id) WHERE resolved_at IS NULL;
