//! Validation of `host[:port]` broker addresses as given to `pipeline_kafka.add_broker`, and of
//! Kafka topic names.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BrokerError {
    #[error("broker address is empty")]
    Empty,
    #[error("broker address \"{0}\" contains whitespace or a comma; add one broker per call")]
    BadCharacter(String),
    #[error("broker address \"{0}\" has an invalid port (expected 1-65535)")]
    BadPort(String),
    #[error("broker address \"{0}\" has an invalid host name")]
    BadHost(String),
    #[error("broker address is longer than {MAX_HOST_BYTES} bytes")]
    TooLong,
}

/// The longest host name DNS allows; an IP address is shorter.
pub const MAX_HOST_BYTES: usize = 255;
/// Kafka's limit on topic names.
pub const MAX_TOPIC_BYTES: usize = 249;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TopicError {
    #[error("topic must not be empty")]
    Empty,
    #[error("topic name is longer than {MAX_TOPIC_BYTES} bytes")]
    TooLong,
    #[error("topic name \"{0}\" is not valid: Kafka allows letters, digits, '.', '_' and '-'")]
    BadCharacter(String),
    #[error("\"{0}\" is not a legal Kafka topic name")]
    DotName(String),
}

/// Checks a topic name as Kafka does (its length and characters).
pub fn check_topic(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong);
    }
    if !topic.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err(TopicError::BadCharacter(topic.to_string()));
    }
    if topic == "." || topic == ".." {
        return Err(TopicError::DotName(topic.to_string()));
    }
    Ok(())
}

/// librdkafka's worst-case size of one record's own fields besides its key, value and headers,
/// `RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD` (rdkafka_proto.h, librdkafka 2.12.1): the varints Length,
/// OffsetDelta, KeyLen, ValueLen and HeaderCnt at 5 bytes each (`RD_UVARINT_ENC_SIZEOF(int32_t)`),
/// TimestampDelta at 10 (`RD_UVARINT_ENC_SIZEOF(int64_t)`) and the Attributes byte.
pub const RECORD_MAX_OVERHEAD: usize = 5 + 1 + 10 + 5 + 5 + 5 + 5;

/// Bytes of the zig-zag varint librdkafka writes for a length (`rd_uvarint_enc_i64`).
fn varint_len(n: usize) -> usize {
    let mut v = (n as u64) << 1;
    let mut bytes = 1;
    while v >= 0x80 {
        v >>= 7;
        bytes += 1;
    }
    bytes
}

/// The size librdkafka compares with the producer's `message.max.bytes` before it takes a message
/// (`rd_kafka_msg_new0` in rdkafka_msg.c: `rd_kafka_msg_max_wire_size(keylen, len, hdrs_size) >
/// rk_conf.max_msg_size` refuses it with MSG_SIZE_TOO_LARGE), where the wire size is
/// `RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD + keylen + valuelen + hdrslen` (rdkafka_msg.h) and each
/// header counts its name, its value and the varints of both lengths (`rd_kafka_header_add` in
/// rdkafka_header.c). `headers` are (name bytes, value bytes; 0 for a NULL value). The record
/// batch that carries it adds 61 bytes more (`RD_KAFKAP_MSGSET_V2_SIZE`), which librdkafka does
/// not count here but the broker does against the topic's `max.message.bytes`.
pub fn record_wire_size(key: usize, value: usize, headers: impl IntoIterator<Item = (usize, usize)>) -> usize {
    let headers: usize = headers.into_iter().map(|(n, v)| n + v + varint_len(n) + varint_len(v)).sum();
    RECORD_MAX_OVERHEAD + key + value + headers
}

/// The default Kafka port, used when an address has none.
pub const DEFAULT_PORT: u16 = 9092;

