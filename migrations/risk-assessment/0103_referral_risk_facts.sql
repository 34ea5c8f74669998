-- What the referrer told intake that the assessment starts from: kinds of
-- known risk (cpm.v1.KnownRisk), whether the referrer will co-visit, and the
-- emergency calls of the last 12 months. Codes and counts only.
ALTER TABLE assessment
    ADD COLUMN known_risk_types               integer[] NOT NULL DEFAULT '{}',
    ADD COLUMN referrer_will_co_visit         boolean   NOT NULL DEFAULT false,
    ADD COLUMN emergency_calls_last_12_months integer   NOT NULL DEFAULT 0;
