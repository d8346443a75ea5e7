//! Reading configuration: files through the `config` crate, then
//! environment overrides, then `${VAR}` substitution.
//!
//! # Environment overrides
//!
//! A variable `BINDERY_<PATH>` sets one key. Path segments are separated by
//! a double underscore `__`; inside a segment `_` stands for `-`, and letters
//! are matched without regard to case. A first segment other than `BINDERS`
//! or `BINDINGS` addresses the `[bindery]` table. Segments are matched
//! against keys already present by comparing their letters and digits only,
//! so `ENRICH_AUDIT_IN_0` finds the binding `enrich|audit-in-0`. New keys
//! under a `properties` table take `.` for `_` (client property names such as `compression.type`).
//!
//! | variable | key |
//! |---|---|
//! | `BINDERY_DEFINITION` | `bindery.definition` |
//! | `BINDERY_DEFAULT_BINDER` | `bindery.default-binder` |
//! | `BINDERY_POLLER__FIXED_DELAY` | `bindery.poller.fixed-delay` |
//! | `BINDERY_BINDERS__BROKER__URI` | `binders.broker.uri` |
//! | `BINDERY_BINDERS__EVENTS__PROPERTIES__COMPRESSION_TYPE` | `binders.events.properties."compression.type"` |
//! | `BINDERY_BINDINGS__ENRICH_IN_0__CONSUMER__MAX_ATTEMPTS` | `bindings.enrich-in-0.consumer.max-attempts` |
//!
//! Values are read as JSON when they parse as a number, boolean or array
//! (`5`, `true`, `["a","b"]`) and the key does not already hold text;
//! otherwise as text. `BINDERY_CONFIG`, `BINDERY_LOG` and `BINDERY_TEST_*`
//! are not overrides.
//!
//! # Secrets
//!
//! Any text value may contain `${VAR}` or `${VAR:default}`, replaced by the
//! environment variable's value; `$${` writes a literal `${`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::problem::{Problem, Problems};
use super::section::join;

/// The syntax of a configuration text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// TOML, the default.
    Toml,
    /// YAML.
    Yaml,
}

impl Format {
    /// The format a file name implies: YAML for `.yaml`/`.yml`, else TOML.
    pub fn of_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => Format::Yaml,
            _ => Format::Toml,
        }
    }

    fn file_format(self) -> config::FileFormat {
        match self {
            Format::Toml => config::FileFormat::Toml,
            Format::Yaml => config::FileFormat::Yaml,
        }
    }
}

/// Where configuration text comes from.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ConfigSource {
    /// A file; its extension chooses the format.
    File(PathBuf),
    /// Text held by the program, such as an example's built-in defaults.
    Text {
        /// A name for messages.
        name: String,
        /// The text.
        text: String,
        /// Its syntax.
        format: Format,
    },
}

impl ConfigSource {
    /// A name for messages: the file path or the text's name.
    pub fn name(&self) -> String {
        match self {
            ConfigSource::File(path) => path.display().to_string(),
            ConfigSource::Text { name, .. } => name.clone(),
        }
    }
}

/// The configuration tree after loading, before validation.
#[derive(Clone, Debug)]
pub struct RawConfig {
    pub(crate) tree: Value,
    pub(crate) origin: String,
    /// Key paths set from the environment, with the variable that set them.
    pub(crate) env_keys: BTreeMap<String, String>,
}

impl RawConfig {
    /// The tree, for inspection.
    pub fn tree(&self) -> &Value {
        &self.tree
    }

    /// Where a problem at `path` came from: the variable that set it or
    /// one of its parents, else the file.
    pub(crate) fn origin_of(&self, path: &str) -> String {
        let mut candidate = path;
        loop {
            if let Some(var) = self.env_keys.get(candidate) {
                return format!("environment variable {var}");
            }
            match candidate.rfind('.') {
                Some(i) => candidate = &candidate[..i],
                None => return self.origin.clone(),
            }
        }
    }
}

