//! AWS Kinesis Data Streams through the AWS SDK, for consumer workers and SQL functions, without
//! PostgreSQL: list a stream's shards (paginated), take shard iterators from a checkpoint, read
//! records, and say what to do when a call fails (retry with backoff, take a new iterator from
//! the checkpoint, or give up with an error a user can act on).
//!
//! The SDK is asynchronous; every call here runs to completion on a current-thread tokio runtime
//! owned by the caller's thread, within a time limit, so a PostgreSQL worker stays single-threaded
//! in everything it sees and can check its interrupts between calls.

mod records;

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::ShardIteratorType;
use ingest_core::kinesis::lineage::Shard;
use ingest_core::kinesis::seqnum::SeqNum;
use std::time::Duration;
use thiserror::Error;

/// Where a Kinesis endpoint is and how to sign in (pipeline_kinesis.endpoints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub region: String,
    /// A non-AWS endpoint (kinesalite, LocalStack), e.g. http://127.0.0.1:4567.
    pub url: Option<String>,
    /// A shared credentials file to take the credentials from (default profile), instead of the
    /// SDK's default chain.
    pub credfile: Option<String>,
}

/// What a failed call means for the caller.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KinesisError {
    /// Throttling (ProvisionedThroughputExceeded, LimitExceeded, KMS throttling): retry later
    /// with exponential backoff and jitter, never skipping anything.
    #[error("Kinesis is throttling: {0}")]
    Throttled(String),
    /// The endpoint did not answer (connection refused, timeout, 5xx): retry with backoff.
    #[error("Kinesis endpoint unreachable: {0}")]
    Unavailable(String),
    /// The shard iterator expired (not used within 5 minutes): take a new one from the checkpoint.
    #[error("the shard iterator expired: {0}")]
    IteratorExpired(String),
    /// The stream or shard does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The caller's interrupt check said stop while the call waited (see `Kinesis::interruptible`).
    #[error("interrupted")]
    Interrupted,
    /// The SDK could not load credentials (an unreadable credentials file, none in the default
    /// chain): a user must fix them; retried with backoff meanwhile.
    #[error("could not load AWS credentials: {0}")]
    Credentials(String),
    /// Credentials, permissions, KMS key problems or a request Kinesis refused: a user must act;
    /// retried with backoff, shown as the consumer's error.
    #[error("{0}")]
    Refused(String),
}

/// What a reader does after a failed call on a shard. Every path reads on from the last record
/// taken: nothing is skipped, nothing read twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Throttled: wait (exponential backoff with jitter), then call again with the same iterator.
    Backoff,
    /// The iterator expired: take a new one from the last record taken, at once.
    Retake,
    /// An outage or a refused call: wait, then take a new iterator from the last record taken (the
    /// old one may be unknown to a restarted endpoint, or expire meanwhile).
    BackoffRetake,
    /// The shard or stream is gone: wait, list the shards again, and take a new iterator.
    Relist,
}

impl KinesisError {
    /// Whether waiting and trying the same call again can help.
    pub fn is_transient(&self) -> bool {
        matches!(self, KinesisError::Throttled(_) | KinesisError::Unavailable(_))
    }

    /// How a shard reader recovers from this error.
    pub fn recovery(&self) -> Recovery {
        match self {
            KinesisError::Throttled(_) | KinesisError::Interrupted => Recovery::Backoff,
            KinesisError::IteratorExpired(_) => Recovery::Retake,
            KinesisError::Unavailable(_) | KinesisError::Refused(_) | KinesisError::Credentials(_) => Recovery::BackoffRetake,
            KinesisError::NotFound(_) => Recovery::Relist,
        }
    }
}

