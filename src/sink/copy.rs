//! The COPY FROM bridge: feeds an in-memory buffer to `BeginCopyFrom` through a data-source
//! callback, so triggers, defaults, constraints and partition routing behave as with COPY.
//! Privileges are checked as `COPY` does (INSERT on the relation, as the current user); relations
//! with row-level security enabled are refused, as `COPY FROM` refuses them. The line COPY was on
//! when it raised an ERROR is kept (`take_error_line`), so bad-message isolation can go straight to
//! the message that failed.

use crate::error::raise;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::Cell;
use std::ffi::{c_int, c_void, CString};

thread_local! {
    /// The buffer being fed to the running COPY: (start, length, position, next piece's size).
    static FEED: Cell<(*const u8, usize, usize, usize)> = const { Cell::new((std::ptr::null(), 0, 0, 0)) };
}

thread_local! {
    /// What the running COPY reads before and after the buffer (COPY BINARY's header and
    /// trailer; empty for text and csv).
    static FRAME: Cell<(&'static [u8], &'static [u8])> = const { Cell::new((&[], &[])) };
}

/// COPY BINARY's trailer: a field count of -1.
const BINARY_TRAILER: &[u8] = &[0xff, 0xff];

thread_local! {
    /// The line (as COPY counts them) of the last ERROR raised inside the running COPY's row
    /// processing; None when the error came from elsewhere (statement triggers, our own checks).
    static ERROR_LINE: Cell<Option<u64>> = const { Cell::new(None) };
}

/// The line of the COPY input that the last `copy_rows` failed on, if its ERROR was raised while
/// COPY processed that line (parsing, constraints, row triggers, index insertion at flush, where
/// COPY sets the line of the buffered row). Reading it clears it.
pub fn take_error_line() -> Option<u64> {
    ERROR_LINE.with(|l| l.take())
}

extern "C-unwind" {
    /// PostgreSQL's own (pgrx's binding wraps it in a Rust function, whose address is not the one
    /// COPY pushes).
    #[link_name = "CopyFromErrorCallback"]
    fn copy_from_error_callback(arg: *mut c_void);
}

/// Error context callback pushed under COPY's own for the whole CopyFrom: PostgreSQL calls it for
/// every report raised inside (the ERROR that ends the COPY is the last). The line is kept only
/// while COPY's callback for this same COPY is on the stack above it, i.e. while a row is being
/// processed; errors of statement-level and queued AFTER triggers come after COPY popped it.
#[pg_guard]
extern "C-unwind" fn note_error_line(arg: *mut c_void) {
    let mut line = None;
    // SAFETY: PostgreSQL calls this from errfinish with the context stack intact; every entry
    // above ours is live (pushed by code running inside CopyFrom). arg is the CopyFromState whose
    // layout copy_rows checked before pushing us; nothing here can raise or panic.
    unsafe {
        let mut e = pg_sys::error_context_stack;
        while !e.is_null() && (*e).arg != arg {
            e = (*e).previous;
        }
        // the first entry with our cstate as arg is COPY's own callback or ours (not pushed by COPY)
        let copy_callback = copy_from_error_callback as unsafe extern "C-unwind" fn(*mut c_void) as usize;
        if !e.is_null() && (*e).callback.map(|f| f as usize) == Some(copy_callback) {
            line = crate::compat::copy_row_line(arg.cast());
        }
    }
    ERROR_LINE.with(|l| l.set(line));
}

/// Pops our error context callback when CopyFrom returns or raises (pgrx's FFI guard puts back
/// the stack as it was when CopyFrom was called, which has our entry on top).
struct ContextGuard(*mut pg_sys::ErrorContextCallback);

impl Drop for ContextGuard {
    fn drop(&mut self) {
        // SAFETY: self.0 is the entry pushed in copy_rows, still live (the guard is dropped before
        // it); restoring its previous entry undoes the push.
        unsafe { pg_sys::error_context_stack = (*self.0).previous };
    }
}

const FEED_PIECE_MIN: usize = 4096;
const FEED_PIECE_MAX: usize = 1 << 16;

