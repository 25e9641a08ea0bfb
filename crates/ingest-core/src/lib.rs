//! The PostgreSQL-free heart of pipeline_ingest: how messages become COPY input, how a batch keeps
//! its offsets, how broker addresses are checked and how retries back off. Everything here is
//! plain Rust, tested with `cargo test -p ingest-core`, and knows nothing of pgrx.

pub mod avro;
pub mod backoff;
pub mod batch;
pub mod avro_write;
pub mod broker;
pub mod debezium;
pub mod decode;
pub mod format;
pub mod headers;
pub mod json;
pub mod keys;
pub mod kinesis;
pub mod metadata;
pub mod policy;
pub mod position;
pub mod prepare;
pub mod protobuf;
pub mod recent;
pub mod records;
pub mod rows;
pub mod settings;
pub mod spec;

/// For tests: how much memory a piece of code allocates at its peak, counted per thread (tests
/// run in parallel) by a global allocator that forwards to the system's.
#[cfg(test)]
pub(crate) mod test_alloc {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static NOW: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn add(delta: isize) {
        let _ = NOW.try_with(|n| {
            let v = n.get() + delta;
            n.set(v);
            let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
        });
    }

    struct Counting;

    // SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            // SAFETY: as the caller's contract.
            let p = unsafe { System.alloc(l) };
            if !p.is_null() {
                add(l.size() as isize);
            }
            p
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            // SAFETY: as the caller's contract.
            unsafe { System.dealloc(p, l) };
            add(-(l.size() as isize));
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            // SAFETY: as the caller's contract.
            let q = unsafe { System.realloc(p, l, new) };
            if !q.is_null() {
                add(new as isize - l.size() as isize);
            }
            q
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// Runs `f`; its result and the most bytes this thread held during it beyond what it held
    /// before.
    pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
        let start = NOW.with(Cell::get);
        PEAK.with(|p| p.set(start));
        let r = f();
        (r, (PEAK.with(Cell::get) - start).max(0) as usize)
    }
}
