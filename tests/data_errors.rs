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
    assert!(e.to_string().contains("3 distinct value(s)"), "{e}");
}

/// A copy of `kuairand-1k-mini` (TFRecord and TSV forms) in a temp dir.
fn kuairand_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let src = data::repo_data_dir().join("kuairand-1k-mini");
    for sub in ["training", "evaluation", "testing", "decoded_tsv"] {
        std::fs::create_dir(tmp.path().join(sub)).unwrap();
        for f in std::fs::read_dir(src.join(sub)).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), tmp.path().join(sub).join(f.file_name())).unwrap();
        }
    }
    tmp
}

/// A copy of food-kitchen-mini with its three files as shipped.
fn abxi_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let src = data::repo_data_dir().join("food-kitchen-mini");
    for f in [
        "afk_mini_preprocessed.txt",
        "map_item_mini.txt",
        "map_user_mini.txt",
    ] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    tmp
}

#[test]
fn two_sequence_files_are_refused_not_picked_by_name() {
    let tmp = abxi_copy();
    std::fs::copy(
        tmp.path().join("afk_mini_preprocessed.txt"),
        tmp.path().join("afk_old_preprocessed.txt"),
    )
    .unwrap();
    let e = data::load(tmp.path()).unwrap_err().to_string();
    assert!(
        e.contains("2 files could be the ABXI sequence file")
            && e.contains("`afk_mini_preprocessed.txt`, `afk_old_preprocessed.txt`"),
        "{e}"
    );
}

#[test]
fn a_missing_map_is_named_not_a_generic_dataset_message() {
    for (map, what) in [
        ("map_item_mini.txt", "the item map `map_item*.txt`"),
        ("map_user_mini.txt", "the user map `map_user*.txt`"),
    ] {
        let tmp = abxi_copy();
        std::fs::remove_file(tmp.path().join(map)).unwrap();
        let e = data::load(tmp.path()).unwrap_err().to_string();
        assert!(e.contains(&format!("expected {what}")), "{e}");
        assert!(!e.contains("a KuaiRand directory"), "{e}");
    }
}

#[test]
fn zero_byte_partitions_are_refused() {
    let tmp = kuairand_copy();
    let p = tmp.path().join("testing/partition_100.tfrecord.gz");
    std::fs::write(&p, b"").unwrap();
    let e = kuairand::load_tfrecord(tmp.path(), Default::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}: empty file (0 bytes)", p.display())
    );
    let t = tmp.path().join("decoded_tsv/testing.tsv.gz");
    std::fs::write(&t, b"").unwrap();
    let e = kuairand::load_tsv(tmp.path(), Default::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}: empty file (0 bytes)", t.display())
    );
    // A gzip member of nothing, or a TSV of a header only, holds no rows either.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, b"#partition\trow\titems\tdomains\n").unwrap();
    std::fs::write(&t, enc.finish().unwrap()).unwrap();
    let e = kuairand::load_tsv(tmp.path(), Default::default()).unwrap_err();
    assert!(e.to_string().contains("no rows (only a header"), "{e}");
    let empty_gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::fs::write(&p, empty_gz.finish().unwrap()).unwrap();
    let e = kuairand::read_tfrecord_file(&p).unwrap_err();
    assert!(e.to_string().contains("no records"), "{e}");
}

#[test]
fn a_gz_file_that_is_not_gzip_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("partition_0.tfrecord.gz");
    std::fs::write(&p, mini_partition()).unwrap(); // the TFRecord stream, not compressed
    let e = kuairand::read_tfrecord_file(&p).unwrap_err().to_string();
    assert!(
        e.contains("not gzip data: a `.gz` file starts with the bytes 1f 8b"),
        "{e}"
    );
    assert!(!e.contains("CRC"), "{e}");
}

#[test]
fn a_copied_partition_is_refused() {
    let tmp = kuairand_copy();
    std::fs::copy(
        tmp.path().join("training/partition_200.tfrecord.gz"),
        tmp.path().join("training/partition_200 (copy).tfrecord.gz"),
    )
    .unwrap();
    let e = kuairand::load_tfrecord(tmp.path(), Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("have the same partition number"), "{e}");
}

#[test]
fn a_repeated_tsv_row_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("training.tsv");
    std::fs::write(
        &p,
        "#h\npartition_1\t0\t1 2\t9 9\npartition_1\t1\t3 4\t9 9\npartition_1\t0\t1 2\t9 9\n",
    )
    .unwrap();
    let e = kuairand::read_tsv(&p).unwrap_err().to_string();
    assert!(
        e.ends_with("training.tsv:4: partition_1 row 0 is also on line 2"),
        "{e}"
    );
}

#[test]
fn empty_or_cut_sequence_files_are_refused() {
    let (tmp, p) = abxi_dir("");
    let e = abxi::load(tmp.path()).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("{}: no user lines: the file is empty", p.display())
    );
    let full = std::fs::read_to_string(
        data::repo_data_dir().join("food-kitchen-mini/afk_mini_preprocessed.txt"),
    )
    .unwrap();
    // Cut at a line end: a user of the map has no line.
    let cut = &full[..full[..full.len() - 1].rfind('\n').unwrap() + 1];
    let (tmp, _) = abxi_dir(cut);
    let e = abxi::load(tmp.path()).unwrap_err().to_string();
    assert!(
        e.contains("299 user lines but the user map declares 300 users"),
        "{e}"
    );
    // Cut inside the last line (after a whole interaction): no final newline.
    let last_space = full.trim_end().rfind(' ').unwrap();
    let (tmp, _) = abxi_dir(&full[..last_space]);
    let e = abxi::load(tmp.path()).unwrap_err().to_string();
    assert!(
        e.contains("line 300, the last, does not end with a newline"),
        "{e}"
    );
}

