//! Component dependencies (`[component.x.dependencies]`), composed as Spin
//! composes them (`spin-compose`, unchanged from Spin 3.0 to 4.x), with the
//! same refusals, so a manifest this host accepts loads on Spin too:
//!
//! - a dependency name is `ns:pkg[/interface][@version]` or a plain kebab name;
//! - a package-level name (`ns:pkg`) may not pick an `export`;
//! - each dependency is registered in the composition graph under its package
//!   name (the importing component under its id), so two dependencies from
//!   one WIT package are refused even when they name different interfaces;
//! - every dependency must match an import, no import may be matched by two
//!   dependencies, and the export used (the import's own name, or `export`)
//!   must exist under exactly that name and fit the import's type.
//!
//! What nobody satisfies stays an import of the composed component.

use std::collections::BTreeMap;
use std::path::PathBuf;
use wac_graph::types::{Package, SubtypeChecker};
use wac_graph::{CompositionGraph, EncodeOptions, NodeId};

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("cannot read dependency `{name}` from {path}: {source}")]
    Read {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dependency `{name}`: {message}")]
    Dependency { name: String, message: String },
    #[error(
        "dependencies `{first}` and `{second}` are both from package `{package}`: Spin registers each dependency under its package name, so a component may have one dependency per package"
    )]
    SamePackage {
        package: String,
        first: String,
        second: String,
    },
    #[error("import `{import}` is satisfied by more than one dependency: {}", .names.join(", "))]
    Conflict { import: String, names: Vec<String> },
    #[error("composition failed: {0}")]
    Graph(String),
}

/// One dependency: the import it satisfies and the component that satisfies it.
pub struct DependencySpec {
    /// As written in the manifest: `ns:pkg/iface`, `ns:pkg/iface@1.0.0`, `ns:pkg` or `plain-name`.
    pub name: String,
    pub path: PathBuf,
    /// The export to use when it differs from the import's name.
    pub export: Option<String>,
}

/// Interfaces through which a component reaches configuration or the network;
/// a dependency may import them only when the manifest lets it inherit them.
/// (Spin composes a deny-all adapter instead, which traps on use; refusing at
/// load is stricter and listed among the README's differences.)
const CONFIGURATION_INTERFACES: &[&str] = &[
    "wasi:keyvalue/",
    "wasi:config/",
    "fermyon:spin/",
    "spin:",
    "wasi:http/outgoing-handler",
];

/// A dependency name as Spin parses it (`spin_serde::DependencyName`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DependencyName {
    Plain(String),
    Package {
        /// `ns:pkg`
        package: String,
        interface: Option<String>,
        version: Option<semver::Version>,
    },
}

impl DependencyName {
    pub fn parse(name: &str) -> Result<DependencyName, String> {
        if !name.contains([':', '/']) {
            return if is_kebab(name) {
                Ok(DependencyName::Plain(name.to_string()))
            } else {
                Err(format!("`{name}` is not a kebab-case name"))
            };
        }
        let (rest, version) = match name.split_once('@') {
            Some((rest, version)) => (
                rest,
                Some(
                    semver::Version::parse(version)
                        .map_err(|e| format!("`{version}` is not a semantic version: {e}"))?,
                ),
            ),
            None => (name, None),
        };
        let (package, interface) = match rest.split_once('/') {
            Some((package, interface)) => (package, Some(interface)),
            None => (rest, None),
        };
        let valid_package = package
            .split_once(':')
            .is_some_and(|(ns, pkg)| is_kebab(ns) && is_kebab(pkg));
        if !valid_package {
            return Err(format!(
                "`{package}` is not a package name (`namespace:name`)"
            ));
        }
        if let Some(interface) = interface
            && !is_kebab(interface)
        {
            return Err(format!("`{interface}` is not a kebab-case interface name"));
        }
        Ok(DependencyName::Package {
            package: package.to_string(),
            interface: interface.map(str::to_string),
            version,
        })
    }

    /// The name it is registered under in the composition graph.
    fn registered_as(&self) -> &str {
        match self {
            DependencyName::Plain(name) => name,
            DependencyName::Package { package, .. } => package,
        }
    }

