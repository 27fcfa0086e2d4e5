//! A small HTTP/1.1 server and client on hyper (already in the build for
//! the plugins' outbound HTTP), for the metrics endpoint, the admin API and
//! the commands that call it. Each server runs on its own thread and tokio
//! runtime, so a slow request (an answer being awaited) never competes with
//! the pipelines' runtime, and a handler may call blocking service
//! functions through `spawn_blocking`.

use super::{Result, ServiceError};
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use wasmtime_wasi_http::io::TokioIo;

/// Request bodies larger than this are refused (413): the API takes small
/// JSON documents only.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// A request as handlers see it: the body already read.
#[derive(Debug)]
pub struct Request {
    pub method: http::Method,
    /// The path, percent-decoded, without the query.
    pub path: String,
    /// `name=value` pairs of the query string.
    pub query: Vec<(String, String)>,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Request {
    /// The first query parameter named `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response: status, content type and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Extra headers (e.g. `WWW-Authenticate`).
    pub headers: Vec<(&'static str, String)>,
    /// More of the body, sent as it comes after `body` (a streamed
    /// answer); the response ends when the sender is dropped.
    pub stream: Option<Pieces>,
}

/// The receiving end of a streamed body (taken once, when the response is
/// sent).
#[derive(Debug, Clone)]
pub struct Pieces(Arc<std::sync::Mutex<Option<mpsc::Receiver<Bytes>>>>);

impl Pieces {
    /// A body sent piece by piece: what goes into the sender, until it is
    /// dropped. At most `capacity` pieces wait for a slow client.
    pub fn channel(capacity: usize) -> (mpsc::Sender<Bytes>, Pieces) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, Pieces(Arc::new(std::sync::Mutex::new(Some(rx)))))
    }

    fn take(&self) -> Option<mpsc::Receiver<Bytes>> {
        self.0.lock().ok().and_then(|mut r| r.take())
    }
}

/// A response body: whole, or its first bytes and then pieces as they come.
pub enum Body {
    Whole(Option<Bytes>),
    Streamed(Option<Bytes>, mpsc::Receiver<Bytes>),
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<http_body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        match self.get_mut() {
            Body::Whole(b) => Poll::Ready(b.take().map(|b| Ok(http_body::Frame::data(b)))),
            Body::Streamed(first, rx) => match first.take() {
                Some(b) if !b.is_empty() => Poll::Ready(Some(Ok(http_body::Frame::data(b)))),
                _ => rx
                    .poll_recv(cx)
                    .map(|o| o.map(|b| Ok(http_body::Frame::data(b)))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Whole(None))
    }

    /// Exact for a whole body, so it is sent with a `Content-Length`
    /// (a streamed one goes chunked).
    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Body::Whole(b) => {
                http_body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            Body::Streamed(..) => http_body::SizeHint::default(),
        }
    }
}

impl Response {
    pub fn json(status: u16, value: &impl serde::Serialize) -> Response {
        match serde_json::to_vec_pretty(value) {
            Ok(body) => Response {
                status,
                content_type: "application/json",
                body,
                headers: Vec::new(),
                stream: None,
            },
            Err(e) => Response::error(500, &format!("encoding the response: {e}")),
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, &serde_json::json!({ "error": message }))
    }

    pub fn text(status: u16, content_type: &'static str, body: String) -> Response {
        Response {
            status,
            content_type,
            body: body.into_bytes(),
            headers: Vec::new(),
            stream: None,
        }
    }

    /// A `200` whose body is what `pieces` receives, sent as it comes.
    pub fn streamed(content_type: &'static str, pieces: Pieces) -> Response {
        Response {
            status: 200,
            content_type,
            body: Vec::new(),
            headers: Vec::new(),
            stream: Some(pieces),
        }
    }
}

/// What serves requests.
pub type Handler = Arc<dyn Fn(Request) -> BoxFuture<'static, Response> + Send + Sync>;

