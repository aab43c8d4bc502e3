//! Which model scores an input, and the models kept warm for it.
//!
//! An input's model is, in order: the object's custom metadata `model`
//! (`x-goog-meta-model: name[@alias|:version]` on upload), the longest
//! matching prefix of `MODEL_ROUTES` (`flights/=scl-flight-delay@production`),
//! the default (`MODEL`). [`Models`] resolves a reference to the exact
//! version: an alias is read again when its answer is older than
//! `MODEL_REFRESH_SECONDS` (so every instance follows a promotion or a
//! rollback within that time, without a restart), and a version, being
//! immutable, is loaded once. A job resolves once and scores the whole file
//! with that version.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{ModelRef, Pick, Registry, RegistryError};
use crate::model::Model;

/// The metadata key an input names its model with (`x-goog-meta-model`).
pub const METADATA_KEY: &str = "model";

/// Prefix routes, as `MODEL_ROUTES` gives them: `prefix=ref,prefix=ref`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrefixRoutes(Vec<(String, ModelRef)>);

impl FromStr for PrefixRoutes {
    type Err = String;

    fn from_str(text: &str) -> Result<PrefixRoutes, String> {
        let mut routes = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (prefix, model) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not PREFIX=MODEL (e.g. flights/=scl-flight-delay@production)"))?;
            let model: ModelRef = model.parse().map_err(|e| format!("{part:?}: {e}"))?;
            if prefix.trim().is_empty() {
                return Err(format!(
                    "{part:?}: an empty prefix would match every input: set MODEL instead"
                ));
            }
            routes.push((prefix.trim().to_owned(), model));
        }
        // Longest prefix first: the most specific route wins.
        routes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        Ok(PrefixRoutes(routes))
    }
}

impl PrefixRoutes {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &(String, ModelRef)> {
        self.0.iter()
    }
}

/// What chose an input's model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum RouteSource {
    /// The object's metadata `model`.
    Metadata,
    /// A `MODEL_ROUTES` prefix.
    Prefix { prefix: String },
    /// `MODEL`, the service's default.
    Default,
}

/// An input's model, before resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub model: ModelRef,
    pub source: RouteSource,
}

/// The routing table.
#[derive(Debug, Clone, PartialEq)]
pub struct Routes {
    pub default: ModelRef,
    pub prefixes: PrefixRoutes,
}

impl Routes {
    /// The model for object `name` with custom `metadata`. A metadata value
    /// that is no model reference is the input's own mistake (`Invalid`).
    pub fn route(&self, name: &str, metadata: &BTreeMap<String, String>) -> Result<Route, RegistryError> {
        if let Some(asked) = metadata.get(METADATA_KEY) {
            let model = asked.parse::<ModelRef>().map_err(|e| {
                RegistryError::Invalid(format!(
                    "the input's metadata {METADATA_KEY}={asked:?} names no model: {e}"
                ))
            })?;
            return Ok(Route {
                model,
                source: RouteSource::Metadata,
            });
        }
        if let Some((prefix, model)) = self.prefixes.iter().find(|(p, _)| name.starts_with(p.as_str())) {
            return Ok(Route {
                model: model.clone(),
                source: RouteSource::Prefix { prefix: prefix.clone() },
            });
        }
        Ok(Route {
            model: self.default.clone(),
            source: RouteSource::Default,
        })
    }
}

/// The registry with a cache in front: versions forever, aliases for
/// `refresh`.
pub struct Models {
    registry: Registry,
    refresh: Duration,
    pub routes: Routes,
    aliases: Mutex<HashMap<(String, String), (String, Instant)>>,
    versions: Mutex<HashMap<(String, String), Arc<Model>>>,
    /// The model the service started with: the answer for its
    /// `@production` while the registry has no such alias or cannot be read.
    start_up: Option<Arc<Model>>,
}

impl Models {
    pub fn new(registry: Registry, routes: Routes, refresh: Duration) -> Models {
        Models {
            registry,
            refresh,
            routes,
            aliases: Mutex::default(),
            versions: Mutex::default(),
            start_up: None,
        }
    }

