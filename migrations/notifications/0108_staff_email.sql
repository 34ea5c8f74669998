-- Where an area's staff alerts (mentor alerts, urgent concerns) are
-- e-mailed: the coordinators' addresses an admin set for the area.
CREATE TABLE staff_alert_recipient (
    -- As the programme registers it; looked up letter case aside.
    area            text        PRIMARY KEY,
    email_addresses text[]      NOT NULL,
    updated_by      text        NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- An e-mail is about a notification (to an agency) or a staff alert (to an
-- area's coordinators), never both.
ALTER TABLE email_delivery
    ALTER COLUMN notification_id DROP NOT NULL,
    ADD COLUMN staff_alert_id uuid,
    ADD CONSTRAINT email_delivery_one_subject
        CHECK ((notification_id IS NULL) <> (staff_alert_id IS NULL)),
    ADD CONSTRAINT email_delivery_staff_alert_recipient UNIQUE (staff_alert_id, recipient);
