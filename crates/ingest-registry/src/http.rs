//! One HTTP exchange with the registry: a bounded request with the configured credentials, and
//! the answer sorted into data, not-found, outage or refusal. Redirects are not followed (they
//! could carry the credentials elsewhere) and messages never contain a credential.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};
use ureq::Agent;

use crate::config::{Auth, RegistryConfig};
use crate::RegistryError;

/// The most an answer may weigh (a schema with its metadata).
const BODY_LIMIT: u64 = 16 << 20;
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

pub(crate) struct Http {
    agent: Agent,
    base: String,
    authorization: Option<String>,
}

impl Http {
    pub(crate) fn new(cfg: &RegistryConfig) -> Result<Http, RegistryError> {
        let mut builder = Agent::config_builder()
            .timeout_global(Some(cfg.timeout))
            .timeout_connect(Some(cfg.timeout.min(Duration::from_secs(5))))
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .user_agent("pipeline_ingest");
        if cfg.url.starts_with("https://") {
            builder = builder.tls_config(tls_config(cfg)?);
        }
        let authorization = match &cfg.auth {
            Auth::None => None,
            Auth::Basic { user, password } => Some(format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))),
            Auth::Bearer(t) => Some(format!("Bearer {t}")),
        };
        Ok(Http { agent: builder.build().new_agent(), base: cfg.url.clone(), authorization })
    }

    pub(crate) fn get(&self, path: &str) -> Result<Value, RegistryError> {
        let mut req = self.agent.get(format!("{}{path}", self.base)).header("Accept", CONTENT_TYPE);
        if let Some(a) = &self.authorization {
            req = req.header("Authorization", a);
        }
        answer(path, req.call())
    }

    pub(crate) fn post(&self, path: &str, body: &Value) -> Result<Value, RegistryError> {
        let mut req = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Accept", CONTENT_TYPE)
            .header("Content-Type", CONTENT_TYPE);
        if let Some(a) = &self.authorization {
            req = req.header("Authorization", a);
        }
        answer(path, req.send(body.to_string()))
    }
}

fn tls_config(cfg: &RegistryConfig) -> Result<TlsConfig, RegistryError> {
    let roots: Vec<Certificate<'static>> = match &cfg.ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| RegistryError::Refused(format!("cannot read ca_file {path}: {}", e.kind())))?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(RegistryError::Refused(format!("ca_file {path} holds no PEM certificate")));
            }
            certs
        }
        None => rustls_native_certs::load_native_certs()
            .certs
            .into_iter()
            .map(|der| Certificate::from_der(der.as_ref()).to_owned())
            .collect(),
    };
    Ok(TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .disable_verification(cfg.insecure)
        .build())
}

/// Sorts a response (or a transport failure) into the error kinds; `path` names the request.
fn answer(path: &str, res: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Value, RegistryError> {
    let mut resp = match res {
        Ok(r) => r,
        Err(e) => return Err(transport_error(path, e)),
    };
    let status = resp.status().as_u16();
    let body = resp.body_mut().with_config().limit(BODY_LIMIT).read_to_string();
    let body = match body {
        Ok(b) => b,
        Err(e) => return Err(transport_error(path, e)),
    };
    let parsed: Option<Value> = serde_json::from_str(&body).ok();
    if (200..300).contains(&status) {
        return parsed.ok_or_else(|| RegistryError::Outage(format!("GET/POST {path}: the answer (HTTP {status}) is not JSON")));
    }
    let detail = registry_message(parsed.as_ref());
    let what = format!("{path}: HTTP {status}{detail}");
    Err(match status {
        404 => RegistryError::NotFound(what),
        408 | 429 | 500..=599 => RegistryError::Outage(what),
        _ => RegistryError::Refused(what),
    })
}

/// The registry's own error code and message (`{"error_code": 40403, "message": "..."}`),
/// shortened.
fn registry_message(v: Option<&Value>) -> String {
    let Some(v) = v else { return String::new() };
    let code = v.get("error_code").and_then(Value::as_i64);
    let msg = v.get("message").and_then(Value::as_str).map(|m| m.chars().filter(|c| !c.is_control()).take(200).collect::<String>());
    match (code, msg) {
        (Some(c), Some(m)) => format!(" (error code {c}: {m})"),
        (Some(c), None) => format!(" (error code {c})"),
        (None, Some(m)) => format!(" ({m})"),
        (None, None) => String::new(),
    }
}

fn transport_error(path: &str, e: ureq::Error) -> RegistryError {
    use ureq::Error as E;
    match e {
        E::Tls(_) | E::Pem(_) | E::Rustls(_) | E::BadUri(_) | E::Http(_) => {
            RegistryError::Refused(format!("{path}: {e}"))
        }
        E::Timeout(t) => RegistryError::Outage(format!("{path}: timed out ({t})")),
        E::Io(io) => RegistryError::Outage(format!("{path}: {}", io.kind())),
        other => RegistryError::Outage(format!("{path}: {other}")),
    }
}

/// Standard base64 with padding (the basic-auth header).
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Percent-encodes one path segment (a subject name).
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("user:pass", "dXNlcjpwYXNz")] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn segments_are_escaped() {
        assert_eq!(segment("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(segment("x/y z"), "x%2Fy%20z");
    }
}