#[test]
fn a_byte_order_mark_is_not_part_of_the_first_user() {
    let full = std::fs::read_to_string(
        data::repo_data_dir().join("food-kitchen-mini/afk_mini_preprocessed.txt"),
    )
    .unwrap();
    let (tmp, _) = abxi_dir(&format!("\u{feff}{full}"));
    let with_bom = abxi::load(tmp.path()).unwrap();
    let plain = abxi::load(&data::repo_data_dir().join("food-kitchen-mini")).unwrap();
    assert_eq!(with_bom.users, plain.users);
}

#[test]
fn an_item_moved_to_the_other_domain_is_the_item_named() {
    let src = data::repo_data_dir().join("food-kitchen-mini/map_item_mini.txt");
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&src).unwrap()).unwrap();
    // food-kitchen-mini: A = 1..=2160, B = 2161..=5043
    for (id, from, to) in [(1000, 0, 1), (3000, 1, 0)] {
        let key = map
            .iter()
            .find(|(_, v)| v[0] == id)
            .map(|(k, _)| k.clone())
            .unwrap();
        let mut moved = map.clone();
        assert_eq!(moved[&key][1], from);
        moved[&key][1] = to.into();
        let (tmp, _) = abxi_dir("0 1|1\n");
        let p = tmp.path().join("map_item_mini.txt");
        std::fs::write(&p, serde_json::to_string(&moved).unwrap()).unwrap();
        let e = abxi::load(tmp.path()).unwrap_err().to_string();
        assert!(
            e.contains(&format!("item `{key}` (id {id}) is in domain {to} ")),
            "{e}"
        );
    }
}

#[test]
fn a_map_key_written_twice_is_refused() {
    let (tmp, _) = abxi_dir("0 1|1\n");
    let p = tmp.path().join("map_user_mini.txt");
    let text = std::fs::read_to_string(&p).unwrap();
    // the last entry again, with the id of another user: a map loaded into a hash map would
    // silently keep one of the two
    let doubled = text.trim_end().trim_end_matches('}').to_string() + ", \"A1\": 0, \"A1\": 1}";
    std::fs::write(&p, doubled).unwrap();
    let e = abxi::load(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("key `A1` appears twice"), "{e}");
}

#[test]
fn csv_shape_errors_name_the_line() {
    use cdsr_lab::data::table::{self, TableConfig};
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("t.csv");
    let load = |text: &str| {
        std::fs::write(&p, text).unwrap();
        table::load(&p, &TableConfig::default())
            .unwrap_err()
            .to_string()
    };
    let e = load("user,item,domain,timestamp\n");
    assert!(
        e.ends_with("no rows: the file holds only its header"),
        "{e}"
    );
    let e = load("user,item,domain,timestamp\nu1,i1,a,1\nu1,i2,b,2,extra\nu2,i1,a,3\n");
    assert!(
        e.ends_with("t.csv:3: 5 fields, but the header (line 1) has 4"),
        "{e}"
    );
    assert!(!e.contains("truncate_ragged_lines"), "{e}");
    let e = load("user,item,domain,timestamp\nu1,i1,a,1\nu1,i2\n");
    assert!(
        e.ends_with("t.csv:3: 2 fields, but the header (line 1) has 4"),
        "{e}"
    );
    // quoted commas are one field; the row after is still numbered by its line
    let e = load("user,item,domain,timestamp\n\"u,1\",i1,a,1\nu1,i2,b,2.5\n");
    assert!(e.contains("t.csv:3: field `timestamp` is `2.5`"), "{e}");
    let e = load("user,item,domain,timestamp\nu1,i1,a,1\nu1,i1,a,1\nu1,i2,b,2\n");
    assert!(
        e.ends_with(
            "line 3 repeats line 2 (same user, item, domain and timestamp): remove the copy"
        ),
        "{e}"
    );
    let e = load("user,item,domain,timestamp\nu1,i1,a,1\nu1,i2,b,2");
    assert!(
        e.contains("line 3, the last, does not end with a newline"),
        "{e}"
    );
    // a BOM before the header is not part of the first column's name
    std::fs::write(
        &p,
        "\u{feff}user,item,domain,timestamp\nu1,i1,a,1\nu1,i2,b,2\n",
    )
    .unwrap();
    let t = table::load(&p, &TableConfig::default()).unwrap();
    assert_eq!(t.user_keys, ["u1"]);
}

#[test]
fn parquet_float_timestamps_are_refused_like_csv() {
    use cdsr_lab::data::table::{self, TableConfig};
    use polars::prelude::*;
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("t.parquet");
    for ts in [[1.0, 2.0], [1.0, f64::NAN], [1.0, 1e30]] {
        let mut df = df!(
            "user" => ["u1", "u1"],
            "item" => ["i1", "i2"],
            "domain" => ["a", "b"],
            "timestamp" => ts
        )
        .unwrap();
        ParquetWriter::new(std::fs::File::create(&p).unwrap())
            .finish(&mut df)
            .unwrap();
        let e = table::load(&p, &TableConfig::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("column `timestamp` holds f64 numbers: timestamps must be integers"),
            "{e}"
        );
    }
}

#[test]
fn a_table_domain_without_rows_is_refused() {
    use cdsr_lab::data::table::{self, TableConfig};
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("t.csv");
    std::fs::write(&p, "user,item,domain,timestamp\nu1,i1,a,1\nu1,i2,b,2\n").unwrap();
    let cfg = TableConfig {
        domains: Some(["a".into(), "c".into()]),
        ..Default::default()
    };
    let e = table::load(&p, &cfg).unwrap_err().to_string();
    assert!(
        e.ends_with("no row has `domain` = `c`: domain B is empty"),
        "{e}"
    );
}
