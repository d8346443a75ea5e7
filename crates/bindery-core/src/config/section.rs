//! Reads one table of the configuration into its typed struct, reporting
//! every unknown key and every ill-typed value rather than the first.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::introspect::field_names;
use super::problem::{Problem, suggestion};

/// Joins a key path and a key.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Reads `value` (a table, or nothing) at `path` as `T`, whose fields all
/// have defaults. Adds a problem for each unknown key, with a suggestion,
/// and for each value of the wrong type. Returns `None` when any value was
/// wrong; unknown keys alone still give a value.
pub fn read_section<T: DeserializeOwned>(
    value: Option<&Value>,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let empty = Map::new();
    let table = match value {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(table)) => table,
        Some(other) => {
            problems.push(Problem::new(
                path,
                format!("expected a table, found {}", kind(other)),
            ));
            return None;
        }
    };
    let fields = field_names::<T>();
    let mut known = Map::new();
    for (key, value) in table {
        if fields.contains(&key.as_str()) {
            known.insert(key.clone(), value.clone());
        } else {
            problems.push(unknown_key(path, key, fields));
        }
    }
    let known = Value::Object(known);
    if let Ok(typed) = T::deserialize(&known) {
        return Some(typed);
    }
    // Deserialize field by field so every ill-typed value is reported.
    for (key, value) in known.as_object().expect("built as an object") {
        let single = Value::Object(Map::from_iter([(key.clone(), value.clone())]));
        if let Err(error) = serde_path_to_error::deserialize::<_, T>(&single) {
            let inner_path = error.path().to_string();
            let at = if inner_path == "." {
                key.clone()
            } else {
                inner_path
            };
            problems.push(Problem::new(
                join(path, &at),
                error.into_inner().to_string(),
            ));
        }
    }
    None
}

/// The problem for an unknown key, suggesting the closest known one or
/// listing them.
pub fn unknown_key(path: &str, key: &str, known: &[&str]) -> Problem {
    let hint = suggestion(key, known.iter().copied())
        .unwrap_or_else(|| format!("known keys: {}", known.join(", ")));
    Problem::new(join(path, key), format!("unknown key `{key}`")).hint(hint)
}

/// A short name for the kind of a value, for messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "kebab-case", default)]
    struct Sample {
        max_attempts: u32,
        prefetch: u32,
        keys: Vec<String>,
    }

    #[test]
    fn reports_every_unknown_key_and_bad_value() {
        let value = serde_json::json!({
            "max-attemps": 3, "prefetch": "many", "keys": ["a", 1], "extra": true
        });
        let mut problems = Vec::new();
        assert!(read_section::<Sample>(Some(&value), "c", &mut problems).is_none());
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 4, "{text:#?}");
        assert!(
            text.iter()
                .any(|p| p.contains("c.max-attemps") && p.contains("did you mean `max-attempts`"))
        );
        assert!(text.iter().any(|p| p.starts_with("c.prefetch:")));
        assert!(
            text.iter().any(|p| p.starts_with("c.keys[1]:")),
            "{text:#?}"
        );
        assert!(
            text.iter()
                .any(|p| p.contains("c.extra") && p.contains("known keys"))
        );
    }

    #[test]
    fn unknown_keys_alone_still_give_a_value() {
        let value = serde_json::json!({ "prefetch": 4, "oops": 1 });
        let mut problems = Vec::new();
        let sample = read_section::<Sample>(Some(&value), "", &mut problems).unwrap();
        assert_eq!(sample.prefetch, 4);
        assert_eq!(problems.len(), 1);
    }
}
