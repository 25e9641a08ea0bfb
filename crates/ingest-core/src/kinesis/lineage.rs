//! Shard lineage: which shards of a stream a worker may read now.
//!
//! After a split or a merge the parent shards are closed and their children open. Records of a
//! partition key stay in order only if a child is read after each of its parents has been read to
//! its end (SHARD_END) and that end is committed. A parent that is no longer listed (its records
//! are past the retention period) cannot hold anything left to read. Shards are spread over
//! workers by their number (shardId-000000000007 -> 7) modulo parallelism, as Kafka partitions are.

use std::collections::BTreeMap;

/// A shard as ListShards describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub id: String,
    pub parent: Option<String>,
    pub adjacent_parent: Option<String>,
    /// The shard's hash key range, inclusive.
    pub hash_range: (u128, u128),
    /// Closed shards have an ending sequence number.
    pub closed: bool,
}

/// What the checkpoint says of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Read to SHARD_END, and that is committed.
    pub finished: bool,
}

impl Shard {
    pub fn parents(&self) -> impl Iterator<Item = &str> {
        self.parent.iter().chain(self.adjacent_parent.iter()).map(String::as_str)
    }
}

/// The worker a shard belongs to.
pub fn worker_of(shard_id: &str, parallelism: i32) -> i32 {
    let n = parallelism.max(1) as u64;
    let digits: String = shard_id.chars().rev().take_while(|c| c.is_ascii_digit()).collect();
    let number = digits.chars().rev().collect::<String>().parse::<u64>().ok();
    let key = number.unwrap_or_else(|| {
        // FNV-1a: stable across processes and releases, unlike std's hasher.
        shard_id.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
    });
    (key % n) as i32
}

/// The shards worker `index` of `parallelism` reads now: its own shards that are not finished and
/// whose listed parents are all finished. Sorted by id.
pub fn readable(shards: &[Shard], progress: &BTreeMap<String, Progress>, parallelism: i32, index: i32) -> Vec<String> {
    let listed: BTreeMap<&str, &Shard> = shards.iter().map(|s| (s.id.as_str(), s)).collect();
    let finished = |id: &str| progress.get(id).is_some_and(|p| p.finished);
    let mut out: Vec<String> = shards
        .iter()
        .filter(|s| worker_of(&s.id, parallelism) == index)
        .filter(|s| !finished(&s.id))
        .filter(|s| s.parents().all(|p| !listed.contains_key(p) || finished(p)))
        .map(|s| s.id.clone())
        .collect();
    out.sort();
    out
}

/// Shards whose parents are listed but not finished: they wait (for the status view).
pub fn waiting_for_parents(shards: &[Shard], progress: &BTreeMap<String, Progress>) -> Vec<String> {
    let listed: Vec<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    let finished = |id: &str| progress.get(id).is_some_and(|p| p.finished);
    shards
        .iter()
        .filter(|s| !finished(&s.id) && s.parents().any(|p| listed.contains(&p) && !finished(p)))
        .map(|s| s.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parent: Option<&str>, adjacent: Option<&str>, closed: bool) -> Shard {
        Shard {
            id: id.to_string(),
            parent: parent.map(str::to_string),
            adjacent_parent: adjacent.map(str::to_string),
            hash_range: (0, u128::MAX),
            closed,
        }
    }

    fn done(ids: &[&str]) -> BTreeMap<String, Progress> {
        ids.iter().map(|i| (i.to_string(), Progress { finished: true })).collect()
    }

    #[test]
    fn children_wait_for_every_parent_to_finish() {
        // 0 split into 1 and 2; then 1 and 2 merged into 3.
        let shards = vec![
            shard("shardId-000000000000", None, None, true),
            shard("shardId-000000000001", Some("shardId-000000000000"), None, true),
            shard("shardId-000000000002", Some("shardId-000000000000"), None, true),
            shard("shardId-000000000003", Some("shardId-000000000001"), Some("shardId-000000000002"), false),
        ];
        assert_eq!(readable(&shards, &done(&[]), 1, 0), vec!["shardId-000000000000"]);
        assert_eq!(
            readable(&shards, &done(&["shardId-000000000000"]), 1, 0),
            vec!["shardId-000000000001", "shardId-000000000002"]
        );
        // one parent of the merge finished is not enough
        let p = done(&["shardId-000000000000", "shardId-000000000001"]);
        assert_eq!(readable(&shards, &p, 1, 0), vec!["shardId-000000000002"]);
        assert_eq!(waiting_for_parents(&shards, &p), vec!["shardId-000000000003"]);
        let p = done(&["shardId-000000000000", "shardId-000000000001", "shardId-000000000002"]);
        assert_eq!(readable(&shards, &p, 1, 0), vec!["shardId-000000000003"]);
        assert!(waiting_for_parents(&shards, &p).is_empty());
    }

    #[test]
    fn parents_past_retention_do_not_block_children() {
        let shards = vec![shard("shardId-000000000005", Some("shardId-000000000001"), None, false)];
        assert_eq!(readable(&shards, &done(&[]), 1, 0), vec!["shardId-000000000005"]);
    }

    #[test]
    fn shards_are_spread_by_number() {
        assert_eq!(worker_of("shardId-000000000007", 2), 1);
        assert_eq!(worker_of("shardId-000000000008", 2), 0);
        assert_eq!(worker_of("shardId-000000000008", 1), 0);
        let w = worker_of("custom", 3);
        assert!((0..3).contains(&w));
        assert_eq!(w, worker_of("custom", 3), "stable");
        let shards: Vec<Shard> = (0..4).map(|i| shard(&format!("shardId-00000000000{i}"), None, None, false)).collect();
        let a = readable(&shards, &done(&[]), 2, 0);
        let b = readable(&shards, &done(&[]), 2, 1);
        assert_eq!(a, vec!["shardId-000000000000", "shardId-000000000002"]);
        assert_eq!(b, vec!["shardId-000000000001", "shardId-000000000003"]);
    }
}
