-- Deeper assessments: when the referral was made (the age against the
-- first-assessment target counts from it), the earlier referral of a
-- re-referred client (the history chain), and where a client referred on
-- was sent.
ALTER TABLE assessment
    ADD COLUMN referred_at         timestamptz,
    ADD COLUMN earlier_referral_id uuid,
    -- cpm.v1.ReferredTo; set exactly when the reason is REFERRED_ON.
    ADD COLUMN referred_to         integer;

UPDATE assessment SET referred_at = opened_at;
ALTER TABLE assessment
    ALTER COLUMN referred_at SET NOT NULL,
    ALTER COLUMN referred_at SET DEFAULT now();

-- Stats select a period of referrals, optionally in one area.
CREATE INDEX assessment_referred ON assessment (referred_at, area);

-- The details of a check, one group per kind; the others stay NULL.
ALTER TABLE assessment_check
    -- RISK_TO_VOLUNTEERS: cpm.v1.RiskLevel.
    ADD COLUMN risk_level            integer,
    -- WILL_WANT_CAPACITY: each scored 0 to 5, all three or none.
    ADD COLUMN will_score            integer CHECK (will_score BETWEEN 0 AND 5),
    ADD COLUMN want_score            integer CHECK (want_score BETWEEN 0 AND 5),
    ADD COLUMN capacity_score        integer CHECK (capacity_score BETWEEN 0 AND 5),
    -- DATABASES_CHECKED: which databases.
    ADD COLUMN databases             text[],
    -- PROFESSIONALS_CONSULTED: the roles consulted.
    ADD COLUMN professionals         text[],
    -- HOME_VISIT: the staff who attended and how the visit was arranged.
    ADD COLUMN visit_attended_by     text[],
    ADD COLUMN referrer_co_visited   boolean,
    ADD COLUMN phone_contact_first   boolean,
    ADD CONSTRAINT assessment_check_scores_together CHECK (
        (will_score IS NULL) = (want_score IS NULL)
        AND (will_score IS NULL) = (capacity_score IS NULL)
    );

-- The first check of each assessment: time to first assessment.
CREATE INDEX assessment_check_first ON assessment_check (assessment_id, recorded_at);

-- A coordinator's re-assessment of an accepted client: continue, pause or
-- end support. Each one resolves the review requests open at the time and
-- is announced as `engagement.changed`. After an END no other follows.
CREATE TABLE review (
    review_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    assessment_id     uuid        NOT NULL REFERENCES assessment (assessment_id),
    -- cpm.v1.EngagementAction.
    action            integer     NOT NULL,
    -- Set exactly when support ends (cpm.v1.NonEngagementStage, NonEngagementReason, ReferredTo).
    stage             integer,
    reason            integer,
    referred_to       integer,
    -- Free text about the client: never copied into events or logs.
    rationale         text        NOT NULL DEFAULT '',
    reviewed_by       text        NOT NULL,
    reviewed_at       timestamptz NOT NULL DEFAULT now(),
    resolved_requests integer     NOT NULL DEFAULT 0,
    CONSTRAINT review_end_has_stage_and_reason CHECK (
        (action = 3) = (stage IS NOT NULL) AND (stage IS NULL) = (reason IS NULL)
    )
);

CREATE INDEX review_assessment ON review (assessment_id, reviewed_at, review_id);
-- At most one END per assessment.
CREATE UNIQUE INDEX review_single_end ON review (assessment_id) WHERE action = 3;

-- Every change to an assessment: who, when, what and which assessment.
-- Actions of the service itself (opening, closing, review requests) name
-- the service as actor. Only codes and IDs, never free text. Append-only.
CREATE TABLE assessment_audit (
    assessment_audit_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    assessment_id       uuid        NOT NULL,
    actor               text        NOT NULL,
    role                text        NOT NULL,
    -- e.g. 'opened', 'check_recorded', 'decided', 'reassessed'.
    action              text        NOT NULL,
    -- Codes only, e.g. 'CHECK_KIND_HOME_VISIT satisfied'.
    detail              text        NOT NULL DEFAULT '',
    acted_at            timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX assessment_audit_assessment ON assessment_audit (assessment_id, acted_at);

CREATE FUNCTION assessment_audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'assessment_audit is append-only';
END;
$$;

CREATE TRIGGER assessment_audit_append_only
    BEFORE UPDATE OR DELETE ON assessment_audit
    FOR EACH ROW EXECUTE FUNCTION assessment_audit_is_append_only();