/// Classifies a service error by its code (the exception name), as Kinesis documents them.
pub fn classify_code(code: Option<&str>, message: &str) -> KinesisError {
    let text = match code {
        Some(c) if !message.is_empty() => format!("{c}: {message}"),
        Some(c) => c.to_string(),
        None => message.to_string(),
    };
    match code.unwrap_or("") {
        "ProvisionedThroughputExceededException" | "LimitExceededException" | "KMSThrottlingException"
        | "ThrottlingException" | "RequestLimitExceeded" => KinesisError::Throttled(text),
        "ExpiredIteratorException" => KinesisError::IteratorExpired(text),
        "ResourceNotFoundException" => KinesisError::NotFound(text),
        "InternalFailure" | "InternalFailureException" | "ServiceUnavailable" | "ServiceUnavailableException" => {
            KinesisError::Unavailable(text)
        }
        _ => KinesisError::Refused(text),
    }
}

/// The exception an operation's error stands for, from its variant (errors built by the SDK's
/// deserializer also carry the name as their code; this holds for every error value).
pub trait Exception {
    fn exception(&self) -> Option<&'static str>;
}

macro_rules! exceptions {
    ($t:ty: $($is:ident => $name:literal),* $(,)?) => {
        impl Exception for $t {
            fn exception(&self) -> Option<&'static str> {
                $(if self.$is() { return Some($name); })*
                None
            }
        }
    };
}

exceptions!(aws_sdk_kinesis::operation::get_records::GetRecordsError:
    is_provisioned_throughput_exceeded_exception => "ProvisionedThroughputExceededException",
    is_kms_throttling_exception => "KMSThrottlingException",
    is_expired_iterator_exception => "ExpiredIteratorException",
    is_resource_not_found_exception => "ResourceNotFoundException",
    is_internal_failure_exception => "InternalFailureException",
);
exceptions!(aws_sdk_kinesis::operation::get_shard_iterator::GetShardIteratorError:
    is_provisioned_throughput_exceeded_exception => "ProvisionedThroughputExceededException",
    is_resource_not_found_exception => "ResourceNotFoundException",
    is_internal_failure_exception => "InternalFailureException",
);
exceptions!(aws_sdk_kinesis::operation::list_shards::ListShardsError:
    is_limit_exceeded_exception => "LimitExceededException",
    is_resource_not_found_exception => "ResourceNotFoundException",
);

/// Classifies one operation error: by its variant, else by the code it carries.
pub fn classify_service<E: ProvideErrorMetadata + Exception + std::fmt::Display>(e: &E) -> KinesisError {
    let code = e.exception().or(e.code());
    match e.message() {
        Some(m) => classify_code(code, m),
        // The variant's own text ("Exception: message") when no metadata came with it.
        None => {
            let mut k = classify_code(code, "");
            let text = e.to_string();
            match &mut k {
                KinesisError::Throttled(t) | KinesisError::Unavailable(t) | KinesisError::IteratorExpired(t)
                | KinesisError::NotFound(t) | KinesisError::Refused(t) | KinesisError::Credentials(t) => *t = text,
                KinesisError::Interrupted => {}
            }
            k
        }
    }
}

/// Classifies any SDK error: service errors by exception, transport failures and timeouts as
/// unavailable, a request that could not even be built as refused.
pub fn classify<E, R>(e: &SdkError<E, R>) -> KinesisError
where
    E: ProvideErrorMetadata + Exception + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    match e {
        SdkError::ServiceError(s) => classify_service(s.err()),
        SdkError::TimeoutError(_) => KinesisError::Unavailable("request timed out".to_string()),
        SdkError::DispatchFailure(d) => {
            // Credentials are resolved while the request is dispatched: their failure comes as a
            // dispatch failure whose source names the credentials provider's error.
            // (named only in its Debug form).
            let text = describe(e);
            if ["CredentialsNotLoaded", "InvalidConfiguration", "ProviderError"].iter().any(|k| format!("{d:?}").contains(k)) {
                KinesisError::Credentials(text)
            } else {
                KinesisError::Unavailable(text)
            }
        }
        SdkError::ResponseError(_) => KinesisError::Unavailable(describe(e)),
        SdkError::ConstructionFailure(_) => KinesisError::Refused(describe(e)),
        _ => KinesisError::Refused(describe(e)),
    }
}

/// An error with its sources on one line, e.g. "dispatch failure: io error: tcp connect error:
/// Connection refused (os error 111)" (the SDK's own Display says only "dispatch failure"; its
/// Debug form is a long struct dump).
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ").chars().take(500).collect()
}

