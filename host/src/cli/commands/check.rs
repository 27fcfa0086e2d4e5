//! `weft check`.

use crate::cli::Globals;
use std::path::PathBuf;
use std::process::ExitCode;
use weft::runtime::Runtime;
use weft::service::check::check_manifest;

#[derive(clap::Args)]
pub struct Args {
    /// Manifest files.
    #[arg(required = true)]
    manifests: Vec<PathBuf>,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new(g.cache_dir.clone())?;
    let mut failed = 0;
    for m in &a.manifests {
        match check_manifest(&runtime, &g.policy, m) {
            Ok(checked) => {
                for w in &checked.warnings {
                    eprintln!("warning: {w}");
                }
                println!("ok: {}", checked.summary());
            }
            Err(problems) => {
                failed += 1;
                for p in problems {
                    eprintln!("{p}");
                }
            }
        }
    }
    if failed > 0 {
        eprintln!(
            "{failed} of {} manifest(s) have problems",
            a.manifests.len()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
