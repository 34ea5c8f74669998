-- Support ended by a coordinator's re-assessment (`engagement.changed`
-- END): the client stops waiting, and an allocation stops counting against
-- its mentors' capacity (`active` turns false), which frees their places.
ALTER TABLE waiting_client ADD COLUMN ended_at timestamptz;
ALTER TABLE allocation ADD COLUMN ended_at timestamptz;

CREATE INDEX waiting_client_waiting_area ON waiting_client (area)
    WHERE NOT allocated AND ended_at IS NULL;
