//! `--admin ADDR`: the JSON API of a running `weft serve` (or `weft dev`),
//! for `weft status`, `weft dlq` and the web console (same origin; no CORS).
//!
//! | method and path | what |
//! |---|---|
//! | `GET /api/status` | every hosted pipeline ([`ServedPipeline`]) and what the last reload refused |
//! | `GET /api/tenants` | tenants, each with its pipelines' status |
//! | `GET /api/pipelines/{tenant}/{pipeline}` | one pipeline's status |
//! | `POST /api/pipelines/{tenant}/{pipeline}/pause` | pause at the next batch boundary |
//! | `POST /api/pipelines/{tenant}/{pipeline}/resume` | resume |
//! | `POST /api/pipelines/{tenant}/{pipeline}/reload` | reload, with a new version of this one |
//! | `GET /api/pipelines/{tenant}/{pipeline}/dead-letters?n=20` | the last N dead letters with headers |
//! | `POST /api/pipelines/{tenant}/{pipeline}/dead-letters/replay` | re-produce dead letters to the source topic |
//! | `POST /api/pipelines/{tenant}/{pipeline}/ask` | ask a question pipeline, wait for its answer (`?stream=1`: watch it being written, [`ask_streamed`]) |
//! | `GET /`, `/console.js`, `/console.css` | the web console ([`super::console`]) |
//!
//! A `GET` outside `/api/` is the console's (a 404 for other paths): static
//! files, served without a token (they hold no data; the console asks for
//! the token when the API answers 401). Every response carries a strict
//! `Content-Security-Policy` and `X-Content-Type-Options: nosniff`.
//!
//! The API operates a [`Hosted`]: the pipelines of `weft serve` (a
//! [`Server`]) or those of a scenario `weft dev` runs
//! ([`super::scenario::Watch`]).
//!
//! Bound to a loopback address it needs no token (though one given is
//! checked); bound elsewhere it refuses to start without a token file, and
//! every request must carry `Authorization: Bearer <token>` (compared in
//! constant time).

use super::http::{Handler, HttpServer, Request, Response};
use super::serve::{PipelineTopics, ReloadReport, ServeStatus, ServedPipeline, Server};
use super::{Result, ServiceError};
use crate::stream::kafka::{self, is_dead_letter_header, NewRecord, ReadRecord, H_VALUE_BYTES};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// What the admin API operates: a set of running pipelines on one broker.
/// The API calls these from a blocking thread, so they may block.
pub trait Hosted: Send + Sync + 'static {
    /// Every pipeline's state and figures.
    fn status(&self) -> ServeStatus;
    /// The topics of `tenant/pipeline`, if it is hosted.
    fn topics(&self, tenant: &str, pipeline: &str) -> Option<PipelineTopics>;
    /// The brokers the pipelines run against (`None` until known: `weft
    /// dev` starts its broker after the API).
    fn brokers(&self) -> Option<String>;
    /// Pause `tenant/pipeline` at its next batch boundary.
    fn pause(&self, tenant: &str, pipeline: &str) -> Result<()>;
    /// Resume a paused pipeline.
    fn resume(&self, tenant: &str, pipeline: &str) -> Result<()>;
    /// Reload, with a new version of `tenant/pipeline`.
    fn reload_pipeline(&self, tenant: &str, pipeline: &str) -> Result<ReloadReport>;
}

impl Hosted for Server {
    fn status(&self) -> ServeStatus {
        Server::status(self)
    }
    fn topics(&self, tenant: &str, pipeline: &str) -> Option<PipelineTopics> {
        Server::topics(self, tenant, pipeline)
    }
    fn brokers(&self) -> Option<String> {
        Some(Server::brokers(self).to_string())
    }
    fn pause(&self, tenant: &str, pipeline: &str) -> Result<()> {
        Server::pause(self, tenant, pipeline)
    }
    fn resume(&self, tenant: &str, pipeline: &str) -> Result<()> {
        Server::resume(self, tenant, pipeline)
    }
    fn reload_pipeline(&self, tenant: &str, pipeline: &str) -> Result<ReloadReport> {
        Server::reload_pipeline(self, tenant, pipeline)
    }
}

