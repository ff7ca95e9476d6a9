//! `test_cases.parquet`: one [`TestCase`] row per test case of a run's best epoch, in the test
//! layout's order, so that runs can be compared case by case (AutoCDSR's diagnostic,
//! [`crate::analysis::attention::success_cells`]). The trainer writes it with
//! [`test_cases_frame`]; [`read_test_cases`] reads it back typed.
//!
//! Columns: `sample` (Int64, the case's index), `domain` (`A`/`B`), `rank` (Int64, 1-based
//! among the target and its sampled negatives), `hit@10` (Boolean), `a_cd` (Float64, the merged
//! stream's share summed over layers) and `a_cd@L` (Float64, layer `L`'s share); the shares are
//! null for a case without a valid token or a model without a merged stream.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::error::RunError;
use super::format::TEST_CASES_PARQUET;
use crate::data::Domain;
use crate::eval::names;

/// The name of layer `layer`'s share column.
fn layer_column(layer: usize) -> String {
    format!("a_cd@{layer}")
}

/// The error of a missing or mistyped column `column` of `path`.
fn column_error(path: &Path, column: &str) -> impl FnOnce(PolarsError) -> RunError {
    let (path, column) = (path.to_owned(), column.to_owned());
    move |e| RunError::invalid(&path, format!("column `{column}`: {e}"))
}

/// One evaluated test case.
#[derive(Debug, Clone, PartialEq)]
pub struct TestCase {
    pub domain: Domain,
    /// The rank of the target among the candidates (1 = first).
    pub rank: usize,
    /// Whether the target is in the top 10 (HR@10 of this case).
    pub hit_10: bool,
    /// The merged stream's `a_cd` per layer; `None` for a case without a valid token or a
    /// model without a merged stream.
    pub a_cd: Option<Vec<f64>>,
    /// |cos(X, X')| per GCA position (empty without GCA).
    pub abs_cos: CaseCos,
}

/// |cos(X, X')| of one case per GCA position, at the scored (last) position, in the module of
/// the case's target domain; `None` where undefined (padding, a zero row). Written as the
/// `abs_cos@P` columns.
pub type CaseCos = std::collections::BTreeMap<usize, Option<f64>>;

/// Column prefix of the per-case |cos| of GCA position P: `abs_cos@P`.
pub const ABS_COS_PREFIX: &str = "abs_cos@";

impl TestCase {
    pub fn new(domain: Domain, rank: usize, a_cd: Option<Vec<f64>>) -> Self {
        TestCase {
            domain,
            rank,
            hit_10: rank <= 10,
            a_cd,
            abs_cos: CaseCos::new(),
        }
    }

    /// The case with its per-position |cos(X, X')|.
    pub fn with_abs_cos(self, abs_cos: CaseCos) -> Self {
        TestCase { abs_cos, ..self }
    }
}

/// A run's test cases as read back: the rows and how many per-layer share columns there are.
#[derive(Debug, Clone, PartialEq)]
pub struct TestCases {
    /// The file they were read from (for errors).
    pub path: PathBuf,
    /// Per-layer share columns (`a_cd@0` .. `a_cd@{layers - 1}`).
    pub layers: usize,
    pub cases: Vec<TestCase>,
}

