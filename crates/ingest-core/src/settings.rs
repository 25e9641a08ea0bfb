//! Client settings (librdkafka properties) given as JSON objects: which are secrets, how they are
//! masked in readable catalog columns, and scrubbing them out of error messages.

use serde_json::{Map, Value};

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
