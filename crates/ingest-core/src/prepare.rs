//! Batch preparation, the same for every source: each message's payload becomes COPY input, or
//! is rejected when it cannot become whole rows.
//!
//! The rows of every good message go into one buffer; each message keeps the byte ranges of its
//! rows. A run of consecutive messages is one slice of the buffer, so COPYing any part of a batch
//! (as bad-message isolation does by bisection) copies nothing.

use crate::format::{CopyOptions, Format};
use crate::json::{JsonError, JsonRowEncoder};

/// A batch made ready for COPY.
#[derive(Debug, Default)]
pub struct Prepared {
    pub data: Vec<u8>,
    /// The good messages that hold rows, in batch order.
    pub items: Vec<Item>,
    /// The distinct column lists chunks name, by index (json: the fields present; text/csv with
    /// a column list: that list).
    pub column_sets: Vec<Vec<usize>>,
}

/// One good message: its rows, in chunks by the columns they fill (text/csv: one chunk; json: one
/// chunk per run of objects with the same fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The message's index in the batch.
    pub msg: usize,
    pub chunks: Vec<Chunk>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Index into `Prepared::column_sets`; None = every column of the relation.
    pub columns: Option<usize>,
    pub range: std::ops::Range<usize>,
    pub rows: usize,
}

/// A message that did not become rows, and why (with the SQLSTATE COPY would have given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub msg: usize,
    pub error: String,
    pub sqlstate: String,
}

impl Item {
    pub fn rows(&self) -> usize {
        self.chunks.iter().map(|c| c.rows).sum()
    }
}

/// Prepares a batch's payloads (None = no value, e.g. a Kafka tombstone: no rows). `columns`:
/// json matches fields to these names; text/csv with `listed` fill exactly these columns.
pub fn prepare<'a>(
    payloads: impl IntoIterator<Item = Option<&'a [u8]>>,
    opts: &CopyOptions,
    columns: &[String],
    listed: bool,
    size_hint: usize,
) -> (Prepared, Vec<Rejected>) {
    let mut out = Prepared { data: Vec::with_capacity(size_hint), ..Default::default() };
    let text_columns = if listed && opts.format != Format::Json {
        out.column_sets.push((0..columns.len()).collect());
        Some(0)
    } else {
        None
    };
    let mut bad = Vec::new();
    for (i, payload) in payloads.into_iter().enumerate() {
        let Some(payload) = payload else { continue };
        match opts.format {
            Format::Json => {
                let mut enc = JsonRowEncoder::default();
                match enc.push_message(payload, columns) {
                    Ok(_) => {
                        let mut chunks = Vec::with_capacity(enc.groups.len());
                        for g in enc.groups {
                            let set = match out.column_sets.iter().position(|c| *c == g.columns) {
                                Some(k) => k,
                                None => {
                                    out.column_sets.push(g.columns);
                                    out.column_sets.len() - 1
                                }
                            };
                            let start = out.data.len();
                            out.data.extend_from_slice(&g.data);
                            chunks.push(Chunk { columns: Some(set), range: start..out.data.len(), rows: g.rows });
                        }
                        if !chunks.is_empty() {
                            out.items.push(Item { msg: i, chunks });
                        }
                    }
                    Err(e) => {
                        let sqlstate = match e {
                            JsonError::Invalid(_) => "22032",
                            _ => "22P02",
                        };
                        bad.push(Rejected { msg: i, error: e.to_string(), sqlstate: sqlstate.to_string() });
                    }
                }
            }
            Format::Text | Format::Csv => {
                let start = out.data.len();
                match opts.push_message(&mut out.data, payload) {
                    Ok(0) => {}
                    Ok(rows) => out.items.push(Item {
                        msg: i,
                        chunks: vec![Chunk { columns: text_columns, range: start..out.data.len(), rows }],
                    }),
                    Err(e) => bad.push(Rejected { msg: i, error: e.to_string(), sqlstate: "22P04".to_string() }),
                }
            }
        }
    }
    (out, bad)
}

/// The COPYs that insert `items`: consecutive chunks naming the same columns and adjacent in the
/// buffer are one job (one COPY).
pub fn copy_jobs(items: &[Item]) -> Vec<Chunk> {
    let mut jobs: Vec<Chunk> = Vec::new();
    for chunk in items.iter().flat_map(|p| &p.chunks) {
        match jobs.last_mut() {
            Some(j) if j.columns == chunk.columns && j.range.end == chunk.range.start => {
                j.range.end = chunk.range.end;
                j.rows += chunk.rows;
            }
            _ => jobs.push(chunk.clone()),
        }
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(f: &str) -> CopyOptions {
        CopyOptions::new(f, None, None, None).unwrap()
    }

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn text_messages_share_one_buffer_and_bad_ones_are_rejected() {
        let msgs: Vec<Option<&[u8]>> = vec![Some(b"1\ta"), None, Some(b"2\tb\n3\tc"), Some(b"4\tmid\\."), Some(b""), Some(b"5\te")];
        let (p, bad) = prepare(msgs, &opts("text"), &[], false, 64);
        assert_eq!(p.data, b"1\ta\n2\tb\n3\tc\n5\te\n".to_vec());
        assert_eq!(p.items.iter().map(|i| (i.msg, i.rows())).collect::<Vec<_>>(), vec![(0, 1), (2, 2), (5, 1)]);
        assert_eq!(bad.len(), 1);
        assert_eq!((bad[0].msg, bad[0].sqlstate.as_str()), (3, "22P04"));
        // every item's chunks are None (every column) and consecutive: one COPY for all
        let jobs = copy_jobs(&p.items);
        assert_eq!(jobs, vec![Chunk { columns: None, range: 0..p.data.len(), rows: 4 }]);
        // a part of the batch (as bisection takes) is a slice of the same buffer
        let tail = copy_jobs(&p.items[1..]);
        assert_eq!(&p.data[tail[0].range.clone()], b"2\tb\n3\tc\n5\te\n");
    }

    #[test]
    fn listed_columns_are_one_column_set() {
        let c = cols(&["b", "a"]);
        let (p, bad) = prepare(vec![Some(&b"x,y"[..])], &opts("csv"), &c, true, 8);
        assert!(bad.is_empty());
        assert_eq!(p.column_sets, vec![vec![0, 1]]);
        assert_eq!(p.items[0].chunks[0].columns, Some(0));
    }

    #[test]
    fn json_objects_group_by_fields_present() {
        let c = cols(&["id", "name"]);
        let msgs: Vec<Option<&[u8]>> = vec![
            Some(br#"{"id": 1, "name": "a"}"#),
            Some(br#"{"id": 2}"#),
            Some(b"{not json"),
            Some(b"42"),
            Some(br#"[{"id": 3, "name": "c"}, {"id": 4, "name": "d"}]"#),
        ];
        let (p, bad) = prepare(msgs, &opts("json"), &c, false, 64);
        assert_eq!(p.column_sets, vec![vec![0, 1], vec![0]]);
        assert_eq!(bad.iter().map(|r| (r.msg, r.sqlstate.as_str())).collect::<Vec<_>>(), vec![(2, "22032"), (3, "22P02")]);
        let jobs = copy_jobs(&p.items);
        // {id,name} then {id} then {id,name}: three COPYs, rows 1, 1, 2
        assert_eq!(jobs.iter().map(|j| (j.columns, j.rows)).collect::<Vec<_>>(), vec![(Some(0), 1), (Some(1), 1), (Some(0), 2)]);
        assert_eq!(&p.data[jobs[2].range.clone()], b"3\tc\n4\td\n");
    }
}
