//! consume_begin's arguments for how a batch is written (both systems): `transform` (a function
//! receiving the batch as an array of messages), `mode` ('append' | 'upsert') with `key_columns`
//! and `key_format`.

use crate::error::raise;
use crate::shmem::SourceKind;
use ingest_core::format::CopyOptions;
use pgrx::prelude::*;

/// A `regprocedure` argument (the function's oid), so that callers may write
/// `transform := 'f(pipeline_kafka.message[])'` or pass a regprocedure value.
pub struct RegProcArg(pub pg_sys::Oid);

impl pgrx::FromDatum for RegProcArg {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<RegProcArg> {
        if is_null {
            None
        } else {
            // A regprocedure datum is an oid.
            Some(RegProcArg(pg_sys::Oid::from(datum.value() as u32)))
        }
    }
}

// SAFETY: an argument-only mapping to the built-in regprocedure type, an oid datum (read above).
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for RegProcArg {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: the caller (pgrx's wrapper) guarantees the argument is a regprocedure datum.
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }
}

pgrx::impl_sql_translatable!(RegProcArg, arg_only = "regprocedure");

/// The write settings as stored in the consumers table.
pub struct WriterArgs {
    /// The transform function as `regprocedure` text (schema-qualified when needed).
    pub transform: Option<String>,
    pub mode: &'static str,
    pub key_columns: Option<Vec<String>>,
    pub key_format: Option<String>,
}

/// Checks the write arguments against the relation; returns what to store.
#[allow(clippy::too_many_arguments)]
pub fn check(
    source: SourceKind,
    _relid: pg_sys::Oid,
    _owner: pg_sys::Oid,
    _relation: &str,
    _opts: &CopyOptions,
    transform: Option<RegProcArg>,
    mode: Option<&str>,
    key_columns: Option<Vec<Option<String>>>,
    key_format: Option<&str>,
) -> WriterArgs {
    let _ = source;
    let mode = match crate::error::required(mode, "mode") {
        "append" => "append",
        "upsert" => "upsert",
        m => raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("mode must be 'append' or 'upsert', got '{m}'"),
        ),
    };
    if let Some(f) = key_format {
        if !matches!(f, "json" | "csv" | "text") {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("key_format must be 'json', 'csv', 'text' or NULL, got '{f}'"),
            );
        }
    }
    let key_columns = crate::api::consumer_args::columns(key_columns);
    let transform = transform.map(|f| {
        crate::catalog::spi(Spi::get_one_with_args::<String>(
            "SELECT $1::regprocedure::text",
            &[f.0.into()],
        ))
        .unwrap_or_else(|| {
            raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION,
                "transform function does not exist",
            )
        })
    });
    WriterArgs {
        transform,
        mode,
        key_columns,
        key_format: key_format.map(str::to_string),
    }
}
