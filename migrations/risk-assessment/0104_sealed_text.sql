-- Free text about a client is sealed under that client's key in this
-- schema's `client_key` (crypto-shredding): `client.erased` shreds the key,
-- so the text no longer opens from the table, its WAL or a backup taken
-- after the erasure. An UPDATE that blanks plaintext leaves the old value
-- in the WAL and in backups; a shredded key leaves nothing readable.
--
-- The plaintext columns stay: rows written before this version keep their
-- text there and are read from them until the client is erased, which
-- blanks them as before. New rows leave them empty ('' or NULL, as each
-- column allows) and keep the text only in these sealed columns.

-- Why the coordinator decided as they did; `rationale` holds it only in
-- rows decided before this version.
ALTER TABLE assessment ADD COLUMN rationale_sealed bytea;

-- Why support was continued, paused or ended; `rationale` holds it only
-- in rows reviewed before this version.
ALTER TABLE review ADD COLUMN rationale_sealed bytea;

-- One sealed JSON document per check with its free text: `notes`,
-- `databases`, `professionals` and `visit_attended_by`, which the columns
-- of those names hold only in rows recorded before this version (a new
-- row leaves `notes` '' and the three lists NULL). NULL when the check has
-- none of them. Who attended a home visit is free text; how the visit was
-- arranged (`referrer_co_visited`, `phone_contact_first`) stays a code.
ALTER TABLE assessment_check ADD COLUMN sealed_text bytea;
