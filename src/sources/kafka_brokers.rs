//! Puts the bootstrap brokers back into a consumer's librdkafka client that has lost every broker.
//!
//! Why: a Kafka (KRaft) broker that is stopped gracefully answers Metadata requests, for a few
//! milliseconds after the controller fenced it, with no broker at all but with its topics.
//! librdkafka >= 2.10 then decommissions every broker it knows, learned and bootstrap alike
//! (confluentinc/librdkafka#5301, fix not released). The re-bootstrap that should follow never
//! comes in CMake builds of 2.11.1 to 2.14.x, ours included (rdkafka-sys 4.10 bundles 2.12.1):
//! `rd_atomic32_set` there returns the new value instead of the old one, so "all brokers down"
//! is never raised (#5282, fixed in 2.15.0). No setting helps: with no broker object left, no
//! metadata request is ever sent, so no timer starts. The client then sits with no socket open,
//! its partitions unfetched, for good.
//!
//! What this does: from the worker's main thread, at most once a second, it asks librdkafka how
//! many brokers the client has learned from metadata. When that count has been above zero and
//! then stays at zero for `GRACE`, it adds the bootstrap servers again (`rd_kafka_brokers_add`,
//! a no-op for a bootstrap broker that is still there), and again with a growing delay (up to
//! `MAX_RETRY`) while the client still knows none (a re-added broker can itself be dropped by
//! another such response). The client reconnects, learns the cluster again and goes on fetching
//! with its assignment and queues as they were, so nothing is lost or repeated. One LOG line per
//! loss; the retries are at DEBUG1. The worker's `source_restart_after` watchdog stays as the
//! last resort.

use std::ffi::CString;
use std::time::{Duration, Instant};

/// How often the learned brokers are counted (a cheap call: a lock and a list copy).
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// How long the client must have known no broker before the bootstrap servers are added again.
/// librdkafka's own re-bootstrap (when it works) replaces the learned brokers within
/// milliseconds when a bootstrap server answers.
const GRACE: Duration = Duration::from_secs(2);
/// The longest delay between two re-adds while the client still knows no broker.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// What one look found for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// The client knows at least one broker from metadata.
    Some,
    /// It knows none.
    None,
}

/// Watches one client's learned brokers and re-adds the bootstrap servers when they are all gone.
pub struct BrokerRescue {
    /// `bootstrap.servers` as configured (None: the client has none set, nothing to re-add).
    bootstrap: Option<CString>,
    /// The client has learned brokers since it started.
    seen: bool,
    /// Since when the client has known no broker (after having known some).
    none_since: Option<Instant>,
    /// Re-adds since then, and when the next one is due.
    tries: u32,
    next_add: Option<Instant>,
    last_look: Option<Instant>,
}

impl BrokerRescue {
    pub fn new(bootstrap: Option<&str>) -> BrokerRescue {
        let bootstrap = bootstrap.filter(|b| !b.trim().is_empty()).and_then(|b| CString::new(b).ok());
        BrokerRescue { bootstrap, seen: false, none_since: None, tries: 0, next_add: None, last_look: None }
    }

    /// Looks at the client if a second has passed since the last look, and re-adds the bootstrap
    /// servers when it has known no broker for too long (logged). Main thread only (logs).
    pub fn look(&mut self, rk: *mut rdkafka_sys::rd_kafka_t) {
        let now = Instant::now();
        if self.last_look.is_some_and(|t| now.duration_since(t) < LOOK_EVERY) {
            return;
        }
        self.last_look = Some(now);
        if self.bootstrap.is_none() {
            return;
        }
        let Some((without, tries)) = self.step(learned_brokers(rk), now) else { return };
        let Some(bootstrap) = &self.bootstrap else { return };
        // SAFETY: a live client and a NUL-terminated list; librdkafka copies what it needs.
        unsafe { rdkafka_sys::rd_kafka_brokers_add(rk, bootstrap.as_ptr()) };
        let servers = bootstrap.to_string_lossy();
        if tries == 1 {
            pgrx::log!(
                "pipeline_kafka: the Kafka client has known no broker for {} ms (librdkafka drops them all after a \
                 metadata response that lists none, its issue 5301); adding the bootstrap servers {servers} again",
                without.as_millis()
            );
        } else {
            pgrx::debug1!(
                "pipeline_kafka: the Kafka client still knows no broker after {} ms; adding the bootstrap servers \
                 {servers} again (time {tries})",
                without.as_millis()
            );
        }
    }

