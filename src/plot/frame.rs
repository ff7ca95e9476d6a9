//! Typed reads of DataFrame columns for the figures, with errors that name the column.
use polars::prelude::*;

/// A DataFrame that cannot feed a figure.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("missing column `{column}` (columns present: {present})")]
    Missing { column: String, present: String },
    #[error("column `{column}` has type {found}, expected {expected}")]
    Type {
        column: String,
        expected: &'static str,
        found: String,
    },
    #[error("no usable rows: {0}")]
    Empty(String),
}

fn column<'a>(df: &'a DataFrame, name: &str) -> Result<&'a Column, FrameError> {
    crate::runs::frames::column(df, name).map_err(|_| FrameError::Missing {
        column: name.to_string(),
        present: df
            .get_column_names()
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Whether `df` has a column called `name`.
pub(crate) fn has(df: &DataFrame, name: &str) -> bool {
    crate::runs::frames::column(df, name).is_ok()
}

/// A numeric column as `f64` under [`crate::runs::frames::f64_column`]'s rule (`None` for
/// null, NaN and ±infinity).
pub(crate) fn f64s(df: &DataFrame, name: &str) -> Result<Vec<Option<f64>>, FrameError> {
    let col = column(df, name)?;
    crate::runs::frames::f64_column(df, name).map_err(|_| FrameError::Type {
        column: name.to_string(),
        expected: "a number",
        found: col.dtype().to_string(),
    })
}

/// A boolean column.
pub(crate) fn bools(df: &DataFrame, name: &str) -> Result<Vec<Option<bool>>, FrameError> {
    let col = column(df, name)?;
    crate::runs::frames::bool_column(df, name).map_err(|_| FrameError::Type {
        column: name.to_string(),
        expected: "a boolean",
        found: col.dtype().to_string(),
    })
}

/// Any column as display labels: strings as they are, lists as `[0, 1]`, numbers in their
/// shortest form; nulls become `None`.
pub(crate) fn labels(df: &DataFrame, name: &str) -> Result<Vec<Option<String>>, FrameError> {
    let col = column(df, name)?;
    let n = col.len();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let v = col.get(i).map_err(|e| FrameError::Type {
            column: name.to_string(),
            expected: "readable values",
            found: e.to_string(),
        })?;
        out.push(label_of(&v));
    }
    Ok(out)
}

fn label_of(v: &AnyValue) -> Option<String> {
    match v {
        AnyValue::Null => None,
        AnyValue::String(s) => Some(s.to_string()),
        AnyValue::StringOwned(s) => Some(s.to_string()),
        AnyValue::List(s) => {
            let items: Vec<String> = s
                .iter()
                .map(|x| label_of(&x).unwrap_or_else(|| "null".into()))
                .collect();
            Some(format!("[{}]", items.join(", ")))
        }
        other => Some(other.to_string()),
    }
}
