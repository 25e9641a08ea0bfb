//! `pipeline_kafka.*` SQL functions: brokers and consumers.

use pgrx::prelude::*;

#[pg_schema]
mod pipeline_kafka {
    use crate::api::consumer_args as args;
    use crate::api::legacy::{transform_text, RegProcArg};
    use crate::api::{begin, is_superuser, wake_at_commit, JsonbArg};
    use crate::catalog::spec::Key;
    use ingest_core::spec::Args;
    use crate::catalog::{consumers, kafka as cat};
    use crate::shmem::SourceKind;
    use crate::error::{raise, raise_with, required};
    use crate::sources::kafka::{client_config, Probe, ProbeError};
    use pgrx::datum::TimestampWithTimeZone;
    use pgrx::prelude::*;
    use std::time::Duration;

    /// The settings object given to a function (NULL = none); anything else is an error. It is
    /// checked here, before librdkafka sees any of it (creating a client runs commands and reads
    /// files named in settings): sizes, settings the extension manages, and, unless
    /// `any_setting`, the allow-list for roles that are not superusers (SQLSTATE 42501).
    fn settings_arg(config: Option<JsonbArg>, any_setting: bool) -> serde_json::Map<String, serde_json::Value> {
        let map = match config.map(|j| j.parse("config")) {
            None | Some(serde_json::Value::Null) => serde_json::Map::new(),
            Some(serde_json::Value::Object(m)) => m,
            Some(_) => raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "config must be a JSON object of librdkafka settings"),
        };
        if let Err(e) = ingest_core::settings::check(&map, any_setting) {
            if e.is_privilege() {
                raise_with(
                    PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                    e.to_string(),
                    None,
                    Some("Roles that are not superusers may give only the client tuning settings listed in README.md (Settings, \"Client settings\"); settings that run commands, load code or read files are for superusers.".into()),
                );
            }
            raise_with(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.to_string(), None, e.hint().map(str::to_string));
        }
        map
    }

    /// Broker entries apply to every consumer: restart their workers (at COMMIT) so they use the
    /// new list and settings.
    fn restart_consumers_at_commit() {
        cat::bump_all_generations();
        wake_at_commit();
    }

    /// Adds a Kafka broker (`host[:port]`, port 9092 by default) that consumers and the producer
    /// connect to, with optional librdkafka settings for it (e.g. security.protocol, sasl.*, ssl.*);
    /// secret settings are stored apart and shown masked.
    #[pg_extern(volatile, parallel_unsafe)]
    fn add_broker(hostname: Option<&str>, config: default!(Option<JsonbArg>, "NULL")) {
        let hostname = required(hostname, "hostname");
        if let Err(e) = ingest_core::broker::parse_broker(hostname) {
            raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.to_string());
        }
        // Broker management is granted by a superuser, but settings that run commands or read
        // files stay superuser-only there too.
        let settings = settings_arg(config, is_superuser());
        let cfg = client_config(&[hostname.to_string()], &[&settings])
            .unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e));
        if let Err(e) = crate::sources::kafka::check_settings(&cfg) {
            raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("invalid Kafka client setting: {e}"));
        }
        if cat::broker_exists(hostname) {
            raise(PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT, format!("Kafka broker \"{hostname}\" already exists"));
        }
        let (shown, secrets) = ingest_core::settings::split_secrets(&settings);
        cat::insert_broker(hostname, &serde_json::Value::Object(shown).to_string(), &secrets);
        restart_consumers_at_commit();
    }

    /// Removes a Kafka broker.
    #[pg_extern(volatile, parallel_unsafe)]
    fn remove_broker(hostname: Option<&str>) {
        let hostname = required(hostname, "hostname");
        if !cat::delete_broker(hostname) {
            raise(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("Kafka broker \"{hostname}\" does not exist"));
        }
        restart_consumers_at_commit();
    }

    #[track_caller]
    fn probe_error(topic: &str, e: ProbeError) -> ! {
        crate::api::raise_probe_error(topic, "metadata", e)
    }

    /// consume_begin as 0.3.0 declared it (16 arguments): the symbol stays for databases whose
    /// extension is not updated yet (their SQL function still points at it); no SQL is generated.
    #[allow(clippy::too_many_arguments)]
    #[pg_extern(volatile, parallel_unsafe, sql = false)]
    fn consume_begin(
        topic: Option<&str>,
        relation: Option<&str>,
        format: Option<&str>,
        delimiter: Option<&str>,
        quote: Option<&str>,
        escape: Option<&str>,
        batchsize: Option<i32>,
        maxbytes: Option<i32>,
        parallelism: Option<i32>,
        start_offset: Option<i64>,
        timeout: Option<i32>,
        group_id: Option<&str>,
        config: Option<JsonbArg>,
        on_error: Option<&str>,
        max_dead_letters: Option<i32>,
        columns: Option<Vec<Option<String>>>,
    ) -> i32 {
        kafka_consume_begin_v070(
            topic, relation, format, delimiter, quote, escape, batchsize, maxbytes, parallelism, start_offset, timeout, group_id,
            config, on_error, max_dead_letters, columns, None, None, None, None, None, None,
        )
    }

    /// consume_begin as 0.4.0 .. 0.6.0 declared it (transform regprocedure): the symbol stays for
    /// databases whose extension is not updated yet; no SQL is generated.
    #[allow(clippy::too_many_arguments)]
    #[pg_extern(volatile, parallel_unsafe, sql = false)]
    fn kafka_consume_begin(
        topic: Option<&str>,
        relation: Option<&str>,
        format: Option<&str>,
        delimiter: Option<&str>,
        quote: Option<&str>,
        escape: Option<&str>,
        batchsize: Option<i32>,
        maxbytes: Option<i32>,
        parallelism: Option<i32>,
        start_offset: Option<i64>,
        timeout: Option<i32>,
        group_id: Option<&str>,
        config: Option<JsonbArg>,
        on_error: Option<&str>,
        max_dead_letters: Option<i32>,
        columns: Option<Vec<Option<String>>>,
        metadata: Option<JsonbArg>,
        transform: Option<RegProcArg>,
        mode: Option<&str>,
        key_columns: Option<Vec<Option<String>>>,
        key_format: Option<&str>,
        start_time: Option<TimestampWithTimeZone>,
    ) -> i32 {
        let transform = transform_text(transform);
        kafka_consume_begin_v070(
            topic, relation, format, delimiter, quote, escape, batchsize, maxbytes, parallelism, start_offset, timeout, group_id,
            config, on_error, max_dead_letters, columns, metadata, transform.as_deref(), mode, key_columns, key_format, start_time,
        )
    }

    /// Starts (or updates and restarts) the consumer of `topic` into `relation`; returns its id.
    /// A new consumer gets the defaults of the arguments not given (format 'text', batchsize
    /// 100000, maxbytes 32000000, parallelism 1, timeout 250, on_error 'dead_letter', mode
    /// 'append'); an existing one keeps its stored settings but for the arguments given (NOTICE).
    // Its own Rust name (symbol): the 0.3.0 one (consume_begin above) keeps its 16 arguments, the
    // 0.4.0 .. 0.6.0 one (kafka_consume_begin, api::legacy) its regprocedure transform.
    #[allow(clippy::too_many_arguments)]
    #[pg_extern(volatile, parallel_unsafe, name = "consume_begin")]
    pub(crate) fn kafka_consume_begin_v070(
        topic: Option<&str>,
        relation: Option<&str>,
        format: default!(Option<&str>, "NULL"),
        delimiter: default!(Option<&str>, "NULL"),
        quote: default!(Option<&str>, "NULL"),
        escape: default!(Option<&str>, "NULL"),
        batchsize: default!(Option<i32>, "NULL"),
        maxbytes: default!(Option<i32>, "NULL"),
        parallelism: default!(Option<i32>, "NULL"),
        start_offset: default!(Option<i64>, "NULL"),
        timeout: default!(Option<i32>, "NULL"),
        group_id: default!(Option<&str>, "NULL"),
        config: default!(Option<JsonbArg>, "NULL"),
        on_error: default!(Option<&str>, "NULL"),
        max_dead_letters: default!(Option<i32>, "NULL"),
        columns: default!(Option<Vec<Option<String>>>, "NULL"),
        metadata: default!(Option<JsonbArg>, "NULL"),
        transform: default!(Option<&str>, "NULL"),
        mode: default!(Option<&str>, "NULL"),
        key_columns: default!(Option<Vec<Option<String>>>, "NULL"),
        key_format: default!(Option<&str>, "NULL"),
        start_time: default!(Option<TimestampWithTimeZone>, "NULL"),
    ) -> i32 {
        let topic = required(topic, "topic");
        let relation = required(relation, "relation");
        if let Err(e) = ingest_core::broker::check_topic(topic) {
            raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.to_string());
        }
        let given = Args {
            batchsize,
            maxbytes,
            parallelism,
            timeout,
            on_error: on_error.map(str::to_string),
            max_dead_letters,
            group_id: group_id.map(str::to_string),
            ..args::row_args(format, delimiter, quote, escape, columns, metadata, transform, mode, key_columns, key_format)
        };
        ingest_core::spec::check_kafka_start(start_offset, start_time.is_some()).unwrap_or_else(|e| args::raise_spec(e));
        // The caller's own rights decide: a superuser may give any setting (but the reserved ones).
        let config_by_superuser = is_superuser();
        let extra = config.map(|c| settings_arg(Some(c), config_by_superuser));
        let relid = args::resolve_relation(relation);
        // The consumer of this pair, or one whose table was dropped and created again under the
        // same name, which the worker did not adopt because its owner changed: a member of the
        // new owner adopts it here, offsets included.
        let existing = cat::consumer_by_key(topic, relid).or_else(|| {
            let (name, _) = consumers::relation_name_and_owner(relid)?;
            let c = cat::consumers_of_missing_relation(topic, &name).into_iter().next()?;
            consumers::set_relation(SourceKind::Kafka, c.id, relid);
            Some(c)
        });
        // A consumer that changes hands keeps nothing of its old owner's settings (its client
        // settings and secrets least of all): the arguments not given take their defaults.
        let kept = existing.as_ref().filter(|c| begin::same_owner(c.owner, relid)).map(|c| c.id);
        let extra = extra.or_else(|| (existing.is_some() && kept.is_none()).then(serde_json::Map::new));
        let prepared = begin::prepare(SourceKind::Kafka, kept, given, Some((relid, relation)));
        let owner = prepared.checked.as_ref().map(|c| c.owner).unwrap_or_default();
        // Range-checked before anything is stored (22023 / 22008).
        start_time.map(crate::api::seek::epoch_us);

        let (brokers, broker_config) = cat::brokers();
        if brokers.is_empty() {
            raise_with(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "no Kafka broker is configured",
                None,
                Some("Add one with pipeline_kafka.add_broker('host:port').".into()),
            );
        }
        // The consumer's settings: those given, else those stored (secrets included).
        let consumer_config = extra.clone().or_else(|| existing.as_ref().map(|c| c.settings.config.clone())).unwrap_or_default();
        let mut cfg = client_config(&brokers, &[&broker_config, &consumer_config])
            .unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e));
        if let Some(g) = &prepared.spec.group_id {
            cfg.set("group.id", g);
        }
        let timeout_ms = crate::guc::BROKER_TIMEOUT_MS.get().max(100) as u64;
        let probe = Probe::new(&cfg, Duration::from_millis(timeout_ms)).unwrap_or_else(|e| probe_error(topic, e));
        let partitions = probe.partitions(topic).unwrap_or_else(|e| probe_error(topic, e));

        if let Some(c) = existing.as_ref().filter(|c| c.owner != owner) {
            // Whoever calls (a superuser too), the consumer writes as the table's owner.
            notice!(
                "the consumer of \"{topic}\" into \"{relation}\" now belongs to {}, the owner of the table (it belonged to {})",
                consumers::role_name(owner),
                consumers::role_name(c.owner)
            );
        }
        let split = extra.as_ref().map(ingest_core::settings::split_secrets);
        let config_text = split.as_ref().map(|(shown, _)| serde_json::Value::Object(shown.clone()).to_string());
        let id = begin::store(Key::Kafka { topic, relid }, owner, &prepared, config_text.as_deref());
        if let Some((_, secrets)) = &split {
            cat::set_config_by_superuser(id, config_by_superuser);
            cat::set_consumer_secrets(id, secrets);
        }
        // start_time is kept unless a start is given: start_offset clears it.
        if consumers::has_features_schema(SourceKind::Kafka) {
            if start_time.is_some() || start_offset.is_some() {
                cat::set_start_time(id, start_time);
            }
        } else if start_time.is_some() {
            raise(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "start_time needs the extension's 0.4.0 schema (ALTER EXTENSION pipeline_ingest UPDATE)");
        }

        // Where to start: an explicit start_offset replaces stored offsets; a new consumer with
        // none starts at the end of each partition. Partitions created later start at their beginning
        // (or by start_time).
        let start = match (start_offset, existing.is_some()) {
            (Some(s), _) => Some(s),
            (None, _) if start_time.is_some() => None,
            (None, false) => Some(-1),
            (None, true) => None,
        };
        // start_time: every partition at its first message stamped at or after it (its end when
        // none is), stored like start_offset; partitions created later the worker finds by time.
        if let Some(t) = start_time {
            let time_ms = crate::sources::kafka::time_ms_from_us(crate::api::seek::epoch_us(t));
            let next = probe.offsets_for_time(topic, &partitions, time_ms).unwrap_or_else(|e| probe_error(topic, e));
            cat::clear_offsets(id);
            cat::save_offsets(id, &next);
        }
        if let Some(s) = start {
            let next = probe.start_offsets(topic, &partitions, s).unwrap_or_else(|e| probe_error(topic, e));
            cat::clear_offsets(id);
            cat::save_offsets(id, &next);
        }
        crate::api::budget::notice_if_workers_wait(crate::shmem::SourceKind::Kafka, id);
        wake_at_commit();
        id
    }

    /// Starts every stored consumer of this database that the current user may manage, from its
    /// stored offsets. Returns how many were started.
    #[pg_extern(volatile, parallel_unsafe, name = "consume_begin")]
    fn consume_begin_all() -> i32 {
        let all = cat::all_consumers().into_iter().map(|c| (c.id, c.owner, c.enabled));
        let started = crate::api::set_all_enabled(SourceKind::Kafka, all, true);
        crate::api::budget::notice_if_started_workers_wait(started);
        started
    }

    /// Stops the consumer of `topic` into `relation` (its offsets are kept); also when the
    /// relation was dropped.
    #[pg_extern(volatile, parallel_unsafe)]
    fn consume_end(topic: Option<&str>, relation: Option<&str>) {
        let c = crate::api::named_kafka_consumer(required(topic, "topic"), required(relation, "relation"));
        consumers::set_enabled(SourceKind::Kafka, c.id, false);
        wake_at_commit();
    }

    /// Removes the consumer of `topic` into `relation` (also when the relation was dropped) with
    /// its offsets, secret settings and dead letters. Its workers stop.
    #[pg_extern(volatile, parallel_unsafe)]
    fn consume_drop(topic: Option<&str>, relation: Option<&str>) {
        let c = crate::api::named_kafka_consumer(required(topic, "topic"), required(relation, "relation"));
        consumers::delete_consumer(SourceKind::Kafka, c.id);
        wake_at_commit();
    }

    /// Stops every consumer of this database that the current user may manage. Returns how many.
    #[pg_extern(volatile, parallel_unsafe, name = "consume_end")]
    fn consume_end_all() -> i32 {
        let all = cat::all_consumers().into_iter().map(|c| (c.id, c.owner, c.enabled));
        crate::api::set_all_enabled(SourceKind::Kafka, all, false)
    }
}