    /// Keeps the start-up model (see the field).
    pub fn remember_start_up(&mut self, model: Arc<Model>) {
        self.remember(model.clone());
        self.start_up = Some(model);
    }

    /// The start-up model, for readiness and as a last resort.
    pub fn start_up(&self) -> Option<&Arc<Model>> {
        self.start_up.as_ref()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Keeps a model already in hand (the start-up model), so the first job
    /// does not read it back.
    pub fn remember(&self, model: Arc<Model>) {
        if let Ok(mut versions) = self.versions.lock() {
            versions.insert((model.name().to_owned(), model.version().to_owned()), model);
        }
    }

    /// The exact version `model` names now.
    pub async fn get(&self, model: &ModelRef) -> Result<Arc<Model>, RegistryError> {
        let version = match &model.pick {
            Pick::Version(version) => version.clone(),
            Pick::Alias(alias) => {
                let key = (model.name.clone(), alias.clone());
                let cached = self
                    .aliases
                    .lock()
                    .ok()
                    .and_then(|a| a.get(&key).cloned())
                    .filter(|(_, at)| at.elapsed() < self.refresh);
                match cached {
                    Some((version, _)) => version,
                    None => {
                        let fallback = self
                            .start_up
                            .as_ref()
                            .filter(|m| m.name() == model.name && alias == super::DEFAULT_ALIAS);
                        // Only an alias that does not exist falls back to the
                        // start-up model; a registry that cannot be read is
                        // an error (a job retries it), never a silent swap
                        // of versions.
                        let found = match (self.registry.alias(&model.name, alias).await?, fallback) {
                            (Some(found), _) => Some(found),
                            (None, Some(start_up)) => {
                                if let Ok(mut aliases) = self.aliases.lock() {
                                    aliases.insert(key, (start_up.version().to_owned(), Instant::now()));
                                }
                                return Ok(start_up.clone());
                            }
                            (None, None) => None,
                        };
                        let Some(found) = found else {
                            return Err(RegistryError::Unknown(format!(
                                "model {} has no alias @{alias}; {}",
                                model.name,
                                self.registry.describe(&model.name).await
                            )));
                        };
                        if let Ok(mut aliases) = self.aliases.lock() {
                            aliases.insert(key, (found.record.version.clone(), Instant::now()));
                        }
                        found.record.version
                    }
                }
            }
        };
        let key = (model.name.clone(), version.clone());
        if let Some(hit) = self.versions.lock().ok().and_then(|v| v.get(&key).cloned()) {
            return Ok(hit);
        }
        let loaded = Arc::new(self.registry.load(&model.name, &version).await?);
        if let Ok(mut versions) = self.versions.lock() {
            versions.insert(key, loaded.clone());
        }
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_beats_the_longest_prefix_which_beats_the_default() {
        let routes = Routes {
            default: "flights".parse().unwrap(),
            prefixes: "a/=m1@production, a/b/=m2:0123456789abcdef".parse().unwrap(),
        };
        let none = BTreeMap::new();
        assert_eq!(
            routes.route("a/b/x.csv", &none).unwrap().model.to_string(),
            "m2:sha256:0123456789abcdef"
        );
        assert_eq!(
            routes.route("a/x.csv", &none).unwrap().model.to_string(),
            "m1@production"
        );
        assert_eq!(routes.route("z.csv", &none).unwrap().source, RouteSource::Default);
        let asked = BTreeMap::from([("model".to_owned(), "penguins@staging".to_owned())]);
        let route = routes.route("a/b/x.csv", &asked).unwrap();
        assert_eq!(
            (route.model.to_string(), route.source),
            ("penguins@staging".into(), RouteSource::Metadata)
        );
        let bad = BTreeMap::from([("model".to_owned(), "no/such".to_owned())]);
        assert!(matches!(routes.route("x.csv", &bad), Err(RegistryError::Invalid(_))));
        assert!("=m".parse::<PrefixRoutes>().is_err());
        assert!("a/".parse::<PrefixRoutes>().is_err());
    }
}
