-- The mentor who logged a contact (the token's mentor ID; NULL when staff
-- logged it, and for contacts from before, which count for every mentor of
-- their case), so a mentor who has logged nothing lately is seen even when
-- the coordinator has.
ALTER TABLE contact ADD COLUMN mentor_id text;
