//! A registry's address and settings: the URL is checked (http or https, no user info, no query)
//! and the `config` jsonb of `add_schema_registry` parsed into credentials and TLS settings. The
//! error messages name keys, never values: a value may be a secret.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use crate::RegistryError;

/// The keys a registry's `config` may have.
pub const CONFIG_KEYS: &[&str] =
    &["basic_auth", "username", "password", "bearer_token", "ca_file", "insecure", "timeout_ms"];

/// The default bound of one request (connect, send, receive).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the client authenticates.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Auth {
    #[default]
    None,
    /// HTTP basic authentication (`Authorization: Basic base64(user:password)`).
    Basic { user: String, password: String },
    /// `Authorization: Bearer <token>`.
    Bearer(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Auth::None => "none",
            Auth::Basic { .. } => "basic (redacted)",
            Auth::Bearer(_) => "bearer (redacted)",
        })
    }
}

/// Everything a [`crate::Client`] needs. `Debug` shows no secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// The base URL of the Confluent-compatible API, without a trailing slash, e.g.
    /// `http://127.0.0.1:8080/apis/ccompat/v7`.
    pub url: String,
    pub auth: Auth,
    /// A PEM file of CA certificates to trust instead of the system's roots (https only).
    pub ca_file: Option<String>,
    /// Skip certificate verification (https only; for tests, never for production).
    pub insecure: bool,
    /// The bound of one request.
    pub timeout: Duration,
}

impl fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &self.url)
            .field("auth", &self.auth)
            .field("ca_file", &self.ca_file)
            .field("insecure", &self.insecure)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RegistryConfig {
    /// A configuration without credentials and with the default timeout.
    pub fn new(url: &str) -> Result<RegistryConfig, RegistryError> {
        RegistryConfig::from_json(url, None)
    }

    /// Checks `url` and parses `config` (a JSON object with the keys of [`CONFIG_KEYS`], or
    /// none). Errors are [`RegistryError::InvalidConfig`].
    pub fn from_json(url: &str, config: Option<&Value>) -> Result<RegistryConfig, RegistryError> {
        let url = normalize_url(url)?;
        let mut out = RegistryConfig { url, auth: Auth::None, ca_file: None, insecure: false, timeout: DEFAULT_TIMEOUT };
        let obj = match config {
            None | Some(Value::Null) => return Ok(out),
            Some(Value::Object(o)) => o,
            Some(_) => return Err(invalid("config must be a JSON object")),
        };
        if let Some(k) = obj.keys().find(|k| !CONFIG_KEYS.contains(&k.as_str())) {
            return Err(invalid(&format!(
                "unknown config key \"{}\" (known: {})",
                printable(k),
                CONFIG_KEYS.join(", ")
            )));
        }
        let text = |key: &str| -> Result<Option<String>, RegistryError> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                Some(_) => Err(invalid(&format!("config key \"{key}\" must be a non-empty string"))),
            }
        };
        let basic = text("basic_auth")?;
        let (user, password) = (text("username")?, text("password")?);
        let bearer = text("bearer_token")?;
        if basic.is_some() && (user.is_some() || password.is_some()) {
            return Err(invalid("give either \"basic_auth\" or \"username\" and \"password\", not both"));
        }
        let basic = match (basic, user, password) {
            (Some(b), _, _) => match b.split_once(':') {
                Some((u, p)) if !u.is_empty() => Some((u.to_string(), p.to_string())),
                _ => return Err(invalid("config key \"basic_auth\" must be \"user:password\"")),
            },
            (None, Some(u), Some(p)) => Some((u, p)),
            (None, None, None) => None,
            (None, _, _) => return Err(invalid("config keys \"username\" and \"password\" go together")),
        };
        out.auth = match (basic, bearer) {
            (Some(_), Some(_)) => return Err(invalid("give either basic authentication or \"bearer_token\", not both")),
            (Some((user, password)), None) => Auth::Basic { user, password },
            (None, Some(t)) => Auth::Bearer(t),
            (None, None) => Auth::None,
        };
        if let Some(ca) = text("ca_file")? {
            if !ca.starts_with('/') {
                return Err(invalid("config key \"ca_file\" must be an absolute path"));
            }
            out.ca_file = Some(ca);
        }
        out.insecure = match obj.get("insecure") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid("config key \"insecure\" must be a boolean")),
        };
        if let Some(v) = obj.get("timeout_ms").filter(|v| !v.is_null()) {
            match v.as_u64() {
                Some(ms @ 100..=300_000) => out.timeout = Duration::from_millis(ms),
                _ => return Err(invalid("config key \"timeout_ms\" must be an integer from 100 to 300000")),
            }
        }
        let https = out.url.starts_with("https://");
        if !https && (out.ca_file.is_some() || out.insecure) {
            return Err(invalid("\"ca_file\" and \"insecure\" apply to https URLs only"));
        }
        Ok(out)
    }
}