/// How the admin API listens.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    pub addr: SocketAddr,
    /// The bearer token requests must carry (required off loopback).
    pub token: Option<String>,
}

impl AdminOptions {
    /// `addr`, with the token read from `token_file` if given. A
    /// non-loopback address without a token file is refused: the API can
    /// pause pipelines and read every tenant's dead letters.
    pub fn new(addr: SocketAddr, token_file: Option<&Path>) -> Result<AdminOptions> {
        let token = match token_file {
            Some(f) => {
                let t = std::fs::read_to_string(f).map_err(|e| {
                    ServiceError::io(format!("reading the admin token {}", f.display()), e)
                })?;
                let t = t.trim().to_string();
                if t.len() < 16 {
                    return Err(ServiceError::Input(format!(
                        "{}: the admin token must be at least 16 characters (it has {})",
                        f.display(),
                        t.len()
                    )));
                }
                Some(t)
            }
            None => None,
        };
        if token.is_none() && !addr.ip().is_loopback() {
            return Err(ServiceError::Input(format!(
                "--admin {addr} is not a loopback address: anyone who can reach it could pause \
                 pipelines and read dead letters, so give --admin-token-file FILE (a secret of at \
                 least 16 characters that clients send as `Authorization: Bearer ...`), or bind \
                 127.0.0.1"
            )));
        }
        Ok(AdminOptions { addr, token })
    }
}

/// A running admin API; dropping it stops it.
pub struct AdminServer {
    http: HttpServer,
}

