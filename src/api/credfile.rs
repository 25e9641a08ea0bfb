//! `add_endpoint(..., credfile := path)`: the file is checked when the endpoint is named, as the
//! server process that will read it, so a wrong path or a permission problem is an error at the call
//! (58P01 / 42501) instead of a 28000 at the first consume_begin or in a worker's last_error.

use crate::error::{raise, raise_with};
use pgrx::prelude::*;
use std::io::ErrorKind;
use std::path::Path;

/// Raises unless the database server's OS user can open `path` for reading as a regular file.
/// Only the file's readability is checked, not its contents: the AWS SDK reads it at each client
/// start, and a file changed later is its owner's business.
#[track_caller]
pub fn check(path: &str) {
    if path.is_empty() {
        raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "credfile must not be empty (use NULL for the default)");
    }
    if !Path::new(path).is_absolute() {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("credfile \"{path}\" must be an absolute path"),
            None,
            Some("The workers read it from the data directory as their working directory; name it from the root.".into()),
        );
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("credfile \"{path}\" is a directory, not a credentials file"),
        ),
        Ok(_) => {}
        Err(e) => io_error(path, e),
    }
    if let Err(e) = std::fs::File::open(path) {
        io_error(path, e);
    }
}

#[track_caller]
fn io_error(path: &str, e: std::io::Error) -> ! {
    match e.kind() {
        ErrorKind::NotFound => raise_with(
            PgSqlErrorCode::ERRCODE_UNDEFINED_FILE,
            format!("credfile \"{path}\" does not exist on the database server"),
            None,
            Some("The path is read by the PostgreSQL server process on its own machine, not by the client.".into()),
        ),
        ErrorKind::PermissionDenied => raise_with(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("the database server cannot read credfile \"{path}\": permission denied"),
            None,
            Some("Make the file (and its directories) readable by the OS user that runs PostgreSQL.".into()),
        ),
        _ => raise(PgSqlErrorCode::ERRCODE_IO_ERROR, format!("could not open credfile \"{path}\": {e}")),
    }
}
