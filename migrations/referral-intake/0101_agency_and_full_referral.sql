-- Agencies as data, the full referral form, and erasure.

-- The agencies allowed to refer. Tokens carry `agency_id`; a suspended
-- agency's referrers can no longer submit.
CREATE TABLE agency (
    agency_id     text PRIMARY KEY,
    name          text        NOT NULL,
    -- cpm.v1.AgencyKind.
    kind          integer     NOT NULL,
    active        boolean     NOT NULL DEFAULT true,
    registered_at timestamptz NOT NULL DEFAULT now(),
    registered_by text        NOT NULL
);

-- People in agencies who refer, keyed by their token subject.
CREATE TABLE referrer (
    referrer_id   uuid PRIMARY KEY,
    agency_id     text        NOT NULL REFERENCES agency (agency_id),
    subject       text        NOT NULL,
    name          text        NOT NULL,
    -- cpm.v1.ReferrerRole.
    role          integer     NOT NULL,
    contact       text        NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT referrer_subject UNIQUE (agency_id, subject)
);

-- Categories and counts from the referral form: no identity, so they stay
-- in clear for statistics and survive erasure as anonymous data.
ALTER TABLE referral
    ADD COLUMN victim_of              integer[] NOT NULL DEFAULT '{}',
    ADD COLUMN perpetrator_of         integer[] NOT NULL DEFAULT '{}',
    ADD COLUMN known_risk_types       integer[] NOT NULL DEFAULT '{}',
    ADD COLUMN referrer_will_co_visit boolean   NOT NULL DEFAULT false,
    ADD COLUMN police_calls           integer,
    ADD COLUMN ambulance_calls        integer,
    ADD COLUMN nhs_111_calls          integer,
    ADD COLUMN other_calls            integer,
    ADD COLUMN police_staff_hours     double precision,
    ADD COLUMN safeguarding_reports   integer,
    ADD COLUMN erased_at              timestamptz,
    -- Erasure removes the fingerprint too, so an erased client is never linked again.
    ALTER COLUMN client_fingerprint DROP NOT NULL;

CREATE INDEX referral_agency_status ON referral (agency_id, status, submitted_at DESC);

-- Every erasure: which referral, who, why, when. Append-only.
CREATE TABLE erasure (
    erasure_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    referral_id uuid        NOT NULL REFERENCES referral (referral_id),
    erased_by   text        NOT NULL,
    reason      text        NOT NULL,
    erased_at   timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION refuse_change_to_append_only_table() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;

CREATE TRIGGER erasure_append_only
    BEFORE UPDATE OR DELETE ON erasure
    FOR EACH ROW EXECUTE FUNCTION refuse_change_to_append_only_table();
