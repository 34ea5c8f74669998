-- A withdrawal records the stage it came at and its reason, the reason
-- sealed under the client's key (`client_key`), so erasure shreds it.
ALTER TABLE referral
    ADD COLUMN withdrawn_at_status      integer,
    ADD COLUMN withdrawal_reason_sealed bytea;

-- Idempotency keys are often an agency's case reference: keep only a keyed
-- hash of (agency, key). Referrals from before this version lose theirs; a
-- retry of one of them, long after the fact, would be a new referral.
ALTER TABLE referral DROP CONSTRAINT referral_idempotency_key;
ALTER TABLE referral DROP COLUMN idempotency_key;
ALTER TABLE referral ADD COLUMN idempotency_key_hash bytea;
ALTER TABLE referral
    ADD CONSTRAINT referral_idempotency_key UNIQUE (agency_id, idempotency_key_hash);
