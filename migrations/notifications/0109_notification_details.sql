-- What a notification says besides its status: for NOT_TAKEN_ON the stage
-- and reason category (cpm.v1.NonEngagementStage / NonEngagementReason),
-- for AWAITING_MENTORS the expected start range (dates). Categories and
-- dates only, as the rest of a notification.
ALTER TABLE notification
    ADD COLUMN stage integer,
    ADD COLUMN reason integer,
    ADD COLUMN estimated_start date,
    ADD COLUMN estimated_start_latest date;