#[pg_guard]
extern "C-unwind" fn feed_copy(outbuf: *mut c_void, _minread: c_int, maxread: c_int) -> c_int {
    let (prefix, suffix) = FRAME.with(|f| f.get());
    FEED.with(|f| {
        let (ptr, len, pos, piece) = f.get();
        // Small pieces first, doubling: a COPY that fails on an early line (as isolating bad
        // messages does, once per bad message) has copied little beyond it, while a long COPY
        // soon takes COPY's whole buffer (64 kB) at a time.
        let total = prefix.len() + len + suffix.len();
        let n = (total - pos).min(maxread.max(0) as usize).min(piece);
        // The stream is prefix, then the buffer, then suffix: copy the part of each in pos..pos+n.
        let mut done = 0;
        let mut seg_start = 0;
        for (seg_ptr, seg_len) in [
            (prefix.as_ptr(), prefix.len()),
            (ptr, len),
            (suffix.as_ptr(), suffix.len()),
        ] {
            let (from, to) = (
                (pos + done).max(seg_start),
                (pos + n).min(seg_start + seg_len),
            );
            if from < to {
                // SAFETY: each segment is live for the COPY (`copy_rows_framed`: the caller's
                // buffer, or a static); outbuf holds maxread >= n bytes and done + (to - from) <= n.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        seg_ptr.add(from - seg_start),
                        outbuf.cast::<u8>().add(done),
                        to - from,
                    )
                };
                done += to - from;
            }
            seg_start += seg_len;
        }
        f.set((ptr, len, pos + n, (piece * 2).min(FEED_PIECE_MAX)));
        n as c_int
    })
}

/// COPY options as (name, value) pairs, e.g. ("format", "csv").
pub type CopyOptionList<'a> = Vec<(&'a str, String)>;

/// The options the workers give COPY for a consumer's format; `consume_begin` has PostgreSQL check
/// this same list. json and raw rows are produced in text format.
pub fn copy_option_list(opts: &ingest_core::format::CopyOptions) -> CopyOptionList<'static> {
    use ingest_core::format::Format;
    let mut o: CopyOptionList = vec![("encoding", "UTF8".to_string())];
    match opts.format {
        Format::Text | Format::Csv => {
            let f = opts.format;
            o.push(("format", f.name().to_string()));
            if let Some(d) = &opts.delimiter {
                o.push(("delimiter", d.clone()));
            }
            if let Some(q) = &opts.quote {
                o.push(("quote", q.clone()));
            }
            if let Some(e) = &opts.escape {
                o.push(("escape", e.clone()));
            }
        }
        // json, raw and the decoded formats: rows are written in text format
        _ => o.push(("format", "text".to_string())),
    }
    o
}

fn c_strings(options: &CopyOptionList) -> Vec<(CString, CString)> {
    options
        .iter()
        .map(|(k, v)| (CString::new(*k).expect("option name"), CString::new(v.as_str()).expect("option value has no NUL")))
        .collect()
}

/// The options as the List of DefElem that COPY's option code reads (palloc'd in the current
/// memory context).
///
/// # Safety
/// Must be called in a backend with a valid current memory context.
unsafe fn def_elems(c_options: &[(CString, CString)]) -> *mut pg_sys::List {
    let mut opts: *mut pg_sys::List = std::ptr::null_mut();
    for (k, v) in c_options {
        // SAFETY: k and v are NUL-terminated and live for the call; pstrdup copies them.
        let arg = unsafe { pg_sys::makeString(pg_sys::pstrdup(v.as_ptr())) };
        let def = unsafe { pg_sys::makeDefElem(pg_sys::pstrdup(k.as_ptr()), arg.cast(), -1) };
        opts = unsafe { pg_sys::lappend(opts, def.cast()) };
    }
    opts
}

/// Checks `options` with PostgreSQL's own COPY option code (ProcessCopyOptions, as COPY FROM
/// runs it), so a consumer is refused at `consume_begin` with COPY's error and SQLSTATE (e.g.
/// `22023` for `delimiter '.'`, `0A000` for a two-byte delimiter) instead of every message
/// failing later in the worker. Pass the same list the worker will give `copy_rows`.
pub fn check_copy_options(options: &CopyOptionList) {
    if options.iter().any(|(_, v)| v.contains('\0')) {
        raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "COPY options cannot contain NUL characters");
    }
    let c_options = c_strings(options);
    // SAFETY: called in a transaction (a SQL function); ProcessCopyOptions reads the palloc'd
    // DefElem list and fills the zeroed, palloc'd CopyFormatOptions, raising an ERROR (a Rust
    // panic through pgrx's guard) for a bad option. Nothing is kept after the call.
    unsafe {
        let pstate = pg_sys::make_parsestate(std::ptr::null_mut());
        let out = pg_sys::palloc0(std::mem::size_of::<pg_sys::CopyFormatOptions>()).cast::<pg_sys::CopyFormatOptions>();
        pg_sys::ProcessCopyOptions(pstate, out, true, def_elems(&c_options));
        pg_sys::pfree(out.cast());
        pg_sys::free_parsestate(pstate);
    }
}