pub use ingest_core::kinesis::read::StartAt;

/// A record as GetRecords returns it (not yet de-aggregated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub seq: SeqNum,
    pub partition_key: String,
    pub data: Vec<u8>,
    /// ApproximateArrivalTimestamp, in milliseconds since the epoch.
    pub arrival_ms: Option<i64>,
}

/// The answer to one GetRecords call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub records: Vec<RawRecord>,
    /// None: the shard is closed and read to its end (SHARD_END).
    pub next_iterator: Option<String>,
    pub millis_behind_latest: Option<i64>,
}

/// A Kinesis client bound to the calling thread.
pub struct Kinesis {
    runtime: tokio::runtime::Runtime,
    client: aws_sdk_kinesis::Client,
    timeout: Duration,
    /// Asked every 100 ms while a call waits: true abandons the call with `Interrupted` (a
    /// PostgreSQL backend passes "an interrupt is pending": a cancel, a statement timeout, a
    /// terminate).
    interrupted: Option<fn() -> bool>,
    /// Takes GetRecords' answers from the SDK before it deserializes them (`records`).
    take_body: records::TakeBody,
    /// The last GetRecords answer's bytes (kept: its capacity serves the next answer).
    answer: std::cell::RefCell<Vec<u8>>,
}

impl Kinesis {
    /// Builds a client; `timeout` bounds every call.
    pub fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Kinesis, KinesisError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| KinesisError::Refused(format!("could not start the Kinesis client runtime: {e}")))?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(endpoint.region.clone()));
        if let Some(url) = &endpoint.url {
            loader = loader.endpoint_url(url.clone());
        }
        if let Some(path) = &endpoint.credfile {
            let files = aws_runtime::env_config::file::EnvConfigFiles::builder()
                .with_file(aws_runtime::env_config::file::EnvConfigFileKind::Credentials, path)
                .build();
            let provider = aws_config::profile::ProfileFileCredentialsProvider::builder().profile_files(files).build();
            loader = loader.credentials_provider(provider);
        }
        let config = runtime.block_on(loader.load());
        Ok(Kinesis {
            runtime,
            client: aws_sdk_kinesis::Client::new(&config),
            timeout,
            interrupted: None,
            take_body: records::TakeBody::default(),
            answer: std::cell::RefCell::new(Vec::new()),
        })
    }

    /// Makes every call of this client give up with `KinesisError::Interrupted` within 100 ms of
    /// `check` returning true.
    pub fn interruptible(mut self, check: fn() -> bool) -> Kinesis {
        self.interrupted = Some(check);
        self
    }

    fn run<T>(&self, f: impl std::future::Future<Output = Result<T, KinesisError>>) -> Result<T, KinesisError> {
        let limit = self.timeout;
        let check = self.interrupted;
        self.runtime.block_on(async move {
            let mut f = std::pin::pin!(f);
            let started = std::time::Instant::now();
            loop {
                let left = limit.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Err(KinesisError::Unavailable(format!("no answer within {} ms", limit.as_millis())));
                }
                let slice = if check.is_some() { left.min(Duration::from_millis(100)) } else { left };
                if let Ok(result) = tokio::time::timeout(slice, f.as_mut()).await {
                    return result;
                }
                if check.is_some_and(|c| c()) {
                    return Err(KinesisError::Interrupted);
                }
            }
        })
    }

    /// Every shard of a stream (open and closed ones still within retention), following pages.
    pub fn list_shards(&self, stream: &str) -> Result<Vec<Shard>, KinesisError> {
        self.run(async {
            let mut out = Vec::new();
            let mut token: Option<String> = None;
            loop {
                // The first page names the stream; later pages only the token (the API refuses both).
                let req = match &token {
                    None => self.client.list_shards().stream_name(stream),
                    Some(t) => self.client.list_shards().next_token(t),
                };
                let page = req.send().await.map_err(|e| classify(&e))?;
                for s in page.shards() {
                    let range = s.hash_key_range();
                    let parse = |v: Option<&str>, default: u128| v.and_then(|x| x.parse::<u128>().ok()).unwrap_or(default);
                    out.push(Shard {
                        id: s.shard_id().to_string(),
                        parent: s.parent_shard_id().map(str::to_string),
                        adjacent_parent: s.adjacent_parent_shard_id().map(str::to_string),
                        hash_range: (
                            parse(range.map(|r| r.starting_hash_key()), 0),
                            parse(range.map(|r| r.ending_hash_key()), u128::MAX),
                        ),
                        closed: s.sequence_number_range().and_then(|r| r.ending_sequence_number()).is_some(),
                    });
                }
                match page.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_string()),
                    _ => break,
                }
            }
            Ok(out)
        })
    }

    /// A shard iterator at `start`.
    pub fn iterator(&self, stream: &str, shard: &str, start: &StartAt) -> Result<String, KinesisError> {
        self.run(async {
            let mut req = self.client.get_shard_iterator().stream_name(stream).shard_id(shard);
            req = match start {
                StartAt::TrimHorizon => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
                StartAt::Latest => req.shard_iterator_type(ShardIteratorType::Latest),
                StartAt::AtTimestamp(t) => req
                    .shard_iterator_type(ShardIteratorType::AtTimestamp)
                    .timestamp(aws_sdk_kinesis::primitives::DateTime::from(*t)),
                StartAt::AtSequence(s) => {
                    req.shard_iterator_type(ShardIteratorType::AtSequenceNumber).starting_sequence_number(s.as_str())
                }
                StartAt::AfterSequence(s) => {
                    req.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).starting_sequence_number(s.as_str())
                }
            };
            let out = req.send().await.map_err(|e| classify(&e))?;
            out.shard_iterator()
                .map(str::to_string)
                .ok_or_else(|| KinesisError::NotFound(format!("no iterator for shard {shard} (closed and read?)")))
        })
    }

    /// Up to `limit` records (1..=10,000) from an iterator. The SDK makes the call; its answer
    /// is read by `records::parse` (the SDK's deserializer only sees an empty answer).
    pub fn get_records(&self, iterator: &str, limit: i32) -> Result<Fetched, KinesisError> {
        drop(self.take_body.take());
        self.run(async {
            let out = self
                .client
                .get_records()
                .shard_iterator(iterator)
                .limit(limit.clamp(1, 10_000))
                .customize()
                .interceptor(self.take_body.clone())
                .send()
                .await
                .map_err(|e| classify(&e))?;
            match self.take_body.take() {
                Some(body) => {
                    // (taken out of its cell while the body is read, put back for the next answer)
                    let mut answer = self.answer.take();
                    let fetched = records::read_body(body, &mut answer).await.and_then(|()| records::parse(&answer));
                    self.answer.replace(answer);
                    fetched
                }
                // (not taken: the SDK read it)
                None => from_sdk(&out),
            }
        })
    }

    /// `get_records` with the SDK's own deserializer (what it did before `records`): the
    /// reference its differential tests compare with.
    #[doc(hidden)]
    pub fn get_records_sdk(&self, iterator: &str, limit: i32) -> Result<Fetched, KinesisError> {
        self.run(async {
            let out = self
                .client
                .get_records()
                .shard_iterator(iterator)
                .limit(limit.clamp(1, 10_000))
                .send()
                .await
                .map_err(|e| classify(&e))?;
            from_sdk(&out)
        })
    }
}

