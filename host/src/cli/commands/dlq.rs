//! `weft dlq`: a pipeline's dead letters, through the admin API of the
//! `weft serve` hosting it: `tail` shows the last ones with their headers,
//! `replay` re-produces chosen ones to the source topic after a fix.

use super::status::AdminArgs;
use anyhow::{bail, Context};
use std::process::ExitCode;
use weft::service::admin::Position;

#[derive(clap::Subcommand)]
pub enum DlqCommand {
    /// The last dead letters of a pipeline, oldest first, with their headers.
    Tail {
        /// `<tenant>/<pipeline>`.
        pipeline: String,
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        n: usize,
        /// Print the API's JSON as it is.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Re-produce dead letters to the pipeline's source topic (original
    /// key, value and headers, without weft's error headers).
    Replay {
        /// `<tenant>/<pipeline>`.
        pipeline: String,
        /// `PARTITION:OFFSET` of a dead letter (as `tail` shows); repeatable.
        #[arg(
            long = "offset",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        offsets: Vec<String>,
        /// Every dead letter the topic holds now.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

fn split(pipeline: &str) -> anyhow::Result<(&str, &str)> {
    match pipeline.split_once('/') {
        Some((t, p)) if !t.is_empty() && !p.is_empty() && !p.contains('/') => Ok((t, p)),
        _ => bail!("`{pipeline}` is not <tenant>/<pipeline>"),
    }
}

fn position(s: &str) -> anyhow::Result<Position> {
    let (p, o) = s
        .split_once(':')
        .with_context(|| format!("--offset {s}: expected PARTITION:OFFSET, e.g. 0:12"))?;
    Ok(Position {
        partition: p
            .trim()
            .parse()
            .with_context(|| format!("--offset {s}: partition"))?,
        offset: o
            .trim()
            .parse()
            .with_context(|| format!("--offset {s}: offset"))?,
    })
}

pub fn run(c: DlqCommand) -> anyhow::Result<ExitCode> {
    match c {
        DlqCommand::Tail {
            pipeline,
            n,
            json,
            admin,
        } => {
            let (t, p) = split(&pipeline)?;
            let list = admin
                .client()?
                .dead_letters(t, p, n)
                .with_context(|| format!("reading the dead letters of {pipeline}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            if list.is_empty() {
                println!("{pipeline}: no dead letters");
            }
            for d in &list {
                println!(
                    "{}:{}  key {}  {} in stage {}: {}",
                    d.partition,
                    d.offset,
                    d.key.as_deref().unwrap_or("-"),
                    d.kind.as_deref().unwrap_or("?"),
                    d.stage.as_deref().unwrap_or("?"),
                    d.message.as_deref().unwrap_or("")
                );
                for (k, v) in &d.headers {
                    println!("    {k}: {}", v.chars().take(200).collect::<String>());
                }
                let value = d.value.as_deref().unwrap_or("(tombstone)");
                println!(
                    "    value ({} bytes): {}",
                    d.value_bytes,
                    value.chars().take(200).collect::<String>()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Replay {
            pipeline,
            offsets,
            all,
            admin,
        } => {
            let (t, p) = split(&pipeline)?;
            let chosen = offsets
                .iter()
                .map(|s| position(s))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let r = admin
                .client()?
                .replay(t, p, (!all).then_some(chosen.as_slice()))
                .with_context(|| format!("replaying dead letters of {pipeline}"))?;
            println!(
                "replayed {} dead letter(s) to {}",
                r["replayed"],
                r["to"].as_str().unwrap_or("?")
            );
            if let Some(s) = r["skipped_trimmed"].as_array().filter(|s| !s.is_empty()) {
                println!(
                    "skipped {} whose value was cut to fit the dead-letter topic (the original is gone)",
                    s.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
