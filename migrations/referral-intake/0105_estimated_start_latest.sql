-- The 90th percentile of the wait announced at acceptance, beside the median
-- (`estimated_start`).
ALTER TABLE referral ADD COLUMN estimated_start_latest timestamptz;