/// Parses `host`, `host:port` or `[ipv6]:port`; returns the host and the port.
pub fn parse_broker(addr: &str) -> Result<(String, u16), BrokerError> {
    if addr.is_empty() {
        return Err(BrokerError::Empty);
    }
    // Host, brackets and ":port"; checked before any message quotes the address.
    if addr.len() > MAX_HOST_BYTES + 8 {
        return Err(BrokerError::TooLong);
    }
    if addr.chars().any(|c| c.is_whitespace() || c == ',' || c.is_control()) {
        return Err(BrokerError::BadCharacter(addr.to_string()));
    }
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(|| BrokerError::BadHost(addr.to_string()))?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| BrokerError::BadHost(addr.to_string()))?),
        };
        (host, port)
    } else {
        match addr.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (addr, None),
        }
    };
    if host.is_empty() || host.contains(['[', ']', '/', '@']) || host.contains(':') && !addr.starts_with('[') {
        return Err(BrokerError::BadHost(addr.to_string()));
    }
    if host.len() > MAX_HOST_BYTES {
        return Err(BrokerError::TooLong);
    }
    // Host names (letters, digits, '-', '.', '_'), IPv4 and bracketed IPv6 (with a %zone).
    if !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'%')) {
        return Err(BrokerError::BadHost(addr.to_string()));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && !p.starts_with('+') => n,
            _ => return Err(BrokerError::BadPort(addr.to_string())),
        },
    };
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_size_counts_librdkafkas_overhead() {
        assert_eq!(RECORD_MAX_OVERHEAD, 36);
        assert_eq!(record_wire_size(0, 0, []), 36);
        // 1,000,000 bytes of value do not fit librdkafka's default message.max.bytes of 1,000,000
        assert_eq!(record_wire_size(0, 1_000_000, []), 1_000_036);
        assert_eq!(record_wire_size(0, 1_000_000 - 36, []), 1_000_000);
        // a header: name + value + a 1-byte varint for each length below 64, 2 bytes up to 8191
        assert_eq!(record_wire_size(3, 5, [(6, 3)]), 36 + 8 + 6 + 3 + 1 + 1);
        assert_eq!(record_wire_size(0, 0, [(63, 0), (64, 8191), (1, 8192)]), 36 + (63 + 1 + 1) + (64 + 8191 + 2 + 2) + (1 + 8192 + 1 + 3));
    }

    #[test]
    fn accepts_host_and_port_forms() {
        assert_eq!(parse_broker("localhost"), Ok(("localhost".into(), 9092)));
        assert_eq!(parse_broker("127.0.0.1:29092"), Ok(("127.0.0.1".into(), 29092)));
        assert_eq!(parse_broker("kafka-1.example.com:9093"), Ok(("kafka-1.example.com".into(), 9093)));
        assert_eq!(parse_broker("[::1]:9092"), Ok(("::1".into(), 9092)));
        assert_eq!(parse_broker("[::1]"), Ok(("::1".into(), 9092)));
    }

    #[test]
    fn rejects_malformed_addresses() {
        assert_eq!(parse_broker(""), Err(BrokerError::Empty));
        assert!(matches!(parse_broker("a:0"), Err(BrokerError::BadPort(_))));
        assert!(matches!(parse_broker("a:65536"), Err(BrokerError::BadPort(_))));
        assert!(matches!(parse_broker("a:"), Err(BrokerError::BadPort(_))));
        assert!(matches!(parse_broker("a:x"), Err(BrokerError::BadPort(_))));
        assert!(matches!(parse_broker("a:+1"), Err(BrokerError::BadPort(_))));
        assert!(matches!(parse_broker(":9092"), Err(BrokerError::BadHost(_))));
        assert!(matches!(parse_broker("a b:1"), Err(BrokerError::BadCharacter(_))));
        assert!(matches!(parse_broker("a:1,b:2"), Err(BrokerError::BadCharacter(_))));
        assert!(matches!(parse_broker("::1:9092"), Err(BrokerError::BadHost(_))));
        assert_eq!(parse_broker(&"a".repeat(100_000)), Err(BrokerError::TooLong));
        assert_eq!(parse_broker(&format!("{}:9092", "a".repeat(256))), Err(BrokerError::TooLong));
        assert!(parse_broker(&format!("{}:9092", "a".repeat(255))).is_ok());
        assert!(matches!(parse_broker("h\u{e9}te:9092"), Err(BrokerError::BadHost(_))));
        assert!(matches!(parse_broker("a;b:9092"), Err(BrokerError::BadHost(_))));
        assert!(matches!(parse_broker("[::1"), Err(BrokerError::BadHost(_))));
        assert!(matches!(parse_broker("user@host:1"), Err(BrokerError::BadHost(_))));
    }
}
