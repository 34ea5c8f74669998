-- When a notification was published to the agency feed (`<ns>.agency-feed`,
-- routing key `agency.<agency>.<kind>`) and the broker confirmed it.
-- Notifications from before the feed existed are not replayed into it.
ALTER TABLE notification ADD COLUMN fed_at timestamptz;
UPDATE notification SET fed_at = created_at;
CREATE INDEX notification_unfed ON notification (created_at, notification_id) WHERE fed_at IS NULL;
