//! The model registry, in the output bucket: every version of every model,
//! and the aliases that say which version serves.
//!
//! ```text
//! _models/<name>/<hex>.json   version sha256:<hex>: the artifact, written create-only
//! _models/<name>/@<alias>     an alias record: the version it points to, and the
//!                             versions it pointed to before (newest first)
//! ```
//!
//! Versions are content hashes, so an artifact object can only ever hold
//! the bytes its name promises: writing one twice is harmless, and a
//! reader checks the hash of what it read. Aliases are the only objects
//! that change. Each change is a new generation of the alias object,
//! written with a generation precondition (compare-and-swap): two
//! promotions racing for one alias cannot both win, and the loser reads
//! the winner's record and tries again on top of it, so no change is
//! lost. The record carries its own history, which is what `rollback`
//! pops; with bucket versioning on (Terraform turns it on) every earlier
//! generation is kept as well, for audit. The same holds on a local
//! directory, whose compare-and-swap is a lock and a rename.
//!
//! [`ModelRef`] is how people and settings name a model: `name` (its
//! `@production`), `name@alias` or `name:version`.

pub mod routes;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::layout::{self, MODEL_PREFIX};
use crate::model::{Model, ModelError};
use crate::storage::{ObjectStore, StorageError, WriteOptions, read_all, write_bytes};

/// The alias a bare model name means.
pub const DEFAULT_ALIAS: &str = "production";
/// The alias a fit on upload moves.
pub const STAGING_ALIAS: &str = "staging";
/// Largest artifact the registry reads.
const MAX_ARTIFACT_BYTES: usize = 64 << 20;
/// How many earlier versions an alias record remembers.
const HISTORY: usize = 50;

/// Where an alias may be when a promotion moves it.
enum Guard {
    /// Wherever it is.
    Any,
    /// Only still at this version (`None`: still absent).
    Still(Option<String>),
}

impl Guard {
    fn allows(&self, current: Option<&str>) -> bool {
        match self {
            Guard::Any => true,
            Guard::Still(expected) => expected.as_deref() == current,
        }
    }

    fn expected(&self) -> Option<&str> {
        match self {
            Guard::Any => None,
            Guard::Still(expected) => expected.as_deref(),
        }
    }
}
/// Compare-and-swap attempts before giving up on a busy alias.
const CAS_ATTEMPTS: usize = 16;

/// A name that can be a path segment of the registry: letters, digits,
/// `.`, `_` and `-`, starting with a letter or digit, at most 100 bytes.
fn check_segment(what: &str, text: &str) -> Result<(), RegistryError> {
    let ok = !text.is_empty()
        && text.len() <= 100
        && text.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!(
            "{what} {text:?}: use letters, digits, '.', '_' and '-' (at most 100, starting with a letter or digit)"
        )))
    }
}

/// Pretty JSON with a final line end: how the registry's records are written.
fn json_bytes(value: &impl Serialize) -> Result<Vec<u8>, RegistryError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| RegistryError::Invalid(e.to_string()))?;
    bytes.extend_from_slice(b"\n");
    Ok(bytes)
}

/// Whether `name` can be a model's name (a path segment of the registry).
pub fn check_model_name(name: &str) -> Result<(), RegistryError> {
    check_segment("model name", name)
}

/// `sha256:` and 16 hex digits (the `sha256:` may be left out).
fn parse_version(text: &str) -> Result<String, RegistryError> {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    if hex.len() == 16 && hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) {
        Ok(format!("sha256:{hex}"))
    } else {
        Err(RegistryError::Invalid(format!(
            "version {text:?}: a version is sha256: and 16 lower-case hex digits, as `scorer model list` shows"
        )))
    }
}

/// Which version of a model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Pick {
    Alias(String),
    Version(String),
}

/// A model as people name it: `name`, `name@alias` or `name:version`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    pub name: String,
    pub pick: Pick,
}

impl ModelRef {
    pub fn alias(name: &str, alias: &str) -> ModelRef {
        ModelRef {
            name: name.to_owned(),
            pick: Pick::Alias(alias.to_owned()),
        }
    }

