//! A relation opened with `table_open` and closed when the guard is dropped, whatever happens in
//! between: an ERROR raised meanwhile (a Rust panic through pgrx's guard) unwinds through the
//! guard and closes the relation, as a return does. The lock taken at open is kept to the end of
//! the transaction (closed with NoLock), as an INSERT's or a COPY's.

use pgrx::pg_sys;

pub struct OpenRelation {
    rel: pg_sys::Relation,
}

impl OpenRelation {
    /// Opens table `relid` with `lockmode` (table_open's ERROR when it does not exist or is not
    /// a table).
    ///
    /// # Safety
    /// In a transaction, in the backend's main thread; the guard is dropped in the same
    /// transaction (before its commit or abort).
    pub unsafe fn open(relid: pg_sys::Oid, lockmode: pg_sys::LOCKMODE) -> OpenRelation {
        // SAFETY: per the contract.
        OpenRelation { rel: unsafe { pg_sys::table_open(relid, lockmode) } }
    }

    /// The open relation, valid while the guard lives.
    pub fn as_ptr(&self) -> pg_sys::Relation {
        self.rel
    }
}

impl Drop for OpenRelation {
    fn drop(&mut self) {
        // SAFETY: opened in `open`, closed once here; RelationClose only gives back the relcache
        // reference (no ERROR), so this is safe while an ERROR unwinds too.
        unsafe { pg_sys::table_close(self.rel, pg_sys::NoLock as pg_sys::LOCKMODE) };
    }
}
