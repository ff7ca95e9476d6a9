//! TFRecord files (optionally gzip-compressed) and `tf.train.Example` decoding.
//!
//! Framing of each record: `u64` little-endian length, `u32` masked CRC32C of the 8 length
//! bytes, the data, `u32` masked CRC32C of the data; `mask(c) = ((c >> 15) | (c << 17)) +
//! 0xa282ead8`. Both CRCs are checked; a failure names the file and the 0-based record index.
//! `tf.train.Example` is decoded with prost-derived structs that mirror TensorFlow's
//! `example.proto` / `feature.proto` (field numbers as published), no code generation.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::{DataError, RecordIssue, Result};

const MASK_DELTA: u32 = 0xa282_ead8;

/// TFRecord's CRC mask.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    let c = crc32c::crc32c(bytes);
    (c.rotate_right(15)).wrapping_add(MASK_DELTA)
}

/// The first two bytes of every gzip file.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads a whole file, gunzipping it when it starts with the gzip magic bytes. A file named
/// `*.gz` must be gzip (another start is reported as such, not as whatever its bytes then
/// fail as), and an empty (0-byte) file is an error: no dataset file is legitimately empty.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if raw.is_empty() {
        return Err(DataError::invalid(path, "empty file (0 bytes)"));
    }
    if raw.starts_with(&GZIP_MAGIC) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| {
                let msg = format!("corrupt or truncated gzip data: {e}");
                DataError::io(path, std::io::Error::new(e.kind(), msg))
            })?;
        Ok(out)
    } else if path.extension().is_some_and(|e| e == "gz") {
        Err(DataError::invalid(
            path,
            format!(
                "not gzip data: a `.gz` file starts with the bytes 1f 8b, this one with {}",
                raw.iter()
                    .take(2)
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        ))
    } else {
        Ok(raw)
    }
}

/// The records of a TFRecord file, each CRC-checked; a file without records is an error.
pub fn read_records(path: &Path) -> Result<Vec<Vec<u8>>> {
    let bytes = read_maybe_gz(path)?;
    let records = split_records(&bytes, path)?;
    if records.is_empty() {
        return Err(DataError::invalid(path, "no records (the data is empty)"));
    }
    Ok(records)
}

/// Splits an in-memory TFRecord stream into records; `path` only names errors.
pub fn split_records(bytes: &[u8], path: &Path) -> Result<Vec<Vec<u8>>> {
    let framed = frame_records(bytes);
    if let Some(stop) = framed.stop {
        return Err(DataError::Record {
            path: path.to_path_buf(),
            record: stop.record,
            issue: stop.issue,
        });
    }
    Ok(framed.records.into_iter().map(<[u8]>::to_vec).collect())
}

/// The records of a TFRecord stream read up to its end or its first problem.
#[derive(Debug)]
pub struct FramedRecords<'a> {
    /// The records before the problem, each CRC-checked.
    pub records: Vec<&'a [u8]>,
    /// The problem that stopped the reading; `None` when the stream ends after a whole record.
    pub stop: Option<FramingStop>,
}

/// Where and why reading a TFRecord stream stopped.
#[derive(Debug)]
pub struct FramingStop {
    /// 0-based index of the record that could not be read.
    pub record: usize,
    /// Byte offset of that record's length header.
    pub offset: usize,
    pub issue: RecordIssue,
}

/// Splits a TFRecord stream into records, checking both CRCs of each, and stops at the first
/// record that is cut short or fails a check. The one framing reader: [`split_records`] makes
/// any stop an error; TensorBoard event files (`runs::foreign::tensorboard`) accept a stream
/// cut inside its last record, as a writer still running leaves it.
pub fn frame_records(bytes: &[u8]) -> FramedRecords<'_> {
    let mut records = Vec::new();
    let mut offset = 0;
    let stop = |records: &Vec<&[u8]>, offset, issue| {
        Some(FramingStop {
            record: records.len(),
            offset,
            issue,
        })
    };
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.len() < 12 {
            let stop = stop(&records, offset, RecordIssue::Truncated("length header"));
            return FramedRecords { records, stop };
        }
        let len_bytes = &rest[..8];
        let stored = u32::from_le_bytes(rest[8..12].try_into().unwrap());
        let computed = masked_crc32c(len_bytes);
        if stored != computed {
            let stop = stop(
                &records,
                offset,
                RecordIssue::LengthCrc { stored, computed },
            );
            return FramedRecords { records, stop };
        }
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap());
        let body = &rest[12..];
        if (body.len() as u64) < len.saturating_add(4) {
            let stop = stop(&records, offset, RecordIssue::Truncated("data"));
            return FramedRecords { records, stop };
        }
        let len = len as usize;
        let data = &body[..len];
        let stored = u32::from_le_bytes(body[len..len + 4].try_into().unwrap());
        let computed = masked_crc32c(data);
        if stored != computed {
            let stop = stop(&records, offset, RecordIssue::DataCrc { stored, computed });
            return FramedRecords { records, stop };
        }
        records.push(data);
        offset += 12 + len + 4;
    }
    FramedRecords {
        records,
        stop: None,
    }
}

