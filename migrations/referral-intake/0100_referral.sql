-- Referrals as agencies submitted them, and their status as the referrer sees it.
CREATE TABLE referral (
    referral_id          uuid PRIMARY KEY,
    agency_id            text        NOT NULL,
    -- Chosen by the agency; a retry with the same key returns this referral.
    idempotency_key      text        NOT NULL,
    -- SHA-256 of the request without its key: the same key with another body is refused.
    request_hash         bytea       NOT NULL,
    submitted_by         text        NOT NULL,
    submitted_at         timestamptz NOT NULL DEFAULT now(),
    area                 text        NOT NULL,
    -- Categories, not identity: they travel in events for assessment and matching.
    client_gender        integer     NOT NULL,
    vulnerabilities      integer[]   NOT NULL DEFAULT '{}',
    emergency_calls_last_12_months integer NOT NULL DEFAULT 0,
    client_consented     boolean     NOT NULL,
    -- HMAC of the normalised identity: links re-referrals without storing it in clear.
    client_fingerprint   bytea       NOT NULL,
    earlier_referral_id  uuid REFERENCES referral (referral_id),
    -- cpm.v1.ReferralStatus; status_rank only grows, so late events never move it back.
    status               integer     NOT NULL,
    status_rank          integer     NOT NULL,
    status_changed_at    timestamptz NOT NULL DEFAULT now(),
    not_taken_on_stage   integer,
    not_taken_on_reason  integer,
    estimated_start      timestamptz,
    discharged_at        timestamptz,
    CONSTRAINT referral_idempotency_key UNIQUE (agency_id, idempotency_key)
);

CREATE INDEX referral_agency_newest ON referral (agency_id, submitted_at DESC, referral_id DESC);
CREATE INDEX referral_client_fingerprint ON referral (client_fingerprint, submitted_at DESC);

-- The client's personal data, encrypted with a per-referral data key that is
-- itself wrapped by the master key. Erasure deletes the wrapped key.
CREATE TABLE client_record (
    referral_id      uuid PRIMARY KEY REFERENCES referral (referral_id) ON DELETE CASCADE,
    wrapped_data_key bytea,
    sealed_details   bytea,
    erased_at        timestamptz
);

-- Every read of personal data: who, when, which referral, why. Append-only.
CREATE TABLE personal_data_access (
    access_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    referral_id  uuid        NOT NULL,
    accessed_by  text        NOT NULL,
    role         text        NOT NULL,
    purpose      text        NOT NULL,
    accessed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION personal_data_access_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'personal_data_access is append-only';
END;
$$;

CREATE TRIGGER personal_data_access_append_only
    BEFORE UPDATE OR DELETE ON personal_data_access
    FOR EACH ROW EXECUTE FUNCTION personal_data_access_is_append_only();
