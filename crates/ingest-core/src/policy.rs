//! What a consumer does with messages that cannot become rows (`on_error`, `max_dead_letters`),
//! the same for every source.

use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Store each bad message in the dead-letter table, with its raw bytes, in the batch's
    /// transaction, and go on (the default).
    DeadLetter,
    /// Log a WARNING per bad message and go on.
    Skip,
    /// Roll the batch back and stop the consumer with the error.
    Stop,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("on_error must be 'dead_letter', 'skip' or 'stop', got \"{0}\"")]
pub struct UnknownPolicy(pub String);

impl OnError {
    pub fn parse(s: &str) -> Result<OnError, UnknownPolicy> {
        match s {
            "dead_letter" => Ok(OnError::DeadLetter),
            "skip" => Ok(OnError::Skip),
            "stop" => Ok(OnError::Stop),
            other => Err(UnknownPolicy(other.chars().take(100).collect())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OnError::DeadLetter => "dead_letter",
            OnError::Skip => "skip",
            OnError::Stop => "stop",
        }
    }
}

/// What to do with a batch that holds `rejected` bad messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Commit the good rows (and dead letters, with `DeadLetter`).
    Commit,
    /// Roll back and stop the consumer; the reason starts with `summary`'s context.
    Stop(String),
}

/// Applies a consumer's policy to a batch; `summary` describes the bad messages for the error.
pub fn decide(on_error: OnError, max_dead_letters: Option<i32>, rejected: usize, summary: &str) -> Decision {
    if rejected == 0 {
        return Decision::Commit;
    }
    if on_error == OnError::Stop {
        return Decision::Stop(summary.to_string());
    }
    match max_dead_letters {
        Some(max) if rejected > max.max(0) as usize => {
            Decision::Stop(format!("more than max_dead_letters ({max}) in one batch: {summary}"))
        }
        _ => Decision::Commit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_by_their_sql_names() {
        for p in [OnError::DeadLetter, OnError::Skip, OnError::Stop] {
            assert_eq!(OnError::parse(p.name()), Ok(p));
        }
        assert!(OnError::parse("DEAD_LETTER").is_err());
        assert_eq!(OnError::parse("x").unwrap_err().to_string(), "on_error must be 'dead_letter', 'skip' or 'stop', got \"x\"");
    }

    #[test]
    fn decisions_follow_the_policy_and_the_cap() {
        assert_eq!(decide(OnError::Stop, None, 0, "s"), Decision::Commit);
        assert_eq!(decide(OnError::Stop, None, 1, "s"), Decision::Stop("s".into()));
        assert_eq!(decide(OnError::DeadLetter, None, 1000, "s"), Decision::Commit);
        assert_eq!(decide(OnError::DeadLetter, Some(2), 2, "s"), Decision::Commit);
        assert!(matches!(decide(OnError::DeadLetter, Some(2), 3, "s"), Decision::Stop(m) if m.contains("max_dead_letters (2)")));
        assert!(matches!(decide(OnError::Skip, Some(0), 1, "s"), Decision::Stop(_)));
    }
}
