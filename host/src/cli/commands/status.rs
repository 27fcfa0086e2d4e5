//! `weft status`: what a running `weft serve` hosts, through its admin API.

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use weft::service::admin::AdminClient;

/// Where the admin API is, and how to authenticate (shared by `status`
/// and `dlq`).
#[derive(clap::Args, Clone)]
pub struct AdminArgs {
    /// The admin API of a running `weft serve --admin ADDR`.
    #[arg(long, default_value = "http://127.0.0.1:9180")]
    admin: String,
    /// A file holding the bearer token (when the API is not on loopback).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
}

impl AdminArgs {
    pub fn client(&self) -> anyhow::Result<AdminClient> {
        let token = match &self.admin_token_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("reading the admin token {}", f.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let base = if self.admin.contains("://") {
            self.admin.clone()
        } else {
            format!("http://{}", self.admin)
        };
        Ok(AdminClient::new(&base, token))
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    admin: AdminArgs,
    /// Print the API's JSON as it is.
    #[arg(long)]
    json: bool,
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let s = a
        .admin
        .client()?
        .status()
        .context("asking the admin API for the status")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<28} {:<13} {:>10} {:>10} {:>8} {:>9} {:>9} {:>8}  last error / reason",
        "tenant/pipeline", "status", "consumed", "produced", "dead", "in/s", "out/s", "lag"
    );
    for p in s["pipelines"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let name = format!("{}/{}", text(&p["tenant"]), text(&p["pipeline"]));
        let why = match (&p["reason"], &p["last_error"]) {
            (serde_json::Value::String(r), _) => r.clone(),
            (_, e) if e.is_object() => format!(
                "{} in stage {}: {}",
                text(&e["kind"]),
                text(&e["stage"]),
                text(&e["message"])
            ),
            _ => String::new(),
        };
        println!(
            "{:<28} {:<13} {:>10} {:>10} {:>8} {:>9.1} {:>9.1} {:>8}  {}",
            name,
            text(&p["condition"]),
            text(&p["consumed"]),
            text(&p["produced"]),
            text(&p["dead_letters"]),
            p["rates"]["consumed_per_sec"].as_f64().unwrap_or(0.0),
            p["rates"]["produced_per_sec"].as_f64().unwrap_or(0.0),
            text(&p["lag"]),
            why.chars().take(120).collect::<String>()
        );
    }
    for r in s["refused"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        println!("refused: {}", text(r));
    }
    Ok(ExitCode::SUCCESS)
}
