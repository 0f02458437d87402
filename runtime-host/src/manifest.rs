//! Spin application manifest, version 2: the subset the runtime-host serves.
//!
//! Parsing is strict: a field this host does not know (or does not implement)
//! is an error naming the field and its line, never silently ignored.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}:{line}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        field: String,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub spin_manifest_version: Spanned<u32>,
    pub application: Application,
    #[serde(default)]
    pub variables: BTreeMap<String, Spanned<Variable>>,
    #[serde(default)]
    pub trigger: Triggers,
    #[serde(default)]
    pub component: BTreeMap<String, Component>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub authors: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Triggers {
    #[serde(default)]
    pub http: Vec<HttpTrigger>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTrigger {
    #[serde(default)]
    pub id: Option<String>,
    pub route: Spanned<Route>,
    pub component: Spanned<String>,
    #[serde(default)]
    pub executor: Option<Executor>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Route {
    Path(String),
    Private { private: bool },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
pub enum Executor {
    Spin,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub source: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    pub key_value_stores: Vec<String>,
    #[serde(default)]
    pub variables: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub dependencies_inherit_configuration: bool,
    #[serde(default)]
    pub dependencies: BTreeMap<String, Spanned<Dependency>>,
    #[serde(default)]
    pub build: Option<BuildConfig>,
}

/// Only local paths: registry and URL dependencies need a network this host does not assume.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    pub path: String,
    #[serde(default)]
    pub export: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    pub command: toml::Value,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub watch: Vec<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
}

/// A manifest plus where it was read from, for resolving paths and reporting lines.
#[derive(Debug)]
pub struct Loaded {
    pub manifest: Manifest,
    pub path: PathBuf,
    text: String,
}

impl Loaded {
    pub fn read(path: &Path) -> Result<Loaded, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Loaded::parse(path, text)
    }

    pub fn parse(path: &Path, text: String) -> Result<Loaded, ManifestError> {
        let manifest: Manifest = toml::from_str(&text).map_err(|e| ManifestError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let loaded = Loaded {
            manifest,
            path: path.to_path_buf(),
            text,
        };
        loaded.validate()?;
        Ok(loaded)
    }

    /// The folder `source` and dependency paths are relative to.
    pub fn base_dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    pub fn invalid(
        &self,
        span: std::ops::Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ManifestError {
        let line = self
            .text
            .get(..span.start)
            .map(|t| t.lines().count().max(1))
            .unwrap_or(1);
        ManifestError::Invalid {
            path: self.path.clone(),
            line,
            field: field.into(),
            message: message.into(),
        }
    }

    fn validate(&self) -> Result<(), ManifestError> {
        let m = &self.manifest;
        if *m.spin_manifest_version.get_ref() != 2 {
            return Err(self.invalid(
                m.spin_manifest_version.span(),
                "spin_manifest_version",
                "only version 2 is supported",
            ));
        }
        for (name, var) in &m.variables {
            if !valid_variable_name(name) {
                return Err(self.invalid(
                    var.span(),
                    format!("variables.{name}"),
                    "names are lower-case letters, digits and `_`, starting with a letter",
                ));
            }
            if var.get_ref().required && var.get_ref().default.is_some() {
                return Err(self.invalid(
                    var.span(),
                    format!("variables.{name}"),
                    "a required variable cannot have a default",
                ));
            }
        }
        for (i, trigger) in m.trigger.http.iter().enumerate() {
            let name = trigger.component.get_ref();
            if !m.component.contains_key(name) {
                return Err(self.invalid(
                    trigger.component.span(),
                    format!("trigger.http[{i}].component"),
                    format!("no component named `{name}`"),
                ));
            }
            if let Route::Path(route) = trigger.route.get_ref()
                && !route.starts_with('/')
            {
                return Err(self.invalid(
                    trigger.route.span(),
                    format!("trigger.http[{i}].route"),
                    "a route starts with `/`",
                ));
            }
        }
        for (id, component) in &m.component {
            if !crate::compose::is_kebab(id) {
                return Err(self.invalid(
                    component.source.span(),
                    format!("component.{id}"),
                    "component ids are kebab-case (lower-case words of letters and digits joined by `-`), as Spin requires",
                ));
            }
            for (var, value) in &component.variables {
                if !valid_variable_name(var) {
                    return Err(self.invalid(
                        value.span(),
                        format!("component.{id}.variables.{var}"),
                        "names are lower-case letters, digits and `_`",
                    ));
                }
                for reference in template_references(value.get_ref()) {
                    if !m.variables.contains_key(reference) {
                        return Err(self.invalid(
                            value.span(),
                            format!("component.{id}.variables.{var}"),
                            format!("no application variable `{reference}`"),
                        ));
                    }
                }
            }
            for host in &component.allowed_outbound_hosts {
                for reference in template_references(host.get_ref()) {
                    if !m.variables.contains_key(reference) {
                        return Err(self.invalid(
                            host.span(),
                            format!("component.{id}.allowed_outbound_hosts"),
                            format!("no application variable `{reference}`"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn valid_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The variable names a `{{ name }}` template refers to.
pub fn template_references(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    out
}

/// Replaces every `{{ name }}` using `lookup`.
pub fn expand(template: &str, lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}")?;
        out.push_str(&lookup(after[..end].trim())?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Loaded, ManifestError> {
        Loaded::parse(Path::new("spin.toml"), text.to_string())
    }

    const MINIMAL: &str = r#"
spin_manifest_version = 2
[application]
name = "t"
[variables]
origin = { default = "http://127.0.0.1:1" }
[[trigger.http]]
route = "/..."
component = "web"
[component.web]
source = "web.wasm"
variables = { origin_url = "{{ origin }}" }
"#;

    #[test]
    fn accepts_a_minimal_manifest() {
        let loaded = parse(MINIMAL).unwrap();
        assert_eq!(
            loaded.manifest.component["web"].source.get_ref(),
            "web.wasm"
        );
    }

    #[test]
    fn unknown_field_is_named_with_its_line() {
        let err =
            parse(&MINIMAL.replace("source = \"web.wasm\"", "source = \"web.wasm\"\nsorce = 1"))
                .unwrap_err()
                .to_string();
        assert!(err.contains("sorce"), "{err}");
        assert!(err.contains("line 12"), "{err}");
    }

    #[test]
    fn dangling_component_and_variable_are_named_with_their_line() {
        let err = parse(&MINIMAL.replace("component = \"web\"", "component = \"wbe\""))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "spin.toml:9: trigger.http[0].component: no component named `wbe`"
        );
        let err = parse(&MINIMAL.replace("{{ origin }}", "{{ orgin }}"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "spin.toml:12: component.web.variables.origin_url: no application variable `orgin`"
        );
    }

    #[test]
    fn expands_templates() {
        let got = expand("http://{{ host }}:{{port}}/x", |n| {
            Some(if n == "host" { "a".into() } else { "1".into() })
        });
        assert_eq!(got.as_deref(), Some("http://a:1/x"));
        assert_eq!(expand("{{ missing }}", |_| None), None);
    }
}
