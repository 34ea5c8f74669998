-- Alerts for an area's coordinators (`mentor.alert_raised`), kept once each
-- by their stable ID until they are delivered to the coordinators.
CREATE TABLE staff_alert (
    alert_id     uuid PRIMARY KEY,
    area         text        NOT NULL,
    -- cpm.v1.MentorAlertKind.
    kind         integer     NOT NULL,
    mentor_id    uuid        NOT NULL,
    since        date        NOT NULL,
    raised_at    timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);

CREATE INDEX staff_alert_undelivered ON staff_alert (area, raised_at) WHERE delivered_at IS NULL;
