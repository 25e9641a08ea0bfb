//! A Kafka worker's reader thread: takes messages off librdkafka's consumer queue and copies them
//! into batch messages while the worker's main thread COPYs the previous batch, so a worker uses a
//! second core for everything between librdkafka and the batch (queue locking, event handling,
//! copying bytes). It never calls PostgreSQL: it only touches librdkafka's queue, its own channels
//! and the wakeup pipe the main thread waits on.
//!
//! Exactness across a reassignment (new partitions: librdkafka restarts every owned partition at
//! the committed offsets) rests on epochs: the main thread reassigns holding `gate` and bumps the
//! epoch under it; the reader reads the epoch and polls under the same gate, so a message polled
//! before the reassignment carries the old epoch and is dropped by the main thread (librdkafka
//! delivers it again from the committed offset), and one polled after carries the new one.

use super::copy::{blank_message, copy_message, KafkaMessage};
use crate::sources::error::SourceError;
use ingest_core::rows::fast::{prepare_chunk, FastPlan, Pre};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Messages per chunk handed to the main thread (a chunk also ends when the queue is empty).
const CHUNK: usize = 8192;
/// Bytes (keys, payloads, headers) after which a chunk ends (so that large messages are bounded too).
const CHUNK_BYTES: usize = 1 << 20;
/// Chunks in flight between the threads: with librdkafka's own prefetch this bounds how far the
/// reader runs ahead of the batches.
const IN_FLIGHT: usize = 4;
/// Batches of used messages waiting to be refilled.
const SPARE_BATCHES: usize = 2;
/// Used messages the reader keeps for refilling (what is in flight); more are freed by the
/// reader, never by the main thread, whose time is the COPY's.
const STASH: usize = 32_768;
/// How long one blocking poll waits before the reader checks whether it should stop.
const POLL_MS: i32 = 100;
/// Key and header bytes in a chunk above which (when they also outweigh its payloads) the reader
/// pauses fetching while it waits for the main thread: librdkafka bounds its prefetch by payload
/// bytes only (queued.max.messages.kbytes; keys and headers are not counted), so messages of an
/// empty value and a megabyte of headers would otherwise be prefetched up to queued.min.messages
/// of them (gigabytes). Pausing drops what librdkafka queued; it fetches again, after resuming,
/// from the message after the last one the reader took.
const HIDDEN_BYTES: usize = 256 << 10;

/// What the reader hands over, with the epoch it was read in.
pub enum Delivery {
    /// The messages, and what the reader made ready of each for the fast path (rows::fast;
    /// empty without a plan).
    Messages(u64, Vec<KafkaMessage>, Vec<Pre>),
    /// An error event or a message carrying an error, as text ("Kafka: ...").
    Error(u64, String),
}

struct Shared {
    stop: AtomicBool,
    epoch: AtomicU64,
    gate: Mutex<()>,
    /// The consumer's fast-path plan (set by the main thread; read once per chunk).
    plan: Mutex<Option<Arc<FastPlan>>>,
}

/// librdkafka's queue and client handles, used by the reader thread only while the source keeps
/// them alive.
struct QueuePtr(*mut rdkafka_sys::rd_kafka_queue_t, *mut rdkafka_sys::rd_kafka_t);
// SAFETY: librdkafka queues and clients are thread-safe; the source joins the thread before
// destroying them.
unsafe impl Send for QueuePtr {}

pub struct Reader {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
    rx: Receiver<Delivery>,
    /// Messages of committed batches go back to the reader, which refills their buffers.
    spare_tx: SyncSender<Vec<KafkaMessage>>,
}

/// Held while the main thread changes the assignment: the reader is not polling meanwhile, and
/// whatever it read before carries an older epoch.
pub struct Paused<'a> {
    _gate: MutexGuard<'a, ()>,
}

