//! Client settings (librdkafka properties) given as JSON objects: which are secrets, how they are
//! masked in readable catalog columns, and scrubbing them out of error messages; which settings
//! the extension manages itself, and which a role that is not a superuser may give.

use serde_json::{Map, Value};
use thiserror::Error;

/// librdkafka's property aliases (`_RK_C_ALIAS` in rdkafka_conf.c, librdkafka 2.12): the property
/// each alias sets. librdkafka looks a name up among the global properties first.
const GLOBAL_ALIASES: &[(&str, &str)] = &[
    ("bootstrap.servers", "metadata.broker.list"),
    ("max.in.flight", "max.in.flight.requests.per.connection"),
    ("sasl.mechanism", "sasl.mechanisms"),
    ("sasl.oauthbearer.client.credentials.client.id", "sasl.oauthbearer.client.id"),
    ("sasl.oauthbearer.client.credentials.client.secret", "sasl.oauthbearer.client.secret"),
    ("max.partition.fetch.bytes", "fetch.message.max.bytes"),
    ("linger.ms", "queue.buffering.max.ms"),
    ("retries", "message.send.max.retries"),
    ("compression.type", "compression.codec"),
];

/// Aliases among the topic properties, where librdkafka sends a name it does not know globally
/// (after removing a `topic.` prefix).
const TOPIC_ALIASES: &[(&str, &str)] = &[
    ("acks", "request.required.acks"),
    ("delivery.timeout.ms", "message.timeout.ms"),
    ("compression.type", "compression.codec"),
    ("enable.auto.commit", "auto.commit.enable"),
];

/// Properties the extension sets itself (by their real names): the broker list comes from
/// `pipeline_kafka.brokers`, and offsets are committed with the rows, never by the client, or
/// exactly-once would break. Where a consumer starts is the extension's too (`start_offset`,
/// `start_time`, the stored offsets): `auto.offset.reset` would otherwise be accepted and ignored.
const RESERVED: &[&str] = &[
    "metadata.broker.list",
    "enable.auto.commit",
    "auto.commit.enable",
    "enable.auto.offset.store",
    "auto.offset.reset",
];

/// The hint given when `auto.offset.reset` (under any name) is refused.
pub const START_HINT: &str = "the extension decides where a consumer starts: use start_offset or start_time";

/// What a role that is not a superuser may set in `consume_begin(config := ...)`: client tuning
/// that runs no command, loads no code, reads or writes no file and changes no credential or
/// endpoint (real names; their aliases are accepted too). Everything else is for superusers.
pub const ALLOWED_FOR_ALL: &[&str] = &[
    "api.version.request.timeout.ms",
    "broker.address.family",
    "check.crcs",
    "client.rack",
    "connections.max.idle.ms",
    "fetch.error.backoff.ms",
    "fetch.max.bytes",
    "fetch.message.max.bytes",
    "fetch.min.bytes",
    "fetch.queue.backoff.ms",
    "fetch.wait.max.ms",
    "heartbeat.interval.ms",
    "isolation.level",
    "message.max.bytes",
    "metadata.max.age.ms",
    "queued.max.messages.kbytes",
    "queued.min.messages",
    "receive.message.max.bytes",
    "reconnect.backoff.max.ms",
    "reconnect.backoff.ms",
    "retry.backoff.max.ms",
    "retry.backoff.ms",
    "session.timeout.ms",
    "socket.connection.setup.timeout.ms",
    "socket.keepalive.enable",
    "socket.nagle.disable",
    "socket.receive.buffer.bytes",
    "socket.send.buffer.bytes",
    "socket.timeout.ms",
    "topic.metadata.refresh.interval.ms",
];

/// Ceilings on the allow-listed settings that size the client's buffers, for roles that are not
/// superusers: librdkafka's own defaults. Above them one consumer could make its worker hold
/// gigabytes of prefetched messages and responses (librdkafka accepts up to 2 GB for each).
pub const CEILINGS: &[(&str, f64)] = &[
    ("fetch.max.bytes", 52_428_800.0),
    ("fetch.message.max.bytes", 52_428_800.0),
    ("message.max.bytes", 52_428_800.0),
    ("queued.max.messages.kbytes", 65_536.0),
    ("queued.min.messages", 100_000.0),
    ("receive.message.max.bytes", 100_000_000.0),
];

/// The ceiling of a setting for roles that are not superusers, if it has one.
pub fn ceiling(name: &str) -> Option<f64> {
    let real = resolve(GLOBAL_ALIASES, name);
    CEILINGS.iter().find(|(k, _)| *k == real).map(|(_, c)| *c)
}

