//! The fast path's field splitting and row framing.

use super::*;
use crate::rows::ServerSettings;

fn plan(format: &str, cols: &[(&str, &str)]) -> FastPlan {
    let opts = CopyOptions::new(format, None, None, None).unwrap();
    let s = ServerSettings::default();
    FastPlan::new(
        &opts,
        cols.iter()
            .map(|(n, t)| ColumnPlan::new(n, t, -1, false, &s))
            .collect(),
        1,
    )
    .unwrap()
}

/// The fields of each tuple in `buf` (None = NULL), as raw bytes.
fn tuples(buf: &[u8]) -> Vec<Vec<Option<Vec<u8>>>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < buf.len() {
        let n = i16::from_be_bytes([buf[i], buf[i + 1]]) as usize;
        i += 2;
        let mut row = Vec::new();
        for _ in 0..n {
            let len = i32::from_be_bytes(buf[i..i + 4].try_into().unwrap());
            i += 4;
            if len < 0 {
                row.push(None);
            } else {
                row.push(Some(buf[i..i + len as usize].to_vec()));
                i += len as usize;
            }
        }
        out.push(row);
    }
    out
}

fn text_fields(p: &FastPlan, msg: &str) -> Vec<Vec<Option<String>>> {
    let mut buf = Vec::new();
    match p.encode(msg.as_bytes(), &mut buf) {
        Outcome::Rows(_) => {}
        other => panic!("{msg:?}: {other:?}"),
    }
    tuples(&buf)
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|f| f.map(|b| String::from_utf8(b).unwrap()))
                .collect()
        })
        .collect()
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[test]
fn text_fields_split_and_unescape_as_copy() {
    let p = plan("text", &[("a", "text"), ("b", "text")]);
    assert_eq!(
        text_fields(&p, "x\ty\n\\N\t\\\\N"),
        vec![vec![s("x"), s("y")], vec![None, s("\\N")]]
    );
    assert_eq!(
        text_fields(&p, "a\\tb\\101\\x41\\q\t\\\né"),
        vec![vec![s("a\tbAAq"), s("\né")]]
    );
    assert_eq!(text_fields(&p, "\t"), vec![vec![s(""), s("")]]);
    let mut buf = Vec::new();
    // escapes giving non-ASCII bytes, NUL, \r and \. are left to COPY
    for m in ["a\\377\tb", "a\\0\tb", "a\r\n", "\\.", "a\\", "\u{0}\tb"] {
        assert_eq!(p.encode(m.as_bytes(), &mut buf), Outcome::Fallback, "{m:?}");
        assert!(buf.is_empty());
    }
    assert_eq!(p.encode(b"\xff\tb", &mut buf), Outcome::Fallback);
    assert_eq!(p.encode(b"", &mut buf), Outcome::Empty);
}

#[test]
fn csv_fields_split_quote_and_null_as_copy() {
    let p = plan("csv", &[("a", "text"), ("b", "text")]);
    assert_eq!(
        text_fields(&p, "x,\"\"\n\"a,\"\"b\",\"l1\nl2\"\n,c\"q\"d"),
        vec![
            vec![s("x"), s("")],
            vec![s("a,\"b"), s("l1\nl2")],
            vec![None, s("cqd")]
        ]
    );
    let mut buf = Vec::new();
    assert_eq!(p.encode(b"\"open,b", &mut buf), Outcome::Fallback);
    assert_eq!(p.encode(b"a,b\n\nc,d", &mut buf), Outcome::Fallback);
    assert_eq!(p.encode(b"3,x\n\\.\n4,y", &mut buf), Outcome::Fallback);
    let o = CopyOptions::new("csv", Some(";".into()), Some("'".into()), Some("\\".into())).unwrap();
    let p2 = FastPlan::new(&o, p.rows.columns.clone(), 2).unwrap();
    assert_eq!(
        text_fields(&p2, "'a\\'b\\\\';x,y"),
        vec![vec![s("a'b\\"), s("x,y")]]
    );
}

