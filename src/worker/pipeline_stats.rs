//! Per-stream counting of a committed batch (worker::pipeline).

use std::collections::BTreeMap;

/// What a committed batch did, per stream.
#[derive(Default)]
pub(super) struct StreamStats {
    pub(super) messages: i64,
    pub(super) rows: i64,
    pub(super) dead_letters: i64,
}

pub(super) type BatchStats<S> = BTreeMap<S, StreamStats>;

/// Adds per-message counts to their streams' stats, one map update per run of messages of the
/// same stream (a batch holds runs of each stream's messages: far fewer lookups than messages).
pub(super) fn add_in_runs<S: Ord + PartialEq>(stats: &mut BatchStats<S>, counts: impl Iterator<Item = (S, i64)>, add: impl Fn(&mut StreamStats, i64)) {
    let mut run: Option<(S, i64)> = None;
    for (k, n) in counts {
        match &mut run {
            Some((rk, total)) if *rk == k => *total += n,
            _ => {
                if let Some((rk, total)) = run.replace((k, n)) {
                    add(stats.entry(rk).or_default(), total);
                }
            }
        }
    }
    if let Some((rk, total)) = run {
        add(stats.entry(rk).or_default(), total);
    }
}

