use super::*;

fn opts(f: &str) -> CopyOptions {
    CopyOptions::new(f, None, None, None).unwrap()
}

fn cols(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn text_messages_share_one_buffer_and_bad_ones_are_rejected() {
    let msgs: Vec<Option<&[u8]>> = vec![Some(b"1\ta"), None, Some(b"2\tb\n3\tc"), Some(b"4\tmid\\."), Some(b""), Some(b"5\te")];
    let (p, bad) = prepare(msgs, &opts("text"), &[], false, 64);
    assert_eq!(p.data, b"1\ta\n2\tb\n3\tc\n5\te\n".to_vec());
    assert_eq!(p.items.iter().map(|i| (i.msg, i.rows())).collect::<Vec<_>>(), vec![(0, 1), (2, 2), (5, 1)]);
    assert_eq!(bad.len(), 1);
    assert_eq!((bad[0].msg, bad[0].sqlstate.as_str()), (3, "22P04"));
    // every item's chunks are None (every column) and consecutive: one COPY for all
    let jobs = copy_jobs(&p.items);
    assert_eq!(jobs, vec![Chunk { columns: None, range: 0..p.data.len(), rows: 4 }]);
    // a part of the batch (as bisection takes) is a slice of the same buffer
    let tail = copy_jobs(&p.items[1..]);
    assert_eq!(&p.data[tail[0].range.clone()], b"2\tb\n3\tc\n5\te\n");
}

#[test]
fn listed_columns_are_one_column_set() {
    let c = cols(&["b", "a"]);
    let (p, bad) = prepare(vec![Some(&b"x,y"[..])], &opts("csv"), &c, true, 8);
    assert!(bad.is_empty());
    assert_eq!(p.column_sets, vec![vec![0, 1]]);
    assert_eq!(p.items[0].chunks[0].columns, Some(0));
}

#[test]
fn json_objects_group_by_fields_present() {
    let c = cols(&["id", "name"]);
    let msgs: Vec<Option<&[u8]>> = vec![
        Some(br#"{"id": 1, "name": "a"}"#),
        Some(br#"{"id": 2}"#),
        Some(b"{not json"),
        Some(b"42"),
        Some(br#"[{"id": 3, "name": "c"}, {"id": 4, "name": "d"}]"#),
    ];
    let (p, bad) = prepare(msgs, &opts("json"), &c, false, 64);
    assert_eq!(p.column_sets, vec![vec![0, 1], vec![0]]);
    assert_eq!(bad.iter().map(|r| (r.msg, r.sqlstate.as_str())).collect::<Vec<_>>(), vec![(2, "22032"), (3, "22P02")]);
    let jobs = copy_jobs(&p.items);
    // {id,name} then {id} then {id,name}: three COPYs, rows 1, 1, 2
    assert_eq!(jobs.iter().map(|j| (j.columns, j.rows)).collect::<Vec<_>>(), vec![(Some(0), 1), (Some(1), 1), (Some(0), 2)]);
    assert_eq!(&p.data[jobs[2].range.clone()], b"3\tc\n4\td\n");
}

fn with_meta(msgs: Vec<Option<&[u8]>>, plan: &Plan) -> (Prepared, Vec<Rejected>) {
    // message i's metadata: a tab and i; message 9's cannot go in
    prepare_with(
        msgs,
        plan,
        |i, buf| {
            if i == 9 {
                return Err(("bad key".to_string(), "22021"));
            }
            buf.extend_from_slice(format!("\t{i}").as_bytes());
            Ok(())
        },
        64,
    )
}

#[test]
fn metadata_ends_every_row_and_follows_the_data_columns() {
    let o = opts("text");
    let c = cols(&["a", "b"]);
    let plan = Plan { opts: &o, columns: &c, listed: true, whole: None, metadata: 1, typed: None, binary: None };
    let msgs: Vec<Option<&[u8]>> = vec![Some(b"1\tx\\\ny\n2\tz"), None, Some(b""), Some(b"3\tw\r\n")];
    let (p, bad) = with_meta(msgs, &plan);
    assert!(bad.is_empty());
    assert_eq!(p.data, b"1\tx\\\ny\t0\n2\tz\t0\n3\tw\t3\n".to_vec());
    assert_eq!(p.column_sets, vec![vec![0, 1, 2]]);
    assert_eq!(p.items.iter().map(|i| (i.msg, i.rows())).collect::<Vec<_>>(), vec![(0, 2), (3, 1)]);

    let o = opts("csv");
    let plan = Plan { opts: &o, columns: &c, listed: true, whole: None, metadata: 1, typed: None, binary: None };
    let (p, _) = with_meta(vec![Some(b"1,\"x\ny\"\n2,z")], &plan);
    assert_eq!(p.data, b"1,\"x\ny\"\t0\n2,z\t0\n".to_vec());
}

#[test]
fn metadata_errors_reject_the_message() {
    let o = opts("text");
    let c = cols(&["a"]);
    let plan = Plan { opts: &o, columns: &c, listed: true, whole: None, metadata: 1, typed: None, binary: None };
    let msgs: Vec<Option<&[u8]>> = (0..10).map(|_| Some(&b"v"[..])).collect();
    let (p, bad) = with_meta(msgs, &plan);
    assert_eq!(p.items.len(), 9);
    assert_eq!(bad, vec![Rejected { msg: 9, error: "bad key".into(), sqlstate: "22021".into() }]);
}

#[test]
fn json_column_sets_name_the_metadata_columns_last() {
    let o = opts("json");
    let c = cols(&["id", "name"]);
    let plan = Plan { opts: &o, columns: &c, listed: false, whole: None, metadata: 2, typed: None, binary: None };
    let (p, bad) = with_meta(vec![Some(br#"{"name": "n", "id": 1}"#), Some(br#"{"id": 2}"#)], &plan);
    assert!(bad.is_empty());
    assert_eq!(p.column_sets, vec![vec![0, 1, 2, 3], vec![0, 2, 3]]);
    assert_eq!(p.data, b"1\tn\t0\n2\t1\n".to_vec());
}

#[test]
fn whole_values_bytea_text_and_json() {
    let o = opts("raw");
    let c = cols(&["v"]);
    let bytea = Plan { opts: &o, columns: &c, listed: false, whole: Some(Whole::Bytea), metadata: 0, typed: None, binary: None };
    let (p, bad) = prepare_with(vec![Some(&b"\x00\\\n\xff"[..]), None, Some(b"")], &bytea, |_, _| Ok(()), 8);
    assert!(bad.is_empty());
    assert_eq!(p.data, b"\\\\x005c0aff\n\\\\x\n".to_vec());
    assert_eq!(p.column_sets, vec![vec![0]]);
    assert_eq!(p.items.iter().map(|i| (i.msg, i.rows())).collect::<Vec<_>>(), vec![(0, 1), (2, 1)]);

    let text = Plan { whole: Some(Whole::Text), metadata: 1, ..bytea };
    let (p, bad) = with_meta(vec![Some(b"a\tb\\c\nd"), Some(b"\xff"), Some(b"nul\x00"), Some(b"")], &text);
    assert_eq!(p.data, b"a\\tb\\\\c\\nd\t0\n\t3\n".to_vec());
    assert_eq!(bad.iter().map(|r| (r.msg, r.sqlstate.as_str())).collect::<Vec<_>>(), vec![(1, "22021"), (2, "22021")]);
    assert_eq!(p.column_sets, vec![vec![0, 1]]);

    // json into one json column: every JSON value as written; an empty message holds none.
    let j = opts("json");
    let whole = Plan { opts: &j, columns: &c, listed: false, whole: Some(Whole::Text), metadata: 0, typed: None, binary: None };
    let (p, bad) = prepare_with(vec![Some(&b"[1, {\"a\": 1.0}]"[..]), Some(b""), Some(b"\"s\\t\"\n")], &whole, |_, _| Ok(()), 8);
    assert!(bad.is_empty());
    assert_eq!(p.data, b"[1, {\"a\": 1.0}]\n\"s\\\\t\"\\n\n".to_vec());
    assert_eq!(p.items.iter().map(|i| i.msg).collect::<Vec<_>>(), vec![0, 2]);
}

#[test]
fn lines_of_text_rows_find_their_message() {
    let (p, _) = prepare(vec![Some(&b"1\tx\\\ny"[..]), Some(b"2\n3\n4"), Some(b"5")], &opts("text"), &[], false, 64);
    let at = |line| item_at_line(&p.items, &p.data, 0, line, Lines::Text);
    // an escaped newline is data: message 0 is one line
    assert_eq!((1..=6).map(at).collect::<Vec<_>>(), vec![Some(0), Some(1), Some(1), Some(1), Some(2), None]);
    assert_eq!(at(0), None);
    assert_eq!(item_at_line(&p.items, &p.data, 1, 1, Lines::Text), None);
}

#[test]
fn csv_lines_count_quoted_newlines_except_in_the_first_row() {
    let csv = Lines::Csv { quote: b'"', escape: b'"' };
    let msgs: Vec<Option<&[u8]>> = vec![Some(b"1,\"a\nb\"\n2,\"c\r\nd\""), Some(b"3,\"e\n\nf\""), Some(b"4,g")];
    let (p, bad) = prepare(msgs, &opts("csv"), &[], false, 64);
    assert!(bad.is_empty());
    // message 0: its first row is COPY's first (quoted \n not counted), its second row has a
    // quoted \r\n (the \n counts): 1 + 2 lines; message 1: 3 lines; message 2: 1.
    let at = |line| item_at_line(&p.items, &p.data, 0, line, csv);
    let want = vec![Some(0), Some(0), Some(0), Some(1), Some(1), Some(1), Some(2), None];
    assert_eq!((1..=8).map(at).collect::<Vec<_>>(), want);
    // the same messages from the second one on: message 1's first row is now COPY's first
    let at = |line| item_at_line(&p.items[1..], &p.data, 0, line, csv);
    assert_eq!((1..=3).map(at).collect::<Vec<_>>(), vec![Some(0), Some(1), None]);
    // a quoted \r in COPY's first row counts
    let (p, _) = prepare(vec![Some(&b"\"x\r\ny\",1"[..]), Some(b"2,z")], &opts("csv"), &[], false, 64);
    let at = |line| item_at_line(&p.items, &p.data, 0, line, csv);
    assert_eq!((1..=4).map(at).collect::<Vec<_>>(), vec![Some(0), Some(0), Some(1), None]);
    // an escape other than the quote only counts inside quotes, before a quote
    let o = CopyOptions::new("csv", None, None, Some("\\".to_string())).unwrap();
    let (p, bad) = prepare(vec![Some(&b"\"a\\\"\nb\",1\n2,c"[..]), Some(b"3,d")], &o, &[], false, 64);
    assert!(bad.is_empty());
    let at = |line| item_at_line(&p.items, &p.data, 0, line, Lines::Csv { quote: b'"', escape: b'\\' });
    assert_eq!((1..=4).map(at).collect::<Vec<_>>(), vec![Some(0), Some(0), Some(1), None]);
}

#[test]
fn json_lines_are_counted_within_their_copy_job() {
    let c = cols(&["id", "name"]);
    let msgs: Vec<Option<&[u8]>> = vec![
        Some(br#"{"id": 1, "name": "a"}"#),
        Some(br#"[{"id": 2}, {"id": 3}]"#),
        Some(br#"{"id": 4}"#),
        Some(br#"[{"id": 5, "name": "c"}, {"id": 6}, {"id": 7, "name": "d"}]"#),
    ];
    let (p, _) = prepare(msgs, &opts("json"), &c, false, 64);
    let jobs = copy_jobs(&p.items);
    // {id,name}: 1 | {id}: 2, 3, 4 | {id,name}: 5 | {id}: 6 | {id,name}: 7
    assert_eq!(jobs.iter().map(|j| j.rows).collect::<Vec<_>>(), vec![1, 3, 1, 1, 1]);
    let at = |job, line| item_at_line(&p.items, &p.data, job, line, Lines::Text);
    assert_eq!((at(0, 1), at(1, 1), at(1, 2), at(1, 3), at(1, 4)), (Some(0), Some(1), Some(1), Some(2), None));
    assert_eq!((at(2, 1), at(3, 1), at(4, 1), at(5, 1)), (Some(3), Some(3), Some(3), None));
}

#[test]
fn jobs_of_any_run_are_copy_jobs_of_that_run() {
    let c = cols(&["id", "name"]);
    let msgs: Vec<Option<&[u8]>> = vec![
        Some(br#"{"id": 1, "name": "a"}"#),
        Some(br#"[{"id": 2}, {"id": 3}]"#),
        Some(br#"{"id": 4}"#),
        Some(b"{not json"),
        Some(br#"[{"id": 5, "name": "c"}, {"id": 6}, {"id": 7, "name": "d"}]"#),
        Some(br#"{"id": 8, "name": "e"}"#),
        Some(br#"{"id": 9, "name": "f"}"#),
    ];
    let (p, _) = prepare(msgs, &opts("json"), &c, false, 64);
    let (t, _) = prepare(vec![Some(&b"1\n2"[..]), Some(b"3"), Some(b"4\n5\n6")], &opts("text"), &[], false, 64);
    for items in [&p.items, &t.items] {
        let jobs = Jobs::new(items);
        for a in 0..=items.len() {
            for b in a..=items.len() {
                assert_eq!(jobs.of(a..b), copy_jobs(&items[a..b]), "{a}..{b}");
            }
        }
    }
}

/// A decoder for tests: the body after the framing is `name=value;...` records separated by '|';
/// "!" is a corrupt body.
struct Toy;

impl crate::decode::TypedDecoder for Toy {
    fn holds(&self, id: u32) -> bool {
        id == 7
    }

    fn decode<'m>(&self, payload: &'m [u8], out: &mut Vec<Record<'m>>) -> Result<(), crate::decode::DecodeError> {
        let body = std::str::from_utf8(crate::decode::confluent_frame(payload)?.body).unwrap();
        if body == "!" {
            return Err(crate::decode::DecodeError::new("22P03", "corrupt body"));
        }
        for rec in body.split('|') {
            let fields = rec
                .split(';')
                .map(|f| {
                    let (n, v) = f.split_once('=').unwrap();
                    let v = if v == "null" { crate::rows::Value::Null } else { crate::rows::Value::Text(v.into()) };
                    (std::borrow::Cow::Borrowed(n), v)
                })
                .collect();
            out.push(Record { fields });
        }
        Ok(())
    }
}

#[test]
fn typed_records_fill_columns_by_name_in_runs_and_bad_bodies_are_rejected() {
    let o = opts("avro");
    let c = cols(&["a", "b"]);
    let plan = Plan { opts: &o, columns: &c, listed: false, whole: None, metadata: 1, typed: Some(&Toy), binary: None };
    let framed = |s: &str| [&[0u8, 0, 0, 0, 7][..], s.as_bytes()].concat();
    let msgs = [framed("a=1;b=x\ty|a=2;b=null|b=3;z=9"), framed("!"), vec![9, 9], framed("z=1"), framed("a=4")];
    let (p, bad) = with_meta(msgs.iter().map(|m| Some(m.as_slice())).collect(), &plan);
    assert_eq!(p.data, b"1\tx\\ty\t0\n2\t\\N\t0\n3\t0\n4\t4\n".to_vec());
    assert_eq!(p.column_sets, vec![vec![0, 1, 2], vec![1, 2], vec![0, 2]]);
    assert_eq!(p.items.iter().map(|i| (i.msg, i.rows(), i.chunks.len())).collect::<Vec<_>>(), vec![(0, 3, 2), (4, 1, 1)]);
    let bad: Vec<_> = bad.iter().map(|r| (r.msg, r.sqlstate.as_str())).collect();
    assert_eq!(bad, vec![(1, "22P03"), (2, "22P02"), (3, "22P02")]);
}

#[test]
fn typed_records_become_binary_tuples_with_plans_and_text_when_unsure() {
    let o = opts("avro");
    let c = cols(&["a", "b"]);
    let s = crate::rows::ServerSettings::default();
    let types = [crate::rows::ColumnPlan::new("a", "int4", -1, false, &s), crate::rows::ColumnPlan::new("b", "jsonb", -1, false, &s)];
    let plan = Plan { opts: &o, columns: &c, listed: false, whole: None, metadata: 0, typed: Some(&Toy), binary: Some(&types) };
    let framed = |s: &str| [&[0u8, 0, 0, 0, 7][..], s.as_bytes()].concat();
    // 1: binary; 2: "x" is no int4 (the input function's error, before COPY); 3: a NULL and a
    // record without b, binary; 4: jsonb text the model does not vouch for: COPY text
    let msgs = [framed("a=1;b=2"), framed("a=x"), framed("a=3;b=null|a=5"), framed("a=6;b={\"k\": \"\\u0000\"}")];
    let (p, bad) = with_meta(msgs.iter().map(|m| Some(m.as_slice())).collect(), &plan);
    assert_eq!(p.column_sets, vec![vec![0, 1], vec![0], vec![0, 1]]);
    assert_eq!(p.binary, vec![true, true]);
    let sets: Vec<_> = p.items.iter().map(|i| (i.msg, i.chunks.iter().map(|c| (c.columns, c.rows)).collect::<Vec<_>>())).collect();
    assert_eq!(sets, vec![(0, vec![(Some(0), 1)]), (2, vec![(Some(0), 1), (Some(1), 1)]), (3, vec![(Some(2), 1)])]);
    let first = &p.data[p.items[0].chunks[0].range.clone()];
    assert_eq!(first, [&[0, 2][..], &[0, 0, 0, 4, 0, 0, 0, 1], &[0, 0, 0, 2, 1, b'2']].concat());
    let null = &p.data[p.items[1].chunks[0].range.clone()];
    assert_eq!(null, [&[0, 2][..], &[0, 0, 0, 4, 0, 0, 0, 3], &[0xff, 0xff, 0xff, 0xff]].concat());
    assert_eq!(&p.data[p.items[2].chunks[0].range.clone()], b"6\t{\"k\": \"\\\\u0000\"}\n");
    assert_eq!(bad.iter().map(|r| (r.msg, r.sqlstate.as_str(), r.error.as_str())).collect::<Vec<_>>(),
               vec![(1, "22P02", "invalid input syntax for type integer: \"x\"")]);
}

#[test]
fn the_readers_typed_rows_are_the_bytes_and_dead_letters_prepare_makes() {
    use crate::rows::fast::{prepare_chunk, FastPlan, Pre, TypedHandle};
    let o = opts("avro");
    let c = cols(&["a", "b"]);
    let s = crate::rows::ServerSettings::default();
    let types = vec![crate::rows::ColumnPlan::new("a", "int4", -1, false, &s), crate::rows::ColumnPlan::new("b", "jsonb", -1, false, &s)];
    let plan = Plan { opts: &o, columns: &c, listed: false, whole: None, metadata: 0, typed: Some(&Toy), binary: Some(&types) };
    let mut fast = FastPlan::new(&o, types.clone(), 3).unwrap();
    fast.typed = Some(TypedHandle(std::sync::Arc::new(std::sync::Mutex::new(Toy))));
    let framed = |id: u8, s: &str| [&[0u8, 0, 0, 0, id][..], s.as_bytes()].concat();
    let msgs = [
        framed(7, "a=1;b=2"),
        framed(7, "a=x"),
        framed(7, "a=3;b=null|a=5|a=6"),
        framed(7, "a=6;b={\"k\": \"\\u0000\"}"),
        framed(8, "a=9"),
        vec![9, 9],
        framed(7, "!"),
        framed(7, "z=1"),
    ];
    let payloads = || msgs.iter().map(|m| Some(m.as_slice()));
    let pre = prepare_chunk(&fast, payloads().chain(std::iter::once(None)), 64);
    let (p, bad) = prepare_with(payloads(), &plan, |_, _| Ok(()), 64);
    // the records of every message the reader made ready are the bytes prepare wrote for it
    for (i, m) in pre.iter().enumerate() {
        match m {
            Pre::Rows { buf, chunks, plan } => {
                assert_eq!(*plan, 3);
                let item = p.items.iter().find(|it| it.msg == i).unwrap();
                let mine: Vec<u8> = chunks.iter().flat_map(|c| buf[c.range.clone()].to_vec()).collect();
                let theirs: Vec<u8> = item.chunks.iter().flat_map(|c| p.data[c.range.clone()].to_vec()).collect();
                assert_eq!(mine, theirs, "message {i}");
                let sets: Vec<_> = chunks.iter().map(|c| (c.columns.clone(), c.rows)).collect();
                let want: Vec<_> = item.chunks.iter().map(|c| {
                    let set = p.column_sets[c.columns.unwrap()].clone();
                    ((set.len() != 2).then_some(set), c.rows)
                }).collect();
                assert_eq!(sets, want, "message {i}");
            }
            Pre::Rejected { error, .. } => {
                let r = bad.iter().find(|r| r.msg == i).unwrap();
                assert_eq!((error.sqlstate, error.message_with_detail()), (r.sqlstate.as_str(), r.error.clone()), "message {i}");
            }
            Pre::Empty { .. } => assert_eq!(i, msgs.len(), "only the message without a value is empty"),
            Pre::Fallback => {}
        }
    }
    let kinds: Vec<&str> = pre.iter().map(|m| match m {
        Pre::Rows { .. } => "rows",
        Pre::Rejected { .. } => "bad",
        Pre::Empty { .. } => "empty",
        Pre::Fallback => "main",
    }).collect();
    // 3: jsonb text the model does not vouch for; 4: schema 8 not held yet: the main thread's
    assert_eq!(kinds, ["rows", "bad", "rows", "main", "main", "bad", "bad", "bad", "empty"]);
}
