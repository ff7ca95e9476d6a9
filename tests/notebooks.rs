//! Executes every notebook in `notebooks/` headlessly with the evcxr Jupyter kernel and fails
//! on any cell error, printing each notebook's execution time.
//!
//! Slow (the first notebook compiles the crate inside evcxr), so it is `#[ignore]`d in the
//! default `cargo test`; `scripts/test.sh` runs it with
//! `cargo test --test notebooks -- --ignored --nocapture`.
//! Needs `jupyter nbconvert` (`pip install jupyter nbconvert`) and the evcxr kernel
//! (`cargo install evcxr_jupyter --locked && evcxr_jupyter --install`); without them it says so
//! and passes.
//!
//! evcxr reports a panic or an error returned with `?` as text on the cell's stderr and lets
//! the notebook go on; compile errors and a crashed kernel subprocess are `error` outputs.
//! nbconvert runs with `--allow-errors`, so every cell runs, and the executed notebook is read
//! back: any `error` output (with its message) or any stderr output fails the test. Notebooks
//! write nothing to stderr when they work.
//!
//! The kernel runs with the settings a user's Jupyter gets from `scripts/jupyter.sh`: the
//! `notebooks/evcxr.toml` it writes (one evcxr build directory, `notebooks/.evcxr/`, shared by
//! all notebooks, so the crate and its dependencies compile once and stay compiled), the
//! build profile `notebooks/.cargo/config.toml`, and mold as linker when installed.
//! `docs/notebooks.md` has the seconds per cell; the test prints each cell's time.
//!
//! With `CDSR_WRITE_NOTEBOOK_OUTPUTS=1` (`scripts/notebooks.sh --write-outputs`) the executed
//! notebooks, outputs included, replace those in `notebooks/` once every one has passed.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Why the notebooks cannot run here, or `None` when jupyter and the `rust` kernel are there.
fn missing_kernel() -> Option<String> {
    let out = match Command::new("jupyter")
        .args(["kernelspec", "list", "--json"])
        .output()
    {
        Ok(out) if out.status.success() => out,
        _ => return Some("`jupyter` is not installed (pip install jupyter nbconvert)".into()),
    };
    let specs: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => {
            return Some(format!(
                "`jupyter kernelspec list --json` gave bad JSON: {e}"
            ))
        }
    };
    if specs["kernelspecs"]["rust"].is_null() {
        return Some(
            "the evcxr kernel `rust` is not installed \
             (cargo install evcxr_jupyter --locked && evcxr_jupyter --install)"
                .into(),
        );
    }
    let nbconvert = Command::new("jupyter")
        .args(["nbconvert", "--version"])
        .output();
    if !matches!(nbconvert, Ok(o) if o.status.success()) {
        return Some("`jupyter nbconvert` is not installed (pip install nbconvert)".into());
    }
    None
}

