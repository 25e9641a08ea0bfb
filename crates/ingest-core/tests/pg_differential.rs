//! Differential test of the row model (src/rows) against the test stack's PostgreSQL: every
//! input goes through PostgreSQL's own text COPY and through the Rust encoder. Equal means the
//! same send-format bytes, or both errors with the same SQLSTATE, message and DETAIL; a field
//! the encoder declines (Fallback) is what the text path reads, so it cannot differ. Then the
//! Rust-written COPY BINARY stream of the accepted inputs is loaded and must give the rows the
//! text COPY gave. It runs twice: under the defaults, and as a role whose settings are
//! DateStyle 'SQL, DMY', TimeZone 'America/St_Johns', extra_float_digits -3 (float input is not
//! affected by extra_float_digits, nor any of these types by DateStyle/TimeZone: the run shows it).
//!
//! Needs PGHOST/PGPORT/PGUSER (scripts/env.sh) and fails, not skips, when it cannot connect:
//! scripts/test.sh runs it with the stack's PostgreSQL up.

#[path = "pg_differential/inputs.rs"]
mod inputs;

use ingest_core::rows::{encode_field, BinaryRowWriter, ColumnPlan, ConvError, Encoded, RowPlan, ServerSettings, Value};
use inputs::Rng;
use postgres::types::{FromSql, Type};
use postgres::{Client, NoTls};
use std::collections::HashMap;
use std::io::Write;

/// A result column's bytes as the server sent them (binary format), whatever its type.
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Raw, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn connect(user: &str) -> Client {
    let (host, port) = (env("PGHOST", "127.0.0.1"), env("PGPORT", "5432"));
    let conn = format!("host={host} port={port} user={user} dbname=postgres");
    Client::connect(&conn, NoTls).unwrap_or_else(|e| {
        panic!("pg_differential needs the test stack's PostgreSQL ({conn}): {e}; start it with `source scripts/env.sh && scripts/services.sh start pg`")
    })
}

/// COPY text escaping of one field.
fn copy_text_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n").replace('\r', "\\r").replace('\t', "\\t")
}

fn pg_error(e: &postgres::Error) -> ConvError {
    let db = e.as_db_error().unwrap_or_else(|| panic!("not a server error: {e}"));
    ConvError {
        sqlstate: Box::leak(db.code().code().to_string().into_boxed_str()),
        message: db.message().to_string(),
        detail: db.detail().map(str::to_string),
    }
}

#[derive(Default, Debug)]
struct Tally {
    inputs: usize,
    equal_values: usize,
    equal_errors: usize,
    fallbacks: usize,
    mismatches: Vec<String>,
    /// The inputs the encoder wrote (for the all-types table).
    accepted: Vec<usize>,
}

/// One column type: every input through text COPY and through the encoder, then the roundtrip.
fn run_type(c: &mut Client, settings: &ServerSettings, sql_type: &str, values: &[Value<'_>]) -> Tally {
    let mut tally = Tally { inputs: values.len(), ..Tally::default() };
    c.batch_execute(&format!(
        "DROP TABLE IF EXISTS diff_text, diff_bin;
         CREATE TEMP TABLE diff_text (id int, v {sql_type});
         CREATE TEMP TABLE diff_bin (id int, v {sql_type});"
    ))
    .unwrap();
    let row = c
        .query_one(
            "SELECT t.typname::text, a.atttypmod FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
             WHERE a.attrelid = 'diff_text'::regclass AND a.attname = 'v'",
            &[],
        )
        .unwrap();
    let plan = ColumnPlan::new("v", row.get::<_, &str>(0), row.get(1), false, settings);
    assert!(plan.ty.is_some(), "{sql_type} has no binary plan");
    let mut rust_ok: HashMap<i32, Vec<u8>> = HashMap::new();
    let mut w = BinaryRowWriter::new();
    for (id, v) in values.iter().enumerate() {
        let id = id as i32;
        let text = v.to_text().expect("no NULLs among the inputs").into_owned();
        let mut bytes = Vec::new();
        let rust = encode_field(&plan, v, &mut bytes);
        let mut sink = c.copy_in("COPY diff_text (id, v) FROM STDIN").unwrap();
        sink.write_all(format!("{id}\t{}\n", copy_text_escape(&text)).as_bytes()).unwrap();
        let pg = sink.finish().map_err(|e| pg_error(&e));
        match (rust, pg) {
            (Ok(Encoded::Fallback), _) => tally.fallbacks += 1,
            (Ok(Encoded::Written), Ok(_)) => {
                w.begin_row(2);
                w.begin_field().extend_from_slice(&id.to_be_bytes());
                w.end_field();
                w.begin_field().extend_from_slice(&bytes);
                w.end_field();
                rust_ok.insert(id, bytes);
                tally.accepted.push(id as usize);
            }
            (Err(r), Err(p)) if r == p => tally.equal_errors += 1,
            (r, p) => tally.mismatches.push(format!("{sql_type} {v:?} (text {text:?}): rust {r:?}, PostgreSQL {p:?}")),
        }
    }
    // The roundtrip: the Rust-written stream through COPY BINARY.
    let mut sink = c.copy_in("COPY diff_bin (id, v) FROM STDIN (FORMAT binary)").unwrap();
    sink.write_all(&w.finish()).unwrap();
    if let Err(e) = sink.finish() {
        tally.mismatches.push(format!("{sql_type}: COPY BINARY of the Rust rows failed: {e:?}"));
        return tally;
    }
    let fetch = |c: &mut Client, table: &str| -> HashMap<i32, Vec<u8>> {
        c.query(&format!("SELECT id, v FROM {table}"), &[])
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, i32>(0), r.get::<_, Raw>(1).0))
            .collect()
    };
    let (by_text, by_bin) = (fetch(c, "diff_text"), fetch(c, "diff_bin"));
    // jsonb's send format is its normalized text, not the input: compare the loaded rows only.
    let same_bytes_as_send = !sql_type.starts_with("jsonb");
    for (id, bytes) in &rust_ok {
        let want = &by_text[id];
        let v = &values[*id as usize];
        if same_bytes_as_send && bytes != want {
            tally.mismatches.push(format!("{sql_type} {v:?}: rust bytes {bytes:?}, PostgreSQL {want:?}"));
        } else if by_bin.get(id) != Some(want) {
            tally.mismatches.push(format!("{sql_type} {v:?}: COPY BINARY row {:?}, text COPY row {want:?}", by_bin.get(id)));
        } else {
            tally.equal_values += 1;
        }
    }
    if by_bin.len() != rust_ok.len() {
        tally.mismatches.push(format!("{sql_type}: {} binary rows for {} encoded", by_bin.len(), rust_ok.len()));
    }
    tally
}