impl AdminServer {
    /// Serves the API (and the console) for `server` on `opts.addr`.
    pub fn start<H: Hosted>(server: Arc<H>, opts: AdminOptions) -> Result<AdminServer> {
        let server: Arc<dyn Hosted> = server;
        let token = opts.token.map(|t| Sha256::digest(t.as_bytes()).to_vec());
        let handler: Handler = Arc::new(move |req: Request| {
            let server = server.clone();
            let token = token.clone();
            Box::pin(async move {
                let mut r = if let Some(asset) = console_asset(&req) {
                    asset
                } else if token.as_ref().is_some_and(|t| !authorized(&req, t)) {
                    let mut r = Response::error(401, "missing or wrong bearer token");
                    r.headers.push(("www-authenticate", "Bearer".to_string()));
                    r
                } else {
                    route(server, req).await
                };
                super::console::secure(&mut r);
                r
            })
        });
        Ok(AdminServer {
            http: HttpServer::start("admin", opts.addr, handler)?,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.http.addr()
    }
}

/// The console file a `GET` outside `/api/` asks for (`None` for the API).
fn console_asset(req: &Request) -> Option<Response> {
    if req.method != http::Method::GET || req.path == "/api" || req.path.starts_with("/api/") {
        return None;
    }
    Some(super::console::asset(&req.path))
}

/// Whether the request carries the token whose SHA-256 is `want`
/// (digests compared in constant time, so neither the token's bytes nor
/// its length leak through timing).
fn authorized(req: &Request, want: &[u8]) -> bool {
    let Some(v) = req
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(given) = v.strip_prefix("Bearer ") else {
        return false;
    };
    let got = Sha256::digest(given.trim().as_bytes());
    got.as_slice().ct_eq(want).into()
}

/// A blocking call on the server (its methods wait on its own runtime).
async fn on_server<T: Send + 'static>(
    server: &Arc<dyn Hosted>,
    f: impl FnOnce(&dyn Hosted) -> T + Send + 'static,
) -> std::result::Result<T, Response> {
    let s = server.clone();
    tokio::task::spawn_blocking(move || f(s.as_ref()))
        .await
        .map_err(|e| Response::error(500, &format!("the request's worker failed: {e}")))
}

fn service_error(e: &ServiceError) -> Response {
    let status = match e {
        ServiceError::NotFound(_) => 404,
        ServiceError::Input(_) => 400,
        _ => 500,
    };
    Response::error(status, &e.to_string())
}

async fn route(server: Arc<dyn Hosted>, req: Request) -> Response {
    let parts: Vec<&str> = req
        .path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let get = req.method == http::Method::GET;
    let post = req.method == http::Method::POST;
    let r = match parts.as_slice() {
        ["api", "status"] if get => status(&server).await,
        ["api", "tenants"] if get => tenants(&server).await,
        ["api", "pipelines", t, p] if get => one(&server, t, p).await,
        ["api", "pipelines", t, p, "pause"] if post => hold(&server, t, p, true).await,
        ["api", "pipelines", t, p, "resume"] if post => hold(&server, t, p, false).await,
        ["api", "pipelines", t, p, "reload"] if post => reload(&server, t, p).await,
        ["api", "pipelines", t, p, "dead-letters"] if get => {
            dead_letters(&server, t, p, &req).await
        }
        ["api", "pipelines", t, p, "dead-letters", "replay"] if post => {
            replay(&server, t, p, &req).await
        }
        ["api", "pipelines", t, p, "ask"] if post => ask(&server, t, p, &req).await,
        ["api", ..] => Err(Response::error(
            if get || post { 404 } else { 405 },
            &format!("no endpoint {} {}", req.method, req.path),
        )),
        _ => Err(Response::error(
            404,
            "the admin API is under /api/ (the console is at /)",
        )),
    };
    r.unwrap_or_else(|e| e)
}

type Answer = std::result::Result<Response, Response>;

async fn status(server: &Arc<dyn Hosted>) -> Answer {
    let s = on_server(server, |s| s.status()).await?;
    Ok(Response::json(200, &s))
}

#[derive(Serialize)]
struct Tenant {
    tenant: String,
    pipelines: Vec<ServedPipeline>,
}

async fn tenants(server: &Arc<dyn Hosted>) -> Answer {
    let s = on_server(server, |s| s.status()).await?;
    let mut by: BTreeMap<String, Vec<ServedPipeline>> = BTreeMap::new();
    for p in s.pipelines {
        by.entry(p.tenant.clone()).or_default().push(p);
    }
    let list: Vec<Tenant> = by
        .into_iter()
        .map(|(tenant, pipelines)| Tenant { tenant, pipelines })
        .collect();
    Ok(Response::json(
        200,
        &serde_json::json!({ "tenants": list, "refused": s.refused }),
    ))
}

async fn find(
    server: &Arc<dyn Hosted>,
    t: &str,
    p: &str,
) -> std::result::Result<ServedPipeline, Response> {
    let (t, p) = (t.to_string(), p.to_string());
    let s = on_server(server, |s| s.status()).await?;
    s.pipelines
        .into_iter()
        .find(|x| x.tenant == t && x.figures.pipeline == p)
        .ok_or_else(|| {
            Response::error(
                404,
                &format!("no pipeline `{p}` of tenant `{t}` is hosted here"),
            )
        })
}

async fn one(server: &Arc<dyn Hosted>, t: &str, p: &str) -> Answer {
    Ok(Response::json(200, &find(server, t, p).await?))
}

async fn hold(server: &Arc<dyn Hosted>, t: &str, p: &str, pause: bool) -> Answer {
    let (tt, pp) = (t.to_string(), p.to_string());
    on_server(server, move |s| {
        if pause {
            s.pause(&tt, &pp)
        } else {
            s.resume(&tt, &pp)
        }
    })
    .await?
    .map_err(|e| service_error(&e))?;
    Ok(Response::json(
        200,
        &serde_json::json!({
            "tenant": t, "pipeline": p,
            "paused": pause,
            "note": "takes effect at the next batch boundary (the batch in flight is committed first)",
        }),
    ))
}

async fn reload(server: &Arc<dyn Hosted>, t: &str, p: &str) -> Answer {
    let (tt, pp) = (t.to_string(), p.to_string());
    let report = on_server(server, move |s| s.reload_pipeline(&tt, &pp))
        .await?
        .map_err(|e| service_error(&e))?;
    Ok(Response::json(200, &report))
}

async fn topics(
    server: &Arc<dyn Hosted>,
    t: &str,
    p: &str,
) -> std::result::Result<(PipelineTopics, String), Response> {
    let (tt, pp) = (t.to_string(), p.to_string());
    on_server(server, move |s| s.topics(&tt, &pp).zip(s.brokers()))
        .await?
        .ok_or_else(|| {
            Response::error(
                404,
                &format!("no pipeline `{p}` of tenant `{t}` is hosted here"),
            )
        })
}

/// A dead letter as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetterView {
    /// Where it is in the dead-letter topic.
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    /// Key and value as UTF-8 (invalid bytes replaced; `value_bytes` is
    /// the real length).
    pub key: Option<String>,
    pub value: Option<String>,
    pub value_bytes: usize,
    /// Every header, weft's (`weft.error.*`, `weft.source.*`,
    /// `weft.pipeline`) and the record's own.
    pub headers: Vec<(String, String)>,
    /// `weft.error.stage`, `weft.error.kind`, `weft.error.message`.
    pub stage: Option<String>,
    pub kind: Option<String>,
    pub message: Option<String>,
}

