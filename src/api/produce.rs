//! `pipeline_kafka.produce_message` and the `emit_tuple` trigger: both only write the outbox in
//! the caller's transaction (see `crate::produce`).

use pgrx::prelude::*;

#[pg_schema]
mod pipeline_kafka {
    use crate::error::raise;
    use crate::produce::{outbox, wake_producer_at_commit};
    use pgrx::prelude::*;
    use crate::api::JsonbArg;

    fn check_brokers() {
        if !crate::produce::load_producer_settings() {
            crate::error::raise_with(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "no Kafka broker is configured",
                None,
                Some("Add one with pipeline_kafka.add_broker('host:port').".into()),
            );
        }
    }

    /// The headers as the outbox stores them (None = no headers), and each one's (name, value)
    /// size in bytes, for the message's size.
    fn check_headers(headers: &Option<JsonbArg>) -> (Option<String>, Vec<(usize, usize)>) {
        let Some(h) = headers.as_ref().map(|h| h.parse("headers")) else { return (None, Vec::new()) };
        match &h {
            serde_json::Value::Null => (None, Vec::new()),
            serde_json::Value::Object(m) => {
                if m.values().any(|v| !(v.is_string() || v.is_null())) {
                    raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "header values must be strings or null");
                }
                let sizes = m.iter().map(|(k, v)| (k.len(), v.as_str().map_or(0, str::len))).collect();
                (Some(h.to_string()), sizes)
            }
            _ => raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "headers must be a JSON object of strings"),
        }
    }

    /// Produces a message to `topic` if and only if the current transaction commits; returns the
    /// message's outbox id. NULL partition (or -1) = the producer's partitioner (by key when a key
    /// is given); a NULL message is a tombstone.
    #[pg_extern(volatile, parallel_unsafe)]
    fn produce_message(
        topic: Option<&str>,
        message: Option<&[u8]>,
        partition: default!(Option<i32>, "NULL"),
        key: default!(Option<&[u8]>, "NULL"),
        headers: default!(Option<JsonbArg>, "NULL"),
        timestamp: default!(Option<pgrx::datum::TimestampWithTimeZone>, "NULL"),
    ) -> i64 {
        produce(topic, message, partition, key, headers, timestamp)
    }

    /// The same for a text message and key, sent as their UTF-8 bytes. An untyped literal
    /// (`produce_message('t', 'hello')`) resolves to this one, as PostgreSQL prefers text for
    /// unknown-type arguments; write `'\x..'::bytea` for bytes.
    #[pg_extern(volatile, parallel_unsafe, name = "produce_message")]
    fn produce_message_text(
        topic: Option<&str>,
        message: Option<&str>,
        partition: default!(Option<i32>, "NULL"),
        key: default!(Option<&str>, "NULL"),
        headers: default!(Option<JsonbArg>, "NULL"),
        timestamp: default!(Option<pgrx::datum::TimestampWithTimeZone>, "NULL"),
    ) -> i64 {
        produce(topic, message.map(str::as_bytes), partition, key.map(str::as_bytes), headers, timestamp)
    }

    fn produce(
        topic: Option<&str>,
        message: Option<&[u8]>,
        partition: Option<i32>,
        key: Option<&[u8]>,
        headers: Option<JsonbArg>,
        timestamp: Option<pgrx::datum::TimestampWithTimeZone>,
    ) -> i64 {
        let topic = crate::error::required(topic, "topic");
        if let Err(e) = ingest_core::broker::check_topic(topic) {
            raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.to_string());
        }
        let partition = match partition {
            None | Some(-1) => None,
            Some(p) if p >= 0 => Some(p),
            Some(p) => raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("partition must be >= 0 or -1 (unassigned), got {p}")),
        };
        let (headers, header_sizes) = check_headers(&headers);
        // A Kafka timestamp is milliseconds since 1970 (22023 infinite, 22008 out of range).
        timestamp.map(|t| crate::api::seek::checked_epoch_us(t, "timestamp", 0));
        if crate::produce::first_in_transaction() {
            check_brokers();
        }
        crate::produce::check_message_size(message, key, &header_sizes);
        // SAFETY: a connected backend in a transaction.
        let role = unsafe { pg_sys::GetUserId() };
        let id = outbox::insert(topic, message, partition, key, headers.as_deref(), timestamp, role);
        wake_producer_at_commit();
        id
    }

    /// Deletes the messages of `topic` waiting in the outbox (a topic that will never exist, say)
    /// and its recorded delivery error; returns how many. Revoked from PUBLIC (finalize.sql);
    /// logged (LOG) with the role, the topic and the count. The messages are not kept as dead
    /// letters: discarding is a deliberate act of a superuser (or a role granted it), who can read
    /// the outbox and copy them first. A message the producer has already handed to librdkafka (in
    /// flight, such as while the broker is down) can still be delivered.
    #[pg_extern(volatile, parallel_unsafe)]
    fn outbox_discard(topic: Option<&str>) -> i64 {
        let topic = crate::error::required(topic, "topic");
        let n = outbox::discard(topic);
        // SAFETY: a connected backend in a transaction; GetUserNameFromId returns a palloc'd C
        // string (the current user exists).
        let role_name = unsafe {
            std::ffi::CStr::from_ptr(pg_sys::GetUserNameFromId(pg_sys::GetUserId(), false)).to_string_lossy().into_owned()
        };
        pgrx::log!("pipeline_kafka.outbox_discard: role \"{role_name}\" discarded {n} pending message(s) of topic \"{topic}\"");
        n
    }

    /// Trigger: `AFTER INSERT OR UPDATE [OR DELETE] ... FOR EACH ROW EXECUTE FUNCTION
    /// pipeline_kafka.emit_tuple('topic' [, 'partition' [, 'key_column']])`. Sends the new row as
    /// JSON (row_to_json) when the transaction commits; partition '-1' = unassigned; on DELETE
    /// sends a tombstone (NULL value) keyed by the key column.
    #[pg_trigger]
    fn emit_tuple<'a>(
        trigger: &'a pgrx::PgTrigger<'a>,
    ) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, pgrx::PgTriggerError> {
        crate::produce::emit::fire(trigger)
    }
}
