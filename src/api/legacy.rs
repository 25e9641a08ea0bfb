//! What the SQL functions of databases whose extension is not updated yet still call: the 0.4.0 ..
//! 0.6.0 `consume_begin` and `preview` took `transform` as a `regprocedure` (0.7.0: text) and the
//! previews had no `action` column. Their symbols stay (`sql = false`, next to the functions they
//! forward to) until ALTER EXTENSION UPDATE; this module holds the argument type they need.

use pgrx::prelude::*;

/// A `regprocedure` argument (the function's oid).
pub struct RegProcArg(pub pg_sys::Oid);

impl pgrx::FromDatum for RegProcArg {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<RegProcArg> {
        // A regprocedure datum is an oid.
        (!is_null).then(|| RegProcArg(pg_sys::Oid::from(datum.value() as u32)))
    }
}

// SAFETY: an argument-only mapping to the built-in regprocedure type, an oid datum (read above).
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for RegProcArg {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: the caller (pgrx's wrapper) guarantees the argument is a regprocedure datum.
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| panic!("argument {index} must not be null"))
    }
}

pgrx::impl_sql_translatable!(RegProcArg, arg_only = "regprocedure");

/// The function as 0.7.0's text `transform` names it (its regprocedure text, schema-qualified
/// where the search_path does not find it).
pub fn transform_text(f: Option<RegProcArg>) -> Option<String> {
    f.and_then(|f| crate::catalog::spi(Spi::get_one_with_args::<String>("SELECT $1::pg_catalog.regprocedure::text", &[f.0.into()])))
}
