//! One TOML file plus `SLUICE_*` environment overrides (`SLUICE_EDGE__SECRET`
//! sets `[edge] secret`), strictly parsed and validated before any port is bound.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub edge: EdgeConfig,
    pub database: DatabaseConfig,
    pub simulated: SimulatedConfig,
    pub models: Vec<ModelConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub body_limit_bytes: usize,
    /// Deadline for one request end to end, in seconds.
    pub request_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// HMAC key shared with the edge (`edge_secret` there). Required.
    pub secret: Option<String>,
    /// How far an edge timestamp may be from the origin's clock, in seconds.
    pub max_skew_secs: u64,
}

/// The database pool. Defaults are the seeds': at most 100 connections, 10
/// kept open, idle ones closed after 10 s, statements bounded to 10 s.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path?mode=rwc` (a file, created when missing) or `postgres://...`.
    pub url: String,
    pub max_connections: u32,
    pub min_connections: u32,
    pub idle_timeout_secs: u64,
    /// Postgres cancels a longer statement; SQLite waits this long for a lock.
    pub statement_timeout_secs: u64,
    /// How long a request waits for a free connection.
    pub acquire_timeout_secs: u64,
}

/// The simulated provider: a stand-in for a model, for local runs and benchmarks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedConfig {
    /// Delay before the first token, in milliseconds.
    pub time_to_first_token_ms: u64,
    /// Generation speed after the first token; 0 means all at once.
    pub tokens_per_second: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name clients send as `model`.
    pub name: String,
    pub provider: ProviderKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Simulated,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            server: ServerConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
                body_limit_bytes: 1 << 20,
                request_timeout_secs: 300,
            },
            edge: EdgeConfig {
                secret: None,
                max_skew_secs: 30,
            },
            database: DatabaseConfig {
                url: "sqlite://sluice.db?mode=rwc".into(),
                max_connections: 100,
                min_connections: 10,
                idle_timeout_secs: 10,
                statement_timeout_secs: 10,
                acquire_timeout_secs: 10,
            },
            simulated: SimulatedConfig {
                time_to_first_token_ms: 0,
                tokens_per_second: 0,
            },
            models: vec![ModelConfig {
                name: "sluice-sim-1".into(),
                provider: ProviderKind::Simulated,
            }],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// Shortest edge secret accepted: 128 bits of hex.
const MIN_SECRET_LEN: usize = 32;

impl Config {
    /// Defaults, then the file (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        Config::from_figment(figment.merge(Env::prefixed("SLUICE_").split("__")))
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Config::from_figment(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text)),
        )
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        match &self.edge.secret {
            None => {
                return Err(ConfigError::Invalid {
                    field: "edge.secret",
                    message:
                        "required: the HMAC key shared with the edge (env SLUICE_EDGE__SECRET)"
                            .into(),
                });
            }
            Some(s) if s.len() < MIN_SECRET_LEN => {
                return Err(ConfigError::Invalid {
                    field: "edge.secret",
                    message: format!("must be at least {MIN_SECRET_LEN} characters"),
                });
            }
            Some(_) => {}
        }
        if self.models.is_empty() {
            return Err(ConfigError::Invalid {
                field: "models",
                message: "configure at least one model".into(),
            });
        }
        let mut names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::Invalid {
                field: "models",
                message: format!("`{}` is configured twice", pair[0]),
            });
        }
        let db = &self.database;
        if !(db.url.starts_with("sqlite:")
            || db.url.starts_with("postgres:")
            || db.url.starts_with("postgresql:"))
        {
            return Err(ConfigError::Invalid {
                field: "database.url",
                message: "must start with sqlite: or postgres:".into(),
            });
        }
        if db.max_connections == 0 || db.min_connections > db.max_connections {
            return Err(ConfigError::Invalid {
                field: "database.max_connections",
                message: "must be positive and at least min_connections".into(),
            });
        }
        if self.server.body_limit_bytes == 0 {
            return Err(ConfigError::Invalid {
                field: "server.body_limit_bytes",
                message: "must be positive".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "[edge]\nsecret = \"0123456789abcdef0123456789abcdef\"\n";

    #[test]
    fn defaults_plus_secret_are_valid() {
        let c = Config::from_toml(SECRET).unwrap();
        assert_eq!(c.server.listen.port(), 8081);
        assert_eq!(c.models[0].name, "sluice-sim-1");
    }

    #[test]
    fn unknown_keys_and_missing_secret_are_errors() {
        let err = Config::from_toml(&format!("{SECRET}[server]\nlisten_addr = \"x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_addr"), "{err}");
        let err = Config::from_toml("").unwrap_err().to_string();
        assert!(err.starts_with("edge.secret"), "{err}");
        let err = Config::from_toml("[edge]\nsecret = \"short\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 32"), "{err}");
    }

    #[test]
    fn duplicate_models_are_errors() {
        let text = format!(
            "{SECRET}[[models]]\nname = \"a\"\nprovider = \"simulated\"\n[[models]]\nname = \"a\"\nprovider = \"simulated\"\n"
        );
        assert!(
            Config::from_toml(&text)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }
}
