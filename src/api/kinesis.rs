//! `pipeline_kinesis.*` SQL functions.

use pgrx::prelude::*;

#[pg_schema]
mod pipeline_kinesis {
    use crate::catalog::kinesis as cat;
    use crate::error::raise;
    use pgrx::prelude::*;

    /// Adds a Kinesis endpoint: a name for a region (and optionally a credentials file and a
    /// non-AWS URL such as kinesalite's).
    #[pg_extern(volatile, parallel_unsafe)]
    fn add_endpoint(
        name: Option<&str>,
        region: Option<&str>,
        credfile: default!(Option<&str>, "NULL"),
        url: default!(Option<&str>, "NULL"),
    ) {
        let name = crate::error::required(name, "name");
        let region = crate::error::required(region, "region");
        if name.trim().is_empty() {
            raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "endpoint name must not be empty");
        }
        if region.trim().is_empty() {
            raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "region must not be empty");
        }
        if let Some(u) = url {
            if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() <= "https://".len() {
                raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("url \"{u}\" must start with http:// or https://"));
            }
        }
        if credfile.is_some_and(|c| c.is_empty()) {
            raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "credfile must not be empty (use NULL for the default)");
        }
        if cat::endpoint_exists(name) {
            raise(PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT, format!("Kinesis endpoint \"{name}\" already exists"));
        }
        cat::insert_endpoint(name, region, credfile, url);
    }

    /// Removes an endpoint that no consumer uses.
    #[pg_extern(volatile, parallel_unsafe)]
    fn remove_endpoint(name: Option<&str>) {
        let name = crate::error::required(name, "name");
        let users = cat::endpoint_users(name);
        if users > 0 {
            crate::error::raise_with(
                PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
                format!("Kinesis endpoint \"{name}\" is used by {users} consumer(s)"),
                None,
                Some("Stop and remove its consumers first.".into()),
            );
        }
        if !cat::delete_endpoint(name) {
            raise(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("Kinesis endpoint \"{name}\" does not exist"));
        }
    }
}