impl DeadLetterView {
    fn of(r: &ReadRecord) -> DeadLetterView {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let header = |k: &str| r.headers.iter().find(|(h, _)| h == k).map(|(_, v)| text(v));
        DeadLetterView {
            partition: r.partition,
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key.as_deref().map(text),
            value: r.value.as_deref().map(text),
            value_bytes: r.value.as_ref().map_or(0, Vec::len),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), text(v)))
                .collect(),
            stage: header(kafka::H_STAGE),
            kind: header(kafka::H_KIND),
            message: header(kafka::H_MESSAGE),
        }
    }
}

/// Most dead letters one request returns.
pub const MAX_TAIL: usize = 1000;

async fn dead_letters(server: &Arc<dyn Hosted>, t: &str, p: &str, req: &Request) -> Answer {
    let n = match req.param("n") {
        None => 20,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| Response::error(400, &format!("n={v:?} is not a count")))?,
    }
    .min(MAX_TAIL);
    let (topics, brokers) = topics(server, t, p).await?;
    let records = kafka::tail_topic(&brokers, &topics.dead_letters, n)
        .await
        .map_err(|e| Response::error(502, &e.to_string()))?;
    let list: Vec<DeadLetterView> = records.iter().map(DeadLetterView::of).collect();
    Ok(Response::json(
        200,
        &serde_json::json!({ "topic": topics.dead_letters, "dead_letters": list }),
    ))
}

/// What to replay: chosen positions in the dead-letter topic, or all.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    #[serde(default)]
    pub offsets: Vec<Position>,
    #[serde(default)]
    pub all: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

async fn replay(server: &Arc<dyn Hosted>, t: &str, p: &str, req: &Request) -> Answer {
    let ask: ReplayRequest = serde_json::from_slice(&req.body).map_err(|e| {
        Response::error(
            400,
            &format!("the body must be {{\"offsets\": [{{\"partition\": P, \"offset\": O}}, ...]}} or {{\"all\": true}}: {e}"),
        )
    })?;
    // Exactly one of the two: `all` with no offsets, or offsets alone.
    if ask.all != ask.offsets.is_empty() {
        return Err(Response::error(
            400,
            "name the dead letters to replay (`offsets`) or ask for `all`, not both or neither",
        ));
    }
    let (topics, brokers) = topics(server, t, p).await?;
    let only: Vec<(i32, i64)> = ask
        .offsets
        .iter()
        .map(|x| (x.partition, x.offset))
        .collect();
    let found = kafka::read_records(
        &brokers,
        &topics.dead_letters,
        (!ask.all).then_some(only.as_slice()),
    )
    .await
    .map_err(|e| Response::error(502, &e.to_string()))?;
    if !ask.all {
        let missing: Vec<String> = only
            .iter()
            .filter(|(pp, o)| !found.iter().any(|r| r.partition == *pp && r.offset == *o))
            .map(|(pp, o)| format!("{pp}:{o}"))
            .collect();
        if !missing.is_empty() {
            return Err(Response::error(
                404,
                &format!(
                    "no dead letter at {} in {}",
                    missing.join(", "),
                    topics.dead_letters
                ),
            ));
        }
    }
    // A dead letter whose value was cut to fit the topic cannot be
    // replayed: the record it stands for is gone.
    let (trimmed, whole): (Vec<&ReadRecord>, Vec<&ReadRecord>) = found
        .iter()
        .partition(|r| r.headers.iter().any(|(k, _)| k == H_VALUE_BYTES));
    let records: Vec<NewRecord> = whole
        .iter()
        .map(|r| NewRecord {
            topic: topics.source.clone(),
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .filter(|(k, _)| !is_dead_letter_header(k))
                .cloned()
                .collect(),
        })
        .collect();
    let n = records.len();
    kafka::produce_records(&brokers, records)
        .await
        .map_err(|e| Response::error(502, &e.to_string()))?;
    let pos = |r: &&ReadRecord| Position {
        partition: r.partition,
        offset: r.offset,
    };
    Ok(Response::json(
        200,
        &serde_json::json!({
            "replayed": n,
            "to": topics.source,
            "records": whole.iter().map(pos).collect::<Vec<_>>(),
            "skipped_trimmed": trimmed.iter().map(pos).collect::<Vec<_>>(),
        }),
    ))
}

