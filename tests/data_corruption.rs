//! Every loader, given a real file corrupted at a random position, returns an error or exactly
//! the data of the intact file: never a panic, never a silent change.
//!
//! Corruptions (seeded, so a failure names a corruption that can be replayed): the file cut at
//! a random byte, a random byte replaced by another, a random line written twice (the line of
//! the decompressed text for gzip files, a record for TFRecords). Files: food-kitchen-mini's
//! sequence file and both maps, KuaiRand-1K-mini's gzip TFRecord partitions and decoded TSV
//! files (as stored, and their text recompressed), and food-kitchen-mini as a CSV table.
//!
//! What no reader can detect is left out, by construction, and only that:
//! - in text without checksums, a digit or sign replaced by a digit, a sign or a blank is
//!   another well-formed number (item 12 becoming 13, 1 when its last digit turns blank, -1
//!   becoming +1);
//! - in a table of free-text keys, any key may become another key, so CSV byte flips test the
//!   structure: a byte that becomes, or stops being, a comma, quote or line end;
//! - a text cut exactly at a line end is a shorter valid file where nothing declares the
//!   count (KuaiRand's TSV, a CSV); ABXI's user map declares it, so ABXI files are cut anywhere.
//!   Gzip files carry their length and a CRC: they are cut anywhere.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use cdsr_lab::data::{self, abxi, kuairand, table, tfrecord, Dataset, KuaiRandConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Corruptions per file and kind; `CDSR_CORRUPTION_TRIALS` sets another number (the wider
/// probe: `CDSR_CORRUPTION_TRIALS=1000 cargo test --test data_corruption -- --include-ignored
/// --nocapture`).
fn trials() -> usize {
    std::env::var("CDSR_CORRUPTION_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

/// What a loader gives, reduced to what must not change.
#[derive(Debug, PartialEq)]
struct Fingerprint {
    n_items: [usize; 2],
    users: Vec<data::UserSequence>,
    /// File-set bounds (KuaiRand) or nothing.
    sets: Vec<usize>,
}

impl Fingerprint {
    fn of(ds: &Dataset, sets: Vec<usize>) -> Fingerprint {
        Fingerprint {
            n_items: ds.n_items,
            users: ds.users.clone(),
            sets,
        }
    }
}

type Loader = fn(&Path) -> Result<Fingerprint, String>;

fn load_abxi(dir: &Path) -> Result<Fingerprint, String> {
    let ds = abxi::load(dir).map_err(|e| e.to_string())?;
    Ok(Fingerprint::of(&ds, vec![]))
}

fn kuairand_fingerprint(k: kuairand::KuaiRand) -> Fingerprint {
    let fs = &k.file_sets;
    Fingerprint::of(&k.dataset, vec![fs.train.end, fs.valid.end, fs.test.end])
}

fn load_tfrecord(dir: &Path) -> Result<Fingerprint, String> {
    kuairand::load_tfrecord(dir, KuaiRandConfig::default())
        .map(kuairand_fingerprint)
        .map_err(|e| e.to_string())
}

fn load_tsv(dir: &Path) -> Result<Fingerprint, String> {
    kuairand::load_tsv(dir, KuaiRandConfig::default())
        .map(kuairand_fingerprint)
        .map_err(|e| e.to_string())
}

fn load_csv(dir: &Path) -> Result<Fingerprint, String> {
    let t = table::load(&dir.join("mini.csv"), &table::TableConfig::default())
        .map_err(|e| e.to_string())?;
    Ok(Fingerprint::of(&t.dataset, vec![]))
}

/// How a file is corrupted.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Cut,
    Flip,
    DuplicateLine,
}

/// How a file is stored, which decides what its corruptions are.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Storage {
    /// Numeric text without a declared row count (KuaiRand's TSV lines).
    Text,
    /// Numeric text whose row count is declared elsewhere (ABXI sequences and maps).
    CountedText,
    /// CSV of free-text keys.
    Csv,
    /// Gzip of text lines: flips and cuts on the stored bytes, duplicated lines in the text.
    GzText,
    /// Gzip of TFRecords: flips and cuts on the stored bytes, a duplicated record.
    GzRecords,
}

fn is_number_byte(b: u8) -> bool {
    b.is_ascii_digit() || b == b'-' || b == b'+'
}

fn is_csv_structure(b: u8) -> bool {
    matches!(b, b',' | b'\n' | b'"')
}

/// A digit or sign turned into a digit, sign or blank: another well-formed number.
fn makes_another_number(old: u8, new: u8) -> bool {
    is_number_byte(old) && (is_number_byte(new) || new.is_ascii_whitespace())
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out).unwrap();
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, bytes).unwrap();
    enc.finish().unwrap()
}