/// COPYs `data` into `relid`. `columns` = the columns named in the data, in order (None = all).
/// Returns the number of rows COPY processed. Raises PostgreSQL errors (the caller's transaction
/// or subtransaction takes care of them).
pub fn copy_rows(relid: pg_sys::Oid, columns: Option<&[&str]>, options: &CopyOptionList, data: &[u8]) -> u64 {
    copy_rows_framed(relid, columns, options, (&[], &[]), data)
}

/// COPY BINARY of `tuples` (the fast path's: tuples without the header and trailer, which are
/// added here, so that any run of them is a COPY).
pub fn copy_rows_binary(relid: pg_sys::Oid, columns: Option<&[&str]>, tuples: &[u8]) -> u64 {
    let options: CopyOptionList = vec![("format", "binary".to_string())];
    copy_rows_framed(
        relid,
        columns,
        &options,
        (ingest_core::rows::HEADER, BINARY_TRAILER),
        tuples,
    )
}

fn copy_rows_framed(
    relid: pg_sys::Oid,
    columns: Option<&[&str]>,
    options: &CopyOptionList,
    frame: (&'static [u8], &'static [u8]),
    data: &[u8],
) -> u64 {
    let c_options = c_strings(options);
    let c_columns: Option<Vec<CString>> =
        columns.map(|cols| cols.iter().map(|c| CString::new(*c).expect("column name has no NUL")).collect());

    // SAFETY: called in a transaction in the main thread; every pointer handed to PostgreSQL is
    // palloc'd (pstrdup) or outlives the call; `data` outlives CopyFrom, and FEED is reset after.
    unsafe {
        let lockmode = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        let opened = crate::rel::OpenRelation::open(relid, lockmode);
        let rel = opened.as_ptr();
        let pstate = pg_sys::make_parsestate(std::ptr::null_mut());
        let nsitem = pg_sys::addRangeTableEntryForRelation(pstate, rel, lockmode, std::ptr::null_mut(), false, false);
        let perm = crate::compat::InsertPermission::require_insert(nsitem);

        let attrs = crate::compat::tuple_attrs((*rel).rd_att);
        for (i, att) in attrs.iter().enumerate() {
            if att.attisdropped || att.attgenerated != 0 {
                continue;
            }
            if let Some(cols) = &c_columns {
                let name = std::ffi::CStr::from_ptr(att.attname.data.as_ptr());
                if !cols.iter().any(|c| c.as_c_str() == name) {
                    continue;
                }
            }
            let attno = i as i32 + 1 - pg_sys::FirstLowInvalidHeapAttributeNumber;
            perm.add_column(attno);
        }
        perm.check(pstate);

        if pg_sys::check_enable_rls(relid, pg_sys::InvalidOid, false) == pg_sys::CheckEnableRlsResult::RLS_ENABLED as c_int {
            raise(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "row-level security is enabled on the target relation; ingestion uses COPY FROM, which does not support it",
            );
        }

        let opts = def_elems(&c_options);
        let mut attnames: *mut pg_sys::List = std::ptr::null_mut();
        if let Some(cols) = &c_columns {
            for c in cols {
                attnames = pg_sys::lappend(attnames, pg_sys::makeString(pg_sys::pstrdup(c.as_ptr())).cast());
            }
        }

        FEED.with(|f| f.set((data.as_ptr(), data.len(), 0, FEED_PIECE_MIN)));
        FRAME.with(|f| f.set(frame));
        let cstate = pg_sys::BeginCopyFrom(
            pstate,
            rel,
            std::ptr::null_mut(),
            std::ptr::null(),
            false,
            Some(feed_copy),
            attnames,
            opts,
        );
        ERROR_LINE.with(|l| l.set(None));
        let processed = if crate::compat::copy_state_layout_ok(cstate, rel) {
            let mut ctx = pg_sys::ErrorContextCallback {
                previous: pg_sys::error_context_stack,
                callback: Some(note_error_line),
                arg: cstate.cast(),
            };
            pg_sys::error_context_stack = &mut ctx;
            let _pop = ContextGuard(&mut ctx);
            pg_sys::CopyFrom(cstate)
        } else {
            pg_sys::CopyFrom(cstate)
        };
        // a NOTICE raised inside COPY went through the callback too: no ERROR, no line
        ERROR_LINE.with(|l| l.set(None));
        pg_sys::EndCopyFrom(cstate);
        FEED.with(|f| f.set((std::ptr::null(), 0, 0, 0)));
        FRAME.with(|f| f.set((&[], &[])));

        pg_sys::free_parsestate(pstate);
        drop(opened);
        processed
    }
}
