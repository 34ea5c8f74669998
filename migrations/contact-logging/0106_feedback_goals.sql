-- The goals counted in the discharge feedback: how many were set, and how
-- many achieved, at discharge.
ALTER TABLE case_file
    ADD COLUMN feedback_goals_set integer,
    ADD COLUMN feedback_goals_achieved integer;
