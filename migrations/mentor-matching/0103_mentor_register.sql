-- The mentor register in full (issue 12 item 1): training, safeguarding,
-- the mentor agreement, vetting, age band, several areas, availability and
-- whether the mentor was once a service user.
--
-- Dates are calendar dates; NULL means not recorded. The boolean
-- `safeguarding_trained` gives way to the date of the training: a mentor
-- registered as trained keeps their registration day as that date. Nobody
-- has a signed agreement on record yet, so no existing mentor can be
-- proposed until a coordinator records it (RecordTraining).
ALTER TABLE mentor
    -- The training cohort's label, e.g. `2026-03`; empty when not recorded.
    ADD COLUMN training_cohort         text      NOT NULL DEFAULT '',
    -- cpm.v1.TrainingFormat; 0 when not recorded.
    ADD COLUMN training_format         integer   NOT NULL DEFAULT 0,
    ADD COLUMN training_completed_on   date,
    ADD COLUMN safeguarding_trained_on date,
    ADD COLUMN agreement_signed_on     date,
    -- The DBS check or other vetting, where the programme records one.
    ADD COLUMN vetted_on               date,
    -- cpm.v1.AgeBand; 0 when not recorded.
    ADD COLUMN age_band                integer   NOT NULL DEFAULT 0,
    -- cpm.v1.Availability values, without duplicates.
    ADD COLUMN availability            integer[] NOT NULL DEFAULT '{}',
    ADD COLUMN ex_service_user         boolean   NOT NULL DEFAULT false,
    -- Every area the mentor works in, in the programme's spelling, the
    -- primary area (`area`) first.
    ADD COLUMN areas                   text[];

UPDATE mentor SET
    areas = ARRAY[area],
    safeguarding_trained_on = CASE WHEN safeguarding_trained THEN trained_on::date END;

ALTER TABLE mentor
    ALTER COLUMN areas SET NOT NULL,
    ADD CONSTRAINT mentor_areas_check
        CHECK (cardinality(areas) BETWEEN 1 AND 5 AND areas[1] = area),
    DROP COLUMN safeguarding_trained;

-- Staff see the mentors who share an area with them; proposals look for
-- the mentors of the client's area.
CREATE INDEX mentor_areas ON mentor USING gin (areas);
