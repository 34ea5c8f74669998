-- Agency scoping enforced by PostgreSQL too, under the service's own role
-- (cpm_referral_intake; the owner, who migrates, is exempt): a referral is
-- visible only when the transaction's scope (`cpm.scope`) is 'all' or its
-- agency. Service connections start at 'all' (staff and consumers see every
-- referral); a referrer's call narrows its transaction to the agency, so a
-- query that forgot its agency filter still sees only that agency's rows.
-- With no scope set at all, nothing is visible.
ALTER TABLE referral ENABLE ROW LEVEL SECURITY;
CREATE POLICY agency_scope ON referral
    USING (current_setting('cpm.scope', true) IN ('all', agency_id))
    WITH CHECK (current_setting('cpm.scope', true) IN ('all', agency_id));

-- A client record follows its referral's visibility.
ALTER TABLE client_record ENABLE ROW LEVEL SECURITY;
CREATE POLICY agency_scope ON client_record
    USING (EXISTS (SELECT 1 FROM referral WHERE referral.referral_id = client_record.referral_id))
    WITH CHECK (true);
