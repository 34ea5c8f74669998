-- The mentor register: trained volunteers, what they bring and how many
-- clients each can support at once.
CREATE TABLE mentor (
    mentor_id            uuid PRIMARY KEY,
    -- The name coordinators know the mentor by; never sent in events.
    display_name         text        NOT NULL,
    -- cpm.v1.Gender.
    gender               integer     NOT NULL,
    area                 text        NOT NULL,
    -- cpm.v1.LivedExperience values, without duplicates.
    lived_experience     integer[]   NOT NULL DEFAULT '{}',
    -- Without safeguarding training a mentor is never proposed nor allocated.
    safeguarding_trained boolean     NOT NULL,
    -- cpm.v1.MentorStatus.
    status               integer     NOT NULL,
    capacity             integer     NOT NULL CHECK (capacity BETWEEN 1 AND 5),
    trained_on           timestamptz NOT NULL DEFAULT now(),
    -- The coordinator's or admin's subject identifier.
    registered_by        text        NOT NULL
);

CREATE INDEX mentor_area_name ON mentor (area, display_name);

-- Clients accepted by risk assessment, from `assessment.decided`. Only the
-- categories matching needs are kept: no identity.
CREATE TABLE waiting_client (
    referral_id      uuid PRIMARY KEY,
    agency_id        text        NOT NULL,
    area             text        NOT NULL,
    -- cpm.v1.Vulnerability values.
    vulnerabilities  integer[]   NOT NULL DEFAULT '{}',
    -- cpm.v1.Gender.
    client_gender    integer     NOT NULL,
    accepted_at      timestamptz NOT NULL,
    -- The start announced in `matching.awaiting_mentors`.
    estimated_start  timestamptz NOT NULL,
    -- Set once a coordinator confirms a mentor pair.
    allocated        boolean     NOT NULL DEFAULT false
);

CREATE INDEX waiting_client_unallocated_area ON waiting_client (area) WHERE NOT allocated;

-- A mentor pair confirmed for a client by a named coordinator. One per referral.
CREATE TABLE allocation (
    allocation_id uuid PRIMARY KEY,
    referral_id   uuid        NOT NULL UNIQUE REFERENCES waiting_client (referral_id),
    confirmed_by  text        NOT NULL,
    confirmed_at  timestamptz NOT NULL DEFAULT now(),
    -- While true the allocation counts against both mentors' capacity.
    active        boolean     NOT NULL DEFAULT true
);

-- The two mentors of an allocation.
CREATE TABLE allocation_mentor (
    allocation_id uuid NOT NULL REFERENCES allocation (allocation_id),
    mentor_id     uuid NOT NULL REFERENCES mentor (mentor_id),
    PRIMARY KEY (allocation_id, mentor_id)
);

-- Counting a mentor's current clients starts from the mentor.
CREATE INDEX allocation_mentor_mentor ON allocation_mentor (mentor_id);
