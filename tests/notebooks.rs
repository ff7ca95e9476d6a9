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
//! stay compiled between runs.
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

#[test]
#[ignore = "slow (compiles the crate in evcxr); scripts/test.sh runs it with --ignored"]
fn every_notebook_runs_top_to_bottom() {
    if let Some(why) = missing_kernel() {
        println!("SKIPPED notebook execution: {why}");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let build_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("evcxr-notebooks");
    let executed = Path::new(env!("CARGO_TARGET_TMPDIR")).join("executed-notebooks");
    std::fs::create_dir_all(&build_dir).unwrap();
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
