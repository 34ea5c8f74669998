-- A fingerprint match (same name and date of birth) is only a possible
-- earlier referral until a coordinator confirms it: two people can share
-- both. Only a confirmed link shows history, or joins referrals for erasure
-- and subject access.

-- cpm.v1.ReferralLinkState: 0 none, 1 possible, 2 confirmed, 3 rejected.
ALTER TABLE referral
    ADD COLUMN link_state        smallint NOT NULL DEFAULT 0,
    ADD COLUMN link_decided_by   text,
    ADD COLUMN link_decided_at   timestamptz,
    -- The agency of the earlier referral: a referrer sees a link only
    -- within their own agency.
    ADD COLUMN earlier_agency_id text;

-- Links found before confirmation existed were never confirmed by anyone.
UPDATE referral SET link_state = 1,
    earlier_agency_id = (SELECT earlier.agency_id FROM referral earlier
                         WHERE earlier.referral_id = referral.earlier_referral_id)
WHERE earlier_referral_id IS NOT NULL;

CREATE INDEX referral_possible_link ON referral (submitted_at, referral_id) WHERE link_state = 1;
CREATE INDEX referral_confirmed_link ON referral (earlier_referral_id) WHERE link_state = 2;
