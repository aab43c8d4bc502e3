//! The settings of the model registry: the default model, the prefix
//! routes, how often aliases are read again, and fit on upload.

use std::time::Duration;

use super::{ConfigError, err};
use crate::registry::ModelRef;
use crate::registry::routes::PrefixRoutes;

#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// The model for inputs no metadata or route names: `name` (its
    /// @production), `name@alias` or `name:version`. Default: the start-up
    /// model's (built in, MODEL_URI or TRAINING_DATA_URI) name @production;
    /// that alias is created for it on first start, and from then on the
    /// registry decides (`scorer model promote`).
    #[arg(long = "default-model", env = "MODEL", value_name = "REF")]
    pub model: Option<String>,
    /// Models by input prefix, the longest matching prefix winning:
    /// `flights/=scl-flight-delay@production,penguins/=penguins@staging`.
    /// An input's own metadata `model` (x-goog-meta-model) comes first.
    #[arg(long, env = "MODEL_ROUTES", value_name = "PREFIX=REF,...")]
    pub model_routes: Option<String>,
    /// How long an alias's version is used before it is read again: every
    /// instance follows a promote or rollback within this time.
    #[arg(long, env = "MODEL_REFRESH_SECONDS", default_value_t = 30, value_name = "SECONDS")]
    pub model_refresh_seconds: u64,
    /// Inputs under this prefix are training data: a fit instead of scores
    /// (`training/<model>/file.csv`, its spec in `training/<model>/spec.json`,
    /// or the model's @production spec). Unset: no fit on upload.
    #[arg(long, env = "TRAINING_PREFIX", value_name = "PREFIX")]
    pub training_prefix: Option<String>,
    /// What a fit on upload promotes: `staging` (the new version becomes
    /// @staging) or `auto` (also @production, when its held-out ROC AUC is
    /// at least the current @production's on the same rows).
    #[arg(long, env = "PROMOTE", default_value = "staging", value_name = "staging|auto")]
    pub promote: String,
}

/// What a fit on upload promotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Promote {
    Staging,
    Auto,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSettings {
    pub default: Option<ModelRef>,
    pub routes: PrefixRoutes,
    pub refresh: Duration,
    pub training_prefix: Option<String>,
    pub promote: Promote,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            default: None,
            routes: PrefixRoutes::default(),
            refresh: Duration::from_secs(30),
            training_prefix: None,
            promote: Promote::Staging,
        }
    }
}

impl ModelSettings {
    pub fn from_args(args: &ModelArgs) -> Result<ModelSettings, ConfigError> {
        let default = args
            .model
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(|m| m.parse::<ModelRef>().map_err(|e| err("MODEL", e.to_string())))
            .transpose()?;
        let routes = match args.model_routes.as_deref() {
            Some(text) => text.parse().map_err(|e: String| err("MODEL_ROUTES", e))?,
            None => PrefixRoutes::default(),
        };
        let training_prefix = match args.training_prefix.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(p) if p.starts_with('_') => {
                return Err(err(
                    "TRAINING_PREFIX",
                    "a prefix starting with _ is the service's own namespace",
                ));
            }
            Some(p) => Some(if p.ends_with('/') {
                p.to_owned()
            } else {
                format!("{p}/")
            }),
        };
        let promote = match args.promote.trim() {
            "staging" => Promote::Staging,
            "auto" => Promote::Auto,
            other => return Err(err("PROMOTE", format!("{other:?} is not staging or auto"))),
        };
        if training_prefix.is_some()
            && let Some((prefix, _)) = routes
                .iter()
                .find(|(p, _)| training_prefix.as_deref().is_some_and(|t| p.starts_with(t)))
        {
            return Err(err(
                "MODEL_ROUTES",
                format!("the route {prefix:?} is under TRAINING_PREFIX: those inputs are fitted, not scored"),
            ));
        }
        Ok(ModelSettings {
            default,
            routes,
            refresh: Duration::from_secs(args.model_refresh_seconds.max(1)),
            training_prefix,
            promote,
        })
    }
}
