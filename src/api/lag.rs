//! The high watermarks behind `pipeline_kafka.consumer_lag` (pipeline_kafka's lag view): from the
//! running workers' shared-memory status when they publish one, otherwise asked from the brokers
//! within a short, interruptible time limit (NULL when they do not answer in time).

use pgrx::prelude::*;

/// The longest a query of consumer_lag waits for the brokers in all (the lag of stopped
/// consumers); after that, watermarks not known yet are NULL.
const BROKER_BUDGET_MS: u64 = 1000;

#[pg_schema]
mod pipeline_kafka {
    use crate::catalog::spi;
    use crate::sources::kafka::{client_config, Probe, ProbeError};
    use pgrx::prelude::*;
    use std::collections::{BTreeMap, HashMap};
    use std::time::{Duration, Instant};

    /// The high watermark of every partition with a stored offset of the consumers the caller
    /// may see (row-level security of pipeline_kafka.consumers applies, as the caller).
    #[allow(clippy::type_complexity)]
    #[pg_extern(volatile, parallel_unsafe)]
    fn consumer_watermarks(
    ) -> TableIterator<'static, (name!(consumer_id, i32), name!(partition, i32), name!(high_watermark, Option<i64>))> {
        // Not as superuser: the caller sees only the consumers it may see.
        let wanted: Vec<(i32, String, i32)> = spi(Spi::connect(|c| {
            let t = c.select(
                "SELECT c.id, c.topic, o.\"partition\" FROM pipeline_kafka.consumers c \
                 JOIN pipeline_kafka.offsets o ON o.consumer_id = c.id ORDER BY 1, 3",
                None,
                &[],
            )?;
            let mut out = Vec::new();
            for row in t {
                out.push((row.get(1)?.unwrap_or_default(), row.get(2)?.unwrap_or_default(), row.get(3)?.unwrap_or_default()));
            }
            Ok::<_, pgrx::spi::SpiError>(out)
        }));
        // SAFETY: MyDatabaseId is set in a connected backend.
        let dboid = unsafe { pg_sys::MyDatabaseId };
        // What running workers published (a worker that is gone publishes nothing).
        let published: HashMap<(i32, i32), i64> = crate::shmem::partitions_of(dboid, crate::shmem::SourceKind::Kafka)
            .into_iter()
            // SAFETY: BackendPidGetProc takes ProcArrayLock itself; the pointer is only compared.
            .filter(|s| s.worker_pid != 0 && s.high_watermark >= 0 && !unsafe { pg_sys::BackendPidGetProc(s.worker_pid) }.is_null())
            .map(|s| ((s.consumer_id, s.partition), s.high_watermark))
            .collect();
        let mut missing: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for (id, topic, p) in &wanted {
            if !published.contains_key(&(*id, *p)) {
                missing.entry(topic.clone()).or_default().push(*p);
            }
        }
        let asked = if missing.is_empty() { HashMap::new() } else { ask_brokers(&missing) };
        let rows: Vec<_> = wanted
            .into_iter()
            .map(|(id, topic, p)| {
                let hw = published.get(&(id, p)).copied().or_else(|| asked.get(&(topic, p)).copied());
                (id, p, hw)
            })
            .collect();
        TableIterator::new(rows)
    }

    /// High watermarks of some partitions from the brokers, within `BROKER_BUDGET_MS` in all
    /// (each request interruptible); what did not come in time is left out.
    fn ask_brokers(missing: &BTreeMap<String, Vec<i32>>) -> HashMap<(String, i32), i64> {
        let mut out = HashMap::new();
        let (brokers, config) = crate::catalog::kafka::brokers();
        if brokers.is_empty() {
            return out;
        }
        let Ok(cfg) = client_config(&brokers, &[&config]) else { return out };
        let budget = Duration::from_millis(super::BROKER_BUDGET_MS.min(crate::guc::BROKER_TIMEOUT_MS.get().max(100) as u64));
        let Ok(probe) = Probe::new(&cfg, budget) else { return out };
        let started = Instant::now();
        'topics: for (topic, partitions) in missing {
            for p in partitions {
                if started.elapsed() >= budget {
                    break 'topics;
                }
                match probe.watermarks(topic, *p) {
                    Ok((_, high)) => {
                        out.insert((topic.clone(), *p), high);
                    }
                    Err(ProbeError::NoTopic) => continue 'topics,
                    // The brokers are away: the other requests would wait as long for nothing.
                    Err(_) => break 'topics,
                }
            }
        }
        out
    }
}
