-- The discharge feedback the programme sent (an encoded
-- cpm.v1.DischargeFeedback: dates, counts and categories, nothing that
-- identifies anyone) and when it reached the referrer (`feedback.delivered`,
-- the first confirmation).
ALTER TABLE referral
    ADD COLUMN discharge_feedback bytea,
    ADD COLUMN feedback_received_at timestamptz;
