//! Outbound HTTP for plugins: the standard `wasi:http/outgoing-handler`, with
//! every request checked against the stage's granted hosts (scheme, host and
//! port must all match) and bounded by the stage's timeout, because an epoch
//! deadline cannot interrupt a guest that is blocked inside a host call.

use crate::manifest::{HostGrant, Stage};
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

    fn allows(&self, uri: &http::Uri) -> bool {
        let scheme = uri.scheme_str().unwrap_or("https");
        let Some(host) = uri.host() else {
            return false;
        };
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        self.allowed
            .iter()
            .any(|g| g.scheme == scheme && g.host.eq_ignore_ascii_case(host) && g.port == port)
    }
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
        if !self.allows(request.uri()) {
            tracing::warn!(
                stage = %self.stage,
                "denied outbound HTTP to {} (not in grants.outbound_hosts)",
                request.uri()
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let timeout = self.timeout;
        Box::new(async move {
            use http_body_util::BodyExt;
            let send = wasmtime_wasi_http::default_send_request(request, options);
            let (res, io) = tokio::time::timeout(timeout, send)
                .await
                .map_err(|_| HttpError::ConnectionTimeout)??;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
}
