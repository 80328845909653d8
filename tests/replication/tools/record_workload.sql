-- Workload for record_fixtures.sh: one transaction per pgoutput feature the
-- decoder tests assert on. The slot is created first, so the recording
-- starts at the first transaction below.
SET TimeZone = 'UTC';
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE all_types (
  id int4 PRIMARY KEY, c_int2 int2, c_int4 int4, c_int8 int8, c_numeric numeric(12, 4),
  c_float4 float4, c_float8 float8, c_text text, c_bool bool, c_json json, c_jsonb jsonb,
  c_bytea bytea, c_ts timestamptz, c_uuid uuid, c_int4arr int4[], c_textarr text[], c_mood mood);
CREATE TABLE full_ident (id int4 PRIMARY KEY, note text);
ALTER TABLE full_ident REPLICA IDENTITY FULL;
CREATE TABLE toasty (id int4 PRIMARY KEY, counter int4, big text);
CREATE TABLE trunc_a (id serial PRIMARY KEY);
CREATE TABLE trunc_b (id serial PRIMARY KEY, a_id int4 REFERENCES trunc_a);
CREATE PUBLICATION p FOR ALL TABLES;
SELECT pg_create_logical_replication_slot('s', 'pgoutput');

-- 1: every type, and a row of NULLs.
INSERT INTO all_types VALUES
  (1, -32768, 2147483647, -9223372036854775808, 12345.6789, 1.5, 3.141592653589793,
   'hello, wörld', true, '{"a": [1, 2]}', '{"b": 2, "a": 1}', '\xdeadbeef',
   '2024-01-02 03:04:05.678+00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,2,3}',
   '{"a b",c,NULL}', 'happy'),
  (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL);
-- 2: REPLICA IDENTITY DEFAULT update without key change (no 'K').
UPDATE all_types SET c_text = 'updated', c_bool = false WHERE id = 1;
-- 3: key change ('K' with the old key).
UPDATE all_types SET id = 3 WHERE id = 2;
-- 4: delete by key ('K').
DELETE FROM all_types WHERE id = 3;
-- 5: REPLICA IDENTITY FULL ('O' old tuples).
INSERT INTO full_ident VALUES (1, 'one');
UPDATE full_ident SET note = 'uno' WHERE id = 1;
DELETE FROM full_ident WHERE id = 1;
-- 6: unchanged TOAST value ('u').
INSERT INTO toasty SELECT 1, 0, string_agg(md5(random()::text), '') FROM generate_series(1, 200);
UPDATE toasty SET counter = 1 WHERE id = 1;
-- 7: truncate of two tables with options.
INSERT INTO trunc_a DEFAULT VALUES;
TRUNCATE trunc_a, trunc_b RESTART IDENTITY CASCADE;
-- 8: multi-table transaction with a transactional logical message.
BEGIN;
SELECT pg_logical_emit_message(true, 'prefix', 'content');
INSERT INTO full_ident VALUES (2, 'two');
INSERT INTO toasty VALUES (2, 2, 'small');
INSERT INTO all_types (id, c_mood) VALUES (4, 'sad');
COMMIT;
-- 9: a transaction replayed from a replication origin ('O' origin message).
SELECT pg_replication_origin_create('upstream');
SELECT pg_replication_origin_session_setup('upstream');
BEGIN;
SELECT pg_replication_origin_xact_setup('0/ABCDEF', now());
INSERT INTO full_ident VALUES (3, 'from upstream');
COMMIT;
SELECT pg_replication_origin_session_reset();
