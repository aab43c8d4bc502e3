//! `scorer model`: the registry in the output bucket, from the command
//! line: list, show, publish, promote, rollback. The same on local
//! directories (`--local DIR`) and Cloud Storage.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};

use super::buckets;
use super::ending::{self, Stream};
use super::failed::{Exit, Failed};
use scorer::registry::{AliasChange, ModelRef, Pick, Registry, RegistryError};
use scorer::storage::Missing;

#[derive(Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    command: ModelCommand,
    /// The output bucket that holds the registry (`_models/`); "output"
    /// with --local.
    #[arg(long, env = "OUTPUT_BUCKET", global = true)]
    output_bucket: Option<String>,
    /// Local buckets under DIR, as `serve --local DIR`.
    #[arg(long, value_name = "DIR", global = true, conflicts_with = "storage_emulator_host")]
    local: Option<PathBuf>,
    /// Use a Cloud Storage emulator at HOST:PORT, anonymously.
    #[arg(long, env = "STORAGE_EMULATOR_HOST", value_name = "HOST:PORT", global = true)]
    storage_emulator_host: Option<String>,
    /// How long one storage call keeps retrying before the command fails.
    #[arg(long, default_value_t = 30, value_name = "SECONDS", global = true)]
    retry_seconds: u64,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Every model: its versions (oldest first) and aliases.
    List,
    /// One version: what it needs, how it was trained and evaluated, which
    /// aliases point to it, and where its curves are. `NAME` means
    /// NAME@production; `NAME@ALIAS` also prints the alias's history.
    Show {
        #[arg(value_name = "NAME[@ALIAS|:VERSION]")]
        model: String,
    },
    /// Store an artifact (`scorer train --out`) as a version of its model;
    /// with --alias, point that alias at it too.
    Publish {
        #[arg(value_name = "ARTIFACT.json")]
        artifact: PathBuf,
        /// An alias to point at the stored version (e.g. staging).
        #[arg(long, value_name = "ALIAS")]
        alias: Option<String>,
    },
    /// Point an alias at a version. A compare-and-swap: a concurrent
    /// change is never overwritten unseen. Instances follow within
    /// MODEL_REFRESH_SECONDS.
    Promote {
        /// The model's name (`scorer model list` shows them).
        name: String,
        /// One of its versions, `sha256:` and 16 hex digits (the `sha256:`
        /// may be left out).
        #[arg(value_name = "VERSION")]
        version: String,
        /// The alias to move: `production` serves by default, `staging`
        /// is where fits land. A new name creates a new alias.
        #[arg(long, value_name = "ALIAS")]
        alias: String,
    },
    /// Point an alias back at the version it pointed to before (again:
    /// further back).
    Rollback {
        /// The model's name.
        name: String,
        /// The alias to move back (e.g. production).
        #[arg(long, value_name = "ALIAS")]
        alias: String,
    },
}

fn failed(e: RegistryError) -> Failed {
    match e {
        RegistryError::Invalid(_) => Failed::usage(e.to_string()),
        RegistryError::Unknown(_) => Failed::new(Exit::Unscorable, anyhow::anyhow!("{e}")),
        _ => Failed::new(Exit::Failure, anyhow::anyhow!("{e}")),
    }
}