fn notebooks(root: &Path) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(root.join("notebooks")) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = dir
        .map(|e| e.expect("readable notebooks/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "ipynb"))
        .collect();
    found.sort();
    found
}

/// Cells of an executed notebook that errored or wrote to stderr, as messages.
fn cell_problems(executed: &Path) -> Vec<String> {
    let text =
        std::fs::read_to_string(executed).unwrap_or_else(|e| panic!("{}: {e}", executed.display()));
    let nb: serde_json::Value = serde_json::from_str(&text).expect("executed notebook is JSON");
    let mut problems = Vec::new();
    let cells = nb["cells"].as_array().cloned().unwrap_or_default();
    for (i, cell) in cells.iter().enumerate() {
        for out in cell["outputs"].as_array().into_iter().flatten() {
            let text = match &out["text"] {
                serde_json::Value::Array(lines) => {
                    lines.iter().filter_map(|l| l.as_str()).collect::<String>()
                }
                other => other.as_str().unwrap_or_default().to_string(),
            };
            if out["output_type"] == "error" {
                // evcxr puts a compile error's message in the traceback and a crashed
                // kernel subprocess's in `evalue`; both go into the report.
                let traceback: Vec<&str> = out["traceback"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| l.as_str())
                    .collect();
                problems.push(format!(
                    "cell {}: error {} {}\n{}",
                    i + 1,
                    out["ename"],
                    out["evalue"],
                    traceback.join("\n")
                ));
            } else if out["name"] == "stderr" && !text.trim().is_empty() {
                let first: String = text.lines().take(3).collect::<Vec<_>>().join(" | ");
                problems.push(format!("cell {}: wrote to stderr: {first}", i + 1));
            }
        }
    }
    problems
}

#[test]
#[ignore = "slow (compiles the crate in evcxr); scripts/test.sh runs it with --ignored"]
fn every_notebook_runs_top_to_bottom() {
    if let Some(why) = missing_kernel() {
        println!("SKIPPED notebook execution: {why}");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The kernel reads its settings (the shared build directory) from here, as it does in the
    // user's Jupyter; `scripts/jupyter.sh --setup` writes it.
    let settings = root.join("notebooks/evcxr.toml");
    assert!(
        settings.is_file(),
        "{} is missing: run scripts/jupyter.sh --setup (scripts/notebooks.sh does)",
        settings.display()
    );
    let executed = Path::new(env!("CARGO_TARGET_TMPDIR")).join("executed-notebooks");
    std::fs::create_dir_all(&executed).unwrap();
    let write_outputs = std::env::var_os("CDSR_WRITE_NOTEBOOK_OUTPUTS").is_some();

    let books = notebooks(root);
    if books.is_empty() {
        println!("SKIPPED notebook execution: notebooks/ has no .ipynb files yet");
        return;
    }
    let mut failures = Vec::new();
    let total = Instant::now();
    for nb in &books {
        let name = nb.file_name().unwrap().to_string_lossy().into_owned();
        let start = Instant::now();
        let mut jupyter = Command::new("jupyter");
        for (key, _) in std::env::vars_os() {
            if is_set_by_cargo_for_tests(&key.to_string_lossy()) {
                jupyter.env_remove(&key);
            }
        }
        let out = jupyter
            .args([
                "nbconvert",
                "--to",
                "notebook",
                "--execute",
                "--ExecutePreprocessor.kernel_name=rust",
                // Run every cell and record errors in the executed notebook, where
                // `cell_problems` reads their messages (a failed nbconvert prints only the
                // cell's source).
                "--allow-errors",
                // The first notebook compiles the crate and its dependencies in evcxr.
                "--ExecutePreprocessor.timeout=3600",
                "--output-dir",
            ])
            .arg(&executed)
            .arg(nb)
            .current_dir(root.join("notebooks"))
            .output()
            .expect("jupyter runs");
        let secs = start.elapsed().as_secs_f64();
        println!(
            "notebook {name}: {} in {secs:.1} s ({})",
            if out.status.success() {
                "executed"
            } else {
                "FAILED"
            },
            room_left(root)
        );
        if out.status.success() {
            let done = executed.join(&name);
            println!(
                "  seconds per code cell: {}",
                cell_seconds(&done).join(", ")
            );
            for problem in cell_problems(&done) {
                failures.push(format!("{name}: {problem}"));
            }
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = stderr
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            failures.push(format!("{name}:\n{tail}"));
        }
    }
    println!(
        "all {} notebooks: {:.1} s (executed copies in {})",
        books.len(),
        total.elapsed().as_secs_f64(),
        executed.display()
    );
    assert!(
        failures.is_empty(),
        "notebook cells failed:\n{}",
        failures.join("\n\n")
    );
    // Outputs are committed only from a run where every notebook passed.
    if write_outputs {
        for nb in &books {
            let done = executed.join(nb.file_name().unwrap());
            let tmp = nb.with_extension("ipynb.tmp");
            std::fs::copy(&done, &tmp).unwrap();
            std::fs::rename(&tmp, nb).unwrap();
            println!("wrote outputs into {}", nb.display());
        }
    }
}

/// Free disk under `root` and available memory, as `df` and `/proc/meminfo` give them: a kernel
/// that dies for want of either fails its cells with little more than the cell's source.
fn room_left(root: &Path) -> String {
    let disk = Command::new("df")
        .args(["-h", "--output=avail"])
        .arg(root)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8(o.stdout)
                .ok()?
                .lines()
                .nth(1)
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kb: f64 = m
                .lines()
                .find(|l| l.starts_with("MemAvailable:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(format!("{:.1} GiB", kb / (1024.0 * 1024.0)))
        })
        .unwrap_or_else(|| "?".into());
    format!("disk free {disk}, memory available {memory}")
}

/// Whether `cargo test` sets the variable for this test (its package's `CARGO_PKG_*`,
/// `CARGO_MANIFEST_DIR`, ...). The kernel must not inherit them: a dependency's build script
/// that watches one of them (`rerun-if-env-changed`) reruns when it changes, so the build
/// directory shared with the user's Jupyter would rebuild that crate and everything above it
/// each time the notebooks switch between this test and Jupyter.
fn is_set_by_cargo_for_tests(key: &str) -> bool {
    key == "CARGO"
        || key == "OUT_DIR"
        || [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_CFG_",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_MAKEFLAGS",
        ]
        .iter()
        .any(|prefix| key.starts_with(prefix))
}

#[test]
fn the_kernel_gets_the_users_cargo_settings_but_not_this_tests_package() {
    // Set for this very test by cargo.
    assert!(std::env::var_os("CARGO_PKG_NAME").is_some());
    for key in ["CARGO_PKG_NAME", "CARGO_MANIFEST_DIR", "CARGO", "OUT_DIR"] {
        assert!(is_set_by_cargo_for_tests(key), "{key}");
    }
    for key in [
        "CARGO_HOME",
        "CARGO_TARGET_DIR",
        "CARGO_NET_OFFLINE",
        "PATH",
        "RUSTUP_HOME",
    ] {
        assert!(!is_set_by_cargo_for_tests(key), "{key}");
    }
}

/// Wall seconds of each code cell of an executed notebook, from the start and reply times
/// nbconvert records in the cell's metadata (`?` where they are missing).
fn cell_seconds(executed: &Path) -> Vec<String> {
    let nb: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(executed).unwrap()).unwrap();
    let stamp = |cell: &serde_json::Value, key: &str| -> Option<f64> {
        let text = cell["metadata"]["execution"][key].as_str()?;
        // 2026-12-03T21:04:01.123456Z: seconds within the day are enough for a cell.
        let time = text.split('T').nth(1)?.trim_end_matches('Z');
        let mut parts = time.split(':').map(|p| p.parse::<f64>().ok());
        let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
        Some(h * 3600.0 + m * 60.0 + s)
    };
    nb["cells"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["cell_type"] == "code")
        .map(|c| {
            match (
                stamp(c, "iopub.execute_input"),
                stamp(c, "shell.execute_reply"),
            ) {
                (Some(a), Some(b)) => format!("{:.1}", (b - a).rem_euclid(86_400.0)),
                _ => "?".into(),
            }
        })
        .collect()
}

/// Committed notebooks carry their outputs (tables, inline figures) so they show where the
/// repository is browsed; this keeps each one small enough to load and diff.
#[test]
fn committed_notebooks_stay_small() {
    const MAX_BYTES: u64 = 600_000;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for nb in notebooks(root) {
        let bytes = std::fs::metadata(&nb).unwrap().len();
        assert!(
            bytes <= MAX_BYTES,
            "{} is {bytes} bytes (at most {MAX_BYTES}): fewer or smaller figures",
            nb.display()
        );
    }
}

/// The Rust program a notebook amounts to: its code cells in order inside `main`, evcxr
/// commands (`:dep ...`) left out, a cell's trailing expression (what evcxr displays) bound to
/// `_shown`, run from `notebooks/` like the kernel. `examples/notebook_NAME.rs` holds it, so
/// `cargo test` compiles every notebook's code against the library and
/// `cargo run --example notebook_NAME` runs it without Jupyter.
fn notebook_as_example(name: &str, notebook: &serde_json::Value) -> String {
    let mut body = String::new();
    for cell in notebook["cells"].as_array().into_iter().flatten() {
        if cell["cell_type"] != "code" {
            continue;
        }
        let src: String = match &cell["source"] {
            serde_json::Value::Array(lines) => lines.iter().filter_map(|l| l.as_str()).collect(),
            other => other.as_str().unwrap_or_default().to_owned(),
        };
        let lines: Vec<&str> = src
            .lines()
            .filter(|l| !l.trim_start().starts_with(':'))
            .collect();
        let Some(last) = lines.iter().rposition(|l| !l.trim().is_empty()) else {
            continue;
        };
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_end();
            let shown = i == last && !(t.ends_with(';') || t.ends_with('}'));
            if t.is_empty() {
                body.push('\n');
            } else if shown {
                body.push_str(&format!("    let _shown = {};\n", t.trim_start()));
            } else {
                body.push_str(&format!("    {t}\n"));
            }
        }
        body.push('\n');
    }
    format!(
        "//! Generated from `notebooks/{name}.ipynb` by `tests/notebooks.rs` (do not edit: edit the\n\
         //! notebook, then `CDSR_WRITE_NOTEBOOK_EXAMPLES=1 cargo test --test notebooks`).\n\
         //! Run: `cargo run --example notebook_{name_}`.\n\
         #![allow(unused_variables)]\n\n\
         #[rustfmt::skip]\n\
         fn main() -> anyhow::Result<()> {{\n\
         \x20   std::env::set_current_dir(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/notebooks\"))?;\n\n\
         {body}    Ok(())\n}}\n",
        name_ = name.replace('-', "_")
    )
}

