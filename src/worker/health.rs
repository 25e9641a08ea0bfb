//! The log lines of a consumer worker about a stream whose recent batches were all or mostly dead
//! letters (consumer_status shows the same as `warning`; ingest_core::recent counts the run).

use crate::shmem::SourceKind;
use ingest_core::recent::{Recent, RunChange};
use pgrx::prelude::*;

/// How often a run of dead letters that goes on is logged again (microseconds): once at its start,
/// then every five minutes, not once per batch.
pub const RELOG_US: i64 = 300 * 1_000_000;

/// Logs a change of a stream's run of dead letters (`key`: the stream's status key), if a batch
/// made one: what `Recent::record` said, and the counters after it.
/// `label`: the consumer as its log lines name it; `source`, `consumer_id`: whose dead letters.
pub fn log_run_change(label: &str, source: SourceKind, consumer_id: i32, key: &str, run: Option<(RunChange, Recent)>) {
    let Some((change, recent)) = run else { return };
    let stream = match source {
        SourceKind::Kafka => format!("partition {key}"),
        SourceKind::Kinesis => format!("shard {key}"),
    };
    match change {
        RunChange::Quiet => {}
        RunChange::Log => {
            let run = recent.run_text().unwrap_or_default();
            let latest = latest_dead_letter(source, consumer_id);
            let table = source.dead_letters();
            log!(
                "{} {stream}: {run}{}; they are in {table}, and consumer_status shows this warning until rows succeed again",
                label,
                latest.map(|e| format!(": {e}")).unwrap_or_default()
            );
        }
        RunChange::Ended => log!("{} {stream}: rows succeed again (the dead letters before are in the consumer's dead_letters)", label),
    }
}

/// "SQLSTATE error" of the consumer's latest dead letter (its own transaction: the batch's has
/// committed); None when it cannot be read.
fn latest_dead_letter(source: SourceKind, consumer_id: i32) -> Option<String> {
    let table = source.dead_letters();
    let read = crate::xact::in_transaction(|| {
        crate::xact::as_superuser(|| {
            crate::catalog::read_one::<String>(
                &format!("SELECT sqlstate || ' ' || error FROM {table} WHERE consumer_id = $1 ORDER BY id DESC LIMIT 1"),
                &[consumer_id.into()],
            )
        })
    });
    match read {
        Ok(e) => e,
        Err(e) => {
            warning!("pipeline_ingest: could not read the latest dead letter of {source:?} consumer {consumer_id}: {e}");
            None
        }
    }
}