    pub fn version(name: &str, version: &str) -> ModelRef {
        ModelRef {
            name: name.to_owned(),
            pick: Pick::Version(version.to_owned()),
        }
    }
}

impl FromStr for ModelRef {
    type Err = RegistryError;

    fn from_str(text: &str) -> Result<ModelRef, RegistryError> {
        let text = text.trim();
        let (name, pick) = if let Some((name, alias)) = text.split_once('@') {
            check_segment("alias", alias)?;
            (name, Pick::Alias(alias.to_owned()))
        } else if let Some((name, version)) = text.split_once(':') {
            (name, Pick::Version(parse_version(version)?))
        } else {
            (text, Pick::Alias(DEFAULT_ALIAS.to_owned()))
        };
        check_segment("model name", name)?;
        Ok(ModelRef {
            name: name.to_owned(),
            pick,
        })
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pick {
            Pick::Alias(alias) => write!(f, "{}@{alias}", self.name),
            Pick::Version(version) => write!(f, "{}:{version}", self.name),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(String),
    /// No such model, alias or version; says what there is.
    #[error("{0}")]
    Unknown(String),
    #[error("{what} is not a usable model: {error}")]
    BadArtifact { what: String, error: String },
    #[error("the alias {0} kept changing under this write; try again")]
    Busy(String),
    /// A conditional promotion found the alias moved since the decision.
    #[error("{0}")]
    Moved(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl RegistryError {
    /// Whether retrying later can help (storage trouble, a busy alias).
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Storage(e) => e.is_transient(),
            RegistryError::Busy(_) => true,
            _ => false,
        }
    }
}

/// What an alias object holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasRecord {
    pub model: String,
    pub alias: String,
    pub version: String,
    /// The versions it pointed to before, newest first (what `rollback`
    /// goes back to).
    #[serde(default)]
    pub history: Vec<String>,
    /// When and by whom (a command, a fit) it was set, and why.
    pub set_at: String,
    pub set_by: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Unique per write: how a writer whose answer was lost recognises its
    /// own record (two writers deciding the same change in the same
    /// millisecond write records that differ only here).
    #[serde(default)]
    pub write_id: String,
}

/// An alias as read: its record and the generation it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Alias {
    pub record: AliasRecord,
    pub generation: i64,
}

/// What an alias change did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AliasChange {
    pub model: String,
    pub alias: String,
    /// The version before (`None`: the alias is new).
    pub from: Option<String>,
    pub to: String,
    /// False when the alias already pointed there (nothing written).
    pub changed: bool,
    /// The alias object's generation now.
    pub generation: i64,
}

/// Where a version came from, when a fit on upload made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitRecord {
    pub input_uri: String,
    pub generation: String,
    pub manifest_uri: String,
    /// The held-out rows' curves (SVG and `curves.json`).
    pub curves: Vec<String>,
}

/// One model of the registry, as `scorer model list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelEntry {
    pub name: String,
    /// Versions, oldest first by creation.
    pub versions: Vec<String>,
    /// Alias -> version.
    pub aliases: BTreeMap<String, String>,
}

/// The registry over an output bucket.
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn ObjectStore>,
}

