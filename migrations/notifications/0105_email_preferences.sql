-- E-mail from versioned templates, and who wants which notifications on
-- which channels.

-- Every template version e-mails were rendered with, and its texts (JSON,
-- as configured): a version names one set of texts for good, so any e-mail
-- sent can be explained by the texts that made it.
CREATE TABLE template_version (
    version       text PRIMARY KEY,
    texts         text        NOT NULL,
    first_used_at timestamptz NOT NULL DEFAULT now()
);

-- What an agency (subject '') or one of its referrers (the token's subject)
-- chose: which notification kinds, on which channels, and for e-mail the
-- addresses. No row: the defaults (every kind on stream and webhook for the
-- agency, nothing for a referrer).
CREATE TABLE notification_preference (
    agency_id        text        NOT NULL,
    subject          text        NOT NULL,
    -- cpm.v1.NotificationKind values.
    kinds            integer[]   NOT NULL,
    -- cpm.v1.NotificationChannel values.
    channels         integer[]   NOT NULL,
    email_addresses  text[]      NOT NULL DEFAULT '{}',
    updated_by       text        NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agency_id, subject)
);

-- A notification stays the agency's record, but one of a kind the agency
-- took off the stream is not streamed.
ALTER TABLE notification ADD COLUMN streamed boolean NOT NULL DEFAULT true;

-- One e-mail per notification and recipient, rendered when the
-- notification was written (IDs, dates, counts and categories only) and
-- sent by the e-mail worker outside any transaction that writes
-- notifications. cpm.v1.DeliveryState in `state`.
CREATE TABLE email_delivery (
    email_delivery_id uuid PRIMARY KEY,
    notification_id   uuid        NOT NULL REFERENCES notification (notification_id),
    recipient         text        NOT NULL,
    subject           text        NOT NULL,
    body              text        NOT NULL,
    template_version  text        NOT NULL REFERENCES template_version (version),
    template          text        NOT NULL,
    state             integer     NOT NULL,
    attempts          integer     NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    last_attempt_at   timestamptz,
    -- The SMTP server's last reply, or why it could not be reached.
    last_reply        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (notification_id, recipient)
);

CREATE INDEX email_delivery_due ON email_delivery (next_attempt_at) WHERE state = 1;
