-- Retention of the mentor register (issue 12, items 6 and 7). A mentor
-- who left or declined, or who has been on sabbatical too long, is erased
-- once their retention period is over (the sweep, retention.rs); a mentor
-- may also be erased at once on request (EraseMentor). Erasure keeps a
-- tombstone: the ID, a final status, the primary area (the register's
-- constraints and who may see the tombstone need it), the capacity and
-- when the mentor was registered, so allocations and proposals still name
-- a mentor who existed.

-- When the mentor entered their current status; the retention periods
-- count from it. Kept by the trigger below on every change of status.
ALTER TABLE mentor
    ADD COLUMN status_since   timestamptz,
    -- Set when the mentor's personal data was erased: a tombstone from then on.
    ADD COLUMN erased_at      timestamptz,
    -- Who erased it (a coordinator's or admin's subject, or the sweep) and why.
    ADD COLUMN erased_by      text,
    ADD COLUMN erasure_reason text;

-- Backfill: the latest change into the current status, else a first
-- allocation for an ACTIVE mentor (which made them ACTIVE), else the
-- registration.
UPDATE mentor SET status_since = COALESCE(
    (SELECT max(change.changed_at) FROM mentor_status_change AS change
     WHERE change.mentor_id = mentor.mentor_id AND change.to_status = mentor.status),
    (SELECT min(allocation.confirmed_at) FROM allocation_mentor
     JOIN allocation ON allocation.allocation_id = allocation_mentor.allocation_id
     WHERE allocation_mentor.mentor_id = mentor.mentor_id AND mentor.status = 2),
    trained_on);

ALTER TABLE mentor
    ALTER COLUMN status_since SET NOT NULL,
    ALTER COLUMN status_since SET DEFAULT now();

-- A change of status restarts `status_since`, whichever statement makes it,
-- unless the statement sets `status_since` itself.
CREATE FUNCTION mentor_status_since() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status
       AND NEW.status_since IS NOT DISTINCT FROM OLD.status_since THEN
        NEW.status_since := now();
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER mentor_status_since
    BEFORE UPDATE OF status ON mentor
    FOR EACH ROW EXECUTE FUNCTION mentor_status_since();

-- A tombstone holds nothing personal and stays final (LEFT or DECLINED,
-- cpm.v1.MentorStatus 4 and 5), whatever writes to it later.
ALTER TABLE mentor ADD CONSTRAINT mentor_erased_holds_nothing CHECK (
    erased_at IS NULL OR (
        status IN (4, 5)
        AND display_name = ''
        AND gender = 0
        AND lived_experience = '{}'
        AND cardinality(areas) = 1
        AND training_cohort = ''
        AND training_format = 0
        AND training_completed_on IS NULL
        AND safeguarding_trained_on IS NULL
        AND agreement_signed_on IS NULL
        AND vetted_on IS NULL
        AND age_band = 0
        AND availability = '{}'
        AND NOT ex_service_user
    )
);

-- The sweep looks for mentors whose period is over.
CREATE INDEX mentor_retention_due ON mentor (status, status_since) WHERE erased_at IS NULL;

-- Erasure finds the proposals that name a mentor.
CREATE INDEX proposal_mentors ON proposal USING gin (mentor_ids);

-- Every read of a mentor's personal data for a caller: GetMentor,
-- ListMentors (each mentor listed), ProposeMatches (each mentor its answer
-- names) and ExportMentorData. One row per mentor per call, written before
-- the answer is sent; append-only, and kept after an erasure (it names the
-- readers, not the mentor's data).
CREATE TABLE mentor_data_read (
    read_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mentor_id uuid        NOT NULL,
    -- The caller's subject identifier and role.
    reader    text        NOT NULL,
    role      text        NOT NULL,
    -- The RPC that read, e.g. `GetMentor`.
    purpose   text        NOT NULL,
    read_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX mentor_data_read_mentor ON mentor_data_read (mentor_id, read_at);

CREATE FUNCTION mentor_data_read_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'mentor_data_read is append-only';
END;
$$;

CREATE TRIGGER mentor_data_read_append_only
    BEFORE UPDATE OR DELETE ON mentor_data_read
    FOR EACH ROW EXECUTE FUNCTION mentor_data_read_is_append_only();
