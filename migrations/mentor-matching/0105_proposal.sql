-- Every pair proposed for a client, with its score, its reasons and the
-- version of the weights that scored it, and beside each allocation the
-- proposal it took up, or why the coordinator chose a pair nobody proposed
-- (or a mentor from outside the client's area).
CREATE TABLE proposal (
    proposal_id     uuid PRIMARY KEY,
    referral_id     uuid             NOT NULL REFERENCES waiting_client (referral_id),
    -- The pair, in ascending order.
    mentor_ids      uuid[]           NOT NULL CHECK (cardinality(mentor_ids) = 2),
    score           double precision NOT NULL,
    reasons         text[]           NOT NULL,
    weights_version text             NOT NULL,
    -- The coordinator's or admin's subject identifier.
    proposed_by     text             NOT NULL,
    proposed_at     timestamptz      NOT NULL DEFAULT now()
);

CREATE INDEX proposal_referral_pair ON proposal (referral_id, mentor_ids);

ALTER TABLE allocation
    ADD COLUMN proposal_id uuid REFERENCES proposal (proposal_id),
    ADD COLUMN reason      text;
