//! COPY BINARY framing: the header, per tuple an int16 field count, per field an int32 length
//! (-1 = NULL) and the bytes of the type's send format, and the trailer.

/// Writes one COPY BINARY stream into a growing buffer (the reader thread fills it; the main
/// thread hands it to COPY ... FROM STDIN (FORMAT binary)).
#[derive(Debug, Default)]
pub struct BinaryRowWriter {
    buf: Vec<u8>,
    /// Where the current field's length goes, while it is written.
    field_at: Option<usize>,
    /// Where the current row started, to take it back.
    row_at: usize,
}

/// "PGCOPY\n\377\r\n\0", flags (int32 0: no OIDs), header extension length (int32 0).
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

impl BinaryRowWriter {
    pub fn new() -> BinaryRowWriter {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(HEADER);
        BinaryRowWriter { row_at: buf.len(), buf, field_at: None }
    }

    /// Starts a tuple of `nfields` fields (every column of the COPY column list, in order).
    pub fn begin_row(&mut self, nfields: u16) {
        self.row_at = self.buf.len();
        self.buf.extend_from_slice(&(nfields as i16).to_be_bytes());
    }

    pub fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }

    /// The buffer to append one field's bytes to; `end_field` writes its length.
    pub fn begin_field(&mut self) -> &mut Vec<u8> {
        self.field_at = Some(self.buf.len());
        self.buf.extend_from_slice(&[0; 4]);
        &mut self.buf
    }

    pub fn end_field(&mut self) {
        let at = self.field_at.take().expect("end_field without begin_field");
        let len = (self.buf.len() - at - 4) as i32;
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Takes back the row being written (a field of it failed: the message is a dead letter).
    pub fn abandon_row(&mut self) {
        self.buf.truncate(self.row_at);
        self.field_at = None;
    }

    /// Bytes written so far (header and whole rows), e.g. to cut batches by size.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.len() == HEADER.len()
    }

    /// The stream with its trailer (int16 -1).
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_rows_fields_and_nulls() {
        let mut w = BinaryRowWriter::new();
        assert!(w.is_empty());
        w.begin_row(2);
        w.begin_field().extend_from_slice(&7i32.to_be_bytes());
        w.end_field();
        w.null();
        w.begin_row(2);
        w.begin_field().push(1);
        w.abandon_row();
        let out = w.finish();
        let mut want = HEADER.to_vec();
        want.extend_from_slice(&[0, 2, 0, 0, 0, 4, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(out, want);
        assert_eq!(HEADER.len(), 19);
    }
}