/// The `test_cases.parquet` frame of `cases` (see the module doc).
pub fn test_cases_frame(cases: &[TestCase]) -> PolarsResult<DataFrame> {
    let n = cases.len();
    let layers = cases
        .iter()
        .filter_map(|c| c.a_cd.as_ref().map(Vec::len))
        .max()
        .unwrap_or(0);
    let mut columns = vec![
        Column::new("sample".into(), (0..n as i64).collect::<Vec<_>>()),
        Column::new(
            "domain".into(),
            cases
                .iter()
                .map(|c| c.domain.to_string())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "rank".into(),
            cases.iter().map(|c| c.rank as i64).collect::<Vec<_>>(),
        ),
        Column::new(
            "hit@10".into(),
            cases.iter().map(|c| c.hit_10).collect::<Vec<_>>(),
        ),
        Column::new(
            names::A_CD.into(),
            cases
                .iter()
                .map(|c| c.a_cd.as_ref().map(|v| v.iter().sum::<f64>()))
                .collect::<Vec<_>>(),
        ),
    ];
    for l in 0..layers {
        columns.push(Column::new(
            layer_column(l).into(),
            cases
                .iter()
                .map(|c| c.a_cd.as_ref().and_then(|v| v.get(l).copied()))
                .collect::<Vec<_>>(),
        ));
    }
    let positions: std::collections::BTreeSet<usize> = cases
        .iter()
        .flat_map(|c| c.abs_cos.keys().copied())
        .collect();
    for p in positions {
        columns.push(Column::new(
            format!("{ABS_COS_PREFIX}{p}").into(),
            cases
                .iter()
                .map(|c| c.abs_cos.get(&p).copied().flatten())
                .collect::<Vec<_>>(),
        ));
    }
    DataFrame::new(n, columns)
}

/// Reads `run_dir/test_cases.parquet` as a frame; the error names the file.
pub fn read_test_cases_frame(run_dir: &Path) -> Result<DataFrame, RunError> {
    let path = run_dir.join(TEST_CASES_PARQUET);
    std::fs::File::open(&path)
        .map_err(PolarsError::from)
        .and_then(|f| ParquetReader::new(f).finish())
        .map_err(|e| {
            RunError::invalid(
                &path,
                format!("{e} (runs written by this version's trainer have it)"),
            )
        })
}

/// Reads `run_dir/test_cases.parquet` typed. A missing or mistyped column, a domain other than
/// `A`/`B` or a case whose layers are partly missing is an error naming the file and column.
pub fn read_test_cases(run_dir: &Path) -> Result<TestCases, RunError> {
    let df = read_test_cases_frame(run_dir)?;
    let path = run_dir.join(TEST_CASES_PARQUET);
    let p = path.as_path();
    let in_column = |n: &str| column_error(p, n);
    let domains = df
        .column("domain")
        .and_then(|c| c.str().cloned())
        .map_err(in_column("domain"))?;
    let ranks = df
        .column("rank")
        .and_then(|c| c.cast(&DataType::Int64))
        .and_then(|c| c.i64().cloned())
        .map_err(in_column("rank"))?;
    let hits = df
        .column("hit@10")
        .and_then(|c| c.bool().cloned())
        .map_err(in_column("hit@10"))?;
    let layers = (0..)
        .take_while(|&l| df.column(&layer_column(l)).is_ok())
        .count();
    let shares = (0..layers)
        .map(|l| {
            let name = layer_column(l);
            df.column(&name)
                .and_then(|c| c.f64().map(|v| v.to_vec()))
                .map_err(in_column(&name))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut cases = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        let at =
            |n: &str, what: &str| RunError::invalid(p, format!("column `{n}`, row {i}: {what}"));
        let domain: Domain = domains
            .get(i)
            .ok_or_else(|| at("domain", "null"))?
            .parse()
            .map_err(|e: String| at("domain", &e))?;
        let rank = ranks.get(i).ok_or_else(|| at("rank", "null"))?;
        let hit_10 = hits.get(i).ok_or_else(|| at("hit@10", "null"))?;
        let row: Vec<Option<f64>> = shares.iter().map(|v| v[i]).collect();
        let a_cd = if row.iter().all(Option::is_none) {
            None
        } else {
            Some(
                row.into_iter()
                    .collect::<Option<Vec<f64>>>()
                    .ok_or_else(|| at("a_cd@L", "some layers are null, others not"))?,
            )
        };
        cases.push(TestCase {
            domain,
            rank: rank as usize,
            hit_10,
            a_cd,
            // The per-case |cos| columns are read as a frame (`analysis::cases`).
            abs_cos: CaseCos::new(),
        });
    }
    Ok(TestCases {
        path,
        layers,
        cases,
    })
}