/// Bounds on what one settings object may hold (librdkafka's longest property name is about 50
/// bytes; PEM certificate bundles are the longest values).
pub const MAX_SETTINGS: usize = 200;
pub const MAX_KEY_BYTES: usize = 255;
pub const MAX_VALUE_BYTES: usize = 1 << 20;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SettingError {
    #[error("setting \"{0}\" is managed by pipeline_ingest and cannot be set")]
    Reserved(String),
    #[error("setting \"{0}\" may only be given by a superuser")]
    NotAllowed(String),
    #[error("setting \"{0}\" above {1} may only be given by a superuser")]
    AboveCeiling(String, u64),
    #[error("setting \"{0}\" must be a string, a number or a boolean")]
    BadValue(String),
    #[error("{0}")]
    TooLarge(String),
}

impl SettingError {
    /// True for a refusal on privilege grounds (SQLSTATE 42501); the others are bad values (22023).
    pub fn is_privilege(&self) -> bool {
        matches!(self, SettingError::NotAllowed(_) | SettingError::AboveCeiling(..))
    }

    /// What to do instead, for a refused setting that has an alternative.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            SettingError::Reserved(k) if targets(k).contains(&"auto.offset.reset") => Some(START_HINT),
            _ => None,
        }
    }

    /// The message with its hint, for places that keep one text (a worker's `last_error`).
    pub fn with_hint(&self) -> String {
        match self.hint() {
            Some(h) => format!("{self} (HINT: {h})"),
            None => self.to_string(),
        }
    }
}

fn resolve<'a>(aliases: &[(&'a str, &'a str)], name: &'a str) -> &'a str {
    aliases.iter().find(|(alias, _)| *alias == name).map_or(name, |(_, real)| real)
}

/// The properties a setting name can reach in librdkafka: the global property (aliases resolved)
/// and, for a name librdkafka does not know globally, the topic property it falls through to.
/// Names are matched case-sensitively, as librdkafka does (`strcmp`).
pub fn targets(name: &str) -> [&str; 2] {
    let topic_name = name.strip_prefix("topic.").unwrap_or(name);
    [resolve(GLOBAL_ALIASES, name), resolve(TOPIC_ALIASES, topic_name)]
}

/// True for a setting the extension manages (under any of its names).
pub fn is_reserved(name: &str) -> bool {
    targets(name).iter().any(|t| RESERVED.contains(t))
}

/// True for a setting any role may give. Only global property names (or their aliases) are
/// listed, and librdkafka tries a name as a global property first, so the name sets exactly that.
pub fn allowed_for_all(name: &str) -> bool {
    ALLOWED_FOR_ALL.contains(&resolve(GLOBAL_ALIASES, name))
}

/// Checks a settings object before any client library sees it: sizes, value types, settings the
/// extension manages, and (unless `any_setting`, for superusers and broker entries) the allow-list.
pub fn check(settings: &Map<String, Value>, any_setting: bool) -> Result<(), SettingError> {
    if settings.len() > MAX_SETTINGS {
        return Err(SettingError::TooLarge(format!("at most {MAX_SETTINGS} settings may be given")));
    }
    for (k, v) in settings {
        if k.len() > MAX_KEY_BYTES {
            return Err(SettingError::TooLarge(format!("setting names are at most {MAX_KEY_BYTES} bytes long")));
        }
        let len = match v {
            Value::String(s) => s.len(),
            // With serde_json's arbitrary_precision, a number jsonb accepts (1e400) gets here as
            // written; librdkafka's numeric settings are ints and doubles.
            Value::Number(n) if n.to_string().parse::<f64>().is_ok_and(f64::is_finite) => n.to_string().len(),
            Value::Bool(_) => 0,
            _ => return Err(SettingError::BadValue(k.clone())),
        };
        if len > MAX_VALUE_BYTES {
            return Err(SettingError::TooLarge(format!("the value of setting \"{k}\" is longer than {MAX_VALUE_BYTES} bytes")));
        }
        if is_reserved(k) {
            return Err(SettingError::Reserved(k.clone()));
        }
        if !any_setting && !allowed_for_all(k) {
            return Err(SettingError::NotAllowed(k.clone()));
        }
        if let (false, Some(max)) = (any_setting, ceiling(k)) {
            // librdkafka reads these as decimal integers; anything that is not a finite number at
            // most the ceiling is refused here (a string it would not parse is its own error).
            let n = match v {
                Value::Number(n) => n.to_string().parse::<f64>().ok(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                Value::Bool(_) => Some(0.0),
                _ => None,
            };
            if !n.is_some_and(|n| n.is_finite() && n <= max) {
                return Err(SettingError::AboveCeiling(k.clone(), max as u64));
            }
        }
    }
    Ok(())
}

/// What readable catalog columns show instead of a secret value.
pub const MASK: &str = "********";

/// True for settings whose values are credentials: passwords, secrets, private keys, JAAS and
/// OAuth configurations.
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k.contains("jaas")
        || k == "ssl.key.pem"
        || k == "sasl.oauthbearer.config"
        || k.ends_with("private.key")
}

