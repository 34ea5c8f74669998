-- Which mentors may read a client's minimal record (GetMentorClientRecord):
-- the mentors of each allocation mentor-matching confirmed, kept from its
-- events. IDs only; nothing here identifies the client.

-- One row per mentor of an allocation. `active` turns false when the
-- allocation ends (`allocation.ended`: a pair that did not work) and never
-- turns true again, so an `allocation.ended` that overtakes its
-- `allocation.confirmed` still leaves the mentor without access.
CREATE TABLE mentor_allocation (
    allocation_id uuid        NOT NULL,
    mentor_id     text        NOT NULL,
    referral_id   uuid        NOT NULL,
    active        boolean     NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    ended_at      timestamptz,
    PRIMARY KEY (allocation_id, mentor_id)
);

-- The read's lookup: is this mentor on an active allocation of this referral?
CREATE INDEX mentor_allocation_by_mentor ON mentor_allocation (mentor_id, referral_id) WHERE active;

-- Referrals whose support ended (`case.discharged`, or `engagement.changed`
-- with END): no mentor reads them again, whatever allocation event arrives
-- late. Support never restarts on the same referral; a new referral has a
-- new ID.
CREATE TABLE mentor_access_ended (
    referral_id uuid        PRIMARY KEY,
    -- The event that ended it: `case.discharged` or `engagement.changed`.
    ended_by    text        NOT NULL,
    ended_at    timestamptz NOT NULL DEFAULT now()
);
