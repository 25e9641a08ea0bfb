//! Upsert keys (pipeline_ingest's mode 'upsert'): the key columns' values a message key holds, per
//! key_format, as text; json values completed with the key fields they lack; COPY text escaping
//! of key values.

/// The key columns' values a message key holds, as text (None = SQL NULL): without key_format the
/// whole key is the one key column's text; 'json' an object with the key columns; 'csv' and
/// 'text' one line of the key columns in order (COPY's csv and text conventions).
pub fn key_fields(key: &[u8], key_format: Option<&str>, keys: &[String]) -> Result<Vec<Option<String>>, String> {
    let text = std::str::from_utf8(key).map_err(|_| "not valid UTF-8".to_string())?;
    let fields = match key_format {
        None => vec![Some(text.to_string())],
        Some("json") => {
            let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
            let obj = v.as_object().ok_or("a json key must be an object of the key columns")?;
            keys.iter()
                .map(|k| match obj.get(k) {
                    None => Err(format!("no field \"{k}\"")),
                    Some(serde_json::Value::Null) => Ok(None),
                    Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                    Some(other) => Ok(Some(other.to_string())),
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        Some("csv") => split_csv(text.strip_suffix('\n').unwrap_or(text))?,
        Some(_) => split_text(text.strip_suffix('\n').unwrap_or(text))?,
    };
    if fields.len() != keys.len() {
        return Err(format!("{} field(s) for {} key column(s)", fields.len(), keys.len()));
    }
    Ok(fields)
}

/// One csv line: comma-separated, `"` quotes with `""` inside; an unquoted empty field is NULL.
pub fn split_csv(line: &str) -> Result<Vec<Option<String>>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        let mut quoted = false;
        if chars.peek() == Some(&'"') {
            quoted = true;
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated csv quote".to_string()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
        }
        while let Some(&c) = chars.peek() {
            if c == ',' {
                break;
            }
            if quoted {
                return Err("data after a closing csv quote".to_string());
            }
            field.push(c);
            chars.next();
        }
        out.push(if field.is_empty() && !quoted { None } else { Some(field) });
        if chars.next().is_none() {
            return Ok(out);
        }
    }
}

/// One line of COPY text format: tab-separated, `\N` is NULL, backslash escapes as COPY reads them.
pub fn split_text(line: &str) -> Result<Vec<Option<String>>, String> {
    let mut out = Vec::new();
    for raw in line.split('\t') {
        if raw == "\\N" {
            out.push(None);
            continue;
        }
        let mut field = String::new();
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                field.push(c);
                continue;
            }
            match chars.next() {
                Some('b') => field.push('\u{8}'),
                Some('f') => field.push('\u{c}'),
                Some('n') => field.push('\n'),
                Some('r') => field.push('\r'),
                Some('t') => field.push('\t'),
                Some('v') => field.push('\u{b}'),
                Some(other) => field.push(other),
                None => return Err("a key ending in a backslash".to_string()),
            }
        }
        out.push(Some(field));
    }
    Ok(out)
}

/// Appends `s` as one COPY text-format field.
pub fn copy_text_escape(s: &str, out: &mut Vec<u8>) {
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// A json value that is an object lacking some key fields, completed with them from the message
/// key (parsed with key_format): the fields are inserted after the opening brace, the value's own
/// text kept as it is (numbers as written). None when nothing is to be added or the key does not
/// parse (a row without its key is then refused where it is stored).
pub fn json_with_key_fields(payload: &[u8], key: &[u8], key_format: Option<&str>, keys: &[String]) -> Option<Vec<u8>> {
    let serde_json::Value::Object(obj) = serde_json::from_slice::<serde_json::Value>(payload).ok()? else { return None };
    let missing: Vec<usize> = (0..keys.len()).filter(|&i| !obj.contains_key(&keys[i])).collect();
    if missing.is_empty() {
        return None;
    }
    let fields = key_fields(key, key_format, keys).ok()?;
    let mut added = String::new();
    for i in missing {
        let v = fields[i].clone().map_or(serde_json::Value::Null, serde_json::Value::String);
        added.push_str(&format!("{}:{v},", serde_json::Value::String(keys[i].clone())));
    }
    let open = payload.iter().position(|&b| b == b'{')?;
    let rest = &payload[open + 1..];
    if rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}') {
        added.pop();
    }
    let mut out = Vec::with_capacity(payload.len() + added.len());
    out.extend_from_slice(&payload[..=open]);
    out.extend_from_slice(added.as_bytes());
    out.extend_from_slice(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn key_formats() {
        assert_eq!(key_fields(b"42", None, &k(&["id"])), Ok(vec![s("42")]));
        assert_eq!(key_fields(br#"{"b": "x", "a": 1, "c": 9}"#, Some("json"), &k(&["a", "b"])), Ok(vec![s("1"), s("x")]));
        assert_eq!(key_fields(br#"{"a": null, "b": "x"}"#, Some("json"), &k(&["a", "b"])), Ok(vec![None, s("x")]));
        assert!(key_fields(br#"{"a": 1}"#, Some("json"), &k(&["a", "b"])).unwrap_err().contains("no field \"b\""));
        assert!(key_fields(b"[1, 2]", Some("json"), &k(&["a", "b"])).is_err());
        assert_eq!(key_fields(b"1,\"x,\"\"y\"\"\",,\"\"", Some("csv"), &k(&["a", "b", "c", "d"])),
                   Ok(vec![s("1"), s("x,\"y\""), None, s("")]));
        assert_eq!(key_fields(b"1\tx\\ty\t\\N\n", Some("text"), &k(&["a", "b", "c"])), Ok(vec![s("1"), s("x\ty"), None]));
        assert!(key_fields(b"1,2,3", Some("csv"), &k(&["a", "b"])).unwrap_err().contains("3 field(s) for 2"));
        assert!(key_fields(b"\"open", Some("csv"), &k(&["a"])).is_err());
        assert!(key_fields(b"\xff", None, &k(&["a"])).is_err());
    }

    #[test]
    fn copy_text_escaping_round_trips() {
        let mut out = Vec::new();
        copy_text_escape("a\tb\\c\nd", &mut out);
        assert_eq!(out, b"a\\tb\\\\c\\nd".to_vec());
        assert_eq!(split_text(std::str::from_utf8(&out).unwrap()), Ok(vec![s("a\tb\\c\nd")]));
    }

    #[test]
    fn json_values_get_missing_key_fields() {
        let keys = k(&["id"]);
        assert_eq!(json_with_key_fields(br#"{"v": 1.50}"#, b"7", None, &keys).unwrap(), br#"{"id":"7","v": 1.50}"#.to_vec());
        assert_eq!(json_with_key_fields(b" { } ", b"7", None, &keys).unwrap(), br#" {"id":"7" } "#.to_vec());
        assert_eq!(json_with_key_fields(br#"{"id": 3}"#, b"7", None, &keys), None);
        assert_eq!(json_with_key_fields(br#"[{"v": 1}]"#, b"7", None, &keys), None);
        let two = k(&["a", "b"]);
        assert_eq!(json_with_key_fields(br#"{"b": "q"}"#, br#"{"a": 5, "b": "r"}"#, Some("json"), &two).unwrap(),
                   br#"{"a":"5","b": "q"}"#.to_vec());
        assert_eq!(json_with_key_fields(br#"{"v": 1}"#, b"not json", Some("json"), &two), None);
    }
}
