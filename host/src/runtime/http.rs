//! Outbound HTTP for plugins: the standard `wasi:http/outgoing-handler`, with
//! every request checked against the stage's granted hosts (scheme, host and
//! port must all match, hosts compared in canonical form) and bounded by the
//! stage's timeout, because an epoch deadline cannot interrupt a guest that
//! is blocked inside a host call.
//!
//! A granted *name* is resolved when the request is made, and refused if
//! it leads to an internal or forbidden address (a public name pointing at
//! 127.0.0.1 or 169.254.169.254, as wildcard DNS services do): internal
//! addresses are reachable only through a literal the operator's policy
//! named. The connection itself resolves the name again, so a name whose
//! answer changes between the two lookups (DNS rebinding with a zero TTL)
//! is not fully covered; the window is the time between them.

use crate::manifest::{HostGrant, Stage};
use crate::net::{canonical_host, is_ip_literal, reach_of_host, reach_of_ip, Reach};
use std::future::Future;
use std::time::Duration;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

pub struct OutboundPolicy {
    allowed: Vec<HostGrant>,
    timeout: Duration,
    stage: String,
}

impl OutboundPolicy {
    pub fn new(stage: &Stage) -> OutboundPolicy {
        OutboundPolicy {
            allowed: stage.grants.outbound_hosts.clone(),
            timeout: Duration::from_millis(stage.limits.timeout_ms),
            stage: stage.name.clone(),
        }
    }

    /// The granted `(canonical host, port)` the request is for, if any.
    fn granted(&self, uri: &http::Uri) -> Option<(String, u16)> {
        let scheme = uri.scheme_str().unwrap_or("https");
        let host = canonical_host(uri.host()?);
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        self.allowed
            .iter()
            .any(|g| g.scheme == scheme && g.host == host && g.port == port)
            .then_some((host, port))
    }
}

/// Why a granted host may not be reached now, if it may not: a forbidden
/// literal, or a name that resolves to an address its own kind does not
/// allow (a public name to anything but public addresses; `localhost` to
/// anything but internal ones).
async fn refused(host: &str, port: u16) -> Option<String> {
    let written = reach_of_host(host);
    if let Reach::Forbidden(what) = written {
        return Some(format!("{host} is {what}"));
    }
    if is_ip_literal(host) {
        return None;
    }
    let addrs = match tokio::net::lookup_host((host, port)).await {
        Ok(a) => a.collect::<Vec<_>>(),
        Err(e) => return Some(format!("cannot resolve {host}: {e}")),
    };
    for a in addrs {
        match (reach_of_ip(a.ip()), written) {
            (Reach::Public, Reach::Public) | (Reach::Internal(_), Reach::Internal(_)) => {}
            (Reach::Forbidden(what), _) | (Reach::Internal(what), _) => {
                return Some(format!("{host} resolves to {}, {what}", a.ip()))
            }
            (Reach::Public, _) => {
                return Some(format!("{host} resolves to a public address {}", a.ip()))
            }
        }
    }
    None
}

type SendFuture = Box<
    dyn std::future::Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let Some((host, port)) = self.granted(request.uri()) else {
            tracing::warn!(
                stage = %self.stage,
                "denied outbound HTTP to {} (not in grants.outbound_hosts)",
                request.uri()
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        };
        let timeout = self.timeout;
        let stage = self.stage.clone();
        Box::new(async move {
            use http_body_util::BodyExt;
            // One deadline for the whole exchange: the lookup, the headers
            // and the body, however slowly a server trickles it.
            let deadline = tokio::time::Instant::now() + timeout;
            let why = tokio::time::timeout_at(deadline, refused(&host, port))
                .await
                .map_err(|_| HttpError::ConnectionTimeout)?;
            if let Some(why) = why {
                tracing::warn!(stage = %stage, "denied outbound HTTP to {}: {why}", request.uri());
                return Err(HttpError::HttpRequestDenied);
            }
            let send = wasmtime_wasi_http::default_send_request(request, options);
            let (res, io) = tokio::time::timeout_at(deadline, send)
                .await
                .map_err(|_| HttpError::ConnectionTimeout)??;
            Ok((
                res.map(|body| {
                    DeadlineBody {
                        inner: body.boxed_unsync(),
                        deadline: Box::pin(tokio::time::sleep_until(deadline)),
                    }
                    .boxed_unsync()
                }),
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
}

/// A response body that fails with a read timeout once the call's deadline
/// has passed: the headers arriving in time must not let a server hold the
/// plugin (and its worker) by sending the body one byte at a time.
struct DeadlineBody {
    inner: WasiBody,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)));
        }
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
