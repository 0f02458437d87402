//! `runtime-config.toml` in Spin's format: which backend serves each key-value store label.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub key_value_store: BTreeMap<String, KeyValueStore>,
}

/// Spin's store types this host implements. `spin` (Spin's local default) is
/// served from bounded memory here: state lives as long as the host process.
/// `redis` is shared by every host (and Spin instance) pointing at it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum KeyValueStore {
    Spin {
        #[serde(default)]
        path: Option<String>,
    },
    Redis {
        url: String,
    },
}

impl RuntimeConfig {
    pub fn read(path: &Path) -> Result<RuntimeConfig, RuntimeConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| RuntimeConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| RuntimeConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spin_store_and_rejects_unknown_types() {
        let c: RuntimeConfig =
            toml::from_str("[key_value_store.default]\ntype = \"spin\"\n").unwrap();
        assert!(matches!(
            c.key_value_store["default"],
            KeyValueStore::Spin { .. }
        ));
        let c: RuntimeConfig = toml::from_str(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\n",
        )
        .unwrap();
        assert!(matches!(
            &c.key_value_store["default"],
            KeyValueStore::Redis { url } if url == "redis://127.0.0.1:6379"
        ));
        assert!(
            toml::from_str::<RuntimeConfig>("[key_value_store.default]\ntype = \"redis\"\n")
                .is_err(),
            "redis needs a url"
        );
        let err =
            toml::from_str::<RuntimeConfig>("[key_value_store.default]\ntype = \"azure_cosmos\"\n")
                .unwrap_err();
        assert!(err.to_string().contains("azure_cosmos"), "{err}");
    }
}
