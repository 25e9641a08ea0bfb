//! Tests of records.rs: answers read here, bad answers, and the same answers read by the SDK.

use super::*;

fn seq(s: &str) -> SeqNum {
    SeqNum::parse(s).unwrap()
}

#[test]
fn answers_become_records() {
    let body = br#"{"Records":[
        {"SequenceNumber":"49590338271490256608559692538361571095921575989136588898","ApproximateArrivalTimestamp":1.733587200123E9,
         "Data":"MSwyLjUwLDMuMA==","PartitionKey":"k1","EncryptionType":"NONE"},
        { "PartitionKey" : "k\u00e9\"2" , "Data" : "aGk\/" , "SequenceNumber" : "007",
          "ApproximateArrivalTimestamp" : 1733587201, "Extra": {"a": [1, 2.5e3, {"b": null}], "c": true} }
      ],
      "NextShardIterator":"AAAA\/BBB","MillisBehindLatest":1200,
      "ChildShards":[{"ShardId":"shardId-1","ParentShards":["shardId-0"],"HashKeyRange":{"StartingHashKey":"0","EndingHashKey":"9"}}]}"#;
    let f = parse(body).unwrap();
    assert_eq!(f.records.len(), 2);
    assert_eq!(f.records[0].seq, seq("49590338271490256608559692538361571095921575989136588898"));
    assert_eq!(f.records[0].data, b"1,2.50,3.0");
    assert_eq!(f.records[0].partition_key, "k1");
    // (through f64, as the SDK converts it: 1733587200.123 becomes ...122 ms)
    assert_eq!(f.records[0].arrival_ms, DateTime::from_secs_f64(1_733_587_200.123).to_millis().ok());
    assert_eq!(f.records[0].arrival_ms, Some(1_733_587_200_122));
    assert_eq!(f.records[1].seq, seq("7"));
    assert_eq!(f.records[1].partition_key, "k\u{e9}\"2");
    assert_eq!(f.records[1].data, b"hi?");
    assert_eq!(f.records[1].arrival_ms, Some(1_733_587_201_000));
    assert_eq!(f.next_iterator.as_deref(), Some("AAAA/BBB"));
    assert_eq!(f.millis_behind_latest, Some(1200));
}

