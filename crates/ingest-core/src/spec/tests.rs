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
fn decoded_formats_take_no_copy_options() {
    let with = |format: &str, delimiter: Option<String>| Args { format: s(format), delimiter, ..Args::default() };
    let e = Spec::check(System::Kafka, with("avro", s(";"))).unwrap_err();
    assert_eq!((e.sqlstate(), e.to_string().as_str()), ("22023", "avro format takes no delimiter (its messages are decoded, not read as COPY text)"));
    for sys in [System::Kafka, System::Kinesis] {
        assert_eq!(Spec::check(sys, with("avro", None)).unwrap().opts.format, crate::format::Format::Avro);
        assert_eq!(Spec::check(sys, with("protobuf", None)).unwrap().opts.format, crate::format::Format::Protobuf);
    }
    // every format is consumable now: debezium-avro is a change-event format (upsert by default)
    let spec = Spec::check(System::Kinesis, with("debezium-avro", None)).unwrap();
    assert_eq!((spec.opts.format, spec.mode), (crate::format::Format::DebeziumAvro, Mode::Upsert));
    let e = Spec::check(System::Kafka, with("debezium-avro", s(";"))).unwrap_err();
    assert_eq!(e.sqlstate(), "22023");
}

#[test]
fn debezium_is_applied_by_key_upsert_by_default_replicate_for_truncates() {
    let with = |mode: Option<String>| Args { format: s("debezium"), mode, ..Args::default() };
    assert_eq!(Spec::check(System::Kafka, with(None)).unwrap().mode, Mode::Upsert);
    assert_eq!(Spec::check(System::Kinesis, with(s("replicate"))).unwrap().mode, Mode::Replicate);
    let e = Spec::check(System::Kafka, with(s("append"))).unwrap_err();
    assert_eq!(e.sqlstate(), "22023");
    assert!(e.to_string().contains("format debezium applies change events to a keyed table"), "{e}");
    let e = Spec::check(System::Kafka, Args { key_format: s("json"), ..with(None) }).unwrap_err();
    assert!(e.to_string().contains("key_format does not apply"), "{e}");
    let e = Spec::check(System::Kafka, Args { metadata: s("{\"offset\": \"o\"}"), ..with(None) }).unwrap_err();
    assert!(e.to_string().contains("no metadata columns"), "{e}");
    let e = Spec::check(System::Kafka, Args { format: s("json"), mode: s("replicate"), ..Args::default() }).unwrap_err();
    assert_eq!((e.sqlstate(), e.to_string().as_str()), ("22023", "mode 'replicate' is for change events (format debezium)"));
}

#[test]
fn schema_registry_formats_are_accepted_and_keep_their_registry() {
    for f in ["avro", "protobuf", "debezium-avro"] {
        let given = Args { format: s(f), schema_registry: s("http://r:1/apis/ccompat/v7"), ..Args::default() };
        let spec = Spec::check(System::Kafka, given.clone()).unwrap();
        assert_eq!(spec.opts.format.name(), f);
        assert!(spec.opts.format.needs_registry());
        assert_eq!(spec.schema_registry.as_deref(), Some("http://r:1/apis/ccompat/v7"));
        assert!(Spec::check(System::Kinesis, given.clone()).is_ok());
        // Omitted: kept; the registry is resolved against the catalog by the caller.
        assert_eq!(Args::default().over(&given).schema_registry, given.schema_registry);
        assert_eq!(Spec::check(System::Kafka, Args { format: s(f), ..Args::default() }).unwrap().schema_registry, None);
        // Options of text/csv and a column list do not apply.
        for bad in [
            Args { delimiter: s(","), ..given.clone() },
            Args { columns: Some(vec![s("a")]), ..given.clone() },
        ] {
            assert!(matches!(Spec::check(System::Kafka, bad), Err(SpecError::Invalid(_))));
        }
    }
    let stored = Args { format: s("avro"), schema_registry: s("http://r"), columns: None, ..Args::default() };
    // Another format drops the stored registry; another registry format keeps it.
    assert_eq!(Args { format: s("json"), ..Args::default() }.over(&stored).schema_registry, None);
    assert_eq!(Args { format: s("protobuf"), ..Args::default() }.over(&stored).schema_registry, s("http://r"));
    // From csv with columns to avro: the columns go.
    assert_eq!(Args { format: s("avro"), ..Args::default() }.over(&csv_consumer()).columns, None);
    let e = Spec::check(System::Kafka, Args { format: s("json"), schema_registry: s("http://r"), ..Args::default() }).unwrap_err();
    assert!(e.to_string().contains("schema_registry is for the formats avro"), "{e}");
    let row = serde_json::json!({"format": "avro", "schema_registry": "http://r"});
    assert_eq!(Args::from_row(&row).schema_registry, s("http://r"));
}

#[test]
fn auto_evolve_is_for_typed_formats_and_is_kept() {
    let given = Args { format: s("avro"), auto_evolve: Some(true), ..Args::default() };
    assert!(Spec::check(System::Kafka, given.clone()).unwrap().auto_evolve);
    assert!(!Spec::check(System::Kafka, Args { format: s("avro"), ..Args::default() }).unwrap().auto_evolve);
    // Omitted: kept; another typed format keeps it; another format drops it.
    assert_eq!(Args::default().over(&given).auto_evolve, Some(true));
    assert_eq!(Args { format: s("protobuf"), ..Args::default() }.over(&given).auto_evolve, Some(true));
    assert_eq!(Args { format: s("json"), ..Args::default() }.over(&given).auto_evolve, None);
    assert_eq!(Args { auto_evolve: Some(false), ..Args::default() }.over(&given).auto_evolve, Some(false));
    for f in ["json", "text", "debezium"] {
        let e = Spec::check(System::Kinesis, Args { format: s(f), auto_evolve: Some(true), ..Args::default() }).unwrap_err();
        assert_eq!(e.sqlstate(), "22023");
        assert!(e.to_string().contains("auto_evolve is for the formats with typed records"), "{e}");
    }
    assert!(Spec::check(System::Kafka, Args { format: s("json"), auto_evolve: Some(false), ..Args::default() }).is_ok());
    assert_eq!(Args::from_row(&serde_json::json!({"auto_evolve": true})).auto_evolve, Some(true));
}
