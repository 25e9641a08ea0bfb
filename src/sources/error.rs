//! What a source can fail with, by cause, each cause with the SQLSTATE a SQL function raises it
//! under: callers tell a refused setting from an outage or a missing topic without reading text.
//! The text of each error is the message shown to users (a worker's `last_error`, an ERROR).

use pgrx::PgSqlErrorCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// A client setting was refused, by the extension (a reserved setting, a value of the wrong
    /// type) or by the client library.
    #[error("{0}")]
    Setting(String),
    /// The topic, stream or shard does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The server could not be reached in time, or answered with an error.
    #[error("{0}")]
    Unreachable(String),
    /// The server refused the client: credentials, permissions, a request it will not serve.
    #[error("{0}")]
    Refused(String),
    /// The operating system refused what the worker needs (a pipe, a thread).
    #[error("{0}")]
    System(String),
    /// The client library failed in a way none of the above explains (a bug).
    #[error("{0}")]
    Internal(String),
}

impl SourceError {
    /// The SQLSTATE this error is raised with.
    pub fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            SourceError::Setting(_) => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            SourceError::NotFound(_) => PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            SourceError::Unreachable(_) => PgSqlErrorCode::ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            SourceError::Refused(_) => PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            SourceError::System(_) => PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
            SourceError::Internal(_) => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        }
    }

    /// The same error with what was being done put in front: "`doing`: message".
    pub fn context(self, doing: impl std::fmt::Display) -> SourceError {
        let add = |m: String| format!("{doing}: {m}");
        match self {
            SourceError::Setting(m) => SourceError::Setting(add(m)),
            SourceError::NotFound(m) => SourceError::NotFound(add(m)),
            SourceError::Unreachable(m) => SourceError::Unreachable(add(m)),
            SourceError::Refused(m) => SourceError::Refused(add(m)),
            SourceError::System(m) => SourceError::System(add(m)),
            SourceError::Internal(m) => SourceError::Internal(add(m)),
        }
    }
}

/// The text alone, for callers that keep one text per error (`error::raise`'s message, the
/// producer's connection errors).
impl From<SourceError> for String {
    fn from(e: SourceError) -> String {
        e.to_string()
    }
}

/// A Kinesis call's error by its cause (the text is the call's, unchanged).
impl From<ingest_kinesis::KinesisError> for SourceError {
    fn from(e: ingest_kinesis::KinesisError) -> SourceError {
        use ingest_kinesis::KinesisError as K;
        let text = e.to_string();
        match e {
            K::NotFound(_) => SourceError::NotFound(text),
            K::Credentials(_) | K::Refused(_) => SourceError::Refused(text),
            K::Throttled(_) | K::Unavailable(_) | K::IteratorExpired(_) | K::Interrupted => SourceError::Unreachable(text),
        }
    }
}
