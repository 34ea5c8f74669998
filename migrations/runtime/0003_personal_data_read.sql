-- Every opening of a client's sealed text for a caller, in every service:
-- who, in which role, for what, when. Written in the transaction of the
-- read; append-only.
CREATE TABLE personal_data_read (
    read_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    referral_id uuid        NOT NULL,
    reader      text        NOT NULL,
    role        text        NOT NULL,
    purpose     text        NOT NULL,
    read_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX personal_data_read_referral ON personal_data_read (referral_id, read_at);

CREATE FUNCTION personal_data_read_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'personal_data_read is append-only';
END;
$$;

CREATE TRIGGER personal_data_read_append_only
    BEFORE UPDATE OR DELETE ON personal_data_read
    FOR EACH ROW EXECUTE FUNCTION personal_data_read_is_append_only();
