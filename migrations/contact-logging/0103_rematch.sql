-- Which allocation gave a mentor access to a case: when a pair is found not
-- to work (`allocation.ended`), its mentors lose access, and the next
-- pair's allocation gives the new mentors theirs. Rows from before carry none.
ALTER TABLE case_mentor ADD COLUMN allocation_id uuid;
CREATE INDEX case_mentor_allocation ON case_mentor (allocation_id);