/// Frames `records` as a TFRecord stream (uncompressed).
pub fn write_records<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        let len = (r.len() as u64).to_le_bytes();
        out.extend_from_slice(&len);
        out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        out.extend_from_slice(r);
        out.extend_from_slice(&masked_crc32c(r).to_le_bytes());
    }
    out
}

/// `tf.train.Example`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Example {
    #[prost(message, optional, tag = "1")]
    pub features: Option<Features>,
}

/// `tf.train.Features`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Features {
    #[prost(map = "string, message", tag = "1")]
    pub feature: HashMap<String, Feature>,
}

/// `tf.train.Feature`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Feature {
    #[prost(oneof = "feature::Kind", tags = "1, 2, 3")]
    pub kind: Option<feature::Kind>,
}

pub mod feature {
    /// The `kind` oneof of `tf.train.Feature`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "1")]
        BytesList(super::BytesList),
        #[prost(message, tag = "2")]
        FloatList(super::FloatList),
        #[prost(message, tag = "3")]
        Int64List(super::Int64List),
    }
}

/// `tf.train.BytesList`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BytesList {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub value: Vec<Vec<u8>>,
}

/// `tf.train.FloatList`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FloatList {
    #[prost(float, repeated, tag = "1")]
    pub value: Vec<f32>,
}

/// `tf.train.Int64List`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Int64List {
    #[prost(int64, repeated, tag = "1")]
    pub value: Vec<i64>,
}

impl Example {
    /// Decodes one record.
    pub fn decode_record(bytes: &[u8]) -> std::result::Result<Example, RecordIssue> {
        <Example as prost::Message>::decode(bytes).map_err(|e| RecordIssue::Decode(e.to_string()))
    }

    /// The int64 list feature `name`, if present.
    pub fn int64_list(&self, name: &str) -> Option<&[i64]> {
        match self.features.as_ref()?.feature.get(name)?.kind.as_ref()? {
            feature::Kind::Int64List(l) => Some(&l.value),
            _ => None,
        }
    }

    /// An example of int64 list features (tests, fixtures).
    pub fn from_int64_lists<'a>(lists: impl IntoIterator<Item = (&'a str, Vec<i64>)>) -> Example {
        Example {
            features: Some(Features {
                feature: lists
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            Feature {
                                kind: Some(feature::Kind::Int64List(Int64List { value: v })),
                            },
                        )
                    })
                    .collect(),
            }),
        }
    }

    pub fn encode_to_vec(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(self)
    }
}

/// All `*.tfrecord*` files of a directory, sorted by the number in their name
/// (`partition_2` before `partition_10`), then by name.
pub fn list_tfrecord_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(".tfrecord"))
        })
        .collect();
    files.sort_by_key(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        (partition_number(&name), name)
    });
    Ok(files)
}

/// The first run of digits in a name (`partition_12.tfrecord.gz` -> 12); `u64::MAX` if none.
pub fn partition_number(name: &str) -> u64 {
    let digits: String = name
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_tensorflow_vectors() {
        // crc32c("123456789") = 0xe3069283 (RFC 3720 check value)
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(
            masked_crc32c(b"123456789"),
            0xe306_9283u32.rotate_right(15).wrapping_add(MASK_DELTA)
        );
    }

    #[test]
    fn round_trip_and_corruption() {
        let ex = Example::from_int64_lists([("a", vec![1, -1, 5]), ("b", vec![9])]);
        let rec = ex.encode_to_vec();
        let stream = write_records([rec.as_slice(), rec.as_slice()]);
        let p = Path::new("mem");
        let recs = split_records(&stream, p).unwrap();
        assert_eq!(recs.len(), 2);
        let back = Example::decode_record(&recs[1]).unwrap();
        assert_eq!(back.int64_list("a"), Some(&[1, -1, 5][..]));
        assert_eq!(back.int64_list("zz"), None);

        let mut bad = stream.clone();
        let second_data = stream.len() / 2 + 12;
        bad[second_data] ^= 1;
        match split_records(&bad, p).unwrap_err() {
            DataError::Record {
                record: 1,
                issue: RecordIssue::DataCrc { .. },
                ..
            } => {}
            e => panic!("unexpected {e}"),
        }
        match split_records(&stream[..stream.len() - 3], p).unwrap_err() {
            DataError::Record {
                record: 1,
                issue: RecordIssue::Truncated(_),
                ..
            } => {}
            e => panic!("unexpected {e}"),
        }
        let mut bad_len = stream.clone();
        bad_len[0] ^= 4;
        assert!(matches!(
            split_records(&bad_len, p).unwrap_err(),
            DataError::Record {
                record: 0,
                issue: RecordIssue::LengthCrc { .. },
                ..
            }
        ));
    }

    #[test]
    fn partition_order() {
        assert_eq!(partition_number("partition_12.tfrecord.gz"), 12);
        assert_eq!(partition_number("x.tfrecord"), u64::MAX);
    }
}