impl Reader {
    /// Starts the thread on `queue` (the consumer queue of client `rk`), waking the main thread
    /// through `wake_fd` (the write end of a non-blocking pipe) whenever it hands something over;
    /// messages keep their headers only when `headers`.
    pub fn start(
        queue: *mut rdkafka_sys::rd_kafka_queue_t,
        rk: *mut rdkafka_sys::rd_kafka_t,
        wake_fd: i32,
        headers: bool,
    ) -> std::io::Result<Reader> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            gate: Mutex::new(()),
            plan: Mutex::new(None),
        });
        let (tx, rx) = sync_channel(IN_FLIGHT);
        let (spare_tx, spare_rx) = sync_channel(SPARE_BATCHES);
        let queue = QueuePtr(queue, rk);
        let thread_shared = shared.clone();
        // PostgreSQL's signal handlers (SIGTERM, latches) must run in the main thread: the reader
        // starts with every signal blocked (as librdkafka's own threads do), the main thread's
        // mask is restored right after.
        // SAFETY: sigfillset/pthread_sigmask on local sets; the old mask is put back below.
        let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        unsafe {
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        }
        let spawned = std::thread::Builder::new().name("pi:kafka-reader".to_string()).spawn(move || {
            let queue = queue;
            run(&queue, wake_fd, headers, &thread_shared, &tx, &spare_rx)
        });
        // SAFETY: restores the mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        Ok(Reader { shared, handle: Some(spawned?), rx, spare_tx })
    }

    /// From the next chunk on, messages are made ready (parsed and converted to COPY BINARY
    /// tuples, on the reader thread) with `plan`; None: not.
    pub fn set_plan(&self, plan: Option<Arc<FastPlan>>) {
        *self.shared.plan.lock().unwrap_or_else(|p| p.into_inner()) = plan;
    }

    pub fn epoch(&self) -> u64 {
        self.shared.epoch.load(Ordering::Acquire)
    }

    /// Stops the reader between polls and starts a new epoch.
    pub fn pause(&self) -> Paused<'_> {
        let gate = self.shared.gate.lock().unwrap_or_else(|p| p.into_inner());
        self.shared.epoch.fetch_add(1, Ordering::AcqRel);
        Paused { _gate: gate }
    }

    /// The next delivery, if one is ready. None when there is nothing now; Err when the reader
    /// is gone (it only ends when asked to, so this is a bug or a panic in it).
    pub fn try_next(&self) -> Result<Option<Delivery>, SourceError> {
        match self.rx.try_recv() {
            Ok(d) => Ok(Some(d)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(SourceError::Internal("the Kafka reader thread has ended".to_string())),
        }
    }

    /// Gives messages back for reuse (freed here only when the reader has not taken the last
    /// ones yet: it takes them within one poll).
    pub fn recycle(&self, messages: Vec<KafkaMessage>) {
        if !messages.is_empty() {
            let _ = self.spare_tx.try_send(messages);
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Unblocks a reader waiting to hand over a chunk.
        while let Ok(Some(_)) = self.try_next() {}
        if let Some(h) = self.handle.take() {
            // The reader notices `stop` within one poll; keep draining so it never waits on us.
            while !h.is_finished() {
                while let Ok(Some(_)) = self.try_next() {}
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let _ = h.join();
        }
    }
}

fn wake(fd: i32) {
    // SAFETY: writing one byte from a local to a non-blocking pipe the source owns (kept open
    // until the reader has been joined); a full pipe already means "wake up".
    unsafe { libc::write(fd, b"1".as_ptr().cast(), 1) };
}

/// Hands `d` over, waiting while the channel is full unless the reader is asked to stop. With
/// `pause` (the client), fetching is paused meanwhile (see `HIDDEN_BYTES`).
fn hand_over(tx: &SyncSender<Delivery>, shared: &Shared, wake_fd: i32, mut d: Delivery, pause: Option<*mut rdkafka_sys::rd_kafka_t>) -> bool {
    let mut paused = false;
    let done = loop {
        match tx.try_send(d) {
            Ok(()) => {
                wake(wake_fd);
                break true;
            }
            Err(std::sync::mpsc::TrySendError::Full(back)) => {
                if shared.stop.load(Ordering::Acquire) {
                    break false;
                }
                if let (Some(rk), false) = (pause, paused) {
                    // SAFETY: the client lives until this thread has been joined.
                    paused = unsafe { pause_fetching(rk, shared, true) };
                }
                d = back;
                std::thread::sleep(std::time::Duration::from_micros(500));
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => break false,
        }
    };
    if let (Some(rk), true) = (pause, paused) {
        // SAFETY: as above.
        unsafe { pause_fetching(rk, shared, false) };
    }
    done
}

/// Pauses (or resumes) fetching every assigned partition; under the gate, so that it never
/// interleaves with a reassignment. Returns whether it was done.
///
/// # Safety
/// `rk` must be a live consumer.
unsafe fn pause_fetching(rk: *mut rdkafka_sys::rd_kafka_t, shared: &Shared, pause: bool) -> bool {
    let _gate = shared.gate.lock().unwrap_or_else(|p| p.into_inner());
    let mut list: *mut rdkafka_sys::rd_kafka_topic_partition_list_t = std::ptr::null_mut();
    // SAFETY: per the contract; the list librdkafka allocates is destroyed below.
    unsafe {
        if rdkafka_sys::rd_kafka_assignment(rk, &mut list) != rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            || list.is_null()
        {
            return false;
        }
        let rc = if pause {
            rdkafka_sys::rd_kafka_pause_partitions(rk, list)
        } else {
            rdkafka_sys::rd_kafka_resume_partitions(rk, list)
        };
        rdkafka_sys::rd_kafka_topic_partition_list_destroy(list);
        rc == rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
    }
}

fn run(
    handles: &QueuePtr,
    wake_fd: i32,
    headers: bool,
    shared: &Shared,
    tx: &SyncSender<Delivery>,
    spare_rx: &Receiver<Vec<KafkaMessage>>,
) {
    let (queue, rk) = (handles.0, handles.1);
    let mut stash: Vec<KafkaMessage> = Vec::new();
    while !shared.stop.load(Ordering::Acquire) {
        while let Ok(mut more) = spare_rx.try_recv() {
            if stash.len() < STASH {
                // Headers are not reused: free them now, not when the message is.
                more.iter_mut().for_each(|m| m.headers = None);
                stash.append(&mut more);
            }
            // else `more` is freed here, on this thread.
        }
        let mut chunk: Vec<KafkaMessage> = Vec::with_capacity(CHUNK);
        let mut sizes = Sizes::default();
        let mut errors: Vec<String> = Vec::new();
        let epoch;
        {
            let _gate = shared.gate.lock().unwrap_or_else(|p| p.into_inner());
            epoch = shared.epoch.load(Ordering::Acquire);
            // The first poll waits (briefly, to see `stop`), the rest take what is there.
            let mut timeout = POLL_MS;
            let mut bytes = 0;
            while chunk.len() < CHUNK && bytes < CHUNK_BYTES && sizes.payload + sizes.hidden < CHUNK_BYTES {
                // SAFETY: the source keeps the queue alive until this thread has been joined.
                let ev = unsafe { rdkafka_sys::rd_kafka_queue_poll(queue, timeout) };
                if ev.is_null() {
                    break;
                }
                timeout = 0;
                // SAFETY: `ev` is ours until rd_kafka_event_destroy; its messages are copied out
                // before that.
                let before = chunk.len();
                unsafe { take_event(ev, headers, &mut chunk, &mut stash, &mut errors, &mut sizes) };
                bytes += chunk[before..].iter().map(KafkaMessage::size).sum::<usize>();
            }
        }
        let pause = (sizes.hidden >= HIDDEN_BYTES && sizes.hidden >= sizes.payload).then_some(rk);
        // The fast path's work, here rather than on the main thread (whose time is the COPY's).
        let plan = shared
            .plan
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // A panic here (a bug in a parser or decoder) must not end the thread: the chunk then
        // goes the main thread's way, where the same input is an error the batch reports.
        let pre = match plan {
            Some(plan) if !chunk.is_empty() => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                prepare_chunk(&plan, chunk.iter().map(|m| m.payload.as_deref()), sizes.payload + chunk.len() * 16)
            }))
            .unwrap_or_default(),
            _ => Vec::new(),
        };
        for e in errors {
            if !hand_over(tx, shared, wake_fd, Delivery::Error(epoch, e), None) {
                return;
            }
        }
        if !chunk.is_empty()
            && !hand_over(
                tx,
                shared,
                wake_fd,
                Delivery::Messages(epoch, chunk, pre),
                pause,
            )
        {
            return;
        }
    }
}

