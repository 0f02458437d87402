//! Component dependencies (`[component.x.dependencies]`), composed the way Spin
//! does: each dependency is instantiated once and its exports plugged into the
//! importing component with wac-graph; what nobody satisfies stays an import.

use std::path::PathBuf;
use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions};

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
    #[error("composition failed: {0}")]
    Graph(String),
}

/// One dependency: the import it satisfies and the component that satisfies it.
pub struct DependencySpec {
    /// As written in the manifest: `ns:pkg/iface`, `ns:pkg/iface@1.0.0` or `ns:pkg`.
    pub name: String,
    pub path: PathBuf,
    /// The export to use when it differs from the import's name.
    pub export: Option<String>,
}

/// Interfaces through which a component reaches configuration or the network;
/// a dependency may import them only when the manifest lets it inherit them.
const CONFIGURATION_INTERFACES: &[&str] = &[
    "wasi:keyvalue/",
    "wasi:config/",
    "fermyon:spin/",
    "spin:",
    "wasi:http/outgoing-handler",
];

/// Whether an import named `import` (versioned) is what `name` (maybe unversioned
/// or a whole package) refers to.
fn refers_to(name: &str, import: &str) -> bool {
    let unversioned = import.split('@').next().unwrap_or(import);
    import == name
        || unversioned == name
        || (!name.contains('/') && unversioned.split('/').next() == Some(name))
}

/// Plugs `deps` into `main` and returns the composed component.
pub fn compose(
    main: &[u8],
    deps: &[DependencySpec],
    inherit_configuration: bool,
) -> Result<Vec<u8>, ComposeError> {
    let graph_err = |e: &dyn std::fmt::Display| ComposeError::Graph(e.to_string());
    let mut graph = CompositionGraph::new();
    let main_pkg = Package::from_bytes("sluice:main", None, main.to_vec(), graph.types_mut())
        .map_err(|e| graph_err(&e))?;
    let main_world = main_pkg.ty();
    let main_id = graph
        .register_package(main_pkg)
        .map_err(|e| graph_err(&e))?;
    let main_imports: Vec<String> = graph.types()[main_world].imports.keys().cloned().collect();
    let main_exports: Vec<String> = graph.types()[main_world].exports.keys().cloned().collect();
    let main_instance = graph.instantiate(main_id);

    for (index, dep) in deps.iter().enumerate() {
        let bytes = std::fs::read(&dep.path).map_err(|source| ComposeError::Read {
            name: dep.name.clone(),
            path: dep.path.clone(),
            source,
        })?;
        let dep_err = |message: String| ComposeError::Dependency {
            name: dep.name.clone(),
            message,
        };
        let pkg = Package::from_bytes(
            &format!("sluice:dependency{index}"),
            None,
            bytes,
            graph.types_mut(),
        )
        .map_err(|e| dep_err(e.to_string()))?;
        let dep_world = pkg.ty();
        if !inherit_configuration {
            let types = graph.types();
            if let Some(import) = types[dep_world]
                .imports
                .keys()
                .find(|i| CONFIGURATION_INTERFACES.iter().any(|c| i.starts_with(c)))
            {
                return Err(dep_err(format!(
                    "imports `{import}`, which a dependency may use only with `dependencies_inherit_configuration = true`"
                )));
            }
        }
        let dep_exports: Vec<String> = graph.types()[dep_world].exports.keys().cloned().collect();
        let dep_id = graph
            .register_package(pkg)
            .map_err(|e| dep_err(e.to_string()))?;
        let dep_instance = graph.instantiate(dep_id);

        let targets: Vec<&String> = main_imports
            .iter()
            .filter(|i| refers_to(&dep.name, i))
            .collect();
        if targets.is_empty() {
            return Err(dep_err("the component imports nothing by this name".into()));
        }
        for import in targets {
            let export = match &dep.export {
                Some(export) if !dep.name.contains('/') => {
                    return Err(dep_err(format!(
                        "`export = \"{export}\"` needs an interface-level dependency name"
                    )));
                }
                Some(export) => dep_exports.iter().find(|e| refers_to(export, e)),
                None => dep_exports.iter().find(|e| *e == import),
            }
            .ok_or_else(|| dep_err(format!("exports nothing that satisfies `{import}`")))?;
            let alias = graph
                .alias_instance_export(dep_instance, export)
                .map_err(|e| dep_err(e.to_string()))?;
            graph
                .set_instantiation_argument(main_instance, import, alias)
                .map_err(|e| dep_err(e.to_string()))?;
        }
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
    use super::refers_to;

    #[test]
    fn dependency_names_match_versioned_imports() {
        assert!(refers_to("sluice:edge/auth", "sluice:edge/auth@0.1.0"));
        assert!(refers_to(
            "sluice:edge/auth@0.1.0",
            "sluice:edge/auth@0.1.0"
        ));
        assert!(refers_to("sluice:edge", "sluice:edge/cache@0.1.0"));
        assert!(!refers_to("sluice:edge/auth", "sluice:edge/authz@0.1.0"));
        assert!(!refers_to("sluice:edg", "sluice:edge/auth@0.1.0"));
    }
}
