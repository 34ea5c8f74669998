-- The discharge feedback a DISCHARGED notification carries: an encoded
-- cpm.v1.DischargeFeedback (dates, counts and categories; nothing that
-- identifies anyone). NULL for every other notification.
ALTER TABLE notification ADD COLUMN feedback bytea;

-- When a delivery of the notification was first confirmed by an endpoint;
-- the first confirmation of a DISCHARGED one is announced as
-- `feedback.delivered`.
ALTER TABLE notification ADD COLUMN first_delivered_at timestamptz;
