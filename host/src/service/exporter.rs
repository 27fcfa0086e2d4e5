//! `--metrics ADDR`: the Prometheus endpoint of a running `weft run`,
//! `serve` or `dev`. `GET /metrics` renders the host's registry (see
//! [`crate::metrics`]) and the figures of the indexes it writes, read at
//! scrape time.

use super::http::{Handler, HttpServer, Request, Response};
use super::{Result, Scraper};
use crate::metrics::CONTENT_TYPE;
use std::net::SocketAddr;
use std::sync::Arc;

/// A running metrics endpoint; dropping it stops it.
pub struct MetricsEndpoint {
    http: HttpServer,
}

impl MetricsEndpoint {
    /// Listens on `addr` (port 0: any free port, see [`MetricsEndpoint::addr`]).
    pub fn start(addr: SocketAddr, scraper: Scraper) -> Result<MetricsEndpoint> {
        let handler: Handler = Arc::new(move |req: Request| {
            let scraper = scraper.clone();
            Box::pin(async move {
                if req.method != http::Method::GET {
                    return Response::error(405, "the metrics endpoint only answers GET");
                }
                if req.path != "/metrics" && req.path != "/" {
                    return Response::error(404, "the metrics are at /metrics");
                }
                // Index figures are LMDB reads: off the reactor.
                match tokio::task::spawn_blocking(move || scraper.scrape()).await {
                    Ok(text) => Response::text(200, CONTENT_TYPE, text),
                    Err(e) => Response::error(500, &format!("rendering the metrics: {e}")),
                }
            })
        });
        Ok(MetricsEndpoint {
            http: HttpServer::start("metrics", addr, handler)?,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.http.addr()
    }
}
