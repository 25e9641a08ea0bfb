//! The client against a tiny HTTP server in the test (std TcpListener): answers, errors sorted
//! into NotFound / Outage / Refused, timeouts, credentials sent, references resolved, the cache.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ingest_registry::{Client, Reference, RegistryConfig, RegistryError, SchemaType};
use serde_json::json;

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
    body: String,
}

type Handler = dyn Fn(&Seen) -> (u16, String) + Send + Sync;

/// Serves `handler` on 127.0.0.1 until the test ends; returns the base URL and the requests seen.
fn serve(handler: Arc<Handler>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/apis/ccompat/v7", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (h, log) = (handler.clone(), log.clone());
            thread::spawn(move || answer(stream, &*h, &log));
        }
    });
    (url, seen)
}

fn answer(stream: TcpStream, handler: &Handler, log: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let len = headers.iter().find(|(k, _)| k == "content-length").map(|(_, v)| v.parse().unwrap()).unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let seen = Seen { line: line.trim_end().to_string(), headers, body: String::from_utf8(body).unwrap() };
        log.lock().unwrap().push(seen.clone());
        let (status, body) = handler(&seen);
        if status == 0 {
            thread::sleep(Duration::from_secs(3)); // never answers in time
            return;
        }
        let mut s = &stream;
        let reply = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn client(url: &str, config: serde_json::Value) -> Client {
    Client::new(RegistryConfig::from_json(url, Some(&config)).unwrap()).unwrap()
}

#[test]
fn schema_by_id_is_fetched_once_and_cached() {
    let (url, seen) = serve(Arc::new(|r: &Seen| match r.line.as_str() {
        "GET /apis/ccompat/v7/schemas/ids/7 HTTP/1.1" => (200, json!({"schema": "{\"type\":\"long\"}"}).to_string()),
        _ => (500, String::new()),
    }));
    let c = client(&url, json!({}));
    let s = c.schema_by_id(7).unwrap();
    assert_eq!((s.id, s.schema_type, s.schema.as_str()), (7, SchemaType::Avro, "{\"type\":\"long\"}"));
    assert!(s.references.is_empty());
    for _ in 0..100 {
        assert_eq!(c.schema_by_id(7).unwrap(), s);
    }
    assert_eq!(c.requests(), 1);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn references_are_resolved_transitively_dependencies_first() {
    let (url, _) = serve(Arc::new(|r: &Seen| {
        let p = r.line.split(' ').nth(1).unwrap().trim_start_matches("/apis/ccompat/v7");
        match p {
            "/schemas/ids/3" => (200, json!({"schema": "import \"b.proto\";", "schemaType": "PROTOBUF",
                "references": [{"name": "b.proto", "subject": "b value", "version": 2}]}).to_string()),
            "/subjects/b%20value/versions/2" => (200, json!({"subject": "b value", "version": 2, "id": 2,
                "schema": "import \"c.proto\";", "schemaType": "PROTOBUF",
                "references": [{"name": "c.proto", "subject": "c", "version": 1}]}).to_string()),
            "/subjects/c/versions/1" => (200, json!({"subject": "c", "version": 1, "id": 1, "schema": "message C {}", "schemaType": "PROTOBUF"}).to_string()),
            _ => (404, json!({"error_code": 40401, "message": "no"}).to_string()),
        }
    }));
    let c = client(&url, json!({}));
    let s = c.schema_by_id(3).unwrap();
    assert_eq!(s.schema_type, SchemaType::Protobuf);
    let names: Vec<_> = s.references.iter().map(|r| (r.name.as_str(), r.schema.as_str())).collect();
    assert_eq!(names, [("c.proto", "message C {}"), ("b.proto", "import \"c.proto\";")]);
    assert_eq!(c.requests(), 3);
}

#[test]
fn not_found_outage_and_refused_are_told_apart() {
    let (url, _) = serve(Arc::new(|r: &Seen| {
        let p = r.line.split(' ').nth(1).unwrap();
        match p.rsplit('/').next().unwrap() {
            "404" => (404, json!({"error_code": 40403, "message": "Schema 404 not found"}).to_string()),
            "500" => (500, "oops".to_string()),
            "503" => (503, String::new()),
            "429" => (429, String::new()),
            "401" => (401, json!({"error_code": 401, "message": "Unauthorized"}).to_string()),
            "403" => (403, String::new()),
            "422" => (422, String::new()),
            "200" => (200, "not json".to_string()),
            _ => (0, String::new()),
        }
    }));
    let c = client(&url, json!({"timeout_ms": 500}));
    let e = c.schema_by_id(404).unwrap_err();
    assert!(matches!(&e, RegistryError::NotFound(m) if m.contains("40403")), "{e:?}");
    for id in [500, 503, 429, 200] {
        let e = c.schema_by_id(id).unwrap_err();
        assert!(e.is_outage(), "{id}: {e:?}");
    }
    for id in [401, 403, 422] {
        assert!(matches!(c.schema_by_id(id).unwrap_err(), RegistryError::Refused(_)), "{id}");
    }
    // A server that never answers: an outage within the bound.
    let t0 = Instant::now();
    let e = c.schema_by_id(1).unwrap_err();
    assert!(e.is_outage(), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    // An error is not cached: the next lookup asks again.
    let n = c.requests();
    let _ = c.schema_by_id(404);
    assert_eq!(c.requests(), n + 1);
}

#[test]
fn connection_refused_is_an_outage() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(); // closed again
    let c = client(&format!("http://127.0.0.1:{port}"), json!({"timeout_ms": 1000}));
    let e = c.schema_by_id(1).unwrap_err();
    assert!(e.is_outage(), "{e:?}");
}

#[test]
fn credentials_are_sent_and_never_in_errors() {
    let (url, seen) = serve(Arc::new(|_: &Seen| (401, json!({"message": "who are you"}).to_string())));
    let basic = client(&url, json!({"basic_auth": "alice:s3cr3t-pw"}));
    let e = basic.schema_by_id(1).unwrap_err();
    let bearer = client(&url, json!({"bearer_token": "tok-SECRET"}));
    let e2 = bearer.schema_by_id(1).unwrap_err();
    for e in [&e, &e2] {
        let m = format!("{e} {e:?}");
        assert!(!m.contains("s3cr3t") && !m.contains("SECRET") && !m.contains("YWxpY2U6czNjcjN0LXB3"), "{m}");
    }
    let none = client(&url, json!({}));
    assert!(matches!(none.schema_by_id(1), Err(RegistryError::Refused(_))));
    let seen = seen.lock().unwrap();
    let auth: Vec<_> =
        seen.iter().map(|s| s.headers.iter().find(|(k, _)| k == "authorization").map(|h| h.1.clone())).collect();
    assert_eq!(auth, [Some("Basic YWxpY2U6czNjcjN0LXB3".to_string()), Some("Bearer tok-SECRET".to_string()), None]);
}

#[test]
fn register_posts_the_schema_and_returns_its_id() {
    let (url, seen) = serve(Arc::new(|r: &Seen| match r.line.as_str() {
        "POST /apis/ccompat/v7/subjects/t-value/versions HTTP/1.1" => (200, json!({"id": 42}).to_string()),
        _ => (404, String::new()),
    }));
    let c = client(&url, json!({}));
    let refs = [Reference { name: "b.proto".into(), subject: "b".into(), version: 1 }];
    assert_eq!(c.register("t-value", "syntax = \"proto3\";", SchemaType::Protobuf, &refs).unwrap(), 42);
    let seen = seen.lock().unwrap();
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body, json!({"schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF",
        "references": [{"name": "b.proto", "subject": "b", "version": 1}]}));
    assert!(seen[0].headers.iter().any(|(k, v)| k == "content-type" && v == "application/vnd.schemaregistry.v1+json"));
}

#[test]
fn the_cache_is_bounded() {
    let (url, _) = serve(Arc::new(|r: &Seen| {
        let id = r.line.split(' ').nth(1).unwrap().rsplit('/').next().unwrap().to_string();
        (200, json!({"schema": id}).to_string())
    }));
    let c = client(&url, json!({}));
    for id in 0..1001 {
        c.schema_by_id(id).unwrap();
    }
    assert_eq!(c.requests(), 1001);
    c.schema_by_id(1000).unwrap(); // the most recent is kept
    assert_eq!(c.requests(), 1001);
    c.schema_by_id(0).unwrap(); // the oldest was evicted
    assert_eq!(c.requests(), 1002);
}