/// What the messages of a chunk hold: payload bytes, which librdkafka's prefetch limit counts,
/// and key and header bytes, which it does not.
#[derive(Default)]
struct Sizes {
    payload: usize,
    hidden: usize,
}

/// The bytes of a message's headers (names and values), without copying them.
///
/// # Safety
/// `m` must be a live message.
unsafe fn header_bytes(m: *const rdkafka_sys::rd_kafka_message_t) -> usize {
    let mut hdrs: *mut rdkafka_sys::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: per the contract; librdkafka parses the headers it holds and keeps them with `m`.
    unsafe {
        if rdkafka_sys::rd_kafka_message_headers(m, &mut hdrs) != rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            || hdrs.is_null()
        {
            return 0;
        }
        let mut total = 0;
        for i in 0..rdkafka_sys::rd_kafka_header_cnt(hdrs) {
            let mut name: *const std::ffi::c_char = std::ptr::null();
            let mut value: *const std::ffi::c_void = std::ptr::null();
            let mut size: usize = 0;
            if rdkafka_sys::rd_kafka_header_get_all(hdrs, i, &mut name, &mut value, &mut size)
                != rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                || name.is_null()
            {
                break;
            }
            total += libc::strlen(name) + size + ingest_core::headers::HEADER_COST;
        }
        total
    }
}

