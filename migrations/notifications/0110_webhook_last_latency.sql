-- How long the endpoint's last attempt took. An endpoint whose last post
-- failed or was slow is served in the worker's small lane, so hanging
-- endpoints cannot take every posting slot from the healthy ones.
ALTER TABLE webhook ADD COLUMN last_latency_ms integer NOT NULL DEFAULT 0;