/// Writes `line` (the `i`-th of `text`'s lines, newline included) twice.
fn duplicate_line(text: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    let i = rng.random_range(0..lines.len());
    let mut out = Vec::with_capacity(text.len() + lines[i].len() + 1);
    for (k, l) in lines.iter().enumerate() {
        out.extend_from_slice(l);
        if k == i {
            if !l.ends_with(b"\n") {
                out.push(b'\n');
            }
            out.extend_from_slice(l);
        }
    }
    out
}

/// One corruption of `original` and where it is, or `None` when the draw falls in a class no
/// reader can detect (see the module doc); the caller draws again.
fn corrupt(
    original: &[u8],
    storage: Storage,
    kind: Kind,
    rng: &mut ChaCha8Rng,
) -> Option<(Vec<u8>, String)> {
    let n = original.len();
    match kind {
        Kind::Cut => {
            let at = rng.random_range(0..n);
            let at_line_end = at > 0 && original[at - 1] == b'\n';
            if at_line_end && matches!(storage, Storage::Text | Storage::Csv) {
                return None;
            }
            Some((original[..at].to_vec(), format!("cut at byte {at}")))
        }
        Kind::Flip => {
            let at = rng.random_range(0..n);
            let new = original[at] ^ rng.random_range(1..=255u8);
            let old = original[at];
            let undetectable = match storage {
                Storage::Text | Storage::CountedText => makes_another_number(old, new),
                Storage::Csv => {
                    makes_another_number(old, new)
                        || !(is_csv_structure(old) || is_csv_structure(new))
                }
                Storage::GzText | Storage::GzRecords => false,
            };
            if undetectable {
                return None;
            }
            let mut out = original.to_vec();
            out[at] = new;
            Some((out, format!("byte {at}: {old:#04x} -> {new:#04x}")))
        }
        Kind::DuplicateLine => {
            let bytes = match storage {
                Storage::Text | Storage::CountedText | Storage::Csv => {
                    duplicate_line(original, rng)
                }
                Storage::GzText => gzip(&duplicate_line(&gunzip(original), rng)),
                Storage::GzRecords => {
                    let raw = gunzip(original);
                    let recs = tfrecord::split_records(&raw, Path::new("mem")).unwrap();
                    let i = rng.random_range(0..recs.len());
                    let mut all: Vec<&[u8]> = recs.iter().map(Vec::as_slice).collect();
                    all.insert(i, recs[i].as_slice());
                    gzip(&tfrecord::write_records(all))
                }
            };
            Some((bytes, "a line or record written twice".into()))
        }
    }
}

/// A failure: the corruption and what the loader did.
#[derive(Debug)]
struct Failure {
    file: String,
    kind: Kind,
    seed: u64,
    outcome: String,
}

/// Counts of outcomes over one file's corruptions.
#[derive(Debug, Default)]
struct Tally {
    errors: usize,
    same: usize,
    /// Draws in a class no reader can detect, drawn again.
    skipped: usize,
    failures: Vec<Failure>,
}

/// Corrupts `file` (relative to the copy `dir` of a dataset) [`trials`] times per kind and loads
/// `dir` with `load` after each, restoring the file in between.
fn probe(dir: &Path, file: &str, storage: Storage, load: Loader, intact: &Fingerprint) -> Tally {
    let path: PathBuf = dir.join(file);
    let original = std::fs::read(&path).unwrap();
    let mut tally = Tally::default();
    for (k, kind) in [Kind::Cut, Kind::Flip, Kind::DuplicateLine]
        .into_iter()
        .enumerate()
    {
        let mut done = 0;
        let mut seed = 0u64;
        while done < trials() {
            seed += 1;
            let mut rng = ChaCha8Rng::seed_from_u64(seed * 3 + k as u64);
            let Some((bytes, what)) = corrupt(&original, storage, kind, &mut rng) else {
                tally.skipped += 1;
                continue;
            };
            done += 1;
            std::fs::write(&path, &bytes).unwrap();
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| load(dir)));
            let fail = |outcome: String| Failure {
                file: file.to_owned(),
                kind,
                seed,
                outcome: format!("{what}: {outcome}"),
            };
            match result {
                Err(_) => tally.failures.push(fail("panic".into())),
                Ok(Err(_)) => tally.errors += 1,
                Ok(Ok(fp)) if &fp == intact => tally.same += 1,
                Ok(Ok(fp)) => tally.failures.push(fail(format!(
                    "silent change: {} users, items {:?}",
                    fp.users.len(),
                    fp.n_items
                ))),
            }
        }
    }
    std::fs::write(&path, &original).unwrap();
    tally
}

/// Copies the files `names` of `src` (paths relative to it) into a temp dir.
fn copy_of(src: &Path, names: &[&str]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for n in names {
        let dst = tmp.path().join(n);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(src.join(n), dst).unwrap();
    }
    tmp
}

