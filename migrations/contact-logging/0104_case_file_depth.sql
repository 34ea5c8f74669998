-- The coordinator responsible for a case: who confirmed its current
-- allocation. Case files from before carry ''.
ALTER TABLE case_file
    ADD COLUMN coordinator text NOT NULL DEFAULT '',
    -- cpm.v1.DischargeOutcome, set at discharge.
    ADD COLUMN discharge_outcome integer,
    -- The proforma feedback sent to the referrer: cpm.v1.RelapseSign values
    -- and the counts it carried (nothing identifying).
    ADD COLUMN relapse_signs integer[] NOT NULL DEFAULT '{}',
    ADD COLUMN feedback_contacts integer,
    -- When notifications confirmed the feedback reached the referrer
    -- (`feedback.delivered`); the first confirmation counts.
    ADD COLUMN feedback_delivered_at timestamptz;

-- How a contact was made (cpm.v1.ContactChannel; 0 for contacts from
-- before), and whether it was only attempted.
ALTER TABLE contact
    ADD COLUMN channel integer NOT NULL DEFAULT 0,
    ADD COLUMN attempted boolean NOT NULL DEFAULT false;

-- A concern raised at a contact: in the area's coordinator queue until a
-- coordinator resolves it with a note (sealed under the client's key).
CREATE TABLE concern (
    concern_id        uuid PRIMARY KEY,
    case_file_id      uuid        NOT NULL REFERENCES case_file (case_file_id) ON DELETE CASCADE,
    contact_id        uuid        NOT NULL UNIQUE REFERENCES contact (contact_id) ON DELETE CASCADE,
    -- cpm.v1.ConcernCategory and cpm.v1.ConcernUrgency.
    category          integer     NOT NULL,
    urgency           integer     NOT NULL,
    raised_by         text        NOT NULL,
    raised_at         timestamptz NOT NULL,
    resolved_by       text,
    resolved_at       timestamptz,
    resolution_sealed bytea,
    CONSTRAINT concern_resolution_recorded
        CHECK ((resolved_at IS NULL) = (resolved_by IS NULL))
);

-- The queue: open concerns oldest first.
CREATE INDEX concern_open ON concern (raised_at, concern_id) WHERE resolved_at IS NULL;
CREATE INDEX concern_by_case ON concern (case_file_id);