fn run_all(c: &mut Client, label: &str) -> Vec<String> {
    let version_num: u32 = c.query_one("SHOW server_version_num", &[]).unwrap().get::<_, String>(0).parse().unwrap();
    let enc: String = c.query_one("SELECT current_setting('server_encoding') || '/' || current_setting('client_encoding')", &[]).unwrap().get(0);
    let settings = ServerSettings { version_num, utf8: enc == "UTF8/UTF8", integer_datetimes: true };
    assert!(settings.utf8, "the test cluster should be UTF8 ({enc})");
    let shown: String = c
        .query_one("SELECT current_setting('DateStyle') || ', ' || current_setting('TimeZone') || ', extra_float_digits ' || current_setting('extra_float_digits')", &[])
        .unwrap()
        .get(0);
    let mut r = Rng::new(0x5eed_2303);
    let n = 1500;
    let ints = inputs::integers(&mut r, n);
    let f4 = inputs::floats(&mut r, n, 50);
    let f8 = inputs::floats(&mut r, n, 330);
    let nums = inputs::numerics(&mut r, n);
    let cases: Vec<(&str, &[Value])> = vec![
        ("int2", &ints),
        ("int4", &ints),
        ("int8", &ints),
        ("float4", &f4),
        ("float8", &f8),
        ("numeric", &nums),
        ("numeric(10,2)", &nums),
        ("numeric(5)", &nums),
        ("numeric(3,-2)", &nums),
        ("numeric(2,5)", &nums),
        ("numeric(1000,0)", &nums),
    ];
    let bools = inputs::bools(&mut r, 400);
    let strings = inputs::strings(&mut r, 800);
    let uuids = inputs::uuids(&mut r, 800);
    let byteas = inputs::byteas(&mut r, 800);
    let jsons = inputs::jsons(&mut r, 600);
    let times = inputs::datetimes(&mut r, 1500);
    let mut cases = cases;
    cases.extend([
        ("bool", &bools[..]),
        ("text", &strings[..]),
        ("varchar(5)", &strings[..]),
        ("varchar", &strings[..]),
        ("char(5)", &strings[..]),
        ("char", &strings[..]),
        ("bpchar", &strings[..]),
        ("uuid", &uuids[..]),
        ("bytea", &byteas[..]),
        ("json", &jsons[..]),
        ("jsonb", &jsons[..]),
        ("date", &times[..]),
        ("timestamp", &times[..]),
        ("timestamptz", &times[..]),
    ]);
    let mut failures = Vec::new();
    eprintln!("pg_differential [{label}: PostgreSQL {version_num}, {shown}]");
    let mut accepted = Vec::new();
    for (ty, values) in &cases {
        let t = run_type(c, &settings, ty, values);
        accepted.push(t.accepted.iter().map(|&i| values[i].clone()).collect::<Vec<_>>());
        eprintln!(
            "  {ty:<16} {:>4} inputs: {:>4} equal values, {:>4} equal errors, {:>3} to the text path, {} different",
            t.inputs, t.equal_values, t.equal_errors, t.fallbacks, t.mismatches.len()
        );
        failures.extend(t.mismatches);
    }
    c.batch_execute("DROP TABLE diff_text, diff_bin").unwrap();
    let types: Vec<&str> = cases.iter().map(|(t, _)| *t).collect();
    failures.extend(all_types_roundtrip(c, &settings, &types, &accepted, &mut r));
    failures
}