fn invalid(msg: &str) -> RegistryError {
    RegistryError::InvalidConfig(msg.to_string())
}

/// A key as it may appear in a message: short and without control characters.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// `http(s)://host[:port][/path]` without user info, query or fragment; the trailing slash is
/// dropped so that paths can be appended.
pub fn normalize_url(url: &str) -> Result<String, RegistryError> {
    let url = url.trim();
    let rest = if let Some(r) = url.strip_prefix("http://") {
        r
    } else if let Some(r) = url.strip_prefix("https://") {
        r
    } else {
        return Err(invalid("the registry URL must start with http:// or https://"));
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        return Err(invalid("the registry URL must not carry user info: put credentials into config"));
    }
    if authority.is_empty() || authority.starts_with(':') {
        return Err(invalid("the registry URL has no host"));
    }
    if url.contains(['?', '#']) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("the registry URL must not have a query, a fragment or spaces"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(url: &str, v: Value) -> String {
        match RegistryConfig::from_json(url, Some(&v)) {
            Err(RegistryError::InvalidConfig(m)) => m,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn urls() {
        assert_eq!(normalize_url("http://h:1/apis/ccompat/v7/").unwrap(), "http://h:1/apis/ccompat/v7");
        assert_eq!(normalize_url("https://h").unwrap(), "https://h");
        for bad in ["ftp://h", "h:1", "http://", "http://u:p@h/", "http://h/?x=1", "http://h/#f", "file:///etc/passwd", "http://h/ a"] {
            assert!(normalize_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_forms() {
        let c = RegistryConfig::from_json("http://h", Some(&json!({"basic_auth": "u:p:q"}))).unwrap();
        assert_eq!(c.auth, Auth::Basic { user: "u".into(), password: "p:q".into() });
        let c = RegistryConfig::from_json("http://h", Some(&json!({"username": "u", "password": "p"}))).unwrap();
        assert_eq!(c.auth, Auth::Basic { user: "u".into(), password: "p".into() });
        let c = RegistryConfig::from_json("https://h", Some(&json!({"bearer_token": "t", "insecure": true, "ca_file": "/x.pem", "timeout_ms": 500}))).unwrap();
        assert_eq!(c.auth, Auth::Bearer("t".into()));
        assert!(c.insecure);
        assert_eq!(c.timeout, Duration::from_millis(500));
        assert_eq!(RegistryConfig::from_json("http://h", Some(&Value::Null)).unwrap().auth, Auth::None);
    }

    #[test]
    fn invalid_configs_name_keys_not_values() {
        let m = err("http://h", json!({"basic_auth": "nocolonSECRET"}));
        assert!(m.contains("basic_auth") && !m.contains("SECRET"), "{m}");
        let m = err("http://h", json!({"pasword": "SECRET"}));
        assert!(m.contains("pasword") && !m.contains("SECRET"), "{m}");
        err("http://h", json!({"username": "u"}));
        err("http://h", json!({"basic_auth": "u:p", "bearer_token": "t"}));
        err("http://h", json!({"basic_auth": "u:p", "password": "p"}));
        err("http://h", json!({"ca_file": "rel.pem"}));
        err("http://h", json!({"insecure": true}));
        err("https://h", json!({"insecure": "yes"}));
        err("http://h", json!({"timeout_ms": 5}));
        err("http://h", json!({"bearer_token": 5}));
        err("http://h", json!([1]));
    }

    #[test]
    fn debug_hides_secrets() {
        let c = RegistryConfig::from_json("http://h", Some(&json!({"basic_auth": "u:SECRET"}))).unwrap();
        assert!(!format!("{c:?}").contains("SECRET"));
        let c = RegistryConfig::from_json("http://h", Some(&json!({"bearer_token": "SECRET"}))).unwrap();
        assert!(!format!("{c:?}").contains("SECRET"));
    }
}
