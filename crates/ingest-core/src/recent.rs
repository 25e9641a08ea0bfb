//! What one stream of a consumer did lately, kept per stream in shared memory by its worker after
//! every committed batch: rows per second over the last minute, and the run of batches that were
//! all or mostly dead letters (consumer_status shows both). Plain old data, fixed size.

/// A run of dead letters is shown once it holds this many messages (fewer could be a slow stream
/// with one bad message).
pub const MIN_RUN_MESSAGES: i64 = 10;

/// A batch counts as "mostly dead letters" when at least this share of its messages (in percent)
/// became dead letters.
pub const MOSTLY_PERCENT: i64 = 90;

/// The rate is counted in buckets of this many microseconds; `BUCKETS` of them make the minute.
const BUCKET_US: i64 = 10_000_000;
const BUCKETS: usize = 6;

/// Counters of one stream (times are microseconds on any fixed clock, e.g. TimestampTz).
#[derive(Copy, Clone, Default, Debug, PartialEq, Eq)]
pub struct Recent {
    /// Which bucket (time / BUCKET_US) each slot of `rows` counts, and its rows.
    bucket: [i64; BUCKETS],
    rows: [i64; BUCKETS],
    /// The first batch recorded (0: none yet): a rate over less than a minute is over this span.
    since: i64,
    /// The run: messages and dead letters of the batches since the last one that was not mostly
    /// dead letters.
    pub run_messages: i64,
    pub run_dead_letters: i64,
    /// When the run was last logged (0: not yet).
    logged_at: i64,
}

/// What a batch changed about the run of dead letters, for the worker's log.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RunChange {
    /// Nothing to log.
    Quiet,
    /// The run just became long enough to show, or it goes on and was last logged at least
    /// `relog_us` ago.
    Log,
    /// A run that was shown ended: rows succeed again.
    Ended,
}

impl Recent {
    /// Counts a committed batch's messages, rows and dead letters at time `now`; `relog_us`: how
    /// often a run that goes on is logged again.
    pub fn record(&mut self, now: i64, messages: i64, rows: i64, dead_letters: i64, relog_us: i64) -> RunChange {
        if self.since == 0 {
            self.since = now;
        }
        let b = now.div_euclid(BUCKET_US);
        let i = b.rem_euclid(BUCKETS as i64) as usize;
        if self.bucket[i] != b {
            self.bucket[i] = b;
            self.rows[i] = 0;
        }
        self.rows[i] += rows;
        if messages <= 0 {
            return RunChange::Quiet;
        }
        if dead_letters * 100 >= messages * MOSTLY_PERCENT {
            let shown = self.shown();
            self.run_messages += messages;
            self.run_dead_letters += dead_letters;
            if self.shown() && (!shown || now - self.logged_at >= relog_us) {
                self.logged_at = now;
                return RunChange::Log;
            }
            RunChange::Quiet
        } else {
            let shown = self.shown();
            self.run_messages = 0;
            self.run_dead_letters = 0;
            self.logged_at = 0;
            if shown {
                RunChange::Ended
            } else {
                RunChange::Quiet
            }
        }
    }

    /// Whether the run of dead letters is long enough to show.
    pub fn shown(&self) -> bool {
        self.run_messages >= MIN_RUN_MESSAGES
    }

    /// The run as consumer_status shows it, e.g. "the last 300 messages were all dead letters";
    /// None when there is none to show.
    pub fn run_text(&self) -> Option<String> {
        if !self.shown() {
            return None;
        }
        Some(if self.run_dead_letters == self.run_messages {
            format!("the last {} messages were all dead letters", self.run_messages)
        } else {
            format!("{} of the last {} messages were dead letters", self.run_dead_letters, self.run_messages)
        })
    }

    /// Rows per second over the last minute (the buckets of the last 50 to 60 seconds, or since
    /// the first batch when that is more recent); None before the first batch.
    pub fn rows_per_second(&self, now: i64) -> Option<f64> {
        if self.since == 0 {
            return None;
        }
        let current = now.div_euclid(BUCKET_US);
        let oldest = current - (BUCKETS as i64 - 1);
        let rows: i64 = (0..BUCKETS).filter(|&i| self.bucket[i] >= oldest && self.bucket[i] <= current).map(|i| self.rows[i]).sum();
        let from = (oldest * BUCKET_US).max(self.since);
        // At least a second: the first batch alone is not a rate over no time.
        let span = (now - from).max(1_000_000);
        Some(rows as f64 * 1_000_000.0 / span as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;
    const RELOG: i64 = 300 * S;

    #[test]
    fn a_run_of_dead_letters_is_shown_logged_once_and_ends_with_rows() {
        let mut r = Recent::default();
        assert_eq!(r.record(100 * S, 5, 0, 5, RELOG), RunChange::Quiet, "5 messages are not a run yet");
        assert_eq!(r.run_text(), None);
        assert_eq!(r.record(101 * S, 295, 0, 295, RELOG), RunChange::Log);
        assert_eq!(r.run_text().as_deref(), Some("the last 300 messages were all dead letters"));
        assert_eq!(r.record(102 * S, 100, 5, 95, RELOG), RunChange::Quiet, "logged already");
        assert_eq!(r.run_text().as_deref(), Some("395 of the last 400 messages were dead letters"));
        assert_eq!(r.record(102 * S + RELOG, 10, 0, 10, RELOG), RunChange::Log, "logged again after relog_us");
        assert_eq!(r.record(103 * S + RELOG, 10, 2, 8, RELOG), RunChange::Ended, "80% is not mostly");
        assert_eq!(r.run_text(), None);
        assert_eq!(r.record(104 * S + RELOG, 10, 10, 0, RELOG), RunChange::Quiet);
    }

    #[test]
    fn batches_without_messages_leave_the_run_alone() {
        let mut r = Recent::default();
        r.record(S, 20, 0, 20, RELOG);
        assert_eq!(r.record(2 * S, 0, 0, 0, RELOG), RunChange::Quiet);
        assert!(r.shown());
    }

    #[test]
    fn a_short_run_ends_quietly() {
        let mut r = Recent::default();
        r.record(S, 3, 0, 3, RELOG);
        assert_eq!(r.record(2 * S, 3, 3, 0, RELOG), RunChange::Quiet);
    }

    #[test]
    fn rate_is_over_the_last_minute_or_since_the_first_batch() {
        let mut r = Recent::default();
        assert_eq!(r.rows_per_second(S), None);
        let t0 = 1_000 * S;
        r.record(t0, 100, 100, 0, RELOG);
        // The first batch alone: over at least a second.
        assert_eq!(r.rows_per_second(t0), Some(100.0));
        r.record(t0 + 10 * S, 100, 100, 0, RELOG);
        assert_eq!(r.rows_per_second(t0 + 20 * S), Some(10.0));
        // Two minutes later both batches are out of the window.
        assert_eq!(r.rows_per_second(t0 + 120 * S), Some(0.0));
        r.record(t0 + 125 * S, 600, 600, 0, RELOG);
        let rate = r.rows_per_second(t0 + 130 * S).unwrap();
        assert!((10.0..=12.0).contains(&rate), "600 rows over the last 50-60 s: {rate}");
    }
}