/// A table with a column of every type: rows of accepted inputs and NULLs, written by
/// RowPlan::write_row into one COPY BINARY stream, against the same rows through text COPY.
fn all_types_roundtrip(c: &mut Client, settings: &ServerSettings, types: &[&str], accepted: &[Vec<Value<'_>>], r: &mut Rng) -> Vec<String> {
    let cols: Vec<String> = types.iter().enumerate().map(|(i, t)| format!("c{i} {t}")).collect();
    c.batch_execute(&format!(
        "CREATE TEMP TABLE all_text (id int, {0}); CREATE TEMP TABLE all_bin (id int, {0});",
        cols.join(", ")
    ))
    .unwrap();
    let mut plans = vec![ColumnPlan::new("id", "int4", -1, false, settings)];
    for row in c
        .query(
            "SELECT t.typname::text, a.atttypmod FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
             WHERE a.attrelid = 'all_text'::regclass AND a.attnum > 1 ORDER BY a.attnum",
            &[],
        )
        .unwrap()
    {
        plans.push(ColumnPlan::new("c", row.get::<_, &str>(0), row.get(1), false, settings));
    }
    let plan = RowPlan { columns: plans };
    assert!(plan.binary());
    let (mut w, mut text) = (BinaryRowWriter::new(), String::new());
    let nrows = 500;
    for id in 0..nrows {
        let mut values = vec![Value::Int(id)];
        for col in accepted {
            values.push(if col.is_empty() || r.below(10) == 0 { Value::Null } else { r.pick(col).clone() });
        }
        assert_eq!(plan.write_row(&values, &mut w), Ok(Encoded::Written));
        let fields: Vec<String> = values.iter().map(|v| v.to_text().map_or("\\N".into(), |t| copy_text_escape(&t))).collect();
        text.push_str(&fields.join("\t"));
        text.push('\n');
    }
    let mut sink = c.copy_in("COPY all_bin FROM STDIN (FORMAT binary)").unwrap();
    sink.write_all(&w.finish()).unwrap();
    sink.finish().unwrap();
    let mut sink = c.copy_in("COPY all_text FROM STDIN").unwrap();
    sink.write_all(text.as_bytes()).unwrap();
    sink.finish().unwrap();
    let rows = |c: &mut Client, t: &str| -> Vec<String> {
        c.query(&format!("SELECT x::text FROM {t} x ORDER BY id"), &[]).unwrap().iter().map(|r| r.get(0)).collect()
    };
    let (by_text, by_bin) = (rows(c, "all_text"), rows(c, "all_bin"));
    c.batch_execute("DROP TABLE all_text, all_bin").unwrap();
    eprintln!("  all {} types in one table: {nrows} rows by COPY BINARY, {} equal to text COPY's", types.len(),
        by_text.iter().zip(&by_bin).filter(|(a, b)| a == b).count());
    if by_text.len() != nrows as usize || by_text != by_bin {
        let first = by_text.iter().zip(&by_bin).find(|(a, b)| a != b);
        return vec![format!("all-types table: {} text rows, {} binary rows; first difference {first:?}", by_text.len(), by_bin.len())];
    }
    Vec::new()
}

#[test]
fn rust_encoder_equals_postgresql_text_input() {
    let user = env("PGUSER", "postgres");
    let mut admin = connect(&user);
    let mut failures = run_all(&mut admin, "default settings");
    // The owner's role settings that could matter: set on a role, as a consumer's owner would.
    admin
        .batch_execute(
            "DROP ROLE IF EXISTS pi_rows_differential;
             CREATE ROLE pi_rows_differential LOGIN;
             ALTER ROLE pi_rows_differential SET DateStyle = 'SQL, DMY';
             ALTER ROLE pi_rows_differential SET TimeZone = 'America/St_Johns';
             ALTER ROLE pi_rows_differential SET extra_float_digits = -3;",
        )
        .unwrap();
    let mut owner = connect("pi_rows_differential");
    failures.extend(run_all(&mut owner, "owner role settings"));
    drop(owner);
    admin.batch_execute("DROP ROLE pi_rows_differential").unwrap();
    assert!(failures.is_empty(), "{} differences:\n{}", failures.len(), failures.iter().take(40).cloned().collect::<Vec<_>>().join("\n"));
}
