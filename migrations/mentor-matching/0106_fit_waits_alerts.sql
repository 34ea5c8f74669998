-- Re-matching: a client may have several allocations over time, one active.
ALTER TABLE allocation DROP CONSTRAINT allocation_referral_id_key;
CREATE UNIQUE INDEX allocation_one_active ON allocation (referral_id) WHERE active;
CREATE INDEX allocation_referral ON allocation (referral_id);

ALTER TABLE allocation
    -- cpm.v1.AllocationEndReason; 0 while active.
    ADD COLUMN end_reason      integer NOT NULL DEFAULT 0,
    -- Who ended it early (poor fit), and why.
    ADD COLUMN ended_by        text,
    ADD COLUMN end_note        text,
    -- Contacts logged since the allocation (`contact.logged`): the early fit
    -- window is counted in them.
    ADD COLUMN contacts        integer NOT NULL DEFAULT 0;

UPDATE allocation SET end_reason = 1 WHERE NOT active;

-- Throughput for wait estimates: allocations confirmed and ended per area.
CREATE INDEX allocation_confirmed_at ON allocation (confirmed_at);
CREATE INDEX allocation_ended_at ON allocation (ended_at) WHERE ended_at IS NOT NULL;

-- What coordinators know of two mentors as a pair. Keyed in ascending order.
CREATE TABLE mentor_pair (
    mentor_a            uuid    NOT NULL REFERENCES mentor (mentor_id),
    mentor_b            uuid    NOT NULL REFERENCES mentor (mentor_id),
    -- Clients the pair supported together through to discharge.
    clients_completed   integer NOT NULL DEFAULT 0,
    -- Set when a coordinator found the two must never be proposed together.
    incompatible_at     timestamptz,
    incompatible_reason text,
    marked_by           text,
    PRIMARY KEY (mentor_a, mentor_b),
    CHECK (mentor_a < mentor_b)
);

-- Progress check-ins with mentors.
CREATE TABLE mentor_check_in (
    check_in_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mentor_id   uuid        NOT NULL REFERENCES mentor (mentor_id),
    held_on     date        NOT NULL,
    recorded_by text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX mentor_check_in_mentor ON mentor_check_in (mentor_id, held_on);

-- Alerts already announced, so each is raised once whichever replica sweeps.
CREATE TABLE mentor_alert_raised (
    alert_id  uuid PRIMARY KEY,
    mentor_id uuid        NOT NULL REFERENCES mentor (mentor_id),
    -- cpm.v1.MentorAlertKind.
    kind      integer     NOT NULL,
    since     date        NOT NULL,
    raised_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (mentor_id, kind, since)
);

-- Every weights version proposals were scored with, and its weights (JSON,
-- as configured): a version names one set of weights for good, so any stored
-- proposal can be explained by the weights that made it.
CREATE TABLE weights_version (
    version       text PRIMARY KEY,
    weights       text        NOT NULL,
    first_used_at timestamptz NOT NULL DEFAULT now()
);