    /// Spin's `matches_import`: the package must be equal, and the interface
    /// and version when the dependency names them.
    fn matches_import(&self, import: &str) -> bool {
        match self {
            DependencyName::Plain(name) => !import.contains([':', '/']) && import == name,
            DependencyName::Package {
                package,
                interface,
                version,
            } => {
                let Some((import_package, rest)) = import.split_once('/') else {
                    return false;
                };
                let (import_interface, import_version) = match rest.split_once('@') {
                    Some((i, v)) => (i, semver::Version::parse(v).ok()),
                    None => (rest, None),
                };
                import_package == package
                    && interface.as_deref().is_none_or(|i| i == import_interface)
                    && version
                        .as_ref()
                        .is_none_or(|v| Some(v) == import_version.as_ref())
            }
        }
    }
}

/// Spin's kebab-case identifiers: lower-case words of letters and digits,
/// each starting with a letter, joined by single hyphens.
pub fn is_kebab(s: &str) -> bool {
    !s.is_empty()
        && s.split('-').all(|word| {
            word.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

/// The manifest-level checks Spin makes before composing
/// (`ComponentDependencies::validate`).
pub fn validate(deps: &[DependencySpec]) -> Result<Vec<DependencyName>, ComposeError> {
    let mut parsed = Vec::with_capacity(deps.len());
    for dep in deps {
        let name =
            DependencyName::parse(&dep.name).map_err(|message| ComposeError::Dependency {
                name: dep.name.clone(),
                message,
            })?;
        if let DependencyName::Package {
            interface: None, ..
        } = &name
            && dep.export.is_some()
        {
            return Err(ComposeError::Dependency {
                name: dep.name.clone(),
                message: "a package-level dependency cannot pick an `export` (Spin refuses it)"
                    .into(),
            });
        }
        parsed.push(name);
    }
    Ok(parsed)
}

/// Plugs `deps` into `main` (the component `component_id`) and returns the
/// composed component.
pub fn compose(
    component_id: &str,
    main: &[u8],
    deps: &[DependencySpec],
    inherit_configuration: bool,
) -> Result<Vec<u8>, ComposeError> {
    let names = validate(deps)?;
    let graph_err = |e: &dyn std::fmt::Display| ComposeError::Graph(e.to_string());
    let mut graph = CompositionGraph::new();
    let main_pkg = Package::from_bytes(component_id, None, main.to_vec(), graph.types_mut())
        .map_err(|e| graph_err(&e))?;
    let main_world = main_pkg.ty();
    let main_id = graph
        .register_package(main_pkg)
        .map_err(|e| graph_err(&e))?;
    let main_imports: Vec<String> = graph.types()[main_world].imports.keys().cloned().collect();
    let main_exports: Vec<String> = graph.types()[main_world].exports.keys().cloned().collect();
    let main_instance = graph.instantiate(main_id);

    // Graph names taken so far, to name both sides of a collision.
    let mut registered: BTreeMap<String, String> = BTreeMap::new();
    registered.insert(
        component_id.to_string(),
        format!("component `{component_id}`"),
    );
    // import -> (dependency, its instance, its world)
    let mut plugs: BTreeMap<String, Vec<(usize, NodeId, wac_graph::types::WorldId)>> =
        BTreeMap::new();

    for (index, (dep, name)) in deps.iter().zip(&names).enumerate() {
        let dep_err = |message: String| ComposeError::Dependency {
            name: dep.name.clone(),
            message,
        };
        let targets: Vec<&String> = main_imports
            .iter()
            .filter(|i| name.matches_import(i))
            .collect();
        if targets.is_empty() {
            return Err(dep_err(format!(
                "doesn't match any imports of component `{component_id}`"
            )));
        }
        let package = name.registered_as().to_string();
        if let Some(first) = registered.get(&package) {
            return Err(ComposeError::SamePackage {
                package,
                first: first.clone(),
                second: dep.name.clone(),
            });
        }
        registered.insert(package.clone(), dep.name.clone());

        let bytes = std::fs::read(&dep.path).map_err(|source| ComposeError::Read {
            name: dep.name.clone(),
            path: dep.path.clone(),
            source,
        })?;
        let pkg = Package::from_bytes(&package, None, bytes, graph.types_mut())
            .map_err(|e| dep_err(e.to_string()))?;
        let dep_world = pkg.ty();
        if !inherit_configuration
            && let Some(import) = graph.types()[dep_world]
                .imports
                .keys()
                .find(|i| CONFIGURATION_INTERFACES.iter().any(|c| i.starts_with(c)))
        {
            return Err(dep_err(format!(
                "imports `{import}`, which a dependency may use only with `dependencies_inherit_configuration = true`"
            )));
        }
        let dep_id = graph
            .register_package(pkg)
            .map_err(|e| dep_err(e.to_string()))?;
        let dep_instance = graph.instantiate(dep_id);
        for import in targets {
            plugs
                .entry(import.clone())
                .or_default()
                .push((index, dep_instance, dep_world));
        }
    }

    let mut cache = Default::default();
    let mut checker = SubtypeChecker::new(&mut cache);
    for (import, satisfiers) in &plugs {
        let [(index, instance, world)] = satisfiers.as_slice() else {
            return Err(ComposeError::Conflict {
                import: import.clone(),
                names: satisfiers
                    .iter()
                    .map(|(i, _, _)| deps[*i].name.clone())
                    .collect(),
            });
        };
        let dep = &deps[*index];
        let dep_err = |message: String| ComposeError::Dependency {
            name: dep.name.clone(),
            message,
        };
        let export = dep.export.as_deref().unwrap_or(import);
        let Some(export_ty) = graph.types()[*world].exports.get(export).copied() else {
            return Err(dep_err(format!(
                "doesn't export `{export}` to satisfy import `{import}`"
            )));
        };
        let Some(import_ty) = graph.types()[main_world].imports.get(import).copied() else {
            return Err(graph_err(&format!("import `{import}` vanished")));
        };
        checker
            .is_subtype(export_ty, graph.types(), import_ty, graph.types())
            .map_err(|e| {
                dep_err(format!(
                    "exports `{export}`, which is not compatible with import `{import}`: {e}"
                ))
            })?;
        let alias = graph
            .alias_instance_export(*instance, export)
            .map_err(|e| dep_err(e.to_string()))?;
        graph
            .set_instantiation_argument(main_instance, import, alias)
            .map_err(|e| dep_err(e.to_string()))?;
    }

    for export in &main_exports {
        let alias = graph
            .alias_instance_export(main_instance, export)
            .map_err(|e| graph_err(&e))?;
        graph.export(alias, export).map_err(|e| graph_err(&e))?;
    }
    graph
        .encode(EncodeOptions::default())
        .map_err(|e| graph_err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> DependencyName {
        DependencyName::parse(s).unwrap_or_else(|e| unreachable!("{s}: {e}"))
    }

    /// The cases of Spin's own `test_matches_import`.
    #[test]
    fn dependency_names_match_imports_as_spin_matches_them() {
        for (dep, imports) in [
            ("foo:bar/baz@0.1.0", vec!["foo:bar/baz@0.1.0"]),
            ("foo:bar/baz", vec!["foo:bar/baz@0.1.0", "foo:bar/baz"]),
            ("foo:bar", vec!["foo:bar/baz@0.1.0", "foo:bar/baz"]),
            ("foo:bar@0.1.0", vec!["foo:bar/baz@0.1.0"]),
            ("foo-bar", vec!["foo-bar"]),
        ] {
            for import in imports {
                assert!(name(dep).matches_import(import), "{dep} ~ {import}");
            }
        }
        for (dep, imports) in [
            ("foo:bar/baz@0.1.0", vec!["foo:bar/baz"]),
            ("foo:bar/baz", vec!["foo:bar/bub", "foo:bar/bub@0.1.0"]),
            ("foo:bar", vec!["foo:bub/bib"]),
            ("foo:bar@0.1.0", vec!["foo:bar/baz"]),
            ("foo:bar/baz", vec!["foo:bar/baz-bub", "foo-bar"]),
        ] {
            for import in imports {
                assert!(!name(dep).matches_import(import), "{dep} !~ {import}");
            }
        }
    }

    #[test]
    fn malformed_dependency_names_are_refused() {
        for bad in [
            "Foo",
            "foo_bar",
            "foo:",
            ":bar",
            "foo:bar/Baz",
            "foo:bar@1",
            "a--b",
        ] {
            assert!(DependencyName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_package_level_name_cannot_pick_an_export() {
        let spec = |name: &str| DependencySpec {
            name: name.into(),
            path: "x.wasm".into(),
            export: Some("foo:bar/baz@0.1.0".into()),
        };
        let err = validate(&[spec("foo:bar")]).unwrap_err().to_string();
        assert!(err.contains("cannot pick an `export`"), "{err}");
        assert!(validate(&[spec("foo:bar/baz")]).is_ok());
    }
}
