use super::*;

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn csv_consumer() -> Args {
    Args {
        format: s("csv"),
        delimiter: s(";"),
        columns: Some(vec![s("a"), s("b")]),
        parallelism: Some(2),
        ..Args::default()
    }
}

#[test]
fn defaults_of_a_new_consumer() {
    let k = Spec::check(System::Kafka, Args::default()).unwrap();
    assert_eq!((k.opts.format, k.batchsize, k.maxbytes, k.parallelism, k.timeout), (Format::Text, 100_000, 32_000_000, 1, 250));
    assert_eq!((k.on_error, k.mode, k.columns.clone()), (OnError::DeadLetter, Mode::Append, None));
    let n = Spec::check(System::Kinesis, Args::default()).unwrap();
    assert_eq!((n.batchsize, n.poll_interval), (10_000, 200));
}

#[test]
fn omitted_arguments_keep_the_stored_settings() {
    let stored = csv_consumer();
    let kept = Args::default().over(&stored);
    assert_eq!(kept, stored);
    let before = Spec::check(System::Kafka, stored.clone()).unwrap();
    let after = Spec::check(System::Kafka, kept).unwrap();
    assert_eq!(after.changes_from(&before), None);
    let more = Spec::check(System::Kafka, Args { parallelism: Some(3), ..Args::default() }.over(&stored)).unwrap();
    assert_eq!(more.changes_from(&before).as_deref(), Some("parallelism 2 -> 3"));
    assert_eq!(more.columns, Some(vec!["a".to_string(), "b".to_string()]));
}

#[test]
fn every_argument_given_replaces_everything() {
    // pipeline_kafka's callers give every argument: given = changed.
    let stored = csv_consumer();
    let all = Args { format: s("text"), delimiter: s("|"), batchsize: Some(5), parallelism: Some(1), ..Args::default() };
    let m = Spec::check(System::Kafka, all.over(&stored)).unwrap();
    let before = Spec::check(System::Kafka, stored).unwrap();
    assert_eq!(
        m.changes_from(&before).as_deref(),
        Some("format csv -> text, delimiter ; -> |, batchsize 100000 -> 5, parallelism 2 -> 1")
    );
}

#[test]
fn a_new_format_drops_the_old_ones_options() {
    let m = Args { format: s("json"), ..Args::default() }.over(&csv_consumer());
    assert_eq!((m.delimiter, m.columns), (None, None));
    let t = Args { format: s("text"), ..Args::default() }.over(&csv_consumer());
    assert_eq!((t.delimiter, t.columns.is_some()), (None, true));
}

#[test]
fn empty_values_clear_stored_ones() {
    let stored = Args { columns: Some(vec![s("a")]), metadata: s("{\"key\": \"k\"}"), group_id: s("g"), ..Args::default() };
    let m = Args { columns: Some(vec![]), metadata: s("{}"), group_id: s(""), ..Args::default() }.over(&stored);
    assert_eq!((m.columns, m.metadata, m.group_id), (None, None, None));
    let up = Args { mode: s("upsert"), key_columns: Some(vec![s("id")]), key_format: s("json"), ..Args::default() };
    let back = Args { mode: s("append"), ..Args::default() }.over(&up);
    assert_eq!((back.key_columns, back.key_format), (None, None));
}

#[test]
fn checks_refuse_what_cannot_work() {
    let err = |system, a: Args| Spec::check(system, a).unwrap_err().to_string();
    assert_eq!(err(System::Kafka, Args { parallelism: Some(0), ..Args::default() }), "parallelism must be positive, got 0");
    assert!(err(System::Kinesis, Args { batchsize: Some(10_001), ..Args::default() }).starts_with("batchsize must be at most 10000"));
    assert!(err(System::Kafka, Args { on_error: s("ignore"), ..Args::default() }).starts_with("on_error must be"));
    assert_eq!(
        Spec::check(System::Kafka, Args { columns: Some(vec![None]), ..Args::default() }).unwrap_err().sqlstate(),
        "22004"
    );
    assert!(err(System::Kafka, Args { format: s("json"), columns: Some(vec![s("a")]), ..Args::default() }).starts_with("columns is for text"));
    assert!(err(System::Kafka, Args { key_format: s("json"), ..Args::default() }).contains("for mode 'upsert'"));
    assert!(err(System::Kafka, Args { transform: s("f(x)"), format: s("csv"), ..Args::default() }).contains("raw bytes"));
    assert!(err(System::Kafka, Args { max_dead_letters: Some(-1), ..Args::default() }).contains("max_dead_letters"));
    // maxbytes is Kafka's, poll_interval Kinesis'
    assert!(Spec::check(System::Kinesis, Args { maxbytes: Some(0), ..Args::default() }).is_ok());
    assert!(Spec::check(System::Kafka, Args { poll_interval: Some(0), ..Args::default() }).is_ok());
}

#[test]
fn starts() {
    assert!(check_kafka_start(Some(-3), false).is_err());
    assert!(check_kafka_start(Some(0), true).is_err());
    assert!(check_kafka_start(Some(-2), false).is_ok());
    assert_eq!(kinesis_start(Some(-2), None), Ok(Some(KinesisStart::TrimHorizon)));
    assert_eq!(kinesis_start(None, Some(5)), Ok(Some(KinesisStart::At(5))));
    assert!(kinesis_start(Some(0), None).is_err());
    assert!(check_stream("a/b").is_err() && check_stream("ok.s-1").is_ok());
}

#[test]
fn stored_rows_read_back() {
    let row = serde_json::json!({"id": 3, "format": "csv", "delimiter": ";", "columns": ["a", "b"], "batchsize": 10,
        "parallelism": 2, "on_error": "skip", "metadata": {"key": "k"}, "mode": "append", "transform": null});
    let a = Args::from_row(&row);
    assert_eq!(a.columns, Some(vec![s("a"), s("b")]));
    assert_eq!((a.format, a.batchsize, a.parallelism, a.on_error), (s("csv"), Some(10), Some(2), s("skip")));
    assert_eq!((a.metadata, a.transform, a.maxbytes), (s("{\"key\":\"k\"}"), None, None));
}

#[test]
fn the_same_metadata_written_otherwise_is_no_change() {
    let stored = Args { metadata: s("{\"key\":\"k\",\"offset\":\"o\"}"), ..Args::default() };
    let given = Args { metadata: s("{\"offset\": \"o\", \"key\": \"k\"}"), ..Args::default() };
    let before = Spec::check(System::Kafka, stored.clone()).unwrap();
    assert_eq!(Spec::check(System::Kafka, given.over(&stored)).unwrap().changes_from(&before), None);
}

#[test]
fn decoded_formats_take_no_copy_options_and_unwired_ones_are_refused() {
    let with = |format: &str, delimiter: Option<String>| Args { format: s(format), delimiter, ..Args::default() };
    let e = Spec::check(System::Kafka, with("avro", s(";"))).unwrap_err();
    assert_eq!((e.sqlstate(), e.to_string().as_str()), ("22023", "avro format takes no delimiter (its messages are decoded, not read as COPY text)"));
    for f in ["avro", "protobuf", "debezium", "debezium-avro"] {
        let e = Spec::check(System::Kinesis, with(f, None)).unwrap_err();
        assert_eq!((e.sqlstate(), e.to_string()), ("0A000", format!("format {f} is not supported yet")));
    }
}