/// Splits settings into what may be shown (secrets replaced by `MASK`) and the secrets.
pub fn split_secrets(settings: &Map<String, Value>) -> (Map<String, Value>, Vec<(String, String)>) {
    let mut shown = Map::new();
    let mut secrets = Vec::new();
    for (k, v) in settings {
        if is_secret(k) {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            secrets.push((k.clone(), text));
            shown.insert(k.clone(), Value::String(MASK.to_string()));
        } else {
            shown.insert(k.clone(), v.clone());
        }
    }
    (shown, secrets)
}

/// Replaces every secret value found in `message` by `MASK` (librdkafka's configuration errors
/// quote the offending value).
pub fn scrub(message: &str, secrets: &[(String, String)]) -> String {
    let mut out = message.to_string();
    for (_, v) in secrets {
        if !v.is_empty() {
            out = out.replace(v.as_str(), MASK);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(text: &str) -> Map<String, Value> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn reserved_settings_are_found_under_every_alias() {
        for k in ["bootstrap.servers", "metadata.broker.list", "enable.auto.commit", "auto.commit.enable",
                  "topic.auto.commit.enable", "topic.enable.auto.commit", "enable.auto.offset.store"] {
            assert!(is_reserved(k), "{k}");
            assert_eq!(check(&obj(&format!(r#"{{"{k}": "x"}}"#)), true), Err(SettingError::Reserved(k.into())));
        }
        for k in ["fetch.wait.max.ms", "Auto.Offset.Reset", "Enable.Auto.Commit", "topic.metadata.refresh.interval.ms"] {
            assert!(!is_reserved(k), "{k}");
        }
    }

    #[test]
    fn where_a_consumer_starts_is_managed_under_every_name_and_value() {
        for k in ["auto.offset.reset", "topic.auto.offset.reset"] {
            for v in ["smallest", "earliest", "beginning", "largest", "latest", "end", "error"] {
                let e = check(&obj(&format!(r#"{{"{k}": "{v}"}}"#)), true).unwrap_err();
                assert_eq!(e, SettingError::Reserved(k.into()));
                assert!(!e.is_privilege());
                assert_eq!(e.hint(), Some(START_HINT));
                assert!(e.with_hint().ends_with("(HINT: the extension decides where a consumer starts: use start_offset or start_time)"));
            }
        }
        assert_eq!(SettingError::Reserved("enable.auto.commit".into()).hint(), None);
    }

    #[test]
    fn only_harmless_tuning_is_allowed_for_everyone() {
        for k in ["fetch.wait.max.ms", "fetch.min.bytes", "max.partition.fetch.bytes", "fetch.message.max.bytes",
                  "socket.timeout.ms", "isolation.level", "client.rack", "check.crcs", "reconnect.backoff.max.ms"] {
            assert!(allowed_for_all(k), "{k}");
        }
        // Commands, code, files, credentials, endpoints; aliases; case and `topic.` variants.
        for k in ["sasl.kerberos.kinit.cmd", "plugin.library.paths", "ssl.ca.location", "ssl.key.location",
                  "ssl.certificate.location", "ssl.keystore.location", "ssl.crl.location", "ssl.engine.location",
                  "sasl.kerberos.keytab", "sasl.oauthbearer.config", "sasl.oauthbearer.token.endpoint.url",
                  "sasl.oauthbearer.assertion.private.key.file", "sasl.oauthbearer.assertion.jwt.template.file",
                  "security.protocol", "sasl.mechanism", "sasl.mechanisms", "sasl.username", "sasl.password",
                  "ssl_engine_id", "ssl.ca.certificate.stores", "debug", "offset.store.method", "offset.store.path",
                  "topic.offset.store.path", "auto.offset.reset", "group.id", "client.id", "interceptor.x",
                  "FETCH.WAIT.MAX.MS", "topic.fetch.wait.max.ms", "fetch.wait.max.ms ", ""] {
            assert!(!allowed_for_all(k), "{k}");
        }
        let attack = obj(r#"{"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "GSSAPI",
                            "sasl.kerberos.kinit.cmd": "id > /tmp/x"}"#);
        assert!(matches!(check(&attack, false), Err(SettingError::NotAllowed(_))));
        assert_eq!(check(&attack, true), Ok(()));
        assert!(check(&obj(r#"{"sasl.mechanism": "PLAIN"}"#), false).unwrap_err().is_privilege());
        assert_eq!(check(&obj(r#"{"fetch.wait.max.ms": 50, "check.crcs": true}"#), false), Ok(()));
    }

    #[test]
    fn buffer_sizes_are_capped_for_everyone_but_superusers() {
        for (k, v) in [("queued.min.messages", "100001"), ("queued.min.messages", "\" 1e7\""),
                       ("queued.max.messages.kbytes", "2097151"), ("fetch.max.bytes", "2147483135"),
                       ("max.partition.fetch.bytes", "1000000000"), ("fetch.message.max.bytes", "\"inf\""),
                       ("message.max.bytes", "1e9"), ("receive.message.max.bytes", "\"2147483647\""),
                       ("queued.min.messages", "\"nan\""), ("queued.min.messages", "\"lots\"")] {
            let o = obj(&format!(r#"{{"{k}": {v}}}"#));
            let e = check(&o, false).unwrap_err();
            assert!(matches!(e, SettingError::AboveCeiling(ref n, _) if n == k) && e.is_privilege(), "{k} {v}: {e:?}");
            assert_eq!(check(&o, true), Ok(()), "{k} {v}");
        }
        for (k, v) in [("queued.min.messages", "100000"), ("queued.min.messages", "\"5000\""),
                       ("max.partition.fetch.bytes", "1048576"), ("fetch.max.bytes", "52428800"),
                       ("receive.message.max.bytes", "100000000"), ("fetch.wait.max.ms", "600000")] {
            assert_eq!(check(&obj(&format!(r#"{{"{k}": {v}}}"#)), false), Ok(()), "{k} {v}");
        }
    }

    #[test]
    fn sizes_and_value_types_are_bounded() {
        let long_key = format!(r#"{{"{}": 1}}"#, "a".repeat(MAX_KEY_BYTES + 1));
        assert!(matches!(check(&obj(&long_key), true), Err(SettingError::TooLarge(_))));
        let long_value = format!(r#"{{"ssl.ca.pem": "{}"}}"#, "a".repeat(MAX_VALUE_BYTES + 1));
        assert!(matches!(check(&obj(&long_value), true), Err(SettingError::TooLarge(_))));
        assert_eq!(check(&obj(r#"{"fetch.wait.max.ms": [1]}"#), true), Err(SettingError::BadValue("fetch.wait.max.ms".into())));
        assert_eq!(check(&obj(r#"{"fetch.wait.max.ms": null}"#), false), Err(SettingError::BadValue("fetch.wait.max.ms".into())));
        let many: Map<String, Value> = (0..=MAX_SETTINGS).map(|i| (format!("k{i}"), Value::Bool(true))).collect();
        assert!(matches!(check(&many, true), Err(SettingError::TooLarge(_))));
    }

    #[test]
    fn secrets_are_recognised_split_and_scrubbed() {
        for k in ["sasl.password", "ssl.key.password", "ssl.keystore.password", "sasl.oauthbearer.client.secret",
                  "sasl.jaas.config", "ssl.key.pem", "sasl.oauthbearer.config"] {
            assert!(is_secret(k), "{k}");
        }
        for k in ["sasl.username", "security.protocol", "sasl.mechanism", "ssl.ca.location", "fetch.wait.max.ms"] {
            assert!(!is_secret(k), "{k}");
        }
        let m: Map<String, Value> = serde_json::from_str(
            r#"{"security.protocol": "SASL_PLAINTEXT", "sasl.username": "u", "sasl.password": "hunter2", "x.secret": 42}"#,
        )
        .unwrap();
        let (shown, secrets) = split_secrets(&m);
        assert_eq!(shown["sasl.password"], Value::String(MASK.into()));
        assert_eq!(shown["x.secret"], Value::String(MASK.into()));
        assert_eq!(shown["sasl.username"], Value::String("u".into()));
        assert_eq!(secrets, vec![("sasl.password".to_string(), "hunter2".to_string()), ("x.secret".to_string(), "42".to_string())]);
        assert_eq!(scrub("bad value hunter2 for x", &secrets), "bad value ******** for x");
    }
}