impl Registry {
    pub fn new(store: Arc<dyn ObjectStore>) -> Registry {
        Registry { store }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Where an object of the registry is, for people.
    pub fn uri(&self, object: &str) -> String {
        self.store.uri(object)
    }

    /// Stores an artifact as a version of its model (create-only; a version
    /// already there holds these very bytes, by its name). Returns the
    /// model and whether this call created it.
    pub async fn publish(&self, artifact: &[u8]) -> Result<(Model, bool), RegistryError> {
        let model = Model::from_json(artifact).map_err(|e| RegistryError::BadArtifact {
            what: "the artifact".into(),
            error: e.to_string(),
        })?;
        check_segment("model name", model.name())?;
        let object = layout::model_version(model.name(), model.version());
        let created = match write_bytes(
            self.store.as_ref(),
            &object,
            artifact.to_vec(),
            WriteOptions::create_only("application/json"),
        )
        .await
        {
            Ok(_) => true,
            Err(StorageError::AlreadyExists(_)) => false,
            Err(e) => return Err(e.into()),
        };
        Ok((model, created))
    }

    /// A version of a model, checked against its content hash.
    pub async fn load(&self, name: &str, version: &str) -> Result<Model, RegistryError> {
        let object = layout::model_version(name, version);
        let bytes = match read_all(self.store.as_ref(), &object, MAX_ARTIFACT_BYTES).await {
            Ok((_, bytes)) => bytes,
            Err(StorageError::NotFound(_)) => {
                return Err(RegistryError::Unknown(format!(
                    "model {name} has no version {version} ({}); {}",
                    self.uri(&object),
                    self.describe(name).await
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let what = self.uri(&object);
        let model = Model::from_json(&bytes).map_err(|e: ModelError| RegistryError::BadArtifact {
            what: what.clone(),
            error: e.to_string(),
        })?;
        if model.version() != version || model.name() != name {
            return Err(RegistryError::BadArtifact {
                what,
                error: format!(
                    "it holds {} {}, not {name} {version} (was it written by hand?)",
                    model.name(),
                    model.version()
                ),
            });
        }
        Ok(model)
    }

    /// Records where a version was fitted (the first fit of those bytes
    /// stands).
    pub async fn record_fit(&self, name: &str, version: &str, record: &FitRecord) -> Result<(), RegistryError> {
        let bytes = json_bytes(record)?;
        match write_bytes(
            self.store.as_ref(),
            &layout::model_fit_record(name, version),
            bytes,
            WriteOptions::create_only("application/json"),
        )
        .await
        {
            Ok(_) | Err(StorageError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Where a version was fitted, if a fit on upload made it.
    pub async fn fit_record(&self, name: &str, version: &str) -> Result<Option<FitRecord>, RegistryError> {
        match read_all(self.store.as_ref(), &layout::model_fit_record(name, version), 1 << 20).await {
            Ok((_, bytes)) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// An alias, if set.
    pub async fn alias(&self, name: &str, alias: &str) -> Result<Option<Alias>, RegistryError> {
        let object = layout::model_alias(name, alias);
        match read_all(self.store.as_ref(), &object, 1 << 20).await {
            Ok((meta, bytes)) => {
                let record: AliasRecord = serde_json::from_slice(&bytes).map_err(|e| RegistryError::BadArtifact {
                    what: self.uri(&object),
                    error: format!("not an alias record: {e}"),
                })?;
                Ok(Some(Alias {
                    record,
                    generation: meta.generation,
                }))
            }
            Err(StorageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The exact version a reference names now, and the model.
    pub async fn resolve(&self, model: &ModelRef) -> Result<Model, RegistryError> {
        let version = match &model.pick {
            Pick::Version(version) => version.clone(),
            Pick::Alias(alias) => match self.alias(&model.name, alias).await? {
                Some(a) => a.record.version,
                None => {
                    return Err(RegistryError::Unknown(format!(
                        "model {} has no alias @{alias}; {}",
                        model.name,
                        self.describe(&model.name).await
                    )));
                }
            },
        };
        self.load(&model.name, &version).await
    }

    /// Points `alias` of `name` at `version` (which must exist), on top of
    /// whatever it points to now. Unchanged (and nothing written) when it
    /// already points there.
    pub async fn promote(
        &self,
        name: &str,
        version: &str,
        alias: &str,
        set_by: &str,
        reason: &str,
    ) -> Result<AliasChange, RegistryError> {
        self.point(name, version, alias, Guard::Any, set_by, reason).await
    }

    /// Points `alias` at `version` only while it still points where the
    /// decision saw it (`expected`; `None`: absent), or already at
    /// `version`: a decision made against a champion never overrides a
    /// promotion or rollback made since. [`RegistryError::Moved`] when it
    /// moved.
    pub async fn promote_if(
        &self,
        name: &str,
        version: &str,
        alias: &str,
        expected: Option<&str>,
        set_by: &str,
        reason: &str,
    ) -> Result<AliasChange, RegistryError> {
        let guard = Guard::Still(expected.map(str::to_owned));
        self.point(name, version, alias, guard, set_by, reason).await
    }

    /// `promote` and `promote_if`: the alias moves to `version`, its
    /// current version on top of its history, when `guard` allows.
    async fn point(
        &self,
        name: &str,
        version: &str,
        alias: &str,
        guard: Guard,
        set_by: &str,
        reason: &str,
    ) -> Result<AliasChange, RegistryError> {
        check_segment("alias", alias)?;
        let version = parse_version(version)?;
        self.load(name, &version).await?;
        self.change(
            name,
            alias,
            |current| {
                Ok(match current {
                    Some(c) if c.version == version => None,
                    Some(c) if guard.allows(Some(&c.version)) => {
                        let mut history = vec![c.version.clone()];
                        history.extend(c.history.iter().cloned());
                        history.truncate(HISTORY);
                        Some((version.clone(), history))
                    }
                    None if guard.allows(None) => Some((version.clone(), Vec::new())),
                    other => {
                        return Err(RegistryError::Moved(format!(
                            "{name}@{alias} points to {} now, not {} as when the decision was made: left as it is",
                            other.map_or("nothing", |c| c.version.as_str()),
                            guard.expected().unwrap_or("nothing"),
                        )));
                    }
                })
            },
            set_by,
            reason,
        )
        .await
    }

    /// Creates `alias` of `name` pointing at `version` unless it exists:
    /// the first deployment seeding `@production`. Returns the alias as it
    /// is afterwards.
    pub async fn seed(
        &self,
        name: &str,
        version: &str,
        alias: &str,
        set_by: &str,
    ) -> Result<AliasChange, RegistryError> {
        let version = parse_version(version)?;
        self.change(
            name,
            alias,
            |current| {
                Ok(match current {
                    Some(_) => None,
                    None => Some((version.clone(), Vec::new())),
                })
            },
            set_by,
            "seeded by the service's start-up model",
        )
        .await
    }

    /// Points `alias` back at the version it pointed to before the current
    /// one (repeated, further back).
    pub async fn rollback(&self, name: &str, alias: &str, set_by: &str) -> Result<AliasChange, RegistryError> {
        check_segment("alias", alias)?;
        let (model, alias_name) = (name.to_owned(), alias.to_owned());
        self.change(
            name,
            alias,
            move |current| match current {
                None => Err(RegistryError::Unknown(format!(
                    "model {model} has no alias @{alias_name} to roll back"
                ))),
                Some(c) => match c.history.split_first() {
                    None => Err(RegistryError::Unknown(format!(
                        "@{alias_name} of {model} points at {} and remembers no version before it: there is nothing to roll back to (`scorer model promote` points it at any version)",
                        c.version
                    ))),
                    Some((previous, older)) => Ok(Some((previous.clone(), older.to_vec()))),
                },
            },
            set_by,
            "rollback",
        )
        .await
    }

    /// The compare-and-swap loop of every alias change: read the alias and
    /// its generation, decide (`None`: nothing to do), write the new record
    /// only while the generation is still the one read; on a lost race,
    /// read again and decide again on top of the winner's record.
    async fn change(
        &self,
        name: &str,
        alias: &str,
        decide: impl Fn(Option<&AliasRecord>) -> Result<Option<(String, Vec<String>)>, RegistryError>,
        set_by: &str,
        reason: &str,
    ) -> Result<AliasChange, RegistryError> {
        check_segment("model name", name)?;
        let object = layout::model_alias(name, alias);
        for attempt in 1..=CAS_ATTEMPTS {
            let current = self.alias(name, alias).await?;
            let from = current.as_ref().map(|a| a.record.version.clone());
            let Some((to, history)) = decide(current.as_ref().map(|a| &a.record))? else {
                return Ok(AliasChange {
                    model: name.to_owned(),
                    alias: alias.to_owned(),
                    to: from.clone().unwrap_or_default(),
                    from,
                    changed: false,
                    generation: current.map_or(0, |a| a.generation),
                });
            };
            let record = AliasRecord {
                model: name.to_owned(),
                alias: alias.to_owned(),
                version: to.clone(),
                history,
                set_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                set_by: set_by.to_owned(),
                reason: reason.to_owned(),
                write_id: format!("{:016x}", rand::random::<u64>()),
            };
            let bytes = json_bytes(&record)?;
            let expected = current.as_ref().map(|a| a.generation);
            match write_bytes(
                self.store.as_ref(),
                &object,
                bytes,
                WriteOptions::replacing(expected, "application/json"),
            )
            .await
            {
                Ok(meta) => {
                    return Ok(AliasChange {
                        model: name.to_owned(),
                        alias: alias.to_owned(),
                        from,
                        to,
                        changed: true,
                        generation: meta.generation,
                    });
                }
                Err(StorageError::AlreadyExists(_)) => {
                    // Our own write may have gone through with its answer
                    // lost (the client's retry then met the precondition):
                    // the record we meant to write says so. Otherwise
                    // someone else changed it first: decide again on theirs.
                    if let Some(now) = self.alias(name, alias).await?
                        && now.record == record
                    {
                        return Ok(AliasChange {
                            model: name.to_owned(),
                            alias: alias.to_owned(),
                            from,
                            to,
                            changed: true,
                            generation: now.generation,
                        });
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50 * attempt as u64)).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(RegistryError::Busy(format!("{name}@{alias}")))
    }

    /// Every model, its versions and its aliases.
    pub async fn list(&self) -> Result<Vec<ModelEntry>, RegistryError> {
        /// Per model: its versions with their creation times, its aliases.
        type Found = (Vec<(Option<std::time::SystemTime>, String)>, BTreeMap<String, String>);
        let mut models: BTreeMap<String, Found> = BTreeMap::new();
        let objects = self.store.list(MODEL_PREFIX).await?;
        for meta in &objects {
            let Some(rest) = meta.name.strip_prefix(MODEL_PREFIX) else {
                continue;
            };
            let Some((name, leaf)) = rest.split_once('/') else {
                continue;
            };
            if leaf.contains('/') {
                continue;
            }
            let entry = models.entry(name.to_owned()).or_default();
            if let Some(hex) = leaf.strip_suffix(".json")
                && let Ok(version) = parse_version(hex)
            {
                entry.0.push((meta.created, version));
            } else if let Some(alias) = leaf.strip_prefix('@')
                && let Some(a) = self.alias(name, alias).await?
            {
                entry.1.insert(alias.to_owned(), a.record.version);
            }
        }
        Ok(models
            .into_iter()
            .map(|(name, (mut versions, aliases))| {
                versions.sort();
                ModelEntry {
                    name,
                    versions: versions.into_iter().map(|(_, v)| v).collect(),
                    aliases,
                }
            })
            .collect())
    }

    /// What the registry holds for `name` (or which models there are), for
    /// error messages.
    pub async fn describe(&self, name: &str) -> String {
        match self.list().await {
            Ok(models) => match models.iter().find(|m| m.name == name) {
                Some(m) => format!(
                    "it has versions {} and aliases {}",
                    m.versions.join(", "),
                    if m.aliases.is_empty() {
                        "(none)".to_owned()
                    } else {
                        m.aliases
                            .iter()
                            .map(|(a, v)| format!("@{a} -> {v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
                None if models.is_empty() => "the registry holds no models".to_owned(),
                None => format!(
                    "the registry holds {}",
                    models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            },
            Err(e) => format!("(the registry could not be listed: {e})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_and_print_back() {
        let r: ModelRef = "penguins".parse().unwrap();
        assert_eq!(r, ModelRef::alias("penguins", "production"));
        assert_eq!(
            "penguins@staging".parse::<ModelRef>().unwrap().to_string(),
            "penguins@staging"
        );
        let v: ModelRef = "penguins:0123456789abcdef".parse().unwrap();
        assert_eq!(v.to_string(), "penguins:sha256:0123456789abcdef");
        assert_eq!("penguins:sha256:0123456789abcdef".parse::<ModelRef>().unwrap(), v);
        for bad in ["", "a/b", "a@", "@x", "a:123", "a@b/c", "-a", "a b"] {
            assert!(bad.parse::<ModelRef>().is_err(), "{bad:?}");
        }
    }
}