pub async fn model(args: ModelArgs) -> Result<Exit, Failed> {
    let local_default = args.local.as_ref().map(|_| "output");
    let bucket = buckets::bucket(args.output_bucket.as_deref(), "--output-bucket", local_default)?;
    let backend = buckets::backend(
        args.local.as_deref(),
        args.storage_emulator_host.as_deref(),
        args.retry_seconds,
    )?;
    let store = scorer::storage::open(&backend, bucket.as_str(), Missing::Refuse).await?;
    let registry = Registry::new(Arc::clone(&store));
    let who = format!("scorer model ({})", whoami());
    let mut text = String::new();
    match args.command {
        ModelCommand::List => {
            let models = registry.list().await.map_err(failed)?;
            if args.json {
                writeln!(text, "{}", serde_json::to_string_pretty(&models)?)?;
            } else if models.is_empty() {
                writeln!(text, "no models in {}", registry.uri("_models/"))?;
            }
            for m in models.iter().filter(|_| !args.json) {
                writeln!(text, "{}", m.name)?;
                for version in &m.versions {
                    let aliases: Vec<String> = m
                        .aliases
                        .iter()
                        .filter(|(_, v)| *v == version)
                        .map(|(a, _)| format!("@{a}"))
                        .collect();
                    writeln!(text, "  {version}  {}", aliases.join(" "))?;
                }
            }
        }
        ModelCommand::Show { model } => {
            let reference: ModelRef = model.parse().map_err(failed)?;
            let found = registry.resolve(&reference).await.map_err(failed)?;
            let alias = match &reference.pick {
                Pick::Alias(a) => registry.alias(&reference.name, a).await.map_err(failed)?,
                Pick::Version(_) => None,
            };
            let entry = registry
                .list()
                .await
                .map_err(failed)?
                .into_iter()
                .find(|m| m.name == reference.name);
            let pointing: Vec<String> = entry
                .iter()
                .flat_map(|m| m.aliases.iter())
                .filter(|(_, v)| v.as_str() == found.version())
                .map(|(a, _)| format!("@{a}"))
                .collect();
            let fit = registry
                .fit_record(found.name(), found.version())
                .await
                .map_err(failed)?;
            let artifact_uri = registry.uri(&scorer::layout::model_version(found.name(), found.version()));
            if args.json {
                let report = serde_json::json!({
                    "name": found.name(),
                    "version": found.version(),
                    "artifact_uri": artifact_uri,
                    "aliases": pointing,
                    "alias": alias.as_ref().map(|a| &a.record),
                    "fit": fit,
                    "artifact": found.artifact(),
                });
                writeln!(text, "{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                let a = found.artifact();
                writeln!(text, "{} {}  {}", found.name(), found.version(), pointing.join(" "))?;
                writeln!(text, "  artifact   {artifact_uri}")?;
                let features: Vec<String> = a
                    .features
                    .iter()
                    .map(|f| match f {
                        scorer::model::Feature::Categorical { name, weights, missing } => format!(
                            "{name} (categorical, {} levels{})",
                            weights.len(),
                            if missing.is_some() { " + missing" } else { "" }
                        ),
                        scorer::model::Feature::Numeric { name, .. } => format!("{name} (numeric)"),
                    })
                    .collect();
                writeln!(text, "  features   {}", features.join(", "))?;
                writeln!(
                    text,
                    "  target     {} (1 from probability {:.6}{})",
                    a.target,
                    a.threshold,
                    a.training
                        .threshold_rule
                        .as_deref()
                        .map(|r| format!(", chosen by {r}"))
                        .unwrap_or_default()
                )?;
                let t = &a.training;
                writeln!(
                    text,
                    "  trained    on {} ({} rows, {} positive, {} skipped), class weight {}, C {}, unknown categories: {}",
                    t.data,
                    t.rows,
                    t.positives,
                    t.rows_skipped,
                    t.class_weight,
                    t.c,
                    if a.handle_unknown.is_error() {
                        "rejected"
                    } else {
                        "ignored"
                    }
                )?;
                match &t.holdout {
                    Some(h) => {
                        writeln!(text, "  held out   {}", h.render().replace('\n', "\n             "))?;
                    }
                    None => writeln!(text, "  held out   nothing: no held-out metrics")?,
                }
                match &fit {
                    Some(fit) => {
                        writeln!(
                            text,
                            "  fitted     from {}#{} ({})",
                            fit.input_uri, fit.generation, fit.manifest_uri
                        )?;
                        for curve in &fit.curves {
                            writeln!(text, "  curves     {curve}")?;
                        }
                    }
                    None => writeln!(
                        text,
                        "  curves     none in the registry (published, not fitted on upload: `scorer train` wrote them beside its --out)"
                    )?,
                }
                if let Some(alias) = &alias {
                    let r = &alias.record;
                    writeln!(
                        text,
                        "  @{}  set {} by {}{}",
                        r.alias,
                        r.set_at,
                        r.set_by,
                        if r.reason.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", r.reason)
                        }
                    )?;
                    if !r.history.is_empty() {
                        writeln!(
                            text,
                            "  before     {} (rollback goes back to the first)",
                            r.history.join(", ")
                        )?;
                    }
                }
            }
        }
        ModelCommand::Publish { artifact, alias } => {
            let bytes = std::fs::read(&artifact)
                .map_err(|e| Failed::new(Exit::Failure, anyhow::anyhow!("{}: {e}", artifact.display())))?;
            let (model, created) = registry.publish(&bytes).await.map_err(failed)?;
            let uri = registry.uri(&scorer::layout::model_version(model.name(), model.version()));
            writeln!(
                text,
                "{} {} {} {uri}",
                model.name(),
                model.version(),
                if created { "stored as" } else { "already stored as" }
            )?;
            if let Some(alias) = alias {
                let change = registry
                    .promote(
                        model.name(),
                        model.version(),
                        &alias,
                        &who,
                        "scorer model publish --alias",
                    )
                    .await
                    .map_err(failed)?;
                say_change(&mut text, &change)?;
            }
        }
        ModelCommand::Promote { name, version, alias } => {
            let change = registry
                .promote(&name, &version, &alias, &who, "scorer model promote")
                .await
                .map_err(failed)?;
            if change.from.is_none() && change.changed {
                warn_if_new_beside_others(&registry, &name, &alias).await?;
            }
            if args.json {
                writeln!(text, "{}", serde_json::to_string_pretty(&change)?)?;
            } else {
                say_change(&mut text, &change)?;
            }
        }
        ModelCommand::Rollback { name, alias } => {
            let change = registry.rollback(&name, &alias, &who).await.map_err(failed)?;
            if args.json {
                writeln!(text, "{}", serde_json::to_string_pretty(&change)?)?;
            } else {
                say_change(&mut text, &change)?;
            }
        }
    }
    ending::say(Stream::Stdout, &text)?;
    Ok(Exit::Ok)
}

