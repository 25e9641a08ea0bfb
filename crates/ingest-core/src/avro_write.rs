//! Writing Avro: the record schema `emit_tuple` derives from a table's row type, the binary
//! encoding of its values (Avro 1.11 specification, "Binary Encoding") and the Confluent framing
//! (byte 0, the schema id as 4 big-endian bytes, the body). Only what a row needs: a record of
//! primitive and logical-type fields, each optionally in a `["null", T]` union.

use serde_json::{json, Value};

/// The Avro type of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvroType {
    Int,
    Long,
    Float,
    Double,
    Boolean,
    String,
    Bytes,
    /// `bytes` with logicalType decimal: the unscaled value as big-endian two's complement.
    Decimal { precision: u32, scale: u32 },
    /// `int` days since 1970-01-01.
    Date,
    /// `long` microseconds since 1970-01-01 UTC.
    TimestampMicros,
    /// `long` microseconds since 1970-01-01, in no particular time zone.
    LocalTimestampMicros,
    /// `string` with logicalType uuid.
    Uuid,
}

impl AvroType {
    /// The type's schema (a primitive name, or an object with its logicalType).
    pub fn schema(self) -> Value {
        match self {
            AvroType::Int => json!("int"),
            AvroType::Long => json!("long"),
            AvroType::Float => json!("float"),
            AvroType::Double => json!("double"),
            AvroType::Boolean => json!("boolean"),
            AvroType::String => json!("string"),
            AvroType::Bytes => json!("bytes"),
            AvroType::Decimal { precision, scale } => {
                json!({"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale})
            }
            AvroType::Date => json!({"type": "int", "logicalType": "date"}),
            AvroType::TimestampMicros => json!({"type": "long", "logicalType": "timestamp-micros"}),
            AvroType::LocalTimestampMicros => json!({"type": "long", "logicalType": "local-timestamp-micros"}),
            AvroType::Uuid => json!({"type": "string", "logicalType": "uuid"}),
        }
    }
}

/// One field of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub ty: AvroType,
    /// Written as `["null", T]` with default null.
    pub nullable: bool,
}

/// Whether `s` is a legal Avro name (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `s` made a legal Avro name: every other character becomes `_`, and a name starting with a
/// digit (or empty) gets a leading `_`.
pub fn to_name(s: &str) -> String {
    let mut out: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}

/// The record schema, as compact JSON text (the same fields give the same text, so the registry
/// returns the same id).
pub fn record_schema(name: &str, namespace: &str, fields: &[Field]) -> String {
    let fields: Vec<Value> = fields
        .iter()
        .map(|f| {
            if f.nullable {
                json!({"name": f.name, "type": ["null", f.ty.schema()], "default": null})
            } else {
                json!({"name": f.name, "type": f.ty.schema()})
            }
        })
        .collect();
    json!({"type": "record", "name": to_name(name), "namespace": to_name(namespace), "fields": fields}).to_string()
}

/// `int` and `long`: zig-zag, then a variable-length integer.
pub fn write_long(buf: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        buf.push((n as u8) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

pub fn write_float(buf: &mut Vec<u8>, v: f32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

pub fn write_double(buf: &mut Vec<u8>, v: f64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

pub fn write_bool(buf: &mut Vec<u8>, v: bool) {
    buf.push(v as u8);
}

/// `bytes` and `string`: the length, then the bytes.
pub fn write_bytes(buf: &mut Vec<u8>, v: &[u8]) {
    write_long(buf, v.len() as i64);
    buf.extend_from_slice(v);
}

/// The unscaled value of a decimal's text (`-12.30`, as numeric's output) at `scale`, as the
/// shortest big-endian two's complement. Refuses text with more fractional digits than `scale`
/// (the value would change), an exponent, NaN or infinity.
pub fn decimal_bytes(text: &str, scale: u32) -> Result<Vec<u8>, String> {
    let t = text.trim();
    let (negative, t) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("\"{text}\" is not a finite decimal number"));
    }
    let extra = frac.len().saturating_sub(scale as usize);
    if frac.as_bytes()[frac.len() - extra..].iter().any(|&b| b != b'0') {
        return Err(format!("\"{text}\" has more than {scale} digits after the decimal point"));
    }
    let frac = &frac[..frac.len() - extra];
    let pad = scale as usize - frac.len();
    // The magnitude in base 256, big-endian.
    let mut mag: Vec<u8> = vec![0];
    for d in int.bytes().chain(frac.bytes()).map(|b| b - b'0').chain(std::iter::repeat_n(0, pad)) {
        let mut carry = d as u32;
        for byte in mag.iter_mut().rev() {
            let v = *byte as u32 * 10 + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            mag.insert(0, carry as u8);
            carry >>= 8;
        }
    }
    // A leading zero byte leaves room for the sign bit.
    let first = mag.iter().position(|&b| b != 0).unwrap_or(mag.len() - 1);
    let mut out = vec![0u8];
    out.extend_from_slice(&mag[first..]);
    if negative && out.iter().any(|&b| b != 0) {
        for b in out.iter_mut() {
            *b = !*b;
        }
        for b in out.iter_mut().rev() {
            let (v, overflow) = b.overflowing_add(1);
            *b = v;
            if !overflow {
                break;
            }
        }
    }
    // Drop leading bytes that only repeat the sign.
    while out.len() > 1 && ((out[0] == 0 && out[1] & 0x80 == 0) || (out[0] == 0xff && out[1] & 0x80 != 0)) {
        out.remove(0);
    }
    Ok(out)
}

/// Days between 2000-01-01 (PostgreSQL's date epoch) and 1970-01-01.
pub const PG_EPOCH_DAYS: i64 = 10_957;
/// Microseconds between 2000-01-01 and 1970-01-01.
pub const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS * 86_400_000_000;

/// The Confluent wire format: magic byte 0, the schema id (4 bytes, big-endian), the body.
pub fn frame(id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(0);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long(v: i64) -> Vec<u8> {
        let mut b = Vec::new();
        write_long(&mut b, v);
        b
    }

    #[test]
    fn zigzag_varints_as_the_specification() {
        assert_eq!(long(0), [0x00]);
        assert_eq!(long(-1), [0x01]);
        assert_eq!(long(1), [0x02]);
        assert_eq!(long(-64), [0x7f]);
        assert_eq!(long(64), [0x80, 0x01]);
        assert_eq!(long(i64::MAX), [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(long(i64::MIN), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    }

    #[test]
    fn decimals_as_shortest_twos_complement() {
        assert_eq!(decimal_bytes("1.00", 2).unwrap(), [0x64]);
        assert_eq!(decimal_bytes("0", 2).unwrap(), [0x00]);
        assert_eq!(decimal_bytes("-0.00", 2).unwrap(), [0x00]);
        assert_eq!(decimal_bytes("127", 0).unwrap(), [0x7f]);
        assert_eq!(decimal_bytes("128", 0).unwrap(), [0x00, 0x80]);
        assert_eq!(decimal_bytes("-128", 0).unwrap(), [0x80]);
        assert_eq!(decimal_bytes("-129", 0).unwrap(), [0xff, 0x7f]);
        assert_eq!(decimal_bytes("-1", 0).unwrap(), [0xff]);
        assert_eq!(decimal_bytes("2.5", 3).unwrap(), 2500i64.to_be_bytes()[6..]);
        assert_eq!(decimal_bytes("1.230", 2).unwrap(), [0x7b]);
        // 38 digits: more than any machine integer.
        let big = "12345678901234567890123456789012345678";
        let n: i128 = big.parse().unwrap();
        // the shortest two's complement of an i128
        let shortest = |v: i128| {
            let b = v.to_be_bytes();
            let mut i = 0;
            while i < 15 && ((b[i] == 0 && b[i + 1] & 0x80 == 0) || (b[i] == 0xff && b[i + 1] & 0x80 != 0)) {
                i += 1;
            }
            b[i..].to_vec()
        };
        assert_eq!(decimal_bytes(big, 0).unwrap(), shortest(n));
        assert_eq!(decimal_bytes(&format!("-{big}"), 0).unwrap(), shortest(-n));
        assert_eq!(decimal_bytes("-9999999999.99", 2).unwrap(), shortest(-999999999999));
        assert_eq!(decimal_bytes("32768", 0).unwrap(), shortest(32768));
        assert!(decimal_bytes("1.234", 2).is_err());
        assert!(decimal_bytes("NaN", 2).is_err());
        assert!(decimal_bytes("1e5", 0).is_err());
        assert!(decimal_bytes("", 0).is_err());
    }

    #[test]
    fn schema_text_and_names() {
        let fields = [
            Field { name: "id".into(), ty: AvroType::Long, nullable: false },
            Field { name: "amount".into(), ty: AvroType::Decimal { precision: 10, scale: 2 }, nullable: true },
        ];
        let s: Value = serde_json::from_str(&record_schema("my table", "public", &fields)).unwrap();
        assert_eq!(s["name"], "my_table");
        assert_eq!(s["fields"][0], json!({"name": "id", "type": "long"}));
        assert_eq!(s["fields"][1]["type"][1]["precision"], 10);
        assert_eq!(s["fields"][1]["default"], Value::Null);
        assert!(valid_name("_a1") && !valid_name("1a") && !valid_name("a-b") && !valid_name(""));
        assert_eq!(to_name("1x"), "_1x");
        assert_eq!(frame(258, &[7]), [0, 0, 0, 1, 2, 7]);
    }
}
