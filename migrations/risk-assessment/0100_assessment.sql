-- One risk assessment per referral: opened when the referral arrives,
-- decided by a named coordinator, or closed when the referral is withdrawn.
-- It holds categories and IDs only; the client's identity stays in
-- referral-intake.
CREATE TABLE assessment (
    assessment_id   uuid PRIMARY KEY,
    -- A redelivered or repeated `referral.submitted` never opens a second assessment.
    referral_id     uuid        NOT NULL,
    agency_id       text        NOT NULL,
    area            text        NOT NULL,
    -- cpm.v1.Vulnerability and cpm.v1.Gender values, passed on to matching with the decision.
    vulnerabilities integer[]   NOT NULL DEFAULT '{}',
    client_gender   integer     NOT NULL,
    -- cpm.v1.AssessmentState: OPEN, then DECIDED or CLOSED, both final.
    state           integer     NOT NULL,
    opened_at       timestamptz NOT NULL DEFAULT now(),
    -- Set together when a coordinator decides (cpm.v1.Decision,
    -- NonEngagementStage, NonEngagementReason); stage and reason only when
    -- the client is not taken on.
    decision        integer,
    stage           integer,
    reason          integer,
    decided_by      text,
    decided_at      timestamptz,
    -- Why the coordinator decided as they did; required when overriding the recommendation.
    rationale       text,
    closed_at       timestamptz,
    CONSTRAINT assessment_referral UNIQUE (referral_id),
    CONSTRAINT assessment_decision_complete CHECK (
        (decision IS NULL) = (decided_by IS NULL) AND (decision IS NULL) = (decided_at IS NULL)
    )
);

-- The area queues: open assessments, oldest first.
CREATE INDEX assessment_open_queue ON assessment (area, opened_at, assessment_id) WHERE state = 1;

-- Every check a coordinator recorded. History is kept; the latest check of
-- each kind is the one that counts. (`check` itself is an SQL keyword.)
CREATE TABLE assessment_check (
    assessment_check_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    assessment_id       uuid        NOT NULL REFERENCES assessment (assessment_id),
    -- cpm.v1.CheckKind.
    kind                integer     NOT NULL,
    -- True when the check found the client suitable.
    satisfied           boolean     NOT NULL,
    notes               text        NOT NULL DEFAULT '',
    recorded_by         text        NOT NULL,
    recorded_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX assessment_check_latest
    ON assessment_check (assessment_id, kind, recorded_at DESC, assessment_check_id DESC);
