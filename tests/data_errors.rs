//! Bad input gives a typed error naming the file and the line or record, never a panic.

use std::path::{Path, PathBuf};

use cdsr_lab::data::{self, abxi, kuairand, tfrecord, DataError, LineIssue, RecordIssue};

/// A copy of food-kitchen-mini in a temp dir, with its sequence file replaced by `seq`.
fn abxi_dir(seq: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let src = data::repo_data_dir().join("food-kitchen-mini");
    for f in ["map_item_mini.txt", "map_user_mini.txt"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    let p = tmp.path().join("afk_mini_preprocessed.txt");
    std::fs::write(&p, seq).unwrap();
    (tmp, p)
}

fn line_error(seq: &str) -> (usize, LineIssue, String, PathBuf) {
    let (tmp, p) = abxi_dir(seq);
    match abxi::load(tmp.path()).unwrap_err() {
        e @ DataError::Line { .. } => {
            let msg = e.to_string();
            let DataError::Line { path, line, issue } = e else {
                unreachable!()
            };
            assert_eq!(path, p);
            (line, issue, msg, p)
        }
        e => panic!("expected a line error, got {e}"),
    }
}

#[test]
fn missing_directory_and_missing_file() {
    let e = data::load(Path::new("/no/such/dataset")).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }), "{e}");
    assert!(e.to_string().contains("/no/such/dataset"));

    let (tmp, _) = abxi_dir("0 1|1\n");
    std::fs::remove_file(tmp.path().join("map_user_mini.txt")).unwrap();
    let e = abxi::load(tmp.path()).unwrap_err();
    assert!(matches!(e, DataError::Missing { .. }), "{e}");
    assert!(e.to_string().contains("map_user"), "{e}");
}

#[test]
fn wrong_field() {
    let (line, issue, msg, p) = line_error("0 1|10 2|11\n1 3-12\n");
    assert_eq!(line, 2);
    assert!(matches!(
        issue,
        LineIssue::BadField {
            field: "interaction",
            ..
        }
    ));
    assert!(msg.starts_with(&format!("{}:2:", p.display())), "{msg}");
}

#[test]
fn non_numeric_id() {
    let (line, issue, msg, _) = line_error("0 1|10 x7|11\n");
    assert_eq!(line, 1);
    assert_eq!(
        issue,
        LineIssue::BadField {
            field: "item",
            value: "x7".into(),
            expected: "an integer item id"
        }
    );
    assert!(msg.contains("`x7`"), "{msg}");
    let (_, issue, _, _) = line_error("u0 1|10\n");
    assert!(matches!(issue, LineIssue::BadField { field: "user", .. }));
    let (_, issue, _, _) = line_error("0 1|soon\n");
    assert!(matches!(
        issue,
        LineIssue::BadField {
            field: "timestamp",
            ..
        }
    ));
}

#[test]
fn id_outside_declared_range() {
    // food-kitchen-mini declares 2160 + 2883 = 5043 items and 300 users
    let (line, issue, _, _) = line_error("0 1|10\n1 5044|10\n");
    assert_eq!(line, 2);
    assert_eq!(
        issue,
        LineIssue::ItemOutOfRange {
            id: 5044,
            max: 5043
        }
    );
    let (_, issue, _, _) = line_error("300 1|10\n");
    assert_eq!(
        issue,
        LineIssue::UserOutOfRange {
            id: 300,
            n_users: 300
        }
    );
    let (_, issue, _, _) = line_error("0 1|10\n0 2|10\n");
    assert_eq!(issue, LineIssue::DuplicateUser(0));
}

#[test]
fn unsorted_timestamps() {
    let (line, issue, msg, _) = line_error("0 1|10\n1 1|20 2|20 3|19\n");
    assert_eq!(line, 2);
    assert_eq!(
        issue,
        LineIssue::UnsortedTimestamps {
            index: 2,
            prev: 20,
            next: 19
        }
    );
    assert!(msg.contains("timestamps go backwards"), "{msg}");
}