/// A question for [`ask`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    pub text: String,
    /// The question id (the record key); a fresh one by default.
    pub id: Option<String>,
    pub metadata: Option<serde_json::Value>,
    /// How long to wait for the answer (default 30 s, at most 5 minutes).
    pub timeout_ms: Option<u64>,
}

/// A question about to be asked: validated, with its id and record.
struct Asking {
    id: String,
    value: serde_json::Value,
    limit: Duration,
    topics: PipelineTopics,
    brokers: String,
    sink: String,
}

/// Checks an ask request against the pipeline it names.
async fn asking(
    server: &Arc<dyn Hosted>,
    t: &str,
    p: &str,
    req: &Request,
) -> std::result::Result<Asking, Response> {
    let q: AskRequest = serde_json::from_slice(&req.body).map_err(|e| {
        Response::error(
            400,
            &format!("the body must be {{\"text\": \"...\", \"id\"?, \"metadata\"?, \"timeout_ms\"?}}: {e}"),
        )
    })?;
    if q.text.trim().is_empty() {
        return Err(Response::error(400, "the question's text is empty"));
    }
    let (topics, brokers) = topics(server, t, p).await?;
    let Some(sink) = topics.sink.clone().filter(|_| topics.format == "question") else {
        return Err(Response::error(
            400,
            &format!(
                "pipeline `{t}/{p}` does not answer questions (its source is `{}` records{})",
                topics.format,
                if topics.sink.is_none() {
                    ", and it has no sink topic"
                } else {
                    ""
                }
            ),
        ));
    };
    let id =
        q.id.clone()
            .unwrap_or_else(|| format!("ask-{}-{:08x}", kafka::chrono_ms(), rand::random::<u32>()));
    let mut value = serde_json::json!({ "id": id, "text": q.text });
    if let Some(m) = q.metadata {
        value["metadata"] = m;
    }
    let limit = Duration::from_millis(q.timeout_ms.unwrap_or(30_000).min(300_000));
    Ok(Asking {
        id,
        value,
        limit,
        topics,
        brokers,
        sink,
    })
}

/// Produces the question of `a` to its pipeline's source topic.
async fn produce_question(a: &Asking) -> std::result::Result<(), Response> {
    kafka::produce_records(
        &a.brokers,
        vec![NewRecord {
            topic: a.topics.source.clone(),
            key: Some(a.id.clone().into_bytes()),
            value: Some(a.value.to_string().into_bytes()),
            headers: Vec::new(),
        }],
    )
    .await
    .map_err(|e| Response::error(502, &e.to_string()))
}

/// Where the answer and dead-letter topics (and with `pieces`, the answer
/// pieces topic) end before asking, so only what this question causes is
/// read.
async fn ends_before(a: &Asking, pieces: bool) -> std::result::Result<kafka::TopicEnds, Response> {
    let b = a.brokers.clone();
    let mut topics = vec![a.sink.clone(), a.topics.dead_letters.clone()];
    if pieces {
        topics.extend(a.topics.deltas.clone());
    }
    tokio::task::spawn_blocking(move || {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        kafka::topic_ends(&b, &names)
    })
    .await
    .map_err(|e| Response::error(500, &e.to_string()))?
    .map_err(|e| Response::error(502, &e.to_string()))
}

/// A record's value as JSON (as a string if it is not JSON).
fn value_json(r: &ReadRecord) -> serde_json::Value {
    r.value
        .as_deref()
        .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
        .unwrap_or_else(|| {
            serde_json::Value::String(
                String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned(),
            )
        })
}

