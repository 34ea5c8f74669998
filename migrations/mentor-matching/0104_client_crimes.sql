-- The crimes a waiting client was a victim of and committed
-- (cpm.v1.CrimeType), from `assessment.decided`: the safety exclusions
-- keep mentors who were victims of such offences away from the client.
-- Codes only; dropped when the client is erased.
ALTER TABLE waiting_client
    ADD COLUMN victim_of      integer[] NOT NULL DEFAULT '{}',
    ADD COLUMN perpetrator_of integer[] NOT NULL DEFAULT '{}';
