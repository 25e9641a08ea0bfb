//! `pipeline_kinesis.endpoints` (consumers and seqnums come with the Kinesis consumer).

use super::spi;
use crate::xact::as_superuser;
use pgrx::prelude::*;

pub fn endpoint_exists(name: &str) -> bool {
    spi(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pipeline_kinesis.endpoints WHERE name = $1)",
        &[name.into()],
    ))
    .unwrap_or(false)
}

pub fn insert_endpoint(name: &str, region: &str, credfile: Option<&str>, url: Option<&str>) {
    as_superuser(|| {
        spi(Spi::run_with_args(
            "INSERT INTO pipeline_kinesis.endpoints (name, region, credfile, url) VALUES ($1, $2, $3, $4)",
            &[name.into(), region.into(), credfile.into(), url.into()],
        ))
    });
}

/// How many consumers use an endpoint.
pub fn endpoint_users(name: &str) -> i64 {
    spi(Spi::get_one_with_args::<i64>(
        "SELECT count(*) FROM pipeline_kinesis.consumers WHERE endpoint = $1",
        &[name.into()],
    ))
    .unwrap_or(0)
}

pub fn delete_endpoint(name: &str) -> bool {
    as_superuser(|| {
        spi(Spi::get_one_with_args::<bool>(
            "WITH d AS (DELETE FROM pipeline_kinesis.endpoints WHERE name = $1 RETURNING 1) SELECT count(*) > 0 FROM d",
            &[name.into()],
        ))
    })
    .unwrap_or(false)
}
