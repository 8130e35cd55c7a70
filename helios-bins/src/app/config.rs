//! Configuration layering shared by every binary: built-in defaults, then a YAML file,
//! then environment variables, then flags, on a JSON tree, then the binary's own checks.
//!
//! Owns the rules every binary's config follows: a key the defaults do not have fails with
//! its dotted path (and the variable it came from), except inside a section the defaults
//! leave empty, which is a map whose keys are the user's (the binary's types check its
//! entries); a value of the wrong type fails naming the key; booleans are strict (`yes`
//! is not `true`); in variables, `__` separates levels and names are lowercased
//! (`HELIOS_AUTH__REGISTRATION_OPEN=false` sets `auth.registration_open`). A binary
//! supplies its defaults (`Default`), its variable prefix ([`EnvLayer`]), its flags (a
//! closure over the tree) and its checks ([`Layered::check`]).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::path::Path;

/// A configuration error: the key and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("config {key}: {reason}")]
pub struct ConfigError {
    /// Dotted path of the key (or the file).
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

/// A [`ConfigError`] for `key`.
pub(crate) fn err(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// A binary's configuration: its defaults are its `Default`, its checks [`Layered::check`].
pub trait Layered: Serialize + DeserializeOwned + Default {
    /// Checks ranges and formats after layering, naming the first bad key.
    fn check(&self) -> Result<(), ConfigError>;
}

/// Which environment variables configure a binary.
pub struct EnvLayer<'a> {
    /// The prefix of its variables (`HELIOS_`, `HELIOS_ATLASD_`).
    pub prefix: &'a str,
    /// Names (after the prefix) that are not config keys: variables read elsewhere.
    pub skip: &'a dyn Fn(&str) -> bool,
    /// Names whose values are taken as strings, never typed (a numeric password).
    pub verbatim: &'a dyn Fn(&str) -> bool,
}

/// Loads a `T`: defaults <- `file` <- `layer`'s variables in `env` <- `flags` (which edit
/// the tree), then [`Layered::check`].
pub fn load<T: Layered>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    layer: &EnvLayer<'_>,
    flags: impl FnOnce(&mut Value),
) -> Result<T, ConfigError> {
    let mut tree =
        serde_json::to_value(T::default()).map_err(|e| err("defaults", e.to_string()))?;
    if let Some(path) = file {
        merge_file(&mut tree, path)?;
    }
    merge_env(&mut tree, env, layer.prefix, layer.skip, layer.verbatim)?;
    flags(&mut tree);
    let cfg: T = serde_path_to_error::deserialize(tree).map_err(|e| {
        let key = e.path().to_string();
        err(
            if key == "." { "config".to_owned() } else { key },
            e.into_inner().to_string(),
        )
    })?;
    cfg.check()?;
    Ok(cfg)
}

fn merge(base: &mut Value, over: Value, path: &str) -> Result<(), ConfigError> {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            // A section empty in the defaults is a map (`worker.services`: queue ->
            // service): its keys are the user's; the binary's types check the entries.
            let open = b.is_empty();
            for (k, v) in o {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v, &p)?,
                    None if open => {
                        b.insert(k, v);
                    }
                    None => return Err(err(p, "unknown key")),
                }
            }
            Ok(())
        }
        (Value::Object(_), v) => Err(err(path, format!("expected a section, found {v}"))),
        (slot, v) => {
            *slot = v;
            Ok(())
        }
    }
}

fn env_value(raw: &str) -> Value {
    // Numbers and the strict booleans are typed; anything else is a string.
    match raw {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => raw
            .parse::<u64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(raw.to_owned())),
    }
}

/// Merges the YAML file at `path` over `tree` (strict booleans; unknown keys fail with
/// their dotted path). Shared by every binary's config.
fn merge_file(tree: &mut Value, path: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(path.display().to_string(), e.to_string()))?;
    let options = serde_saphyr::options! { strict_booleans: true };
    let v: Value = serde_saphyr::from_str_with_options(&text, options)
        .map_err(|e| err(path.display().to_string(), e.to_string()))?;
    if !v.is_null() {
        merge(tree, v, "")?;
    }
    Ok(())
}

/// Merges the `{prefix}*` variables of `env` over `tree`: `__` separates levels, names are
/// lowercased, values typed by [`env_value`] unless `verbatim(name)`; names for which
/// `skip(name)` holds are not config keys. Errors name the key and the variable.
fn merge_env(
    tree: &mut Value,
    env: impl IntoIterator<Item = (String, String)>,
    prefix: &str,
    skip: &dyn Fn(&str) -> bool,
    verbatim: &dyn Fn(&str) -> bool,
) -> Result<(), ConfigError> {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        if skip(rest) {
            continue;
        }
        let mut over = if verbatim(rest) {
            Value::String(raw.clone())
        } else {
            env_value(&raw)
        };
        for p in rest.rsplit("__") {
            let mut m = Map::new();
            m.insert(p.to_ascii_lowercase(), over);
            over = Value::Object(m);
        }
        merge(tree, over, "").map_err(|e| ConfigError {
            key: format!("{} (from {name})", e.key),
            reason: e.reason,
        })?;
    }
    Ok(())
}