/// Copies the messages of a fetch event (errors as text) and destroys the event.
///
/// # Safety
/// `ev` must be a live event from the consumer queue, not used afterwards.
unsafe fn take_event(
    ev: *mut rdkafka_sys::rd_kafka_event_t,
    headers: bool,
    chunk: &mut Vec<KafkaMessage>,
    stash: &mut Vec<KafkaMessage>,
    errors: &mut Vec<String>,
    sizes: &mut Sizes,
) {
    // SAFETY: per the contract; message pointers live until the event is destroyed.
    unsafe {
        match rdkafka_sys::rd_kafka_event_type(ev) {
            rdkafka_sys::RD_KAFKA_EVENT_FETCH => loop {
                let m = rdkafka_sys::rd_kafka_event_message_next(ev);
                if m.is_null() {
                    break;
                }
                if (*m).err != rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    let e = rdkafka::error::KafkaError::MessageConsumption((*m).err.into());
                    errors.push(format!("Kafka: {e}"));
                    continue;
                }
                let mut out = stash.pop().unwrap_or_else(blank_message);
                copy_message(&*m, &mut out, headers);
                sizes.payload += (*m).len;
                sizes.hidden += (*m).key_len
                    + match &out.headers {
                        Some(h) => ingest_core::headers::headers_size(Some(h)),
                        None => header_bytes(m),
                    };
                chunk.push(out);
            },
            rdkafka_sys::RD_KAFKA_EVENT_ERROR => {
                let code = rdkafka_sys::rd_kafka_event_error(ev);
                if code != rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    let e = if rdkafka_sys::rd_kafka_event_error_is_fatal(ev) != 0 {
                        rdkafka::error::KafkaError::MessageConsumptionFatal(code.into())
                    } else {
                        rdkafka::error::KafkaError::MessageConsumption(code.into())
                    };
                    errors.push(format!("Kafka: {e}"));
                }
            }
            // Partitions are assigned by hand (no rebalances); group commit replies and statistics
            // need nothing from us.
            _ => {}
        }
        rdkafka_sys::rd_kafka_event_destroy(ev);
    }
}
