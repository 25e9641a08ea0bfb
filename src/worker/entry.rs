//! One entry point for the consumer workers of both systems. A worker connects to its database,
//! reads its consumer in one transaction, leaves if the consumer was stopped or changed since it
//! was started (the generation), builds its target from the stored settings, connects its source
//! and runs the source-independent pipeline. What differs per system (what is read, what is
//! checked again, how the source connects) is a `ConsumerWorker`: Kafka's in consumer.rs,
//! Kinesis's in kinesis.rs; their `#[no_mangle]` functions (the names the supervisor registers)
//! only call `run`.

use super::pipeline::{target_of, ConsumerCatalog, Pipeline, Target, TargetSettings, WorkerArgs};
use crate::sources::Source;
use crate::xact::in_transaction;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;

/// What a consumer worker of one system does before its pipeline runs.
pub trait ConsumerWorker {
    /// The worker as its log lines name it ("pipeline_kafka consumer").
    const NAME: &'static str;
    /// What the worker reads of its consumer (and what else it needs) in one transaction.
    type Loaded;
    type Catalog: ConsumerCatalog;
    type Source: Source<Pos = <Self::Catalog as ConsumerCatalog>::Pos>;

    /// Reads the consumer `args` names (None: it is gone), inside a transaction, in the order
    /// DROP EXTENSION locks the catalog tables.
    fn load(args: &WorkerArgs) -> Option<Self::Loaded>;
    /// Enabled, and of the generation the worker was started for.
    fn is_current(loaded: &Self::Loaded, args: &WorkerArgs) -> bool;
    /// The consumer's catalog and the settings of its target; None when the worker must not run
    /// (the reason recorded in the consumer's last_error).
    fn prepare<'a>(args: &WorkerArgs, loaded: &'a Self::Loaded) -> Option<(Self::Catalog, TargetSettings<'a>)>;
    /// Connects the source (retrying with backoff until it works or the worker is asked to stop);
    /// with it, what the "started" log line says of it.
    fn connect(args: &WorkerArgs, loaded: &Self::Loaded, catalog: &Self::Catalog, target: &Target) -> Option<(Self::Source, String)>;
}

/// The whole life of a consumer worker of system `W`.
pub fn run<W: ConsumerWorker>() {
    super::setup_signals();
    let args = WorkerArgs::parse(BackgroundWorker::get_extra()).expect("worker extra: dboid consumer index generation");
    // Connected as the bootstrap superuser for catalog access; rows are written as the owner.
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(args.dboid), None);
    let loaded = in_transaction(|| if crate::catalog::extension_exists() { W::load(&args) } else { None });
    let loaded = match loaded {
        Ok(Some(v)) => v,
        Ok(None) => return,
        Err(e) => {
            warning!("{} {}: could not load its settings: {e}", W::NAME, args.consumer);
            return;
        }
    };
    if !W::is_current(&loaded, &args) {
        return;
    }
    let Some((catalog, settings)) = W::prepare(&args, &loaded) else { return };
    let Some(mut target) = target_of(&catalog, &args, settings) else { return };
    if let Err(e) = in_transaction(|| super::typed::attach_stored(&mut target)) {
        warning!("{} {}: could not read its schema registry: {e}", W::NAME, args.consumer);
        return;
    }
    let Some((source, started)) = W::connect(&args, &loaded, &catalog, &target) else { return };
    log!("{} {} worker {} started: {started}", W::NAME, args.consumer, args.index);
    Pipeline::new(target, source, catalog).run();
}
