//! `pipeline_kinesis.*` SQL functions: endpoints and consumers.

use pgrx::prelude::*;

#[pg_schema]
mod pipeline_kinesis {
    use crate::api::consumer_args as args;
    use crate::api::legacy::{transform_text, RegProcArg};
    use crate::api::{begin, wake_at_commit, JsonbArg};
    use crate::catalog::spec::Key;
    use ingest_core::spec::{Args, KinesisStart};
    use crate::catalog::{consumers, kinesis as cat};
    use crate::error::{raise, raise_with, required};
    use crate::shmem::SourceKind;
    use ingest_core::kinesis::read::OutsideShard;
    use ingest_kinesis::{Kinesis, KinesisError};
    use pgrx::datum::TimestampWithTimeZone;
    use pgrx::prelude::*;
    use std::time::Duration;

    /// Adds a Kinesis endpoint: a name for a region (and optionally a credentials file and a
    /// non-AWS URL such as kinesalite's).
    #[pg_extern(volatile, parallel_unsafe)]
    fn add_endpoint(
        name: Option<&str>,
        region: Option<&str>,
        credfile: default!(Option<&str>, "NULL"),
        url: default!(Option<&str>, "NULL"),
    ) {
        let name = crate::error::required(name, "name");
        let region = crate::error::required(region, "region");
        if name.trim().is_empty() {
            raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "endpoint name must not be empty");
        }
        if region.trim().is_empty() {
            raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "region must not be empty");
        }
        if let Some(u) = url {
            if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() <= "https://".len() {
                raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("url \"{u}\" must start with http:// or https://"));
            }
        }
        if let Some(path) = credfile {
            crate::api::credfile::check(path);
        }
        if cat::endpoint_exists(name) {
            raise(PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT, format!("Kinesis endpoint \"{name}\" already exists"));
        }
        cat::insert_endpoint(name, region, credfile, url);
    }

    /// Removes an endpoint that no consumer uses.
    #[pg_extern(volatile, parallel_unsafe)]
    fn remove_endpoint(name: Option<&str>) {
        let name = crate::error::required(name, "name");
        let users = cat::endpoint_users(name);
        if users > 0 {
            crate::error::raise_with(
                PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
                format!("Kinesis endpoint \"{name}\" is used by {users} consumer(s)"),
                None,
                Some("Stop and remove its consumers first.".into()),
            );
        }
        if !cat::delete_endpoint(name) {
            raise(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("Kinesis endpoint \"{name}\" does not exist"));
        }
    }

    /// The consumer's settings object: NULL or a JSON object with the keys retry_max_ms (the cap
    /// of the backoff on throttling and outages, 1000..600000 ms) and kpl_records_outside_shard
    /// ("skip", the default, or "keep": `OutsideShard`). Returned as text to store.
    fn config_arg(config: Option<JsonbArg>) -> String {
        let map = match config.map(|j| j.parse("config")) {
            None | Some(serde_json::Value::Null) => serde_json::Map::new(),
            Some(serde_json::Value::Object(m)) => m,
            Some(_) => raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "config must be a JSON object (or NULL)"),
        };
        for (key, value) in &map {
            match key.as_str() {
                "retry_max_ms" => {
                    if !value.as_i64().is_some_and(|v| (1000..=600_000).contains(&v)) {
                        raise(
                            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                            format!("config retry_max_ms must be an integer from 1000 to 600000 (milliseconds), got {value}"),
                        );
                    }
                }
                OutsideShard::SETTING => {
                    if value.as_str().and_then(OutsideShard::parse).is_none() {
                        raise(
                            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                            format!("config {key} must be \"skip\" or \"keep\", got {value}"),
                        );
                    }
                }
                _ => raise_with(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    format!("unknown Kinesis consumer setting \"{key}\""),
                    None,
                    Some(format!("The settings are retry_max_ms and {}.", OutsideShard::SETTING)),
                ),
            }
        }
        serde_json::Value::Object(map).to_string()
    }

    /// Raises the error of a request to Kinesis made by a SQL function, with the service's own
    /// message (which names no credentials).
    #[track_caller]
    fn raise_kinesis_error(endpoint: &str, stream: &str, e: KinesisError) -> ! {
        let sqlstate = match &e {
            KinesisError::NotFound(_) => raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("Kinesis stream \"{stream}\" does not exist at endpoint \"{endpoint}\""),
            ),
            // Credentials the SDK could not load (an unreadable credfile, none in the default chain).
            KinesisError::Credentials(m) => raise_with(
                PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
                format!("could not load the credentials of Kinesis endpoint \"{endpoint}\": {m}"),
                None,
                Some("Check the endpoint's credfile, or the AWS credentials of the server's environment.".into()),
            ),
            KinesisError::Unavailable(m) => raise_with(
                PgSqlErrorCode::ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
                format!("could not list the shards of Kinesis stream \"{stream}\" at endpoint \"{endpoint}\": {m}"),
                None,
                Some("Check pipeline_kinesis.endpoints and that the endpoint is reachable; pipeline_ingest.broker_timeout sets the time limit.".into()),
            ),
            KinesisError::Interrupted => {
                // A cancel or statement timeout arrived while the call waited: let PostgreSQL raise it.
                pg_sys::check_for_interrupts!();
                PgSqlErrorCode::ERRCODE_QUERY_CANCELED
            }
            KinesisError::Throttled(_) => PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            KinesisError::IteratorExpired(_) => PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
            KinesisError::Refused(m) => {
                // The exception name leads the message ("AccessDeniedException: ...").
                if m.starts_with("AccessDenied") || m.starts_with("KMSAccessDenied") {
                    PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE
                } else if ["UnrecognizedClient", "InvalidSignature", "IncompleteSignature", "MissingAuthenticationToken", "ExpiredToken", "InvalidClientTokenId"]
                    .iter()
                    .any(|p| m.starts_with(p))
                {
                    PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION
                } else if m.starts_with("InvalidArgument") || m.starts_with("ValidationException") || m.starts_with("invalid request") {
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
                } else {
                    PgSqlErrorCode::ERRCODE_SYSTEM_ERROR
                }
            }
        };
        raise(sqlstate, format!("Kinesis refused to list the shards of stream \"{stream}\" at endpoint \"{endpoint}\": {e}"))
    }

    /// consume_begin as 0.3.0 declared it (17 arguments): the symbol stays for databases whose
    /// extension is not updated yet (their SQL function still points at it); no SQL is generated.
    #[allow(clippy::too_many_arguments)]
    #[pg_extern(volatile, parallel_unsafe, sql = false)]
    fn kinesis_consume_begin(
        endpoint: Option<&str>,
        stream: Option<&str>,
        relation: Option<&str>,
        format: Option<&str>,
        delimiter: Option<&str>,
        quote: Option<&str>,
        escape: Option<&str>,
        batchsize: Option<i32>,
        parallelism: Option<i32>,
        start_offset: Option<i32>,
        start_time: Option<TimestampWithTimeZone>,
        timeout: Option<i32>,
        poll_interval: Option<i32>,
        config: Option<JsonbArg>,
        on_error: Option<&str>,
        max_dead_letters: Option<i32>,
        columns: Option<Vec<Option<String>>>,
    ) -> i32 {
        kinesis_consume_begin_v070(
            endpoint, stream, relation, format, delimiter, quote, escape, batchsize, parallelism, start_offset, start_time, timeout,
            poll_interval, config, on_error, max_dead_letters, columns, None, None, None, None, None,
        )
    }

    /// consume_begin as 0.4.0 .. 0.6.0 declared it (transform regprocedure): the symbol stays for
    /// databases whose extension is not updated yet; no SQL is generated.
    #[allow(clippy::too_many_arguments)]
    #[pg_extern(volatile, parallel_unsafe, sql = false)]
    fn kinesis_consume_begin_with_options(
        endpoint: Option<&str>,
        stream: Option<&str>,
        relation: Option<&str>,
        format: Option<&str>,
        delimiter: Option<&str>,
        quote: Option<&str>,
        escape: Option<&str>,
        batchsize: Option<i32>,
        parallelism: Option<i32>,
        start_offset: Option<i32>,
        start_time: Option<TimestampWithTimeZone>,
        timeout: Option<i32>,
        poll_interval: Option<i32>,
        config: Option<JsonbArg>,
        on_error: Option<&str>,
        max_dead_letters: Option<i32>,
        columns: Option<Vec<Option<String>>>,
        metadata: Option<JsonbArg>,
        transform: Option<RegProcArg>,
        mode: Option<&str>,
        key_columns: Option<Vec<Option<String>>>,
        key_format: Option<&str>,
    ) -> i32 {
        let transform = transform_text(transform);
        kinesis_consume_begin_v070(
            endpoint, stream, relation, format, delimiter, quote, escape, batchsize, parallelism, start_offset, start_time, timeout,
            poll_interval, config, on_error, max_dead_letters, columns, metadata, transform.as_deref(), mode, key_columns, key_format,
        )
    }

    /// Starts (or updates and restarts) the consumer of `stream` at `endpoint` into `relation`;
    /// returns its id. start_offset -2 reads every shard from TRIM_HORIZON, -1 from now on
    /// (LATEST), start_time from that time (AT_TIMESTAMP); none of them keeps the stored
    /// positions, or starts a new consumer from now on. A new consumer gets the defaults of the
    /// arguments not given (format 'text', batchsize 10000, parallelism 1, timeout 250,
    /// poll_interval 200, on_error 'dead_letter', mode 'append'); an existing one keeps its
    /// stored settings but for the arguments given (NOTICE).
    // Rust names apart from pipeline_kafka's: pgrx exports each function's wrapper by its Rust name
    // (kinesis_consume_begin is the 0.3.0 symbol, kinesis_consume_begin_with_options the 0.4.0 ..
    // 0.6.0 one: api::legacy).
    #[allow(clippy::too_many_arguments)]
    #[pg_extern(volatile, parallel_unsafe, name = "consume_begin")]
    pub(crate) fn kinesis_consume_begin_v070(
        endpoint: Option<&str>,
        stream: Option<&str>,
        relation: Option<&str>,
        format: default!(Option<&str>, "NULL"),
        delimiter: default!(Option<&str>, "NULL"),
        quote: default!(Option<&str>, "NULL"),
        escape: default!(Option<&str>, "NULL"),
        batchsize: default!(Option<i32>, "NULL"),
        parallelism: default!(Option<i32>, "NULL"),
        start_offset: default!(Option<i32>, "NULL"),
        start_time: default!(Option<TimestampWithTimeZone>, "NULL"),
        timeout: default!(Option<i32>, "NULL"),
        poll_interval: default!(Option<i32>, "NULL"),
        config: default!(Option<JsonbArg>, "NULL"),
        on_error: default!(Option<&str>, "NULL"),
        max_dead_letters: default!(Option<i32>, "NULL"),
        columns: default!(Option<Vec<Option<String>>>, "NULL"),
        metadata: default!(Option<JsonbArg>, "NULL"),
        transform: default!(Option<&str>, "NULL"),
        mode: default!(Option<&str>, "NULL"),
        key_columns: default!(Option<Vec<Option<String>>>, "NULL"),
        key_format: default!(Option<&str>, "NULL"),
    ) -> i32 {
        let endpoint = required(endpoint, "endpoint");
        let stream = required(stream, "stream");
        let relation = required(relation, "relation");
        ingest_core::spec::check_stream(stream).unwrap_or_else(|e| args::raise_spec(e));
        let given = Args {
            batchsize,
            parallelism,
            timeout,
            poll_interval,
            on_error: on_error.map(str::to_string),
            max_dead_letters,
            ..args::row_args(format, delimiter, quote, escape, columns, metadata, transform, mode, key_columns, key_format)
        };
        let start = ingest_core::spec::kinesis_start(start_offset, start_time.map(crate::api::seek::epoch_us))
            .unwrap_or_else(|e| args::raise_spec(e))
            .map(|s| match (s, start_time) {
                (KinesisStart::TrimHorizon, _) => cat::Start::TrimHorizon,
                (KinesisStart::At(_), Some(t)) => cat::Start::At(t),
                _ => cat::Start::Now,
            });
        let config_text = config.map(|c| config_arg(Some(c)));
        let relid = args::resolve_relation(relation);
        // The consumer of this key, or one whose table was dropped and created again under the
        // same name, which the worker did not adopt because its owner changed: a member of the
        // new owner adopts it here, positions included.
        let existing = cat::consumer_by_key(endpoint, stream, relid).or_else(|| {
            let (name, _) = consumers::relation_name_and_owner(relid)?;
            let c = cat::consumers_of_missing_relation(endpoint, stream, &name).into_iter().next()?;
            consumers::set_relation(SourceKind::Kinesis, c.id, relid);
            Some(c)
        });
        // A consumer that changes hands keeps nothing of its old owner's settings: the arguments
        // not given take their defaults.
        let kept = existing.as_ref().filter(|c| begin::same_owner(c.owner, relid)).map(|c| c.id);
        let config_text = config_text.or_else(|| (existing.is_some() && kept.is_none()).then(|| "{}".to_string()));
        let prepared = begin::prepare(SourceKind::Kinesis, kept, given, Some((relid, relation)));
        let owner = prepared.checked.as_ref().map(|c| c.owner).unwrap_or_default();

        let ep = cat::endpoint(endpoint).unwrap_or_else(|| {
            raise_with(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("Kinesis endpoint \"{endpoint}\" does not exist"),
                None,
                Some("A superuser adds one with pipeline_kinesis.add_endpoint(name, region, credfile, url).".into()),
            )
        });
        let timeout_ms = crate::guc::BROKER_TIMEOUT_MS.get().max(100) as u64;
        let client = Kinesis::connect(&ep, Duration::from_millis(timeout_ms))
            .unwrap_or_else(|e| raise_kinesis_error(endpoint, stream, e))
            .interruptible(crate::worker::interrupt_pending);
        client.list_shards(stream).unwrap_or_else(|e| raise_kinesis_error(endpoint, stream, e));

        if let Some(c) = existing.as_ref().filter(|c| c.owner != owner) {
            // Whoever calls (a superuser too), the consumer writes as the table's owner.
            notice!(
                "the consumer of \"{stream}\" into \"{relation}\" now belongs to {}, the owner of the table (it belonged to {})",
                consumers::role_name(owner),
                consumers::role_name(c.owner)
            );
        }
        let id = begin::store(Key::Kinesis { endpoint, stream, relid }, owner, &prepared, config_text.as_deref());
        // A new consumer without a start reads from now on (LATEST as of this call, kept as a
        // time so a worker that starts late or again after a crash skips nothing after it).
        if let Some(start) = start.or_else(|| existing.is_none().then_some(cat::Start::Now)) {
            cat::restart_from(id, start);
        }
        crate::api::budget::notice_if_workers_wait(crate::shmem::SourceKind::Kinesis, id);
        wake_at_commit();
        id
    }

    /// Starts every stored Kinesis consumer of this database that the current user may manage,
    /// from its stored positions. Returns how many were started.
    #[pg_extern(volatile, parallel_unsafe, name = "consume_begin")]
    fn kinesis_consume_begin_all() -> i32 {
        let all = cat::all_consumers().into_iter().map(|c| (c.id, c.owner, c.enabled));
        let started = crate::api::set_all_enabled(SourceKind::Kinesis, all, true);
        crate::api::budget::notice_if_started_workers_wait(started);
        started
    }

    /// Stops the consumer of `stream` at `endpoint` into `relation` (its positions are kept);
    /// also when the relation was dropped.
    #[pg_extern(volatile, parallel_unsafe, name = "consume_end")]
    fn kinesis_consume_end(endpoint: Option<&str>, stream: Option<&str>, relation: Option<&str>) {
        let c = crate::api::named_kinesis_consumer(required(endpoint, "endpoint"), required(stream, "stream"), required(relation, "relation"));
        consumers::set_enabled(SourceKind::Kinesis, c.id, false);
        wake_at_commit();
    }

    /// Removes the consumer of `stream` at `endpoint` into `relation` (also when the relation
    /// was dropped) with its positions and dead letters. Its workers stop.
    #[pg_extern(volatile, parallel_unsafe, name = "consume_drop")]
    fn kinesis_consume_drop(endpoint: Option<&str>, stream: Option<&str>, relation: Option<&str>) {
        let c = crate::api::named_kinesis_consumer(required(endpoint, "endpoint"), required(stream, "stream"), required(relation, "relation"));
        consumers::delete_consumer(SourceKind::Kinesis, c.id);
        wake_at_commit();
    }

    /// Stops every Kinesis consumer of this database that the current user may manage. Returns
    /// how many.
    #[pg_extern(volatile, parallel_unsafe, name = "consume_end")]
    fn kinesis_consume_end_all() -> i32 {
        let all = cat::all_consumers().into_iter().map(|c| (c.id, c.owner, c.enabled));
        crate::api::set_all_enabled(SourceKind::Kinesis, all, false)
    }
}