/// Probes every file of `files`; asserts no failure and prints the counts. Returns (errors,
/// unchanged).
fn check(dir: &Path, files: &[(&str, Storage)], load: Loader) -> (usize, usize) {
    let intact = load(dir).expect("the intact copy loads");
    let mut total = Tally::default();
    for &(file, storage) in files {
        let t = probe(dir, file, storage, load, &intact);
        println!(
            "{file}: {} corruptions: {} errors, {} unchanged, {} failures ({} undetectable draws \
             skipped)",
            t.errors + t.same + t.failures.len(),
            t.errors,
            t.same,
            t.failures.len(),
            t.skipped
        );
        total.errors += t.errors;
        total.same += t.same;
        total.failures.extend(t.failures);
    }
    let failures: Vec<String> = total
        .failures
        .iter()
        .map(|f| format!("{} {:?} seed {}: {}", f.file, f.kind, f.seed, f.outcome))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    (total.errors, total.same)
}

const KUAIRAND_TFRECORDS: [&str; 4] = [
    "training/partition_200.tfrecord.gz",
    "training/partition_201.tfrecord.gz",
    "evaluation/partition_0.tfrecord.gz",
    "testing/partition_100.tfrecord.gz",
];

#[test]
fn abxi_files_corrupted_give_an_error_or_the_same_data() {
    let names = [
        "afk_mini_preprocessed.txt",
        "map_item_mini.txt",
        "map_user_mini.txt",
    ];
    let tmp = copy_of(&data::repo_data_dir().join("food-kitchen-mini"), &names);
    let files: Vec<(&str, Storage)> = names.iter().map(|n| (*n, Storage::CountedText)).collect();
    let (errors, same) = check(tmp.path(), &files, load_abxi);
    assert_eq!(errors + same, 3 * 3 * trials());
    // At least every cut and duplicated line is an error (a flipped map key may leave the
    // data as it was).
    assert!(
        errors >= 3 * 2 * trials(),
        "{errors} errors, {same} unchanged"
    );
}

#[test]
fn kuairand_tfrecords_corrupted_give_an_error_or_the_same_data() {
    let tmp = copy_of(
        &data::repo_data_dir().join("kuairand-1k-mini"),
        &KUAIRAND_TFRECORDS,
    );
    let files: Vec<(&str, Storage)> = KUAIRAND_TFRECORDS
        .iter()
        .map(|n| (*n, Storage::GzRecords))
        .collect();
    let (errors, same) = check(tmp.path(), &files, load_tfrecord);
    assert_eq!(errors + same, 4 * 3 * trials());
}

#[test]
fn kuairand_tsv_corrupted_give_an_error_or_the_same_data() {
    let names = [
        "decoded_tsv/training.tsv.gz",
        "decoded_tsv/evaluation.tsv.gz",
        "decoded_tsv/testing.tsv.gz",
    ];
    let src = data::repo_data_dir().join("kuairand-1k-mini");
    let tmp = copy_of(&src, &names);
    let files: Vec<(&str, Storage)> = names.iter().map(|n| (*n, Storage::GzText)).collect();
    check(tmp.path(), &files, load_tsv);
    // The same rows as plain text: the TSV parser itself meets the flips and cuts.
    let plain = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (n, name) in names
        .iter()
        .zip(["training.tsv", "evaluation.tsv", "testing.tsv"])
    {
        std::fs::write(
            plain.path().join(name),
            gunzip(&std::fs::read(src.join(n)).unwrap()),
        )
        .unwrap();
        files.push((name, Storage::Text));
    }
    check(plain.path(), &files, load_tsv);
}

#[test]
fn a_csv_table_corrupted_gives_an_error_or_the_same_data() {
    let ds = abxi::load(&data::repo_data_dir().join("food-kitchen-mini")).unwrap();
    let mut csv = String::from("user,item,domain,timestamp\n");
    for u in &ds.users {
        for (&item, &t) in u.items.iter().zip(&u.timestamps) {
            let domain = ["food", "kitchen"][ds.domain_of(item).unwrap().index()];
            csv.push_str(&format!("{},{item},{domain},{t}\n", u.user));
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("mini.csv"), csv).unwrap();
    check(tmp.path(), &[("mini.csv", Storage::Csv)], load_csv);
}

/// The wider probe on the full food-kitchen files (7,144 users), from `../shared/data`; run
/// with `--include-ignored` (about a minute at the default trials).
#[test]
#[ignore = "the wider probe: minutes on the full data"]
fn full_food_kitchen_corrupted_gives_an_error_or_the_same_data() {
    let Some(shared) = data::shared_data_dir() else {
        panic!("no ../shared/data: the wider probe needs the full food-kitchen files");
    };
    let names = [
        "afk_50_preprocessed.txt",
        "map_item_50.txt",
        "map_user_50.txt",
    ];
    let tmp = copy_of(&shared.join("food-kitchen"), &names);
    let files: Vec<(&str, Storage)> = names.iter().map(|n| (*n, Storage::CountedText)).collect();
    check(tmp.path(), &files, load_abxi);
}
