//! A managed local Kafka-compatible broker (tansu) for `weft dev` and tests:
//! loopback only, durable sqlite storage in a data directory (or tansu's
//! in-memory storage, for benches that measure the host rather than the
//! broker's disk), stopped on drop.

use super::{Result, StreamError};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where a local broker keeps its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// `broker.db` in the data directory: durable, survives a restart.
    Sqlite,
    /// The broker's memory: lost when it stops, and no disk on the path of
    /// a produce or fetch (what a bench uses to tell the host's costs from
    /// the broker's storage).
    Memory,
}

impl Storage {
    fn url(self) -> &'static str {
        match self {
            // tansu reads `sqlite://x` relative to its working directory.
            Storage::Sqlite => "sqlite://broker.db",
            Storage::Memory => "memory://tansu/",
        }
    }
}

pub struct LocalBroker {
    child: Option<Child>,
    pub port: u16,
    pub db: PathBuf,
}

/// The tansu binary: `$WEFT_TANSU`, else `tansu` on PATH, else `~/.cargo/bin/tansu`.
pub fn tansu_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("WEFT_TANSU") {
        return Ok(PathBuf::from(p));
    }
    if let Ok(p) = which::which("tansu") {
        return Ok(p);
    }
    if let Some(h) = std::env::var_os("HOME") {
        let p = PathBuf::from(h).join(".cargo/bin/tansu");
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(StreamError::Broker("the tansu broker is not installed: run `scripts/setup` (or `cargo install tansu --locked --features libsql,dynostore`), or pass --brokers HOST:PORT".into()))
}

/// A free TCP port on loopback (racy by nature, good enough for local use).
pub fn free_port() -> Result<u16> {
    let what = "finding a free port";
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| StreamError::io(what, e))?;
    Ok(l.local_addr().map_err(|e| StreamError::io(what, e))?.port())
}

impl LocalBroker {
    /// Starts a broker on a free port storing into `data_dir/broker.db`.
    pub fn start(data_dir: &Path) -> Result<LocalBroker> {
        LocalBroker::start_on(data_dir, free_port()?)
    }

    /// Starts a broker on `port` (e.g. to restart one on the same address).
    pub fn start_on(data_dir: &Path, port: u16) -> Result<LocalBroker> {
        LocalBroker::start_with(data_dir, port, Storage::Sqlite)
    }

    /// Starts a broker on `port` with the given storage; `data_dir` holds
    /// its log (and its database, for [`Storage::Sqlite`]).
    pub fn start_with(data_dir: &Path, port: u16, storage: Storage) -> Result<LocalBroker> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StreamError::io(format!("creating {}", data_dir.display()), e))?;
        let db = data_dir.join("broker.db");
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(data_dir.join("broker.log")).map_err(|e| {
            StreamError::io(format!("creating {}/broker.log", data_dir.display()), e)
        })?;
        let child = Command::new(tansu_binary()?)
            .arg("broker")
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            .arg("--storage-engine")
            .arg(storage.url())
            .current_dir(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| StreamError::io("starting the tansu broker", e))?;
        let mut b = LocalBroker {
            child: Some(child),
            port,
            db,
        };
        b.wait_ready(Duration::from_secs(30))?;
        if storage == Storage::Sqlite {
            // Only a speed-up: a broker whose schema differs (another tansu
            // version) still runs, with a warning.
            if let Err(e) = index_headers(&b.db, Duration::from_secs(10)) {
                tracing::warn!("{e}; fetches will scan every record header");
            }
        }
        Ok(b)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if let Some(c) = self.child.as_mut() {
                let exited = c
                    .try_wait()
                    .map_err(|e| StreamError::io("watching the tansu broker", e))?;
                if let Some(status) = exited {
                    return Err(StreamError::Broker(format!(
                        "the tansu broker exited during start-up ({status}); see broker.log next to {}",
                        self.db.display()
                    )));
                }
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(StreamError::Broker(format!(
            "the tansu broker did not listen on port {} within {within:?}",
            self.port
        )))
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

/// The index tansu 0.6's sqlite schema lacks: its `header` table (one row
/// per record header, keyed by `topition, offset_id`) has none, so a fetch
/// looks up each record's headers by scanning every header of the broker.
/// weft's dead letters and outputs carry headers, so the table grows with
/// them; a consumer reading a backlog then holds the broker's one sqlite
/// connection for seconds and every other client waits. Measured (5,000
/// header rows, a 20,000-record backlog read by one client): the other
/// clients' produce-to-consume latency went from 50 ms to 5.7 s while the
/// backlog was read (5.9 s), and stayed at 50 ms (read in 0.7 s) with this
/// index; in the tenancy bench it was the crash-loop case's 5 s stall of
/// the neighbour. Added once the broker has created its schema
/// (`IF NOT EXISTS`, so a restart on the same file is a no-op).
fn index_headers(db: &Path, within: Duration) -> Result<()> {
    let err = |e: rusqlite::Error| {
        StreamError::Broker(format!(
            "indexing the local broker's record headers in {}: {e}",
            db.display()
        ))
    };
    let t0 = Instant::now();
    loop {
        let conn = rusqlite::Connection::open(db).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        let made = conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS weft_header_record ON header (topition, offset_id)",
        );
        match made {
            Ok(()) => return Ok(()),
            // The broker creates its tables just after it starts listening.
            Err(e) if e.to_string().contains("no such table") && t0.elapsed() < within => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(err(e)),
        }
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        self.stop();
    }
}