#[test]
fn every_notebook_has_its_compiled_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let write = std::env::var_os("CDSR_WRITE_NOTEBOOK_EXAMPLES").is_some();
    let books = notebooks(root);
    assert!(!books.is_empty(), "notebooks/ has no notebook");
    let mut stale = Vec::new();
    for nb in &books {
        let name = nb.file_stem().unwrap().to_string_lossy().into_owned();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(nb).unwrap()).expect("notebook JSON");
        let text = notebook_as_example(&name, &json);
        let example = root
            .join("examples")
            .join(format!("notebook_{}.rs", name.replace('-', "_")));
        if write {
            std::fs::create_dir_all(example.parent().unwrap()).unwrap();
            std::fs::write(&example, &text).unwrap();
        } else if std::fs::read_to_string(&example).ok().as_deref() != Some(text.as_str()) {
            stale.push(example.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "examples out of date with their notebooks (regenerate with \
         CDSR_WRITE_NOTEBOOK_EXAMPLES=1 cargo test --test notebooks): {stale:?}"
    );
}

/// The `[patch.crates-io]` table of a TOML file, each patched crate with the directory it
/// points to (relative paths resolved against `base`).
fn crates_io_patches(file: &Path, base: &Path) -> Vec<(String, PathBuf)> {
    let text = std::fs::read_to_string(file).unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap();
    let mut patches: Vec<(String, PathBuf)> = doc
        .get("patch")
        .and_then(|p| p.get("crates-io"))
        .and_then(|p| p.as_table())
        .into_iter()
        .flatten()
        .map(|(name, spec)| {
            let path = spec["path"].as_str().expect("a path patch");
            let dir = base
                .join(path)
                .canonicalize()
                .unwrap_or_else(|e| panic!("{}: patch {name} -> {path}: {e}", file.display()));
            (name.clone(), dir)
        })
        .collect();
    patches.sort();
    patches
}

/// The notebooks' kernel builds the same patched crates as `cargo build`. Cargo applies
/// `[patch]` only from the root package or a config file; in the notebooks the root is evcxr's
/// generated crate, so `notebooks/.cargo/config.toml` (paths relative to `notebooks/`) has to
/// repeat the crate's patches, or the kernel builds the released candle-core and its tokenizers.
#[test]
fn the_notebooks_build_patches_what_the_crate_patches() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let crate_patches = crates_io_patches(&root.join("Cargo.toml"), root);
    assert!(!crate_patches.is_empty(), "Cargo.toml patches candle-core");
    let notebooks = root.join("notebooks");
    assert_eq!(
        crates_io_patches(&notebooks.join(".cargo/config.toml"), &notebooks),
        crate_patches,
        "notebooks/.cargo/config.toml"
    );
    let dylib = notebooks.join("dylib");
    assert_eq!(
        crates_io_patches(&dylib.join("Cargo.toml"), &dylib),
        crate_patches,
        "notebooks/dylib/Cargo.toml"
    );
}
