//! The differences between the PostgreSQL major versions we build for (cargo features `pg15` and
//! `pg18`), in one place: every other module calls these and never tests the version itself.
//!
//! - COPY FROM's permission check: up to 15 the required rights and the inserted columns live in
//!   the RangeTblEntry and ExecCheckRTPerms checks the range table; from 16 on they live in an
//!   RTEPermissionInfo and ExecCheckPermissions checks a list of those.
//! - A tuple descriptor's attributes: a plain `attrs` array up to 17; from 18 on they follow the
//!   CompactAttribute array and are reached through TupleDescAttr().
//! - Installing a signal handler: `pqsignal` up to 17, `pqsignal_be` in the server from 18 on.
//! - COPY FROM's private state (`CopyFromStateData`, mirrored in part to read the line COPY is
//!   on): 18 adds a `routine` pointer at its start and `relname_only` after the line fields.
//!
//! Supporting 16 or 17 means adding their feature to the cfgs below (16 and 17 take the `pg18`
//! branch of the permission check and the `pg15` branch of the other two).

use pgrx::pg_sys;

#[cfg(not(any(feature = "pg15", feature = "pg18")))]
compile_error!("build with exactly one of the features pg15 or pg18");
#[cfg(all(feature = "pg15", feature = "pg18"))]
compile_error!("the features pg15 and pg18 exclude each other (use --no-default-features --features pg18)");

/// Where COPY FROM's INSERT permission of one relation is recorded before it is checked.
pub struct InsertPermission {
    #[cfg(feature = "pg15")]
    target: *mut pg_sys::RangeTblEntry,
    #[cfg(feature = "pg18")]
    target: *mut pg_sys::RTEPermissionInfo,
}

impl InsertPermission {
    /// Requires INSERT on the relation of `nsitem` (as COPY FROM does); columns are added with
    /// [`InsertPermission::add_column`] and everything is checked by [`InsertPermission::check`].
    ///
    /// # Safety
    /// `nsitem` must come from addRangeTableEntryForRelation in the current memory context and
    /// outlive the returned value.
    pub unsafe fn require_insert(nsitem: *mut pg_sys::ParseNamespaceItem) -> Self {
        // SAFETY: the caller passes a valid namespace item; its RTE / permission info is palloc'd.
        unsafe {
            #[cfg(feature = "pg15")]
            let target = (*nsitem).p_rte;
            #[cfg(feature = "pg18")]
            let target = (*nsitem).p_perminfo;
            (*target).requiredPerms = pg_sys::ACL_INSERT as pg_sys::AclMode;
            InsertPermission { target }
        }
    }

    /// Adds attribute number `attno` (already offset by FirstLowInvalidHeapAttributeNumber, as
    /// the bitmapsets hold them) to the inserted columns.
    ///
    /// # Safety
    /// In the memory context the namespace item was made in.
    pub unsafe fn add_column(&self, attno: i32) {
        // SAFETY: target is valid (require_insert); bms_add_member reallocates in the current context.
        unsafe { (*self.target).insertedCols = pg_sys::bms_add_member((*self.target).insertedCols, attno) };
    }

    /// Raises PostgreSQL's permission error (42501) unless the current user may insert into the
    /// relation's recorded columns.
    ///
    /// # Safety
    /// `pstate` must be the parse state the namespace item was added to.
    pub unsafe fn check(&self, pstate: *mut pg_sys::ParseState) {
        // SAFETY: as the callers of DoCopy do: the range table and its permission infos are valid.
        unsafe {
            #[cfg(feature = "pg15")]
            pg_sys::ExecCheckRTPerms((*pstate).p_rtable, true);
            #[cfg(feature = "pg18")]
            pg_sys::ExecCheckPermissions((*pstate).p_rtable, pg_sys::lappend(std::ptr::null_mut(), self.target.cast()), true);
        }
    }
}

