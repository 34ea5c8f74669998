-- Every change of a mentor's status: from what, to what, why, who, when.
-- The mentor row holds the current status; these rows go with the mentor's
-- record when it is deleted.
CREATE TABLE mentor_status_change (
    change_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mentor_id   uuid        NOT NULL REFERENCES mentor (mentor_id),
    -- cpm.v1.MentorStatus.
    from_status integer     NOT NULL,
    to_status   integer     NOT NULL,
    reason      text        NOT NULL,
    changed_by  text        NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX mentor_status_change_mentor ON mentor_status_change (mentor_id, changed_at);
