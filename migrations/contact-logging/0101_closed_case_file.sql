-- A case file also closes when a coordinator ends support after a
-- re-assessment (`engagement.changed` END): state 3, CLOSED. The referrer
-- hears of it as not taken on, so it is kept apart from a discharge.
ALTER TABLE case_file
    ADD COLUMN closed_at timestamptz,
    -- The subject of the coordinator who ended support.
    ADD COLUMN closed_by text,
    ADD CONSTRAINT case_file_close_recorded
        CHECK (state <> 3 OR (closed_at IS NOT NULL AND closed_by IS NOT NULL));

-- Every ended engagement, kept even when no case file is open yet: an
-- allocation confirmed just before the end may arrive after it, and its
-- case file then opens closed.
CREATE TABLE ended_engagement (
    referral_id uuid PRIMARY KEY,
    ended_by    text        NOT NULL,
    ended_at    timestamptz NOT NULL
);
