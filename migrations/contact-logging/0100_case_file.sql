-- The case file of a client in support: opened when an allocation is
-- confirmed, closed by a coordinator's discharge. One per referral.
CREATE TABLE case_file (
    case_file_id      uuid PRIMARY KEY,
    referral_id       uuid        NOT NULL,
    -- The referring agency, told of the discharge through notifications.
    agency_id         text        NOT NULL,
    area              text        NOT NULL,
    -- cpm.v1.CaseState: 1 open, 2 discharged.
    state             integer     NOT NULL,
    opened_at         timestamptz NOT NULL,
    discharged_at     timestamptz,
    -- The subject of the coordinator or admin who discharged.
    discharged_by     text,
    -- Free text: never copied into events or logs.
    discharge_reason  text,
    CONSTRAINT case_file_referral_id UNIQUE (referral_id),
    CONSTRAINT case_file_discharge_recorded
        CHECK (state <> 2 OR (discharged_at IS NOT NULL AND discharged_by IS NOT NULL))
);

-- The mentors allocated to a case: the only mentors who may see or log on it.
-- Mentor IDs are kept as the tokens name them.
CREATE TABLE case_mentor (
    case_file_id  uuid NOT NULL REFERENCES case_file (case_file_id) ON DELETE CASCADE,
    mentor_id     text NOT NULL,
    PRIMARY KEY (case_file_id, mentor_id)
);

CREATE INDEX case_mentor_by_mentor ON case_mentor (mentor_id);

-- One logged contact: one of the nine activities and the minutes it took.
CREATE TABLE contact (
    contact_id      uuid PRIMARY KEY,
    case_file_id    uuid        NOT NULL REFERENCES case_file (case_file_id) ON DELETE CASCADE,
    -- cpm.v1.ContactActivity.
    activity        integer     NOT NULL,
    minutes         integer     NOT NULL CHECK (minutes BETWEEN 1 AND 600),
    occurred_at     timestamptz NOT NULL,
    logged_by       text        NOT NULL,
    logged_by_role  text        NOT NULL,
    -- Free text about a person: never copied into events or logs.
    summary         text        NOT NULL DEFAULT '',
    -- A safeguarding concern a coordinator must see.
    concern_raised  boolean     NOT NULL DEFAULT false,
    logged_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX contact_case_newest ON contact (case_file_id, occurred_at DESC, logged_at DESC, contact_id DESC);
