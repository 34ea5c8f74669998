-- The crimes a client was a victim of and committed (cpm.v1.CrimeType), from
-- `referral.submitted`, passed on to matching in `assessment.decided`: a
-- mentor who was a victim of an offence is kept away from a client who
-- committed it. Codes only; dropped when the client is erased.
ALTER TABLE assessment
    ADD COLUMN victim_of      integer[] NOT NULL DEFAULT '{}',
    ADD COLUMN perpetrator_of integer[] NOT NULL DEFAULT '{}';
