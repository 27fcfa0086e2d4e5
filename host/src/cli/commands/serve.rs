//! `weft serve`: every tenant's pipelines in one process.

use crate::cli::commands::run::progress_line;
use crate::cli::Globals;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use weft::service::admin::{AdminOptions, AdminServer};
use weft::service::exporter::MetricsEndpoint;
use weft::service::serve::{ReloadReport, ServeEvent, ServeOptions, ServeStatus, Server};
use weft::service::Host;
use weft::stream::assign::Assignment;
use weft::stream::circuit::CircuitPolicy;

#[derive(clap::Args)]
pub struct Args {
    /// The tenants directory: `<dir>/<tenant>/policy.toml` (the operator's)
    /// and `<dir>/<tenant>/pipelines/*.toml` (the tenant's).
    #[arg(long)]
    tenants: PathBuf,
    /// Kafka bootstrap servers, e.g. 127.0.0.1:9092.
    #[arg(long)]
    brokers: String,
    /// Partitions for topics weft creates when they are missing.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// How this process gets its partitions: `group` (default) or a static
    /// share `I/N` of every pipeline's source, joining no group (see
    /// `weft run --help`).
    #[arg(long, default_value = "group")]
    assign: Assignment,
    /// Do not reload when a file under the tenants directory changes
    /// (SIGHUP still reloads).
    #[arg(long)]
    no_watch: bool,
    /// Records failing in a plugin in a row after which a pipeline pauses
    /// (its circuit opens) instead of dead-lettering its whole topic; 0: never.
    #[arg(long, default_value_t = 100)]
    circuit_failures: u64,
    /// Seconds a pipeline stays paused the first time its circuit opens
    /// (doubling each time it fails again, up to 10 minutes).
    #[arg(long, default_value_t = 30)]
    circuit_pause_secs: u64,
    /// Seconds a stop (SIGTERM, Ctrl-C) waits for the batches in flight to
    /// finish and commit; a batch stuck longer is abandoned uncommitted
    /// (and replayed by whoever runs the pipeline next).
    #[arg(long, default_value_t = 30)]
    grace_secs: u64,
    /// Seconds between progress lines on stderr.
    #[arg(long, default_value_t = 10)]
    progress_secs: u64,
    /// Serve Prometheus metrics on this address (`GET /metrics`), e.g. 127.0.0.1:9464.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Serve the admin API (JSON under /api/) and the web console (at /) on
    /// this address, e.g. 127.0.0.1:9180.
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// The bearer token the admin API requires (required when --admin is
    /// not a loopback address).
    #[arg(long, requires = "admin")]
    admin_token_file: Option<PathBuf>,
}

fn print_report(why: &str, r: &ReloadReport) {
    for (what, list) in [
        ("started", &r.started),
        ("swapped in a new version of", &r.swapped),
        ("restarted", &r.restarted),
        ("stopped", &r.stopped),
    ] {
        for p in list {
            eprintln!("{why}: {what} {p}");
        }
    }
    for p in &r.refused {
        eprintln!("{why}: refused: {p}");
    }
}

fn print_status(s: &ServeStatus) {
    for p in &s.pipelines {
        let state = if p.state == "running" {
            String::new()
        } else {
            format!(" [{}]", p.state)
        };
        eprintln!("{}/{}{state}", p.tenant, progress_line(&p.figures));
    }
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<ExitCode> {
    // Refuse a bad --admin before anything starts.
    let admin = match a.admin {
        Some(addr) => Some(AdminOptions::new(addr, a.admin_token_file.as_deref())?),
        None => None,
    };
    let host = Host::new(g.cache_dir.clone(), g.policy.clone(), &g.data_dir)?;
    let metrics = match a.metrics {
        Some(addr) => {
            let m = MetricsEndpoint::start(addr, host.scraper()).context("--metrics")?;
            eprintln!("metrics on http://{}/metrics", m.addr());
            Some(m)
        }
        None => None,
    };
    let opts = ServeOptions {
        tenants: a.tenants,
        brokers: a.brokers,
        partitions: a.partitions,
        assign: a.assign,
        circuit: CircuitPolicy {
            consecutive_failures: a.circuit_failures,
            first_pause: Duration::from_secs(a.circuit_pause_secs.max(1)),
            ..CircuitPolicy::default()
        },
        grace: Duration::from_secs(a.grace_secs),
    };
    let (server, report) = Server::start(host, opts)?;
    print_report("start", &report);
    let server = Arc::new(server);
    let admin = match admin {
        Some(o) => {
            let s = AdminServer::start(server.clone(), o).context("--admin")?;
            eprintln!(
                "admin API on http://{0}/api/status, console on http://{0}/",
                s.addr()
            );
            Some(s)
        }
        None => None,
    };
    let last = server.run_until_signal(
        !a.no_watch,
        Duration::from_secs(a.progress_secs.max(1)),
        |e| match e {
            ServeEvent::Progress(s) => print_status(s),
            ServeEvent::Reloaded(why, r) => {
                if r.changed() || !r.refused.is_empty() {
                    print_report(&format!("reload ({why})"), r);
                }
            }
            ServeEvent::ReloadFailed(why, e) => eprintln!("reload ({why}) failed: {e}"),
            ServeEvent::Stopping => {
                eprintln!("stopping: finishing the batches in flight and committing")
            }
        },
    )?;
    drop(admin);
    drop(metrics);
    print_status(&last);
    // The last reference lets the runtime go without waiting for threads
    // stuck in a plugin call; a request still holding one ends with the process.
    if let Ok(server) = Arc::try_unwrap(server) {
        server.stop();
    }
    Ok(ExitCode::SUCCESS)
}