    /// The state machine: Some((how long without a broker, the how-manieth re-add)) when the
    /// bootstrap servers are due to be added again.
    fn step(&mut self, seen: Seen, now: Instant) -> Option<(Duration, u32)> {
        match seen {
            Seen::Some => {
                self.seen = true;
                self.none_since = None;
                self.tries = 0;
                self.next_add = None;
                None
            }
            Seen::None if !self.seen => None,
            Seen::None => {
                let since = *self.none_since.get_or_insert(now);
                if now < self.next_add.unwrap_or(since + GRACE) {
                    return None;
                }
                self.tries += 1;
                self.next_add = Some(now + (GRACE * 2u32.pow(self.tries.min(5))).min(MAX_RETRY));
                Some((now.duration_since(since), self.tries))
            }
        }
    }
}

/// Whether the client knows any broker from metadata (bootstrap servers and the group
/// coordinator's logical broker do not count).
fn learned_brokers(rk: *mut rdkafka_sys::rd_kafka_t) -> Seen {
    let mut cnt: usize = 0;
    // SAFETY: a live client; librdkafka allocates the array (possibly NULL when empty), freed below
    // with its own allocator.
    unsafe {
        let ids = rdkafka_sys::rd_kafka_brokers_learned_ids(rk, &mut cnt);
        if !ids.is_null() {
            rdkafka_sys::rd_kafka_mem_free(rk, ids.cast());
        }
    }
    if cnt > 0 {
        Seen::Some
    } else {
        Seen::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rescue() -> BrokerRescue {
        BrokerRescue::new(Some("127.0.0.1:9092"))
    }

    #[test]
    fn no_rescue_before_any_broker_was_learned() {
        let mut r = rescue();
        let t0 = Instant::now();
        for s in 0..10 {
            assert_eq!(r.step(Seen::None, t0 + Duration::from_secs(s)), None);
        }
    }

    #[test]
    fn rescue_after_grace_then_again_with_growing_delays_until_brokers_come_back() {
        let mut r = rescue();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(r.step(Seen::Some, t0), None);
        assert_eq!(r.step(Seen::None, at(1)), None);
        assert_eq!(r.step(Seen::None, at(2)), None);
        assert_eq!(r.step(Seen::None, at(3)), Some((Duration::from_secs(2), 1)));
        // still none: again after 4 s, 8 s, ... at most 30 s
        assert_eq!(r.step(Seen::None, at(6)), None);
        assert_eq!(r.step(Seen::None, at(7)), Some((Duration::from_secs(6), 2)));
        assert_eq!(r.step(Seen::None, at(14)), None);
        assert_eq!(r.step(Seen::None, at(15)), Some((Duration::from_secs(14), 3)));
        assert_eq!(r.step(Seen::None, at(31)), Some((Duration::from_secs(30), 4)));
        assert_eq!(r.step(Seen::None, at(61)), Some((Duration::from_secs(60), 5)));
        assert_eq!(r.step(Seen::None, at(90)), None);
        assert_eq!(r.step(Seen::None, at(91)), Some((Duration::from_secs(90), 6)));
        // learned again, lost again: a new loss, counted from 1
        assert_eq!(r.step(Seen::Some, at(92)), None);
        assert_eq!(r.step(Seen::None, at(93)), None);
        assert_eq!(r.step(Seen::None, at(95)), Some((Duration::from_secs(2), 1)));
    }

    #[test]
    fn a_short_gap_is_not_a_loss() {
        let mut r = rescue();
        let t0 = Instant::now();
        r.step(Seen::Some, t0);
        assert_eq!(r.step(Seen::None, t0 + Duration::from_secs(1)), None);
        assert_eq!(r.step(Seen::Some, t0 + Duration::from_secs(2)), None);
        assert_eq!(r.step(Seen::None, t0 + Duration::from_secs(3)), None);
        assert_eq!(r.step(Seen::None, t0 + Duration::from_secs(4)), None);
    }

    #[test]
    fn empty_bootstrap_is_ignored() {
        assert!(BrokerRescue::new(Some(" ")).bootstrap.is_none());
        assert!(BrokerRescue::new(None).bootstrap.is_none());
    }
}
