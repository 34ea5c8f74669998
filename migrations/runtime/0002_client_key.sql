-- Every service's own key per client, under which it seals the free text it
-- holds about that client. Erasure shreds the key and leaves a tombstone
-- (`erased_at`), so the sealed text is unreadable wherever copies of it
-- went, and nothing new is sealed for that client afterwards.
CREATE TABLE client_key (
    referral_id      uuid PRIMARY KEY,
    -- The data key, wrapped by the master key; NULL once shredded.
    wrapped_data_key bytea,
    created_at       timestamptz NOT NULL DEFAULT now(),
    erased_at        timestamptz,
    CHECK ((wrapped_data_key IS NULL) = (erased_at IS NOT NULL))
);