/// `ask?stream=1`: the answer as it is written, one JSON object per line
/// (`application/x-ndjson`): `{"event":"asked","id"}`, then per piece of
/// the answer stream `{"event":"piece","seq","text","reset","stream","ms"}`
/// (a piece with `seq` 0 starts a new stream: drop what came before), then
/// one of `{"event":"answer","answer","latency_ms","first_piece_ms",
/// "pieces"}`, `{"event":"dead-letter","dead_letter"}` or
/// `{"event":"timeout"}`. `ms` count from the question's produce.
async fn ask_streamed(a: Asking) -> Answer {
    if a.topics.deltas.is_none() {
        return Err(Response::error(
            400,
            "this pipeline has no generator stage, so no answer stream: ask without `stream`",
        ));
    }
    let ends = ends_before(&a, true).await?;
    let t0 = Instant::now();
    produce_question(&a).await?;
    let mut records = kafka::keyed_records(&a.brokers, &ends, a.id.as_bytes(), a.limit)
        .map_err(|e| Response::error(502, &e.to_string()))?;
    let (tx, pieces) = super::http::Pieces::channel(64);
    let line = |v: serde_json::Value| {
        let mut b = v.to_string().into_bytes();
        b.push(b'\n');
        bytes::Bytes::from(b)
    };
    let first = line(serde_json::json!({"event": "asked", "id": a.id}));
    tokio::spawn(async move {
        let deltas = a.topics.deltas.clone().unwrap_or_default();
        let mut first_piece: Option<u64> = None;
        let mut n = 0u32;
        // The final piece is on its topic before the answer is on its
        // own, but one reader may fetch the two topics in either order: an
        // answer that comes first waits (briefly) for the final piece.
        let mut answer: Option<(serde_json::Value, u64)> = None;
        let answered = |v: serde_json::Value, ms: u64, first: Option<u64>, n: u32| {
            serde_json::json!({"event": "answer", "id": a.id, "answer": v,
                "latency_ms": ms, "first_piece_ms": first, "pieces": n})
        };
        let mut ended = false;
        let end = loop {
            let wait = if answer.is_some() {
                Duration::from_secs(5)
            } else {
                Duration::MAX
            };
            let got = tokio::time::timeout(wait, records.recv())
                .await
                .unwrap_or_default();
            let Some((topic, r)) = got else {
                if let Some((v, ms)) = answer.take() {
                    break answered(v, ms, first_piece, n);
                }
                break serde_json::json!({"event": "timeout", "error": format!(
                    "no answer on {} within {} ms (the question stays on {}; its answer may still come)",
                    a.sink, a.limit.as_millis(), a.topics.source)});
            };
            let ms = t0.elapsed().as_millis() as u64;
            if topic == deltas {
                let Ok(d) = serde_json::from_slice::<crate::runtime::Delta>(
                    r.value.as_deref().unwrap_or_default(),
                ) else {
                    continue;
                };
                if d.seq == 0 {
                    n = 0;
                }
                n += 1;
                ended = d.last;
                if !d.last && first_piece.is_none() {
                    first_piece = Some(ms);
                }
                let v = serde_json::json!({"event": "piece", "seq": d.seq, "text": d.text,
                    "reset": d.reset, "final": d.last, "error": d.error, "stream": d.stream, "ms": ms});
                if tx.send(line(v)).await.is_err() {
                    return;
                }
            } else if topic == a.sink {
                answer = Some((value_json(&r), ms));
            } else {
                break serde_json::json!({"event": "dead-letter", "id": a.id,
                    "error": "the question was dead-lettered", "dead_letter": DeadLetterView::of(&r)});
            }
            if ended {
                if let Some((v, ms)) = answer.take() {
                    break answered(v, ms, first_piece, n);
                }
            }
        };
        let _ = tx.send(line(end)).await;
    });
    let mut r = Response::streamed("application/x-ndjson", pieces);
    r.body = first.to_vec();
    Ok(r)
}

