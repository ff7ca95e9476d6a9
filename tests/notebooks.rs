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
//! the notebook go on (nbconvert only fails on compile errors), so the executed notebook is
//! also read back: any `error` output or any stderr output fails the test. Notebooks write
//! nothing to stderr when they work.
//!
//! All notebooks share one evcxr build directory (`EVCXR_TMPDIR`, kept under the cargo target
//! directory), so the crate and its dependencies compile once, not once per notebook, and
//! stay compiled between runs. evcxr builds every dependency again (as dylibs, at its own
//! opt-level 2), which took most of the time; a cargo config next to that directory
//! ([`EVCXR_PROFILE`]) compiles the dependencies unoptimised except the few whose speed the
//! notebooks' training feels. Measured on the 2-core machine: the first notebook 192 s (evcxr
//! rebuilding this crate), the other three 86-100 s each.
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
                problems.push(format!("cell {}: error {}", i + 1, out["evalue"]));
            } else if out["name"] == "stderr" && !text.trim().is_empty() {
                let first: String = text.lines().take(3).collect::<Vec<_>>().join(" | ");
                problems.push(format!("cell {}: wrote to stderr: {first}", i + 1));
            }
        }
    }
    problems
}

/// Cargo profile for evcxr's build of the notebooks' dependencies (cargo reads it from the
/// parent of `EVCXR_TMPDIR`; config beats evcxr's `[profile.dev]`): most of polars, arrow and
/// the rest compile fastest at opt-level 0, while the tensor engine, its matrix kernels and the
/// seeded RNG keep full optimisation, and this crate gets opt-level 1 (notebooks train small
/// models; evcxr rebuilds the crate for each notebook, and opt-level 3 would lengthen that).
const EVCXR_PROFILE: &str = r#"[profile.dev]
opt-level = 0
[profile.dev.package.cdsr-lab]
opt-level = 1
"#;

/// The dependencies [`EVCXR_PROFILE`] keeps at opt-level 3.
const EVCXR_OPTIMISED: [&str; 8] = [
    "candle-core",
    "gemm",
    "gemm-common",
    "gemm-f32",
    "gemm-f64",
    "pulp",
    "rand_chacha",
    "half",
];

/// [`EVCXR_PROFILE`] plus a `[profile.dev.package.NAME] opt-level = 3` table per
/// [`EVCXR_OPTIMISED`] crate.
fn evcxr_cargo_config() -> String {
    let mut config = EVCXR_PROFILE.to_owned();
    for name in EVCXR_OPTIMISED {
        config += &format!("[profile.dev.package.{name}]\nopt-level = 3\n");
    }
    config
}

#[test]
#[ignore = "slow (compiles the crate in evcxr); scripts/test.sh runs it with --ignored"]
fn every_notebook_runs_top_to_bottom() {
    if let Some(why) = missing_kernel() {
        println!("SKIPPED notebook execution: {why}");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let evcxr = Path::new(env!("CARGO_TARGET_TMPDIR")).join("evcxr-notebooks");
    let build_dir = evcxr.join("build");
    let executed = Path::new(env!("CARGO_TARGET_TMPDIR")).join("executed-notebooks");
    std::fs::create_dir_all(&build_dir).unwrap();
    std::fs::create_dir_all(evcxr.join(".cargo")).unwrap();
    std::fs::write(evcxr.join(".cargo/config.toml"), evcxr_cargo_config()).unwrap();
    std::fs::create_dir_all(&executed).unwrap();

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
        let out = Command::new("jupyter")
            .args([
                "nbconvert",
                "--to",
                "notebook",
                "--execute",
                "--ExecutePreprocessor.kernel_name=rust",
                // The first notebook compiles the crate and its dependencies in evcxr.
                "--ExecutePreprocessor.timeout=3600",
                "--output-dir",
            ])
            .arg(&executed)
            .arg(nb)
            .current_dir(root.join("notebooks"))
            .env("EVCXR_TMPDIR", &build_dir)
            .output()
            .expect("jupyter runs");
        let secs = start.elapsed().as_secs_f64();
        println!(
            "notebook {name}: {} in {secs:.1} s",
            if out.status.success() {
                "executed"
            } else {
                "FAILED"
            }
        );
        if out.status.success() {
            let done = executed.join(&name);
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