#[test]
fn column_counts_and_type_errors_are_copys_errors() {
    let p = plan("csv", &[("id", "int4"), ("name", "text")]);
    let mut buf = Vec::new();
    let rej = |o: Outcome| match o {
        Outcome::Rejected(e) => (e.sqlstate, e.message),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        rej(p.encode(b"1,a,b", &mut buf)),
        ("22P04", "extra data after last expected column".into())
    );
    assert_eq!(
        rej(p.encode(b"1", &mut buf)),
        ("22P04", "missing data for column \"name\"".into())
    );
    // the type error of an earlier column comes first, as in NextCopyFrom
    assert_eq!(
        rej(p.encode(b"x", &mut buf)),
        (
            "22P02",
            "invalid input syntax for type integer: \"x\"".into()
        )
    );
    assert_eq!(rej(p.encode(b"1,a\n99999999999,b", &mut buf)).0, "22003");
    assert!(buf.is_empty(), "nothing of a rejected message is kept");
    match p.encode(b"7,a\n8,", &mut buf) {
        Outcome::Rows(c) => assert_eq!(
            (c[0].rows, c[0].columns.clone(), c[0].range.clone()),
            (2, None, 0..buf.len())
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        tuples(&buf),
        vec![
            vec![Some(7i32.to_be_bytes().to_vec()), Some(b"a".to_vec())],
            vec![Some(8i32.to_be_bytes().to_vec()), None]
        ]
    );
}

#[test]
fn json_rows_group_by_the_columns_present() {
    let p = plan(
        "json",
        &[("id", "int8"), ("name", "text"), ("doc", "jsonb")],
    );
    let mut buf = Vec::new();
    let msg = br#"[{"id": 1, "name": "a\tb", "doc": {"x": [1, 2]}}, {"id": 2}, {"id": 3, "other": 5}, {"name": null, "id": 4, "doc": null}]"#;
    let Outcome::Rows(chunks) = p.encode(msg, &mut buf) else {
        panic!()
    };
    let summary: Vec<_> = chunks.iter().map(|c| (c.columns.clone(), c.rows)).collect();
    assert_eq!(summary, vec![(None, 1), (Some(vec![0]), 2), (None, 1)]);
    let t = tuples(&buf);
    assert_eq!(t[0][1], Some(b"a\tb".to_vec()));
    assert_eq!(t[0][2], Some(b"\x01{\"x\": [1, 2]}".to_vec()));
    assert_eq!(t[3], vec![Some(4i64.to_be_bytes().to_vec()), None, None]);
    // a string without escapes is taken as written, one with escapes as serde reads it
    let mut b2 = Vec::new();
    let Outcome::Rows(_) = p.encode(r#"{"id": 5, "name": "plain é, \"q\""} "#.as_bytes(), &mut b2) else {
        panic!()
    };
    assert_eq!(tuples(&b2)[0][1], Some("plain é, \"q\"".as_bytes().to_vec()));
    let Outcome::Rows(_) = p.encode(r#"{"id": 6, "name": "plain é"}"#.as_bytes(), &mut b2) else {
        panic!()
    };
    assert_eq!(tuples(&b2)[1][1], Some("plain é".as_bytes().to_vec()));
    let rej = |m: &[u8]| match p.encode(m, &mut Vec::new()) {
        Outcome::Rejected(e) => e.sqlstate,
        other => panic!("{other:?}"),
    };
    assert_eq!(rej(b"{not json"), "22032");
    assert_eq!(rej(b"42"), "22P02");
    assert_eq!(rej(br#"{"other": 1}"#), "22P02");
    assert_eq!(rej(br#"{"id": "x"}"#), "22P02");
    assert_eq!(p.encode(b"[]", &mut buf), Outcome::Empty);
    assert_eq!(
        p.encode(br#"{"name": "nul\u0000"}"#, &mut Vec::new()),
        Outcome::Fallback
    );
}

#[test]
fn a_chunk_shares_one_buffer() {
    let p = plan("text", &[("a", "int4")]);
    let pre = prepare_chunk(
        &p,
        vec![
            Some(&b"1\n2"[..]),
            None,
            Some(b"x"),
            Some(b"a\\0"),
            Some(b"3"),
        ]
        .into_iter(),
        64,
    );
    assert!(matches!(&pre[0], Pre::Rows { chunks, .. } if chunks[0].rows == 2));
    assert!(matches!(pre[1], Pre::Empty { plan: 1 }));
    assert!(matches!(&pre[2], Pre::Rejected { error, .. } if error.sqlstate == "22P02"));
    assert!(matches!(pre[3], Pre::Fallback));
    match (&pre[0], &pre[4]) {
        (
            Pre::Rows {
                buf: a, chunks: c0, ..
            },
            Pre::Rows {
                buf: b, chunks: c4, ..
            },
        ) => {
            assert!(Arc::ptr_eq(a, b));
            assert_eq!(c0[0].range.end, c4[0].range.start);
        }
        _ => panic!(),
    }
    // a plan only for formats and columns it can encode
    let o = CopyOptions::new("raw", None, None, None).unwrap();
    assert!(FastPlan::new(&o, p.rows.columns.clone(), 3).is_none());
    let inet = ColumnPlan::new("i", "inet", -1, false, &ServerSettings::default());
    assert!(FastPlan::new(
        &CopyOptions::new("csv", None, None, None).unwrap(),
        vec![inet],
        4
    )
    .is_none());
}

