-- Whether a notification goes to the agency feed: false when the agency's
-- preferences leave the FEED channel out for its kind.
ALTER TABLE notification ADD COLUMN feed boolean NOT NULL DEFAULT true;
DROP INDEX notification_unfed;
CREATE INDEX notification_unfed ON notification (created_at, notification_id)
    WHERE fed_at IS NULL AND feed;
