//! YAML files of run folders (Hydra's `.hydra/*.yaml`, Lightning's `hparams.yaml`) read as
//! JSON values, with errors that name the file and line.

use std::path::Path;

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

use crate::runs::RunError;

/// Reads the first document of a YAML file as JSON (an empty file is `null`).
pub fn read_yaml(path: &Path) -> Result<Value, RunError> {
    let text = std::fs::read_to_string(path).map_err(|e| RunError::io(path, e))?;
    parse_yaml(&text, path)
}

/// Parses YAML text; `path` names errors.
pub fn parse_yaml(text: &str, path: &Path) -> Result<Value, RunError> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| RunError::Line {
        path: path.to_owned(),
        line: e.marker().line(),
        reason: format!("YAML: {} (column {})", e.info(), e.marker().col() + 1),
    })?;
    match docs.first() {
        Some(doc) => to_json(doc).map_err(|reason| RunError::invalid(path, reason)),
        None => Ok(Value::Null),
    }
}

/// A YAML node as JSON: mapping keys become text, non-finite floats (`.inf`, `.nan`) stay text
/// since JSON has no number for them.
fn to_json(node: &Yaml) -> Result<Value, String> {
    Ok(match node {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(text) => match text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            Some(n) => Value::Number(n),
            None => Value::String(text.clone()),
        },
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Yaml::Hash(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let key = match k {
                    Yaml::String(s) | Yaml::Real(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    Yaml::Null => "null".to_owned(),
                    other => return Err(format!("YAML mapping key {other:?} is not a scalar")),
                };
                out.insert(key, to_json(v)?);
            }
            Value::Object(out)
        }
        Yaml::Alias(_) | Yaml::BadValue => {
            return Err("YAML value that cannot be read (an unknown tag or alias)".into())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_nesting_and_syntax_errors() {
        let p = Path::new("hparams.yaml");
        let v = parse_yaml("a:\n  b: 1.0e-08\n  c: [0, 1]\nd: ~\ne: .inf\n", p).unwrap();
        assert_eq!(v["a"]["b"], serde_json::json!(1e-8));
        assert_eq!(v["a"]["c"], serde_json::json!([0, 1]));
        assert_eq!(
            (v["d"].clone(), v["e"].clone()),
            (Value::Null, ".inf".into())
        );
        let err = parse_yaml("a: 1\nb: [1, 2\nc: 3\n", p)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("hparams.yaml: line "), "{err}");
    }
}
