//! The model catalog: prices, context windows and capabilities of the
//! common models of every provider Sluice speaks to, shipped in the binary
//! (`models.json`, made by `scripts/catalog` from LiteLLM's MIT-licensed
//! price list; its source, version and date are in the file). A deployment
//! that sets no price is priced from it, so costs and budgets are right by
//! default; a deployment's own prices always win.

use crate::config::ProviderKind;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::LazyLock;

#[derive(Debug, Deserialize)]
pub struct Catalog {
    pub source: String,
    pub source_version: String,
    pub licence: String,
    pub generated_on: String,
    models: Vec<CatalogModel>,
    #[serde(skip)]
    index: HashMap<(String, String), usize>,
}

#[derive(Debug, Deserialize)]
pub struct CatalogModel {
    pub provider: String,
    pub model: String,
    /// `chat` or `embedding`.
    pub mode: String,
    pub price_per_million: Prices,
    #[serde(default)]
    pub max_input_tokens: Option<u64>,
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    #[serde(default)]
    pub capabilities: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct Prices {
    pub input: f64,
    #[serde(default)]
    pub output: f64,
    #[serde(default)]
    pub cached_input: Option<f64>,
    #[serde(default)]
    pub cache_write: Option<f64>,
    #[serde(default)]
    pub reasoning: Option<f64>,
}

#[expect(
    clippy::panic,
    reason = "the shipped file is parsed by a unit test; a build with a broken one must not serve"
)]
static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
    let mut catalog: Catalog = serde_json::from_str(include_str!("models.json"))
        .unwrap_or_else(|e| panic!("the shipped catalog is checked by a test: {e}"));
    catalog.index = catalog
        .models
        .iter()
        .enumerate()
        .map(|(i, m)| ((m.provider.clone(), m.model.clone()), i))
        .collect();
    catalog
});

pub fn catalog() -> &'static Catalog {
    &CATALOG
}

/// The catalog's name for a provider kind (`None`: nothing to look up).
fn provider_name(kind: ProviderKind) -> Option<&'static str> {
    match kind {
        ProviderKind::Openai => Some("openai"),
        ProviderKind::Azure => Some("azure"),
        ProviderKind::Anthropic => Some("anthropic"),
        ProviderKind::Gemini => Some("gemini"),
        ProviderKind::Vertex => Some("vertex"),
        ProviderKind::Bedrock => Some("bedrock"),
        ProviderKind::Simulated => None,
    }
}

/// The names a deployment's model may be listed under, most exact first: a
/// Bedrock inference profile's ARN or cross-region id (`us.anthropic.claude-...`)
/// also as the model it serves; Claude on Vertex (`claude-sonnet-4-5@20250929`)
/// also under Anthropic's dated and undated names.
fn aliases(kind: ProviderKind, model: &str) -> Vec<String> {
    let mut names = vec![model.to_string()];
    match kind {
        ProviderKind::Bedrock => {
            let id = model.rsplit('/').next().unwrap_or(model);
            names.push(id.to_string());
            if let Some((prefix, served)) = id.split_once('.')
                && ["us", "eu", "apac", "global", "jp", "au", "ca", "us-gov"].contains(&prefix)
            {
                names.push(served.to_string());
            }
        }
        ProviderKind::Vertex if model.starts_with("claude") => {
            names.push(model.replace('@', "-"));
            names.push(model.split('@').next().unwrap_or(model).to_string());
        }
        _ => {}
    }
    names
}

impl Catalog {
    /// The entry for `model` on `kind`; Azure deployments and Vertex models
    /// fall back to the same model's OpenAI or Gemini entry, and a dated
    /// name (`claude-sonnet-4-5-20250929`) is found as given. A Bedrock
    /// cross-region inference profile (`us.anthropic.claude-...`) or its ARN
    /// falls back to the model it serves.
    pub fn lookup(&self, kind: ProviderKind, model: &str) -> Option<&CatalogModel> {
        let provider = provider_name(kind)?;
        let claude_on_vertex = kind == ProviderKind::Vertex && model.starts_with("claude");
        // Where else the catalog lists the same model.
        let also = match kind {
            ProviderKind::Azure => Some("openai"),
            ProviderKind::Vertex if claude_on_vertex => Some("anthropic"),
            ProviderKind::Vertex => Some("gemini"),
            _ => None,
        };
        aliases(kind, model).iter().find_map(|name| {
            [Some(provider), also]
                .into_iter()
                .flatten()
                .find_map(|p| self.index.get(&(p.to_string(), name.clone())))
                .map(|&i| &self.models[i])
        })
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

/// Where a deployment's prices come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceSource {
    /// Set on the deployment.
    Configured,
    /// The catalog's entry for this model.
    Catalog,
    /// No price anywhere: its calls cost nothing in reports and budgets.
    Unpriced,
    /// The simulated provider, which is free.
    Free,
}

impl PriceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            PriceSource::Configured => "configured",
            PriceSource::Catalog => "catalog",
            PriceSource::Unpriced => "none",
            PriceSource::Free => "free",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalog_loads_and_names_its_source() {
        let catalog = catalog();
        assert!(catalog.len() > 500, "{}", catalog.len());
        assert!(catalog.licence.starts_with("MIT"));
        for provider in [
            "openai",
            "azure",
            "anthropic",
            "gemini",
            "vertex",
            "bedrock",
        ] {
            assert!(
                catalog.models.iter().any(|m| m.provider == provider),
                "no {provider} model"
            );
        }
        let flash = catalog
            .lookup(ProviderKind::Gemini, "gemini-2.5-flash")
            .unwrap();
        assert!(flash.price_per_million.output > flash.price_per_million.input);
        assert!(flash.max_input_tokens.unwrap() >= 1_000_000);
        // Vertex falls back to the Gemini entry for a model it does not list.
        assert!(
            catalog
                .lookup(ProviderKind::Vertex, "gemini-2.5-flash")
                .is_some()
        );
        assert!(
            catalog
                .lookup(ProviderKind::Simulated, "gemini-2.5-flash")
                .is_none()
        );
        // Claude on Vertex is priced as Anthropic's model of that date.
        assert!(
            catalog
                .lookup(ProviderKind::Vertex, "claude-sonnet-4-5@20250929")
                .is_some()
        );
        // A Bedrock inference profile, by id or ARN, is priced as its model.
        let direct = catalog
            .lookup(
                ProviderKind::Bedrock,
                "anthropic.claude-opus-4-1-20250805-v1:0",
            )
            .unwrap();
        for profile in [
            "global.anthropic.claude-opus-4-1-20250805-v1:0",
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/apac.anthropic.claude-opus-4-1-20250805-v1:0",
        ] {
            let found = catalog.lookup(ProviderKind::Bedrock, profile).unwrap();
            assert_eq!(
                found.price_per_million.input, direct.price_per_million.input,
                "{profile}"
            );
        }
    }
}
