-- Free text about a client is sealed under the client's key in this
-- schema's `client_key` (crypto-shredding): `client.erased` shreds the key,
-- so the text cannot be read from the table, its WAL or a later backup.
-- New rows keep the plaintext columns empty; rows written before this
-- version keep their plaintext until the client is erased, which blanks it.
ALTER TABLE contact ADD COLUMN summary_sealed bytea;
ALTER TABLE case_file ADD COLUMN discharge_reason_sealed bytea;
