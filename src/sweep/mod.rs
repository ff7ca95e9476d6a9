//! Sweeps: declare a study as a base configuration crossed with axes and seeds, give each
//! resolved run a stable id, and run the lot locally in parallel or as a Slurm job array,
//! losing nothing to interruptions.
//!
//! - [`spec`]: the sweep file and its resolution into a [`plan::Plan`] (generic TOML merging,
//!   stable ids = readable slug + hash of the canonical configuration).
//! - [`plan`]: the saved plan and the sweep folder layout.
//! - [`exec`]: executing one run (skip when complete, resume from its checkpoint).
//! - [`local`]: a bounded pool of child processes on this machine.
//! - [`lock`]: one process per sweep folder (`sweep.lock`) and per run (`status/<id>.lock`).
//! - [`slurm`]: the job-array script for a Slurm cluster.
//! - [`status`]: per-run attempt records, the status table and its summary.
//! - [`engine`]: the one place the sweep touches the trainer.
//!
//! ```
//! use cdsr_lab::sweep::spec::{accept_any, SweepSpec};
//! let spec = SweepSpec::from_toml_str(
//!     r#"
//!     name = "demo"
//!     base = { seed = 0, model = { hidden = 16 }, gca = { positions = [0] } }
//!     seeds = [1, 2, 3]
//!     [[axis]]
//!     key = "model.hidden"
//!     values = [32, 64]
//!     "#,
//!     std::path::Path::new("."),
//!     "demo.toml",
//! )
//! .unwrap();
//! let plan = spec.resolve(accept_any).unwrap();
//! assert_eq!(plan.runs.len(), 6);
//! assert!(plan.runs[0].id.starts_with("hidden32-s1-"));
//! ```

pub mod engine;
pub mod exec;
pub mod local;
pub mod lock;
pub mod plan;
pub mod slurm;
pub mod spec;
pub mod status;
