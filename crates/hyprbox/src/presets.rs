//! `hyprbox presets list|render|check`: the preset catalogue as this machine sees it (the built-ins
//! plus a presets directory), without a server. `check` is for CI of a presets repository.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use hyprbox_presets::Catalog;
use serde_json::{Map, Value};

#[derive(Args)]
pub struct PresetsArgs {
    #[command(subcommand)]
    command: PresetsCommand,
}

#[derive(Subcommand)]
enum PresetsCommand {
    /// List the presets: the built-ins, overridden and extended by the presets directory.
    List {
        #[command(flatten)]
        dir: DirArg,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the script a preset renders to with the given variables (nothing is run).
    Render {
        /// The preset's name.
        name: String,
        /// A variable as name=value; repeat for more. A list takes comma-separated items.
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Validate every preset file in a directory; exits 1 and names each problem when one is invalid.
    Check {
        /// The directory of *.yaml / *.yml preset files.
        dir: PathBuf,
    },
}

#[derive(Args)]
struct DirArg {
    /// Presets directory (default: HYPRBOX_PRESETS_DIR, else ./presets when it exists).
    #[arg(long, env = "HYPRBOX_PRESETS_DIR")]
    dir: Option<PathBuf>,
}

impl DirArg {
    fn catalog(&self) -> anyhow::Result<Catalog> {
        let dir = self
            .dir
            .clone()
            .or_else(|| Some(PathBuf::from("./presets")).filter(|d| d.is_dir()));
        Catalog::load(dir.as_deref()).map_err(|e| anyhow::anyhow!("invalid preset: {e}"))
    }
}

pub fn run(args: PresetsArgs) -> anyhow::Result<()> {
    match args.command {
        PresetsCommand::List { dir, json } => list(&dir.catalog()?, json),
        PresetsCommand::Render { name, vars, dir } => render(&dir.catalog()?, &name, &vars),
        PresetsCommand::Check { dir } => check(&dir),
    }
}

fn list(catalog: &Catalog, json: bool) -> anyhow::Result<()> {
    if json {
        let presets: Vec<Value> = catalog.iter().map(|p| p.summary()).collect();
        println!("{}", serde_json::json!({ "presets": presets }));
        return Ok(());
    }
    let name_width = catalog.iter().map(|p| p.name.len()).max().unwrap_or(4).max(4);
    println!(
        "{:<name_width$}  {:<8}  {:<6}  {:>5}  DESCRIPTION",
        "NAME", "VERSION", "RISK", "STEPS"
    );
    for preset in catalog.iter() {
        println!(
            "{:<name_width$}  {:<8}  {:<6}  {:>5}  {}",
            preset.name,
            preset.version,
            preset.risk.as_str(),
            preset.steps.len(),
            summary_line(&preset.description)
        );
    }
    Ok(())
}

/// A description cut to its first sentence and at most 72 characters, for one table row.
fn summary_line(description: &str) -> String {
    let first = description.split(": ").next().unwrap_or(description);
    let first = first.split(". ").next().unwrap_or(first).trim_end_matches('.');
    if first.chars().count() <= 72 {
        first.to_string()
    } else {
        first.chars().take(71).collect::<String>() + "…"
    }
}

fn render(catalog: &Catalog, name: &str, vars: &[String]) -> anyhow::Result<()> {
    let preset = catalog
        .get(name)
        .with_context(|| format!("no preset named {name:?} (see `hyprbox presets list`)"))?;
    let mut values = Map::new();
    for var in vars {
        let Some((key, value)) = var.split_once('=') else {
            bail!("--var takes NAME=VALUE, got {var:?}");
        };
        values.insert(key.to_string(), Value::String(value.to_string()));
    }
    let rendered = preset.render(&values).map_err(|e| anyhow::anyhow!("{e}"))?;
    for warning in &rendered.warnings {
        eprintln!("warning: {warning}");
    }
    print!("{}", rendered.script);
    Ok(())
}

fn check(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    match hyprbox_presets::check_dir(dir) {
        Ok(presets) => {
            let names: Vec<&str> = presets.iter().map(|p| p.name.as_str()).collect();
            println!("ok: {} preset(s) valid: {}", presets.len(), names.join(", "));
            Ok(())
        }
        Err(errors) => {
            for error in &errors {
                eprintln!("{error}");
            }
            bail!("{} invalid preset file(s) in {}", errors.len(), dir.display())
        }
    }
}