/// Loads `source`, applies overrides from `env` and substitutes `${VAR}`.
///
/// A file that cannot be read or parsed is an error on its own; override
/// and substitution problems are returned beside the tree so validation can
/// add its own before anything is reported.
pub fn load(
    source: &ConfigSource,
    env: &[(String, String)],
) -> Result<(RawConfig, Vec<Problem>), Problems> {
    let origin = source.name();
    let built = match source {
        ConfigSource::File(path) => {
            if !path.exists() {
                let problem = Problem::new(
                    "",
                    format!("configuration file `{}` does not exist", path.display()),
                )
                .hint("pass --config PATH or set BINDERY_CONFIG");
                return Err(Problems(vec![problem]));
            }
            let format = Format::of_path(path);
            config::Config::builder()
                .add_source(config::File::from(path.as_path()).format(format.file_format()))
                .build()
        }
        ConfigSource::Text { text, format, .. } => config::Config::builder()
            .add_source(config::File::from_str(text, format.file_format()))
            .build(),
    };
    let tree = built
        .and_then(|c| c.try_deserialize::<Value>())
        .map_err(|e| {
            let mut problem = Problem::new("", format!("cannot read the configuration: {e}"));
            problem.origin = origin.clone();
            Problems(vec![problem])
        })?;
    let mut raw = RawConfig {
        tree: if tree.is_null() {
            Value::Object(Map::new())
        } else {
            tree
        },
        origin,
        env_keys: BTreeMap::new(),
    };
    let mut problems = Vec::new();
    apply_env_overrides(&mut raw, env, &mut problems);
    substitute(&mut raw.tree, "", env, &mut problems);
    for problem in &mut problems {
        if problem.origin.is_empty() {
            problem.origin = raw.origin_of(&problem.path);
        }
    }
    Ok((raw, problems))
}

fn apply_env_overrides(raw: &mut RawConfig, env: &[(String, String)], problems: &mut Vec<Problem>) {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("BINDERY_") else {
            continue;
        };
        if matches!(rest, "CONFIG" | "LOG") || rest.starts_with("TEST_") || rest.is_empty() {
            continue;
        }
        let segments: Vec<&str> = rest.split("__").collect();
        let (root, segments) = match segments[0].to_ascii_uppercase().as_str() {
            "BINDERS" => ("binders", &segments[1..]),
            "BINDINGS" => ("bindings", &segments[1..]),
            "BINDERY" => ("bindery", &segments[1..]),
            _ => ("bindery", &segments[..]),
        };
        if segments.is_empty() || segments.iter().any(|s| s.is_empty()) {
            problems.push(
                Problem::new("", format!("environment variable {name} names no key"))
                    .hint("separate key path segments with `__`, e.g. BINDERY_BINDINGS__ORDERS_IN_0__GROUP"),
            );
            continue;
        }
        let path = set_by_env(&mut raw.tree, root, segments, value);
        raw.env_keys.insert(path, name.clone());
    }
}

/// Sets the key that `segments` address under `root`; returns its path.
fn set_by_env(tree: &mut Value, root: &str, segments: &[&str], raw_value: &str) -> String {
    let mut node = object_entry(tree, root);
    let mut path = root.to_owned();
    let mut parent_key = root.to_owned();
    for (i, segment) in segments.iter().enumerate() {
        let key = match_key(node, segment, &parent_key);
        path = join(&path, &key);
        let table = node.as_object_mut().expect("object_entry makes tables");
        if i + 1 == segments.len() {
            let keeps_text = matches!(table.get(&key), Some(Value::String(_)));
            table.insert(key, parse_env_value(raw_value, keeps_text));
        } else {
            node = object_entry(node, &key);
            parent_key = key;
        }
    }
    path
}

/// The child table `key` of `node`, created (replacing a non-table) if needed.
fn object_entry<'a>(node: &'a mut Value, key: &str) -> &'a mut Value {
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    let table = node.as_object_mut().expect("just made a table");
    let child = table
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !child.is_object() {
        *child = Value::Object(Map::new());
    }
    child
}