#[test]
fn the_end_of_a_shard_and_empty_answers() {
    let f = parse(br#"{"Records":[],"NextShardIterator":null,"MillisBehindLatest":0,"ChildShards":[]}"#).unwrap();
    assert!(f.records.is_empty() && f.next_iterator.is_none());
    assert_eq!(f.millis_behind_latest, Some(0));
    let f = parse(br#"{}"#).unwrap();
    assert!(f.records.is_empty() && f.next_iterator.is_none() && f.millis_behind_latest.is_none());
    let f = parse(EMPTY_ANSWER.as_bytes()).unwrap();
    assert!(f.records.is_empty());
    // members that may be null
    let f = parse(br#"{"Records":[{"SequenceNumber":"1","Data":null,"PartitionKey":null,"ApproximateArrivalTimestamp":null}]}"#).unwrap();
    assert_eq!(f.records[0].data, b"");
    assert_eq!(f.records[0].partition_key, "");
    assert_eq!(f.records[0].arrival_ms, None);
}

#[test]
fn bad_answers_are_refused_with_a_reason() {
    for (body, says) in [
        (&br#"{"Records":[{"SequenceNumber":"12a","Data":""}]}"#[..], "bad sequence number"),
        (br#"{"Records":[{"Data":"aGk="}]}"#, "bad sequence number"),
        (br#"{"Records":[{"SequenceNumber":"1","Data":"a!b"}]}"#, "not base64"),
        (br#"{"Records":[{"SequenceNumber":"1","Data":"aGk="}"#, "expected ',' or ']'"),
        (br#"{"Records":[{"SequenceNumber":"1}]}"#, "unterminated string"),
        (br#"{"MillisBehindLatest":1.5}"#, "expected an integer"),
        (br#"["Records"]"#, "expected an object"),
        (b"", "expected an object"),
    ] {
        let e = parse(body).unwrap_err();
        assert!(matches!(&e, KinesisError::Refused(m) if m.contains(says)), "{}: {e:?}", String::from_utf8_lossy(body));
    }
    let deep = format!(r#"{{"x":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
    assert!(matches!(parse(deep.as_bytes()), Err(KinesisError::Refused(m)) if m.contains("nested too deeply")));
}

/// An endpoint that answers every request with the next of `answers` (HTTP/1.1, keep-alive,
/// a thread per connection; odd ones chunked, so the body comes in several frames).
fn serve(answers: Vec<String>) -> u16 {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answers = Arc::new(Mutex::new(answers.into_iter().enumerate()));
    std::thread::spawn(move || {
        while let Ok((stream, _)) = listener.accept() {
            let answers = answers.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                loop {
                    let mut length = 0;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return; // the client closed the connection
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut request = vec![0; length];
                    reader.read_exact(&mut request).unwrap();
                    let Some((n, body)) = answers.lock().unwrap().next() else { return };
                    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-RequestId: r\r\n";
                    if n % 2 == 0 {
                        write!(out, "{head}Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
                    } else {
                        write!(out, "{head}Transfer-Encoding: chunked\r\n\r\n").unwrap();
                        for chunk in body.as_bytes().chunks(700) {
                            write!(out, "{:x}\r\n", chunk.len()).unwrap();
                            out.write_all(chunk).unwrap();
                            write!(out, "\r\n").unwrap();
                        }
                        write!(out, "0\r\n\r\n").unwrap();
                    }
                    out.flush().unwrap();
                }
            });
        }
    });
    port
}

/// A GetRecords answer of `n` records, in the forms Kinesis and kinesalite write and a few
/// they could (escapes, exponents, whole seconds, unknown members, nulls).
fn answer(n: usize, salt: u64) -> String {
    let mut rng = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let keys = ["k1", "k\\u00e9\\\"x", "\\/slash", "κλειδί", ""];
    let mut records = Vec::new();
    for i in 0..n {
        let data: Vec<u8> = (0..(next() % 90) as usize).map(|_| next() as u8).collect();
        let mut data = aws_smithy_types::base64::encode(&data);
        if i % 7 == 3 {
            data = data.replace('/', "\\/");
        }
        let stamp = match i % 4 {
            0 => format!("{}.{:03}", 1_733_587_200 + i, next() % 1000),
            1 => format!("{}", 1_733_587_200 + i),
            2 => format!("1.7335872{:05}E9", next() % 100_000),
            _ => format!("{}.{}", 1_733_587_200 + i, next() % 1_000_000),
        };
        let seq = format!("4959033827149025660855969253836157109592157598913658{:04}", i);
        let key = keys[(next() % keys.len() as u64) as usize];
        records.push(if i % 5 == 4 {
            format!(r#"{{ "EncryptionType" : "KMS", "PartitionKey" : "{key}", "ApproximateArrivalTimestamp" : {stamp}, "Data" : "{data}", "SequenceNumber" : "{seq}" }}"#)
        } else {
            format!(r#"{{"SequenceNumber":"{seq}","ApproximateArrivalTimestamp":{stamp},"Data":"{data}","PartitionKey":"{key}"}}"#)
        });
    }
    let next_it = if salt % 3 == 2 { "null".to_string() } else { format!(r#""AAAAAAAAAAH{salt}\/Zz+=""#) };
    format!(
        r#"{{"Records":[{}],"NextShardIterator":{next_it},"MillisBehindLatest":{},"ChildShards":[{{"ShardId":"s1","ParentShards":["s0"],"HashKeyRange":{{"StartingHashKey":"0","EndingHashKey":"340282366920938463463374607431768211455"}}}}]}}"#,
        records.join(","),
        salt * 1000
    )
}

#[test]
fn quotes_and_backslashes_are_found_where_they_are() {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for len in 0..200 {
        for _ in 0..50 {
            let b: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // mostly plain bytes, some quotes, backslashes, high bytes, zeros
                    [b'a', b'"', b'\\', 0xE9, 0x00, 0x22 ^ 0x80, b'5'][(x % 61).min(6) as usize]
                })
                .collect();
            assert_eq!(quote_or_backslash(&b), b.iter().position(|&c| c == b'"' || c == b'\\'), "{b:?}");
        }
    }
}

/// `cargo test --release -p ingest-kinesis --lib parse_speed -- --ignored --nocapture`
#[test]
#[ignore]
fn parse_speed() {
    // records like the benchmark's (bench/kinesis_vs_copy.py)
    let records: Vec<String> = (0..10_000)
        .map(|i| {
            let data = aws_smithy_types::base64::encode(format!("{},{}.{:02},{}.5", 1000 + i, i % 997, i % 100, i * 7));
            format!(
                r#"{{"SequenceNumber":"4959033827149025660855969253836157109592157598913{:07}","ApproximateArrivalTimestamp":1.733587{:06}E9,"Data":"{data}","PartitionKey":"k{}"}}"#,
                i,
                i * 37 % 1_000_000,
                i % 97
            )
        })
        .collect();
    let body = format!(r#"{{"Records":[{}],"NextShardIterator":"AAAA","MillisBehindLatest":0}}"#, records.join(","));
    let mut best = f64::MAX;
    for _ in 0..30 {
        let t0 = std::time::Instant::now();
        let f = parse(body.as_bytes()).unwrap();
        best = best.min(t0.elapsed().as_nanos() as f64 / f.records.len() as f64);
    }
    eprintln!("{} bytes per record, {best:.0} ns per record (best of 30)", body.len() / 10_000);
}

#[test]
fn answers_read_here_are_what_the_sdk_reads() {
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    let answers: Vec<String> = (0..6).map(|i| answer([0, 1, 3, 50, 500, 2000][i], i as u64)).collect();
    // each answer twice: read here, then by the SDK
    let port = serve(answers.iter().flat_map(|a| [a.clone(), a.clone()]).collect());
    let ep = crate::Endpoint { region: "us-east-1".into(), url: Some(format!("http://127.0.0.1:{port}")), credfile: None };
    let k = crate::Kinesis::connect(&ep, std::time::Duration::from_secs(20)).unwrap();
    for a in &answers {
        let here = k.get_records("it", 10_000).unwrap();
        // read here, not by the SDK
        assert_eq!(k.answer.borrow().as_slice(), a.as_bytes());
        let sdk = k.get_records_sdk("it", 10_000).unwrap();
        assert_eq!(here, sdk, "{}", &a[..a.len().min(300)]);
        assert_eq!(here.records.len(), a.matches("SequenceNumber").count());
    }
}
