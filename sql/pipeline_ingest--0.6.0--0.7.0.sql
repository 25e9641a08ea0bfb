-- pipeline_ingest 0.6.0 -> 0.7.0 (ALTER EXTENSION pipeline_ingest UPDATE).
-- Every schema change of 0.7.0 is here as well as in catalog.sql / finalize.sql / the generated
-- function definitions, so an upgraded database ends up with the same schema as a fresh one
-- (tests/e2e/test_upgrade.py compares them). A released script is never edited afterwards.
-- 0.7.0: the structure (issue 20) and what a new user tripped over (issue 24); each section names
-- the item it answers.

\echo Use "ALTER EXTENSION pipeline_ingest UPDATE" to load this file. \quit

-- ---------------------------------------------------------------------------------------------
-- Issue 20.2 / 24.2 / 24.10: one consumer spec
-- ---------------------------------------------------------------------------------------------



-- ---------------------------------------------------------------------------------------------
-- Issue 24.1 / 24.3 / 24.4: status (dead-letter warnings, unknown lag)
-- ---------------------------------------------------------------------------------------------



-- ---------------------------------------------------------------------------------------------
-- Issue 24.7 / 24.8 / 24.9: the outbox, produce_message, emit_tuple
-- ---------------------------------------------------------------------------------------------



-- ---------------------------------------------------------------------------------------------
-- Issue 24.6: retry_dead_letters
-- ---------------------------------------------------------------------------------------------
-- retry_dead_letters (as pgrx generates them; executable by PUBLIC like the other consumer
-- functions: each checks that the caller may manage the consumer) and their comments.
CREATE  FUNCTION pipeline_kafka."retry_dead_letters_stream_partitioned"(
	"topic" TEXT, /* Option < & str > */
	"max" bigint DEFAULT NULL /* Option < i64 > */
) RETURNS bigint /* i64 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'retry_dead_letters_stream_partitioned_wrapper';
CREATE  FUNCTION pipeline_kafka."retry_dead_letters"(
	"topic" TEXT, /* Option < & str > */
	"relation" TEXT, /* Option < & str > */
	"max" bigint DEFAULT NULL /* Option < i64 > */
) RETURNS bigint /* i64 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kafka_retry_dead_letters_wrapper';
CREATE  FUNCTION pipeline_kinesis."retry_dead_letters"(
	"endpoint" TEXT, /* Option < & str > */
	"stream" TEXT, /* Option < & str > */
	"relation" TEXT, /* Option < & str > */
	"max" bigint DEFAULT NULL /* Option < i64 > */
) RETURNS bigint /* i64 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'kinesis_retry_dead_letters_wrapper';
COMMENT ON FUNCTION pipeline_kafka.retry_dead_letters(text, text, bigint) IS
    'Puts the dead letters of the consumer of topic into relation through its current settings again, oldest first (partition, offset; at most max, NULL = all), as the table''s owner, in the caller''s transaction: those that become rows leave the dead letters, the others stay with their new error. Returns how many became rows. For members of the consumer''s owner and superusers (42501 otherwise).';
COMMENT ON FUNCTION pipeline_kafka.retry_dead_letters_stream_partitioned(text, bigint) IS
    'retry_dead_letters for the stream-partitioned consumer of topic: each message goes to the table its key names now, as that table''s owner, under the consumer''s rules. Returns how many became rows.';
COMMENT ON FUNCTION pipeline_kinesis.retry_dead_letters(text, text, text, bigint) IS
    'Puts the dead letters of the consumer of stream at endpoint into relation through its current settings again, oldest first (at most max, NULL = all), as the table''s owner, in the caller''s transaction: those that become rows leave the dead letters, the others stay with their new error. Returns how many became rows. For members of the consumer''s owner and superusers (42501 otherwise).';



-- ---------------------------------------------------------------------------------------------
-- Issue 24.11 / 24.12 / 24.13: comments, Kafka and Kinesis alike, credentials
-- ---------------------------------------------------------------------------------------------



-- ---------------------------------------------------------------------------------------------
-- Other
-- ---------------------------------------------------------------------------------------------
