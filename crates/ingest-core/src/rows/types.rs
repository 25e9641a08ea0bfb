//! The PostgreSQL column types the row model encodes itself, with their typmods, and what a
//! column's plan needs to know of the server.

/// numeric(precision, scale) as PostgreSQL packs it in atttypmod (scale may be negative or
/// exceed the precision since PostgreSQL 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumericTypmod {
    pub precision: i32,
    pub scale: i32,
}

impl NumericTypmod {
    /// From atttypmod; None for -1 (plain `numeric`) or anything invalid.
    pub fn from_typmod(typmod: i32) -> Option<NumericTypmod> {
        if typmod < 4 {
            return None;
        }
        let t = typmod - 4;
        Some(NumericTypmod { precision: (t >> 16) & 0xffff, scale: ((t & 0x7ff) ^ 1024) - 1024 })
    }
}

/// A supported column type. Lengths are in characters (atttypmod - 4); None = no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgType {
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Bool,
    Text,
    Varchar(Option<u32>),
    Bpchar(Option<u32>),
    Uuid,
    Bytea,
    Numeric(Option<NumericTypmod>),
    Json,
    Jsonb,
    Date,
    Timestamp,
    Timestamptz,
}

impl PgType {
    /// From pg_type.typname (of the column's type itself, not a domain over it) and atttypmod.
    /// None: a type this model does not encode (the column stays on the text path).
    pub fn from_catalog(typname: &str, typmod: i32) -> Option<PgType> {
        let len = if typmod >= 4 { Some((typmod - 4) as u32) } else { None };
        Some(match typname {
            "int2" => PgType::Int2,
            "int4" => PgType::Int4,
            "int8" => PgType::Int8,
            "float4" => PgType::Float4,
            "float8" => PgType::Float8,
            "bool" => PgType::Bool,
            "text" => PgType::Text,
            "varchar" => PgType::Varchar(len),
            "bpchar" => PgType::Bpchar(len),
            "uuid" => PgType::Uuid,
            "bytea" => PgType::Bytea,
            "numeric" => PgType::Numeric(NumericTypmod::from_typmod(typmod)),
            "json" => PgType::Json,
            "jsonb" => PgType::Jsonb,
            "date" => PgType::Date,
            // timestamp(p) rounds to p digits: the text path, until that rounding is here.
            "timestamp" | "timestamptz" if typmod != -1 && typmod != 6 => return None,
            "timestamp" => PgType::Timestamp,
            "timestamptz" => PgType::Timestamptz,
            _ => return None,
        })
    }

    /// The built-in type's OID (pg_type.h).
    pub fn oid(self) -> u32 {
        match self {
            PgType::Int2 => 21,
            PgType::Int4 => 23,
            PgType::Int8 => 20,
            PgType::Float4 => 700,
            PgType::Float8 => 701,
            PgType::Bool => 16,
            PgType::Text => 25,
            PgType::Varchar(_) => 1043,
            PgType::Bpchar(_) => 1042,
            PgType::Uuid => 2950,
            PgType::Bytea => 17,
            PgType::Numeric(_) => 1700,
            PgType::Json => 114,
            PgType::Jsonb => 3802,
            PgType::Date => 1082,
            PgType::Timestamp => 1114,
            PgType::Timestamptz => 1184,
        }
    }

    /// The name PostgreSQL's input functions put in their messages.
    pub fn message_name(self) -> &'static str {
        match self {
            PgType::Int2 => "smallint",
            PgType::Int4 => "integer",
            PgType::Int8 => "bigint",
            PgType::Float4 => "real",
            PgType::Float8 => "double precision",
            PgType::Bool => "boolean",
            PgType::Text => "text",
            PgType::Varchar(_) => "character varying",
            PgType::Bpchar(_) => "character",
            PgType::Uuid => "uuid",
            PgType::Bytea => "bytea",
            PgType::Numeric(_) => "numeric",
            PgType::Json => "json",
            PgType::Jsonb => "jsonb",
            PgType::Date => "date",
            PgType::Timestamp => "timestamp without time zone",
            PgType::Timestamptz => "timestamp with time zone",
        }
    }
}

/// What of the server and session matters to the conversions. DateStyle and TimeZone decide how
/// date/time *text* reads (so such text stays on the text path for now); extra_float_digits only
/// changes float *output*, never input, so it matters to nothing here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// server_version_num: 16 and later accept `1_000` and `0x1F` in integers and numerics.
    pub version_num: u32,
    /// server_encoding and client_encoding both UTF8: text bytes go through unconverted.
    pub utf8: bool,
    /// integer_datetimes (always on since PostgreSQL 10, checked all the same).
    pub integer_datetimes: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings { version_num: 150000, utf8: true, integer_datetimes: true }
    }
}

impl ServerSettings {
    /// Integer and numeric input of PostgreSQL 16+: underscores and non-decimal prefixes.
    pub fn pg16_number_syntax(&self) -> bool {
        self.version_num >= 160000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typmods_unpack_as_postgresql_packs_them() {
        // numeric(10,2): ((10 << 16) | 2) + 4
        assert_eq!(
            PgType::from_catalog("numeric", (10 << 16 | 2) + 4),
            Some(PgType::Numeric(Some(NumericTypmod { precision: 10, scale: 2 })))
        );
        // numeric(3,-2): scale stored as 11-bit two's complement
        assert_eq!(
            NumericTypmod::from_typmod((3 << 16 | (-2i32 & 0x7ff)) + 4),
            Some(NumericTypmod { precision: 3, scale: -2 })
        );
        assert_eq!(PgType::from_catalog("numeric", -1), Some(PgType::Numeric(None)));
        assert_eq!(PgType::from_catalog("varchar", 9), Some(PgType::Varchar(Some(5))));
        assert_eq!(PgType::from_catalog("bpchar", -1), Some(PgType::Bpchar(None)));
        assert_eq!(PgType::from_catalog("inet", -1), None);
        assert_eq!(PgType::from_catalog("timestamptz", 3), None);
        assert_eq!(PgType::Int8.oid(), 20);
    }
}
