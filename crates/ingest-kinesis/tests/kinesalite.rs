//! The client against kinesalite on 127.0.0.1 (KINESIS_ENDPOINT, set by scripts/env.sh; the test
//! tier runs it after `scripts/services.sh start kinesis`): shards listed with their lineage,
//! iterators from every kind of start position, records read exactly (and as the SDK's own
//! deserializer reads them), SHARD_END after a split.

use ingest_core::kinesis::seqnum::SeqNum;
use ingest_kinesis::{Endpoint, Kinesis, KinesisError, StartAt};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn endpoint() -> Endpoint {
    let url = std::env::var("KINESIS_ENDPOINT").expect("KINESIS_ENDPOINT must point at kinesalite (source scripts/env.sh)");
    assert!(url.starts_with("http://127.0.0.1:"), "tests talk to 127.0.0.1 only, got {url}");
    Endpoint { region: "us-east-1".into(), url: Some(url), credfile: None }
}

/// The SDK itself, for what the tests set up (streams, records, splits).
fn admin(rt: &tokio::runtime::Runtime) -> aws_sdk_kinesis::Client {
    let ep = endpoint();
    let config = rt.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(ep.region))
            .endpoint_url(ep.url.unwrap())
            .credentials_provider(aws_sdk_kinesis::config::Credentials::new("test", "test", None, None, "tests"))
            .load(),
    );
    aws_sdk_kinesis::Client::new(&config)
}

fn wait_active(rt: &tokio::runtime::Runtime, c: &aws_sdk_kinesis::Client, stream: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = rt.block_on(c.describe_stream_summary().stream_name(stream).send()).unwrap();
        let status = s.stream_description_summary().map(|d| d.stream_status().as_str().to_string());
        if status.as_deref() == Some("ACTIVE") {
            return;
        }
        assert!(Instant::now() < deadline, "stream {stream} not ACTIVE within 30 s ({status:?})");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), n % 1_000_000_000)
}

/// Reads a shard from `start` until no more records come (open shard) or SHARD_END.
fn read_all(k: &Kinesis, stream: &str, shard: &str, start: StartAt) -> (Vec<(SeqNum, String)>, bool) {
    let mut it = k.iterator(stream, shard, &start).unwrap();
    let mut out = Vec::new();
    for _ in 0..50 {
        let f = k.get_records(&it, 1000).unwrap();
        // the same answer read by the SDK's deserializer: the same records
        let sdk = k.get_records_sdk(&it, 1000).unwrap();
        assert_eq!(f.records, sdk.records);
        assert!(f.records.iter().all(|r| r.arrival_ms.is_some()));
        assert_eq!(f.next_iterator.is_some(), sdk.next_iterator.is_some());
        let empty = f.records.is_empty();
        out.extend(f.records.into_iter().map(|r| (r.seq, String::from_utf8(r.data).unwrap())));
        match f.next_iterator {
            None => return (out, true),
            Some(n) if empty => {
                let _ = n;
                return (out, false);
            }
            Some(n) => it = n,
        }
    }
    panic!("shard {shard} did not end within 50 calls");
}

#[test]
fn shards_iterators_records_and_lineage() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let admin = admin(&rt);
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    let k = Kinesis::connect(&endpoint(), Duration::from_secs(10)).unwrap();
    let stream = unique("pi_client");

    // Unknown streams are NotFound, not retried forever.
    match k.list_shards(&stream) {
        Err(KinesisError::NotFound(_)) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }

    rt.block_on(admin.create_stream().stream_name(&stream).shard_count(2).send()).unwrap();
    wait_active(&rt, &admin, &stream);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let shards = k.list_shards(&stream).unwrap();
        assert_eq!(shards.len(), 2);
        assert!(shards.iter().all(|s| s.parent.is_none() && !s.closed));
        // the two hash ranges cover the whole space
        let mut ranges: Vec<(u128, u128)> = shards.iter().map(|s| s.hash_range).collect();
        ranges.sort();
        assert_eq!(ranges[0].0, 0);
        assert_eq!(ranges[1].1, u128::MAX);
        assert_eq!(ranges[0].1 + 1, ranges[1].0);

        let mut sent: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for i in 0..60 {
            let key = format!("key{}", i % 7);
            let value = format!("{i},{key}");
            let out = rt
                .block_on(admin.put_record().stream_name(&stream).partition_key(&key).data(value.clone().into_bytes().into()).send())
                .unwrap();
            sent.entry(out.shard_id().to_string()).or_default().push(value);
        }
        let mut got = 0;
        for s in &shards {
            let (records, ended) = read_all(&k, &stream, &s.id, StartAt::TrimHorizon);
            assert!(!ended, "an open shard has no end");
            let values: Vec<String> = records.iter().map(|(_, v)| v.clone()).collect();
            assert_eq!(&values, sent.get(&s.id).unwrap_or(&Vec::new()), "shard {} in order, exactly", s.id);
            got += values.len();
            if records.len() >= 2 {
                // AFTER_SEQUENCE_NUMBER resumes right after a checkpoint; AT_ includes it.
                let (after, _) = read_all(&k, &stream, &s.id, StartAt::AfterSequence(records[0].0.clone()));
                assert_eq!(after.len(), records.len() - 1);
                let (at, _) = read_all(&k, &stream, &s.id, StartAt::AtSequence(records[1].0.clone()));
                assert_eq!(at.len(), records.len() - 1);
                assert!(records.windows(2).all(|w| w[0].0 < w[1].0), "sequence numbers grow");
            }
            let (latest, _) = read_all(&k, &stream, &s.id, StartAt::Latest);
            assert!(latest.is_empty());
        }
        assert_eq!(got, 60);

        // Split the first shard: it closes, its children name it as parent, and reading it ends.
        let parent = &shards[0];
        let mid = parent.hash_range.0 + (parent.hash_range.1 - parent.hash_range.0) / 2;
        rt.block_on(
            admin.split_shard().stream_name(&stream).shard_to_split(&parent.id).new_starting_hash_key(mid.to_string()).send(),
        )
        .unwrap();
        wait_active(&rt, &admin, &stream);
        let after_split = k.list_shards(&stream).unwrap();
        assert_eq!(after_split.len(), 4);
        let closed: Vec<&str> = after_split.iter().filter(|s| s.closed).map(|s| s.id.as_str()).collect();
        assert_eq!(closed, vec![parent.id.as_str()]);
        let children: Vec<_> = after_split.iter().filter(|s| s.parent.as_deref() == Some(parent.id.as_str())).collect();
        assert_eq!(children.len(), 2);
        let (records, ended) = read_all(&k, &stream, &parent.id, StartAt::TrimHorizon);
        assert!(ended, "a closed shard read to its end gives no next iterator");
        assert_eq!(records.len(), sent.get(&parent.id).map_or(0, Vec::len));
    }));
    let _ = rt.block_on(admin.delete_stream().stream_name(&stream).send()); // best effort: kinesalite is in memory
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
