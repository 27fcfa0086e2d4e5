//! `weft check`.

use crate::cli::Globals;
use std::path::PathBuf;
use std::process::ExitCode;
use weft::runtime::Runtime;
use weft::service::check::check_manifest;
use weft::service::tenants::check_tree;

#[derive(clap::Args)]
pub struct Args {
    /// Manifest files.
    #[arg(required_unless_present = "tenants")]
    manifests: Vec<PathBuf>,
    /// Check a whole tenants directory instead (as `weft serve` would load
    /// it): each tenant's manifests under its own policy and name.
    #[arg(long, conflicts_with = "manifests")]
    tenants: Option<PathBuf>,
}

fn tree(runtime: &Runtime, root: &std::path::Path) -> anyhow::Result<ExitCode> {
    let checks = check_tree(runtime, root)?;
    let mut failed = 0;
    for t in &checks {
        for c in &t.ok {
            for w in &c.warnings {
                eprintln!("warning: {w}");
            }
            println!("ok: {}", c.summary());
        }
        for p in &t.problems {
            eprintln!("{p}");
        }
        if !t.problems.is_empty() {
            failed += 1;
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} tenant(s) have problems", checks.len());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new(g.cache_dir.clone())?;
    if let Some(root) = &a.tenants {
        return tree(&runtime, root);
    }
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