/// Records from the SDK's deserialized answer.
fn from_sdk(out: &aws_sdk_kinesis::operation::get_records::GetRecordsOutput) -> Result<Fetched, KinesisError> {
    let mut records = Vec::with_capacity(out.records().len());
    for r in out.records() {
        let seq =
            SeqNum::parse(r.sequence_number()).map_err(|e| KinesisError::Refused(format!("Kinesis returned a bad sequence number: {e}")))?;
        records.push(RawRecord {
            seq,
            partition_key: r.partition_key().unwrap_or("").to_string(),
            data: r.data().as_ref().to_vec(),
            arrival_ms: r.approximate_arrival_timestamp().and_then(|t| t.to_millis().ok()),
        });
    }
    Ok(Fetched { records, next_iterator: out.next_shard_iterator().map(str::to_string), millis_behind_latest: out.millis_behind_latest() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::operation::get_records::GetRecordsError;
    use aws_sdk_kinesis::types::error::{ExpiredIteratorException, KmsThrottlingException, ProvisionedThroughputExceededException};

    #[test]
    fn service_errors_are_classified_by_their_exception() {
        let throttled = GetRecordsError::ProvisionedThroughputExceededException(
            ProvisionedThroughputExceededException::builder().message("Rate exceeded for shard").build(),
        );
        let e = classify_service(&throttled);
        assert!(matches!(e, KinesisError::Throttled(ref m) if m.contains("Rate exceeded")), "{e:?}");
        assert!(e.is_transient());

        let kms = GetRecordsError::KmsThrottlingException(KmsThrottlingException::builder().message("slow down").build());
        assert!(matches!(classify_service(&kms), KinesisError::Throttled(_)));

        let expired = GetRecordsError::ExpiredIteratorException(ExpiredIteratorException::builder().message("old").build());
        let e = classify_service(&expired);
        assert!(matches!(e, KinesisError::IteratorExpired(_)), "{e:?}");
        assert!(!e.is_transient(), "an expired iterator is re-taken from the checkpoint, not retried as is");
        assert_eq!(e.recovery(), Recovery::Retake);
        assert_eq!(classify_service(&throttled).recovery(), Recovery::Backoff);
        assert_eq!(classify_code(Some("ResourceNotFoundException"), "gone").recovery(), Recovery::Relist);
        assert_eq!(classify_code(Some("AccessDeniedException"), "no").recovery(), Recovery::BackoffRetake);
        assert_eq!(classify_code(Some("InvalidArgumentException"), "bad iterator").recovery(), Recovery::BackoffRetake);
        assert_eq!(classify_code(Some("InternalFailure"), "").recovery(), Recovery::BackoffRetake);

        let limited = aws_sdk_kinesis::operation::list_shards::ListShardsError::LimitExceededException(
            aws_sdk_kinesis::types::error::LimitExceededException::builder().message("too many").build(),
        );
        assert!(matches!(classify_service(&limited), KinesisError::Throttled(_)));
        assert!(matches!(classify_code(Some("ResourceNotFoundException"), "no stream"), KinesisError::NotFound(_)));
        assert!(matches!(classify_code(Some("AccessDeniedException"), ""), KinesisError::Refused(_)));
        assert!(matches!(classify_code(Some("InternalFailure"), ""), KinesisError::Unavailable(_)));
    }

    #[test]
    fn calls_give_up_when_the_interrupt_check_says_so() {
        // An endpoint that accepts connections and never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let ep = Endpoint { region: "us-east-1".into(), url: Some(format!("http://127.0.0.1:{port}")), credfile: None };
        let k = Kinesis::connect(&ep, Duration::from_secs(30))
            .unwrap()
            .interruptible(|| STOP.load(std::sync::atomic::Ordering::SeqCst));
        let stopper = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            STOP.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let t0 = std::time::Instant::now();
        let e = k.list_shards("anything").unwrap_err();
        stopper.join().unwrap();
        assert_eq!(e, KinesisError::Interrupted);
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "took {took:?}");
        drop(listener);
    }

    #[test]
    fn unreachable_endpoints_are_transient_errors_within_the_time_limit() {
        // A port on 127.0.0.1 where nothing listens: refused at once, or timed out within the limit.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        let ep = Endpoint { region: "us-east-1".into(), url: Some(format!("http://127.0.0.1:{port}")), credfile: None };
        let k = Kinesis::connect(&ep, Duration::from_secs(3)).unwrap();
        let t0 = std::time::Instant::now();
        let e = k.list_shards("nothing").unwrap_err();
        assert!(e.is_transient(), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(10), "took {:?}", t0.elapsed());
        // one readable line naming the cause, not the SDK's struct dump
        let text = e.to_string();
        assert!(text.contains("refused") || text.contains("timed out"), "{text}");
        assert!(!text.contains("DispatchFailure {"), "{text}");
    }
}