/// A promotion that created `alias` beside the model's other aliases may
/// be a typo (`Production`): said on stderr, since aliases are never
/// deleted.
async fn warn_if_new_beside_others(registry: &Registry, name: &str, alias: &str) -> Result<(), Failed> {
    let others: Vec<String> = registry
        .list()
        .await
        .map_err(failed)?
        .into_iter()
        .filter(|m| m.name == name)
        .flat_map(|m| m.aliases.into_keys())
        .filter(|a| a != alias)
        .map(|a| format!("@{a}"))
        .collect();
    if !others.is_empty() {
        ending::say(
            Stream::Stderr,
            &format!(
                "note: @{alias} is a new alias of {name}, beside {}; if that was a typo, nothing else moved\n",
                others.join(", ")
            ),
        )?;
    }
    Ok(())
}

fn say_change(text: &mut String, change: &AliasChange) -> std::fmt::Result {
    match (&change.from, change.changed) {
        (_, false) => writeln!(
            text,
            "{}@{} already points to {}",
            change.model, change.alias, change.to
        ),
        (Some(from), true) => writeln!(
            text,
            "{}@{}: {from} -> {} (instances follow within MODEL_REFRESH_SECONDS)",
            change.model, change.alias, change.to
        ),
        (None, true) => writeln!(text, "{}@{} created: {}", change.model, change.alias, change.to),
    }?;
    // Promoting the version it left undoes a promotion and a rollback
    // alike (a rollback has popped that version off the history).
    if let (Some(from), true) = (&change.from, change.changed) {
        writeln!(
            text,
            "  undo: scorer model promote {} {from} --alias {}",
            change.model, change.alias
        )?;
    }
    Ok(())
}

/// Who ran the command, for the alias record.
fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown user".to_owned())
}
