//! A managed local Kafka-compatible broker (tansu) for `weft dev` and tests:
//! loopback only, durable sqlite storage in a data directory, stopped on drop.

use anyhow::{bail, Context};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct LocalBroker {
    child: Option<Child>,
    pub port: u16,
    pub db: PathBuf,
}

/// The tansu binary: `$WEFT_TANSU`, else `tansu` on PATH, else `~/.cargo/bin/tansu`.
pub fn tansu_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("WEFT_TANSU") {
        return Ok(PathBuf::from(p));
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&paths) {
            let p = d.join("tansu");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    if let Some(h) = std::env::var_os("HOME") {
        let p = PathBuf::from(h).join(".cargo/bin/tansu");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("the tansu broker is not installed: run `scripts/setup` (or `cargo install tansu --locked --features libsql,dynostore`), or pass --brokers HOST:PORT")
}

/// A free TCP port on loopback (racy by nature, good enough for local use).
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

impl LocalBroker {
    /// Starts a broker on a free port storing into `data_dir/broker.db`.
    pub fn start(data_dir: &Path) -> anyhow::Result<LocalBroker> {
        LocalBroker::start_on(data_dir, free_port()?)
    }

    /// Starts a broker on `port` (e.g. to restart one on the same address).
    pub fn start_on(data_dir: &Path, port: u16) -> anyhow::Result<LocalBroker> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let db = data_dir.join("broker.db");
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(data_dir.join("broker.log"))
            .with_context(|| format!("creating {}/broker.log", data_dir.display()))?;
        let child = Command::new(tansu_binary()?)
            .arg("broker")
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            .arg("--storage-engine")
            // tansu reads `sqlite://x` relative to its working directory.
            .arg("sqlite://broker.db")
            .current_dir(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting the tansu broker")?;
        let mut b = LocalBroker {
            child: Some(child),
            port,
            db,
        };
        b.wait_ready(Duration::from_secs(30))?;
        Ok(b)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!("the tansu broker exited during start-up ({status}); see broker.log next to {}", self.db.display());
                }
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "the tansu broker did not listen on port {} within {within:?}",
            self.port
        )
    }

    /// Stops the broker (SIGKILL: tansu's sqlite storage is crash-safe, and a
    /// hard stop is what the broker-restart tests want to survive anyway).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        self.stop();
    }
}
