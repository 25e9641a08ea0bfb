//! pipeline_kafka's stream-partitioned consumers (`consume_begin_stream_partitioned` /
//! `consume_end_stream_partitioned` / `consume_drop_stream_partitioned`): one consumer per topic
//! whose messages name their target relation in their key (sink::partitioned writes them).
//!
//! Who owns it: the role that calls consume_begin_stream_partitioned. Rows are written as each
//! relation's owner, into a relation only when the consumer's owner has that role's privileges
//! and that role may INSERT into it (checked per batch), so the consumer never writes with more
//! rights than its owner has; a key naming any other relation, or none, makes a dead letter. Managing it afterwards takes the privileges of its owner, as for the
//! consumers of `consume_begin`.

use pgrx::prelude::*;

#[pg_schema]
mod pipeline_kafka {
    use crate::api::consumer_args as args;
    use crate::api::{begin, can_act_as, raise_probe_error, wake_at_commit};
    use crate::catalog::spec::Key;
    use ingest_core::spec::Args;
    use crate::catalog::{consumers, kafka as cat};
    use crate::error::{raise, raise_with, required};
    use crate::shmem::SourceKind;
    use crate::sources::kafka::{client_config, Probe, ProbeError};
    use pgrx::prelude::*;
    use std::time::Duration;

    /// The stream-partitioned consumer of `topic`, if the caller may manage it (42501 otherwise,
    /// 42704 when there is none).
    fn managed_consumer(topic: &str) -> cat::Consumer {
        let c = cat::partitioned_consumer(topic).unwrap_or_else(|| {
            raise(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("there is no stream-partitioned consumer of topic \"{topic}\""))
        });
        if !can_act_as(c.owner) {
            raise(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("must be a member of the role that owns the stream-partitioned consumer of topic \"{topic}\""),
            );
        }
        c
    }

    /// Starts (or updates and restarts) the consumer of `topic` whose messages' keys name their
    /// target relations (e.g. `public.events`, `"Mixed Case"`); returns its id. The caller owns it:
    /// rows are written as the caller, only into relations the caller may INSERT into.
    /// The first ten parameters are pipeline_kafka's, in its order. A new consumer gets the
    /// defaults of the arguments not given (as consume_begin's); an existing one keeps its stored
    /// settings but for the arguments given (NOTICE).
    #[allow(clippy::too_many_arguments)]
    #[pg_extern(volatile, parallel_unsafe)]
    fn consume_begin_stream_partitioned(
        topic: Option<&str>,
        format: default!(Option<&str>, "NULL"),
        delimiter: default!(Option<&str>, "NULL"),
        quote: default!(Option<&str>, "NULL"),
        escape: default!(Option<&str>, "NULL"),
        batchsize: default!(Option<i32>, "NULL"),
        maxbytes: default!(Option<i32>, "NULL"),
        parallelism: default!(Option<i32>, "NULL"),
        timeout: default!(Option<i32>, "NULL"),
        start_offset: default!(Option<i64>, "NULL"),
        group_id: default!(Option<&str>, "NULL"),
        on_error: default!(Option<&str>, "NULL"),
        max_dead_letters: default!(Option<i32>, "NULL"),
    ) -> i32 {
        let topic = required(topic, "topic");
        if let Err(e) = ingest_core::broker::check_topic(topic) {
            raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.to_string());
        }
        let given = Args {
            batchsize,
            maxbytes,
            parallelism,
            timeout,
            group_id: group_id.map(str::to_string),
            on_error: on_error.map(str::to_string),
            max_dead_letters,
            ..args::row_args(format, delimiter, quote, escape, None, None, None, None, None, None)
        };
        ingest_core::spec::check_kafka_start(start_offset, false).unwrap_or_else(|e| args::raise_spec(e));
        if !consumers::has_features_schema(SourceKind::Kafka) {
            // Before 0.4.0 every consumer row needs a relation.
            raise_with(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "stream-partitioned consumers need the extension's 0.4.0 schema",
                None,
                Some("Run ALTER EXTENSION pipeline_ingest UPDATE.".into()),
            );
        }
        // SAFETY: plain call in a backend.
        let owner = unsafe { pg_sys::GetUserId() };
        let existing = cat::partitioned_consumer(topic);
        if let Some(c) = &existing {
            if !can_act_as(c.owner) {
                raise(
                    PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                    format!(
                        "the stream-partitioned consumer of topic \"{topic}\" belongs to {}; only its members may change it",
                        consumers::role_name(c.owner)
                    ),
                );
            }
            if c.owner != owner {
                notice!(
                    "the stream-partitioned consumer of topic \"{topic}\" now belongs to {} (it belonged to {}): it writes with that role's rights",
                    consumers::role_name(owner),
                    consumers::role_name(c.owner)
                );
            }
        }
        // A consumer that changes hands keeps nothing of its old owner's settings.
        let kept = existing.as_ref().filter(|c| c.owner == owner).map(|c| c.id);
        let prepared = begin::prepare(SourceKind::Kafka, kept, given, None);

        let (brokers, broker_config) = cat::brokers();
        if brokers.is_empty() {
            raise_with(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "no Kafka broker is configured",
                None,
                Some("Add one with pipeline_kafka.add_broker('host:port').".into()),
            );
        }
        let cfg = client_config(&brokers, &[&broker_config]).unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e));
        let timeout_ms = crate::guc::BROKER_TIMEOUT_MS.get().max(100) as u64;
        let fail = |e: ProbeError| -> ! { raise_probe_error(topic, "metadata", e) };
        let probe = Probe::new(&cfg, Duration::from_millis(timeout_ms)).unwrap_or_else(|e| fail(e));
        let partitions = probe.partitions(topic).unwrap_or_else(|e| fail(e));

        let id = begin::store(Key::KafkaPartitioned { topic }, owner, &prepared, None);

        // Where to start, as consume_begin: an explicit start_offset replaces stored offsets; a
        // new consumer starts at the end of each partition.
        let start = match (start_offset, existing.is_some()) {
            (Some(s), _) => Some(s),
            (None, false) => Some(-1),
            (None, true) => None,
        };
        if let Some(s) = start {
            let next = probe.start_offsets(topic, &partitions, s).unwrap_or_else(|e| fail(e));
            cat::clear_offsets(id);
            cat::save_offsets(id, &next);
        }
        crate::api::budget::notice_if_workers_wait(crate::shmem::SourceKind::Kafka, id);
        wake_at_commit();
        id
    }

    /// Stops the stream-partitioned consumer of `topic` (its offsets are kept; consume_begin()
    /// or consume_begin_stream_partitioned start it again).
    #[pg_extern(volatile, parallel_unsafe)]
    fn consume_end_stream_partitioned(topic: Option<&str>) {
        let c = managed_consumer(required(topic, "topic"));
        consumers::set_enabled(SourceKind::Kafka, c.id, false);
        wake_at_commit();
    }

    /// Removes the stream-partitioned consumer of `topic` with its offsets and dead letters.
    #[pg_extern(volatile, parallel_unsafe)]
    fn consume_drop_stream_partitioned(topic: Option<&str>) {
        let c = managed_consumer(required(topic, "topic"));
        consumers::delete_consumer(SourceKind::Kafka, c.id);
        wake_at_commit();
    }
}
