-- Goals, demand before and after support, programme cost and the impact
-- formula's versions.

-- A client's goal, set with GROW. Its text is free text about the client:
-- sealed under the client's key (crypto-shredded by `client.erased`), the
-- columns NULL when a field was left empty or the client was erased.
CREATE TABLE goal (
    goal_id             uuid PRIMARY KEY,
    case_file_id        uuid        NOT NULL REFERENCES case_file (case_file_id) ON DELETE CASCADE,
    goal_sealed         bytea,
    reality_sealed      bytea,
    options_sealed      bytea,
    way_forward_sealed  bytea,
    -- The SMART target date.
    target_date         date        NOT NULL,
    -- The client's commitment, 1 to 10, as last recorded.
    commitment          smallint    NOT NULL CHECK (commitment BETWEEN 1 AND 10),
    -- cpm.v1.GoalState: 1 ongoing, 2 achieved, 3 dropped.
    state               integer     NOT NULL CHECK (state BETWEEN 1 AND 3),
    set_by              text        NOT NULL,
    set_at              timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX goal_case_file ON goal (case_file_id, set_at, goal_id);

-- Every progress update on a goal, in the order recorded.
CREATE TABLE goal_progress (
    goal_progress_id  uuid PRIMARY KEY,
    goal_id           uuid        NOT NULL REFERENCES goal (goal_id) ON DELETE CASCADE,
    -- Sealed as the goal's text.
    note_sealed       bytea,
    -- NULL: unchanged by this update.
    commitment        smallint    CHECK (commitment BETWEEN 1 AND 10),
    -- The goal's state after this update.
    state             integer     NOT NULL CHECK (state BETWEEN 1 AND 3),
    recorded_by       text        NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX goal_progress_goal ON goal_progress (goal_id, recorded_at, goal_progress_id);

-- Referrals as `referral.submitted` announced them: the area decides which
-- coordinators see their demand, also when no case file ever opens.
CREATE TABLE referral (
    referral_id   uuid PRIMARY KEY,
    agency_id     text        NOT NULL,
    area          text        NOT NULL,
    submitted_at  timestamptz NOT NULL
);

-- Referrals not taken on (`referral.status_changed` NOT_TAKEN_ON), kept
-- apart from `referral` so the two events may arrive in either order: the
-- comparison cohort of the impact report.
CREATE TABLE referral_not_taken_on (
    referral_id      uuid PRIMARY KEY,
    not_taken_on_at  timestamptz NOT NULL
);

-- Demand figures, one row per recording: the latest per referral and
-- window is the one in use, earlier ones stay as history. Counts only.
CREATE TABLE demand_figure (
    demand_figure_id    uuid PRIMARY KEY,
    referral_id         uuid             NOT NULL,
    -- cpm.v1.DemandWindow: 1 before support, 2 and 3 the follow-ups.
    demand_window       integer          NOT NULL CHECK (demand_window BETWEEN 1 AND 3),
    -- The months the figures cover, as configured when recorded.
    months              integer          NOT NULL CHECK (months BETWEEN 1 AND 60),
    police_calls        integer          NOT NULL CHECK (police_calls >= 0),
    ambulance_calls     integer          NOT NULL CHECK (ambulance_calls >= 0),
    nhs_111_calls       integer          NOT NULL CHECK (nhs_111_calls >= 0),
    other_calls         integer          NOT NULL CHECK (other_calls >= 0),
    police_staff_hours  double precision NOT NULL CHECK (police_staff_hours >= 0),
    -- Who supplied the figures (an organisation or team, not a client) and when.
    supplied_by         text             NOT NULL,
    supplied_on         date             NOT NULL,
    recorded_by         text             NOT NULL,
    recorded_at         timestamptz      NOT NULL DEFAULT now()
);

CREATE INDEX demand_figure_latest
    ON demand_figure (referral_id, demand_window, recorded_at DESC, demand_figure_id DESC);

-- What the programme cost over a period, as an admin recorded it.
CREATE TABLE programme_cost (
    programme_cost_id  uuid PRIMARY KEY,
    period_start       date        NOT NULL,
    period_end         date        NOT NULL,
    cost_pence         bigint      NOT NULL CHECK (cost_pence > 0),
    note               text        NOT NULL DEFAULT '',
    recorded_by        text        NOT NULL,
    recorded_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT programme_cost_period CHECK (period_end >= period_start)
);

-- Every version of the impact formula the service ran with, and its values
-- (JSON, as configured): a version names one formula for good, so a
-- report's version always says how it was priced.
CREATE TABLE impact_formula_version (
    version        text PRIMARY KEY,
    formula        text        NOT NULL,
    first_used_at  timestamptz NOT NULL DEFAULT now()
);