/// The attributes of a tuple descriptor (dropped ones included), in attribute-number order.
///
/// # Safety
/// `tupdesc` must be valid for the returned lifetime (e.g. a relation's rd_att while it is open).
pub unsafe fn tuple_attrs<'a>(tupdesc: pg_sys::TupleDesc) -> &'a [pg_sys::FormData_pg_attribute] {
    // SAFETY: natts attributes follow the descriptor's header (pg15: the attrs array; pg18: after
    // the compact attributes, contiguous, which TupleDescAttr(0) points at).
    unsafe {
        let natts = (*tupdesc).natts as usize;
        #[cfg(feature = "pg15")]
        return (*tupdesc).attrs.as_slice(natts);
        #[cfg(feature = "pg18")]
        return if natts == 0 { &[] } else { std::slice::from_raw_parts(pg_sys::TupleDescAttr(tupdesc, 0), natts) };
    }
}

/// Installs `handler` for `signo` in a background worker (PostgreSQL's pqsignal).
///
/// # Safety
/// As pqsignal: called in the process's main thread, with a handler that is async-signal-safe.
pub unsafe fn set_signal(signo: std::ffi::c_int, handler: unsafe extern "C-unwind" fn(std::ffi::c_int)) {
    // SAFETY: as the caller guarantees.
    unsafe {
        #[cfg(feature = "pg15")]
        pg_sys::pqsignal(signo, Some(handler));
        #[cfg(feature = "pg18")]
        pg_sys::pqsignal_be(signo, Some(handler));
    }
}

/// The start of PostgreSQL's private CopyFromStateData (commands/copyfrom_internal.h), up to the
/// fields CopyFromErrorCallback reads. The COPY bridge (sink/copy.rs) checks the layout on every
/// COPY (`copy_state_layout_ok`) and reads no line when it does not match.
#[repr(C)]
struct CopyFromStateHead {
    #[cfg(feature = "pg18")]
    routine: *const std::ffi::c_void,
    copy_src: std::ffi::c_int,
    copy_file: *mut std::ffi::c_void,
    fe_msgbuf: *mut std::ffi::c_void,
    eol_type: std::ffi::c_int,
    file_encoding: std::ffi::c_int,
    need_transcoding: bool,
    conversion_proc: pg_sys::Oid,
    rel: pg_sys::Relation,
    attnumlist: *mut pg_sys::List,
    filename: *mut std::ffi::c_char,
    is_program: bool,
    data_source_cb: *const std::ffi::c_void,
    opts: pg_sys::CopyFormatOptions,
    convert_select_flags: *mut bool,
    where_clause: *mut pg_sys::Node,
    cur_relname: *const std::ffi::c_char,
    cur_lineno: u64,
    cur_attname: *const std::ffi::c_char,
    cur_attval: *const std::ffi::c_char,
    /// Set while a foreign table's batch is inserted: the line is not the failing row's.
    #[cfg(feature = "pg18")]
    relname_only: bool,
}

/// Whether `cstate`, just returned by BeginCopyFrom for `rel`, has the layout mirrored by
/// `CopyFromStateHead`: its `rel` and `cur_relname` are the ones BeginCopyFrom set, and no line
/// has been read yet.
///
/// # Safety
/// `cstate` and `rel` must be live, `cstate` from BeginCopyFrom.
pub unsafe fn copy_state_layout_ok(cstate: pg_sys::CopyFromState, rel: pg_sys::Relation) -> bool {
    // SAFETY: CopyFromStateData starts with these fields (palloc'd, larger than the head).
    unsafe {
        let head = cstate.cast::<CopyFromStateHead>();
        (*head).rel == rel && (*head).cur_relname == (*(*rel).rd_rel).relname.data.as_ptr() && (*head).cur_lineno == 0
    }
}

/// The input line the running COPY is processing, as its error context reports it; None before
/// the first line and (18) while a foreign table's batch is inserted, when the line is not the
/// failing row's.
///
/// # Safety
/// `cstate` must be a live CopyFromState that `copy_state_layout_ok` accepted.
pub unsafe fn copy_row_line(cstate: pg_sys::CopyFromState) -> Option<u64> {
    // SAFETY: per the contract; only reads.
    unsafe {
        let head = cstate.cast::<CopyFromStateHead>();
        #[cfg(feature = "pg18")]
        let relname_only = (*head).relname_only;
        #[cfg(not(feature = "pg18"))]
        let relname_only = false;
        (!relname_only && (*head).cur_lineno > 0).then_some((*head).cur_lineno)
    }
}