#[test]
fn broken_item_map() {
    let (tmp, _) = abxi_dir("0 1|10\n");
    let p = tmp.path().join("map_item_mini.txt");
    std::fs::write(&p, "{\"x\": [1, 0], ").unwrap();
    let e = abxi::load(tmp.path()).unwrap_err();
    assert!(matches!(e, DataError::Json { .. }), "{e}");
    assert!(e.to_string().contains("map_item_mini.txt"));
    // B item inside the A range
    std::fs::write(&p, r#"{"x": [1, 1], "y": [2, 0]}"#).unwrap();
    let e = abxi::load(tmp.path()).unwrap_err();
    assert!(matches!(e, DataError::Invalid { .. }), "{e}");
}

fn mini_partition() -> Vec<u8> {
    let p = data::repo_data_dir().join("kuairand-1k-mini/evaluation/partition_0.tfrecord.gz");
    tfrecord::read_maybe_gz(&p).unwrap()
}

#[test]
fn tfrecord_bad_crc() {
    let mut raw = mini_partition();
    let first_len = u64::from_le_bytes(raw[..8].try_into().unwrap()) as usize;
    // flip a byte inside the second record's data
    let second_data = 12 + first_len + 4 + 12;
    raw[second_data + 5] ^= 0x40;
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("partition_0.tfrecord");
    std::fs::write(&p, &raw).unwrap();
    let e = kuairand::read_tfrecord_file(&p).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::Record {
                record: 1,
                issue: RecordIssue::DataCrc { .. },
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("partition_0.tfrecord: record 1: data CRC mismatch"),
        "{e}"
    );
}

#[test]
fn tfrecord_truncated() {
    let raw = mini_partition();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("partition_0.tfrecord.gz");
    // gzip of a stream cut in the middle of the last record
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &raw[..raw.len() - 100]).unwrap();
    std::fs::write(&p, enc.finish().unwrap()).unwrap();
    let e = kuairand::read_tfrecord_file(&p).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::Record {
                record: 9,
                issue: RecordIssue::Truncated("data"),
                ..
            }
        ),
        "{e}"
    );
    // a truncated gzip member is an I/O error naming the file
    let gz = std::fs::read(
        data::repo_data_dir().join("kuairand-1k-mini/evaluation/partition_0.tfrecord.gz"),
    )
    .unwrap();
    std::fs::write(&p, &gz[..gz.len() / 2]).unwrap();
    let e = kuairand::read_tfrecord_file(&p).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }), "{e}");
    assert!(e.to_string().contains("partition_0.tfrecord.gz"), "{e}");
}

#[test]
fn tfrecord_not_an_example_or_missing_feature() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("x.tfrecord");
    let other = tfrecord::Example::from_int64_lists([("sequence_data", vec![1, 2])]);
    let stream = tfrecord::write_records([&[0xffu8, 0xff, 0xff][..], &other.encode_to_vec()[..]]);
    std::fs::write(&p, &stream).unwrap();
    let e = kuairand::read_tfrecord_file(&p).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::Record {
                record: 0,
                issue: RecordIssue::Decode(_),
                ..
            }
        ),
        "{e}"
    );
    let stream = tfrecord::write_records([&other.encode_to_vec()[..]]);
    std::fs::write(&p, &stream).unwrap();
    let e = kuairand::read_tfrecord_file(&p).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::Record {
                record: 0,
                issue: RecordIssue::MissingFeature("sequence_event_type"),
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn tsv_malformed_line() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("training.tsv");
    std::fs::write(
        &p,
        "#header\npartition_1\t0\t1 2 3\t9 9 9\npartition_1\t1\t1 two\t9 9\n",
    )
    .unwrap();
    let e = kuairand::read_tsv(&p).unwrap_err();
    assert!(matches!(e, DataError::Line { line: 3, .. }), "{e}");
    assert!(
        e.to_string()
            .contains("training.tsv:3: field `sequence_data` is `two`"),
        "{e}"
    );
}

#[test]
fn table_errors() {
    use cdsr_lab::data::table::{self, TableConfig};
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("t.csv");
    std::fs::write(
        &p,
        "user,item,domain,timestamp\nu1,i1,food,1\nu1,i2,kitchen,x\n",
    )
    .unwrap();
    let e = table::load(&p, &TableConfig::default()).unwrap_err();
    assert!(matches!(e, DataError::Line { line: 3, .. }), "{e}");
    std::fs::write(&p, "user,item,when\nu1,i1,1\n").unwrap();
    let e = table::load(&p, &TableConfig::default()).unwrap_err();
    assert!(e.to_string().contains("missing column `domain`"), "{e}");
    std::fs::write(
        &p,
        "user,item,domain,timestamp\nu1,i1,a,1\nu1,i2,b,2\nu1,i3,c,3\n",
    )
    .unwrap();
    let e = table::load(&p, &TableConfig::default()).unwrap_err();
    assert!(e.to_string().contains("3 distinct values"), "{e}");
}