/// The existing key `segment` stands for, or the key it spells.
fn match_key(node: &Value, segment: &str, parent_key: &str) -> String {
    let wanted = letters_and_digits(segment);
    if let Some(existing) = node
        .as_object()
        .and_then(|t| t.keys().find(|k| letters_and_digits(k) == wanted))
    {
        return existing.clone();
    }
    let separator = if parent_key == "properties" { '.' } else { '-' };
    segment
        .chars()
        .map(|c| {
            if c == '_' {
                separator
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

fn letters_and_digits(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn parse_env_value(text: &str, keeps_text: bool) -> Value {
    if !keeps_text {
        if let Ok(value @ (Value::Bool(_) | Value::Number(_) | Value::Array(_))) =
            serde_json::from_str::<Value>(text)
        {
            return value;
        }
    }
    Value::String(text.to_owned())
}

fn substitute(node: &mut Value, path: &str, env: &[(String, String)], problems: &mut Vec<Problem>) {
    match node {
        Value::String(text) if text.contains("${") => match expand(text, env) {
            Ok(expanded) => *text = expanded,
            Err(missing) => problems.push(
                Problem::new(path, format!("environment variable `{missing}` is not set")).hint(
                    format!("export {missing}=..., or write `${{{missing}:default}}`"),
                ),
            ),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, &format!("{path}[{i}]"), env, problems);
            }
        }
        Value::Object(table) => {
            for (key, value) in table.iter_mut() {
                substitute(value, &join(path, key), env, problems);
            }
        }
        _ => {}
    }
}

/// Expands `${VAR}` and `${VAR:default}`; `$${` is a literal `${`. Returns
/// the name of the first variable that is missing and has no default.
fn expand(text: &str, env: &[(String, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        if start > 0 && rest[..start].ends_with('$') {
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let Some(len) = rest[start + 2..].find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let inner = &rest[start + 2..start + 2 + len];
        let (name, default) = match inner.split_once(':') {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        match env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .or(default)
        {
            Some(value) => out.push_str(value),
            None => return Err(name.to_owned()),
        }
        rest = &rest[start + 2 + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn text(toml: &str) -> ConfigSource {
        ConfigSource::Text {
            name: "test.toml".into(),
            text: toml.into(),
            format: Format::Toml,
        }
    }

    #[test]
    fn expands_variables_defaults_and_escapes() {
        let vars = env(&[("PASS", "s3cret")]);
        assert_eq!(
            expand("amqp://u:${PASS}@h", &vars).unwrap(),
            "amqp://u:s3cret@h"
        );
        assert_eq!(expand("${MISSING:dflt}", &vars).unwrap(), "dflt");
        assert_eq!(expand("$${PASS}", &vars).unwrap(), "${PASS}");
        assert_eq!(expand("${MISSING}", &vars).unwrap_err(), "MISSING");
    }

    #[test]
    fn env_overrides_match_existing_keys() {
        let source = text(
            r#"
            [bindings."enrich|audit-in-0"]
            destination = "orders"
            [binders.events.properties]
            "compression.type" = "lz4"
            "#,
        );
        let vars = env(&[
            (
                "BINDERY_BINDINGS__ENRICH_AUDIT_IN_0__CONSUMER__MAX_ATTEMPTS",
                "5",
            ),
            (
                "BINDERY_BINDERS__EVENTS__PROPERTIES__COMPRESSION_TYPE",
                "zstd",
            ),
            ("BINDERY_BINDERS__EVENTS__PROPERTIES__LINGER_MS", "5"),
            ("BINDERY_DEFAULT_BINDER", "events"),
            ("BINDERY_POLLER__FIXED_DELAY", "5s"),
            ("BINDERY_CONFIG", "ignored.toml"),
        ]);
        let (raw, problems) = load(&source, &vars).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let tree = raw.tree();
        assert_eq!(
            tree["bindings"]["enrich|audit-in-0"]["consumer"]["max-attempts"],
            5
        );
        assert_eq!(
            tree["binders"]["events"]["properties"]["compression.type"],
            "zstd"
        );
        assert_eq!(tree["binders"]["events"]["properties"]["linger.ms"], 5);
        assert_eq!(tree["bindery"]["default-binder"], "events");
        assert_eq!(tree["bindery"]["poller"]["fixed-delay"], "5s");
        assert_eq!(
            raw.origin_of("bindings.enrich|audit-in-0.consumer.max-attempts"),
            "environment variable BINDERY_BINDINGS__ENRICH_AUDIT_IN_0__CONSUMER__MAX_ATTEMPTS"
        );
    }

    #[test]
    fn substitution_reports_missing_variables_with_their_path() {
        let source = text("[binders.broker]\ntype = \"queue\"\nuri = \"amqp://guest:${NOPE}@h\"\n");
        let (_, problems) = load(&source, &[]).unwrap();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "binders.broker.uri");
        assert!(problems[0].to_string().contains("`NOPE` is not set"));
    }

    #[test]
    fn keys_keep_their_case_and_yaml_reads_the_same() {
        let yaml = ConfigSource::Text {
            name: "a.yaml".into(),
            text: "bindings:\n  Enrich-in-0:\n    destination: Orders\n".into(),
            format: Format::Yaml,
        };
        let (raw, _) = load(&yaml, &[]).unwrap();
        assert_eq!(
            raw.tree()["bindings"]["Enrich-in-0"]["destination"],
            "Orders"
        );
    }

    #[test]
    fn missing_file_is_reported() {
        let error = load(&ConfigSource::File("/nonexistent/bindery.toml".into()), &[]).unwrap_err();
        assert!(error.to_string().contains("does not exist"));
    }
}