/// A running server; stopping (or dropping) it closes the listener and
/// ends its thread.
pub struct HttpServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `addr` now (so a taken port is an error here, not later) and
    /// serves every connection with `handler` on a thread named `name`.
    pub fn start(name: &str, addr: SocketAddr, handler: Handler) -> Result<HttpServer> {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| ServiceError::io(format!("{name}: listening on {addr}"), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| ServiceError::io(format!("{name}: {addr}"), e))?;
        let bound = listener
            .local_addr()
            .map_err(|e| ServiceError::io(format!("{name}: {addr}"), e))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("weft-{name}"))
            .enable_all()
            .build()
            .map_err(|e| ServiceError::io(format!("{name}: starting tokio"), e))?;
        let (stop, mut stop_rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name(format!("weft-{name}"))
            .spawn(move || {
                // The loop serves with clones; the last reference is
                // dropped here, outside the runtime, since what it holds
                // (a `Server` and its runtime) may not be dropped in an
                // async context.
                let outer = handler.clone();
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!("http server: {e}");
                            return;
                        }
                    };
                    loop {
                        tokio::select! {
                            _ = stop_rx.changed() => break,
                            accepted = listener.accept() => {
                                let Ok((stream, _)) = accepted else { continue };
                                let handler = handler.clone();
                                tokio::spawn(async move {
                                    let service = hyper::service::service_fn(move |req| {
                                        let handler = handler.clone();
                                        async move {
                                            Ok::<_, std::convert::Infallible>(respond(handler, req).await)
                                        }
                                    });
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await;
                                });
                            }
                        }
                    }
                });
                // Requests still in flight (an answer awaited) are dropped.
                rt.shutdown_timeout(Duration::from_millis(500));
                drop(outer);
            })
            .map_err(|e| ServiceError::io(format!("{name}: starting its thread"), e))?;
        Ok(HttpServer {
            addr: bound,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on (the port, when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

async fn respond(
    handler: Handler,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Body> {
    let (parts, body) = req.into_parts();
    let r = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(b) => {
            let query = parts
                .uri
                .query()
                .map(|q| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect()
                })
                .unwrap_or_default();
            handler(Request {
                method: parts.method,
                path: percent_decode(parts.uri.path()),
                query,
                headers: parts.headers,
                body: b.to_bytes(),
            })
            .await
        }
        Err(e) => Response::error(413, &format!("reading the request body: {e}")),
    };
    let mut b = hyper::Response::builder()
        .status(r.status)
        .header(http::header::CONTENT_TYPE, r.content_type)
        .header(http::header::CACHE_CONTROL, "no-store");
    for (k, v) in &r.headers {
        b = b.header(*k, v);
    }
    let first = Some(Bytes::from(r.body));
    let body = match r.stream.as_ref().and_then(Pieces::take) {
        Some(rx) => Body::Streamed(first, rx),
        None => Body::Whole(first),
    };
    b.body(body).unwrap_or_else(|_| {
        let mut resp = hyper::Response::new(Body::Whole(Some(Bytes::from_static(b"bad response"))));
        *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        resp
    })
}

/// Why a request to a weft endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`{0}` is not an http:// URL with a host and port")]
    Url(String),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Http {
        what: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{0}")]
    Request(String),
    #[error("no answer from {0} within the timeout")]
    Timeout(String),
}

/// A response as a client sees it.
#[derive(Debug)]
pub struct ClientResponse {
    pub status: u16,
    pub body: Bytes,
}

/// One request to `base` (`http://host:port`) + `path`, with a bearer
/// token if given, waiting at most `timeout` for the whole exchange.
pub async fn request(
    base: &str,
    method: http::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> std::result::Result<ClientResponse, ClientError> {
    let url = url::Url::parse(base).map_err(|_| ClientError::Url(base.to_string()))?;
    let (Some(host), Some(port), "http") =
        (url.host_str(), url.port_or_known_default(), url.scheme())
    else {
        return Err(ClientError::Url(base.to_string()));
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let authority = format!("{}:{port}", url.host_str().unwrap_or_default());
    let exchange = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|source| ClientError::Connect {
                addr: authority.clone(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ClientError::Http {
                what: format!("talking to {authority}"),
                source,
            })?;
        let conn = tokio::spawn(conn);
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &authority);
        if let Some(t) = token {
            b = b.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            b = b.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = b
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Request(format!("building the request for {path}: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|source| ClientError::Http {
                what: format!("{path} on {authority}"),
                source,
            })?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|source| ClientError::Http {
                what: format!("reading the answer of {authority}{path}"),
                source,
            })?
            .to_bytes();
        conn.abort();
        Ok(ClientResponse { status, body })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ClientError::Timeout(format!("{base}{path}")))?
}