async fn ask(server: &Arc<dyn Hosted>, t: &str, p: &str, req: &Request) -> Answer {
    let a = asking(server, t, p, req).await?;
    if req
        .param("stream")
        .is_some_and(|v| v != "0" && v != "false")
    {
        return ask_streamed(a).await;
    }
    let ends = ends_before(&a, false).await?;
    let (id, sink, limit) = (a.id.clone(), a.sink.clone(), a.limit);
    let t0 = Instant::now();
    produce_question(&a).await?;
    let got = kafka::await_key(&a.brokers, &ends, id.as_bytes(), limit)
        .await
        .map_err(|e| Response::error(502, &e.to_string()))?;
    let latency_ms = t0.elapsed().as_millis() as u64;
    match got {
        Some((topic, r)) if topic == sink => {
            let answer = value_json(&r);
            Ok(Response::json(
                200,
                &serde_json::json!({ "id": id, "latency_ms": latency_ms, "answer": answer }),
            ))
        }
        Some((_, r)) => Ok(Response::json(
            422,
            &serde_json::json!({
                "id": id,
                "error": "the question was dead-lettered",
                "dead_letter": DeadLetterView::of(&r),
            }),
        )),
        None => Ok(Response::json(
            504,
            &serde_json::json!({
                "id": id,
                "error": format!("no answer on {sink} within {} ms (the question stays on {}; its answer may still come)", limit.as_millis(), a.topics.source),
            }),
        )),
    }
}

/// Why a call to the admin API failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    #[error(transparent)]
    Http(#[from] super::http::ClientError),
    /// The API answered with an error status.
    #[error("{url}: {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url}: the answer is not the JSON expected: {source}")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("starting tokio: {0}")]
    Runtime(#[source] std::io::Error),
}

/// The admin API as `weft status` and `weft dlq` call it (blocking).
pub struct AdminClient {
    base: String,
    token: Option<String>,
    timeout: Duration,
}

impl AdminClient {
    /// `base`: `http://host:port`; `token`: sent as a bearer token.
    pub fn new(base: &str, token: Option<String>) -> AdminClient {
        AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            timeout: Duration::from_secs(60),
        }
    }

    fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> std::result::Result<T, AdminClientError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(AdminClientError::Runtime)?;
        let r = rt.block_on(super::http::request(
            &self.base,
            method,
            path,
            self.token.as_deref(),
            body.map(|b| b.to_string().into_bytes()),
            self.timeout,
        ))?;
        let url = format!("{}{path}", self.base);
        if r.status != 200 {
            let message = serde_json::from_slice::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&r.body).into_owned());
            return Err(AdminClientError::Status {
                url,
                status: r.status,
                message,
            });
        }
        serde_json::from_slice(&r.body).map_err(|source| AdminClientError::Decode { url, source })
    }

    /// `GET /api/status`.
    pub fn status(&self) -> std::result::Result<serde_json::Value, AdminClientError> {
        self.call(http::Method::GET, "/api/status", None)
    }

    /// `GET /api/pipelines/{t}/{p}/dead-letters?n=N`.
    pub fn dead_letters(
        &self,
        tenant: &str,
        pipeline: &str,
        n: usize,
    ) -> std::result::Result<Vec<DeadLetterView>, AdminClientError> {
        #[derive(Deserialize)]
        struct Tail {
            dead_letters: Vec<DeadLetterView>,
        }
        let t: Tail = self.call(
            http::Method::GET,
            &format!(
                "/api/pipelines/{}/{}/dead-letters?n={n}",
                seg(tenant),
                seg(pipeline)
            ),
            None,
        )?;
        Ok(t.dead_letters)
    }

    /// `POST /api/pipelines/{t}/{p}/dead-letters/replay`: `offsets` or all.
    pub fn replay(
        &self,
        tenant: &str,
        pipeline: &str,
        offsets: Option<&[Position]>,
    ) -> std::result::Result<serde_json::Value, AdminClientError> {
        let body = match offsets {
            Some(o) => serde_json::json!({ "offsets": o }),
            None => serde_json::json!({ "all": true }),
        };
        self.call(
            http::Method::POST,
            &format!(
                "/api/pipelines/{}/{}/dead-letters/replay",
                seg(tenant),
                seg(pipeline)
            ),
            Some(body),
        )
    }
}

/// A path segment, percent-encoded.
fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
