//! A blocking JSON POST over `wasi:http/outgoing-handler` (wasm only).
//!
//! This file is shared verbatim by `openai-generator` and `openai-embedder`.

use crate::endpoint::{Endpoint, HttpScheme};
use crate::failure::{classify_transport, Failure, Transport};
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingResponse, Method, OutgoingBody, OutgoingRequest,
    RequestOptions, Scheme,
};
use wasi::io::streams::StreamError;

/// Responses larger than this are refused rather than exhausting the
/// instance's memory (a large embedding batch is a few MiB).
pub const MAX_RESPONSE_BYTES: usize = 32 << 20;

/// The most `blocking-write-and-flush` accepts in one call.
const WRITE_CHUNK: usize = 4096;

/// A received response.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// POSTs `body` as JSON to `ep`, with the extra `headers`, and reads the whole
/// response. `timeout_ms` bounds connecting, the first byte and each gap
/// between bytes (the host's stage timeout still bounds the whole call).
pub fn post_json(
    ep: &Endpoint,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
    timeout_ms: Option<u64>,
) -> Result<Response, Failure> {
    post_json_streaming(ep, headers, body, timeout_ms, None)
}

/// [`post_json`], handing a successful (2xx) response's body to `on_chunk`
/// piece by piece as it arrives instead of keeping it (a streamed
/// completion, `text/event-stream`); `Response::body` is then empty. An
/// error response is read whole as usual, for its message.
pub fn post_json_streaming(
    ep: &Endpoint,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
    timeout_ms: Option<u64>,
    on_chunk: Option<&mut dyn FnMut(&[u8])>,
) -> Result<Response, Failure> {
    let url = ep.url();
    let origin = ep.origin();
    let fail = |code: ErrorCode| classify_transport(transport(&code), &url, &origin);

    let mut all: Vec<(String, Vec<u8>)> = vec![
        ("content-type".to_string(), b"application/json".to_vec()),
        (
            "accept".to_string(),
            if on_chunk.is_some() {
                b"text/event-stream".to_vec()
            } else {
                b"application/json".to_vec()
            },
        ),
        // An explicit length lets servers that do not take chunked request
        // bodies (some local model servers) read the request.
        (
            "content-length".to_string(),
            body.len().to_string().into_bytes(),
        ),
    ];
    all.extend_from_slice(headers);
    let fields = Fields::from_list(&all)
        .map_err(|e| Failure::config(format!("invalid request header: {e:?}")))?;
    let req = OutgoingRequest::new(fields);
    let scheme = match ep.scheme {
        HttpScheme::Http => Scheme::Http,
        HttpScheme::Https => Scheme::Https,
    };
    req.set_method(&Method::Post)
        .and_then(|()| req.set_scheme(Some(&scheme)))
        .and_then(|()| req.set_authority(Some(&ep.authority)))
        .and_then(|()| req.set_path_with_query(Some(&ep.path)))
        .map_err(|()| Failure::config(format!("cannot build a request for {url}")))?;
    let out_body = req
        .body()
        .map_err(|()| Failure::internal("cannot open the request body"))?;
    let options = timeout_ms.map(|ms| {
        let o = RequestOptions::new();
        let ns = ms.saturating_mul(1_000_000);
        // An error only means the host does not support that timeout; its
        // own stage timeout still applies, so there is nothing to do.
        let _ = o.set_connect_timeout(Some(ns));
        let _ = o.set_first_byte_timeout(Some(ns));
        let _ = o.set_between_bytes_timeout(Some(ns));
        o
    });

    // Send first, then stream the body: the host buffers only a couple of
    // body chunks until the request is on its way, so writing a large body
    // before `handle` would wait forever.
    let future = outgoing_handler::handle(req, options).map_err(fail)?;
    let written =
        write_body(out_body, body).map_err(|e| Failure::transient(format!("POST {url}: {e}")));
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(code))) => return Err(fail(code)),
        Some(Err(())) => return Err(Failure::internal("the HTTP response was already taken")),
        None => {
            return Err(Failure::internal(
                "the HTTP response is not ready after waiting for it",
            ))
        }
    };
    let status = response.status();
    // A failed upload matters unless the server already answered with an
    // error of its own (e.g. 413), which says more.
    if let Err(e) = written {
        if status < 400 {
            return Err(e);
        }
    }
    let sink = on_chunk.filter(|_| (200..300).contains(&status));
    let body =
        read_body(&response, sink).map_err(|e| Failure::transient(format!("POST {url}: {e}")))?;
    Ok(Response { status, body })
}

fn write_body(out: OutgoingBody, bytes: &[u8]) -> Result<(), String> {
    {
        // The stream is a child of the body and must be gone before `finish`.
        let stream = out
            .write()
            .map_err(|()| "cannot open the request body stream".to_string())?;
        for chunk in bytes.chunks(WRITE_CHUNK) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| format!("sending the request body failed: {}", stream_error(&e)))?;
        }
    }
    OutgoingBody::finish(out, None).map_err(|e| format!("finishing the request body failed: {e:?}"))
}

/// Reads the whole body, or hands each chunk to `sink` (bounded the same:
/// [`MAX_RESPONSE_BYTES`] in all).
fn read_body(
    response: &IncomingResponse,
    mut sink: Option<&mut dyn FnMut(&[u8])>,
) -> Result<Vec<u8>, String> {
    let body = response
        .consume()
        .map_err(|()| "the response body was already consumed".to_string())?;
    let mut data = Vec::new();
    let mut total = 0usize;
    {
        // The stream is a child of the body and must be dropped first.
        let stream = body
            .stream()
            .map_err(|()| "cannot open the response body stream".to_string())?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    total += chunk.len();
                    if total > MAX_RESPONSE_BYTES {
                        return Err(format!(
                            "the response is larger than {} MiB",
                            MAX_RESPONSE_BYTES >> 20
                        ));
                    }
                    match sink.as_mut() {
                        Some(f) => f(&chunk),
                        None => data.extend_from_slice(&chunk),
                    }
                }
                Err(StreamError::Closed) => break,
                Err(e) => return Err(format!("reading the response failed: {}", stream_error(&e))),
            }
        }
    }
    drop(IncomingBody::finish(body));
    Ok(data)
}

fn stream_error(e: &StreamError) -> String {
    match e {
        StreamError::Closed => "stream closed".to_string(),
        StreamError::LastOperationFailed(err) => err.to_debug_string(),
    }
}

/// Maps wasi:http's error codes onto the few cases that decide what the
/// host should do with the item.
fn transport(code: &ErrorCode) -> Transport {
    let d = || format!("{code:?}");
    match code {
        ErrorCode::HttpRequestDenied => Transport::Denied,
        ErrorCode::HttpRequestBodySize(_) => Transport::TooLarge(d()),
        ErrorCode::TlsCertificateError => Transport::Certificate(d()),
        ErrorCode::DestinationIpProhibited
        | ErrorCode::DestinationIpUnroutable
        | ErrorCode::HttpRequestMethodInvalid
        | ErrorCode::HttpRequestUriInvalid
        | ErrorCode::HttpRequestUriTooLong
        | ErrorCode::HttpRequestHeaderSectionSize(_)
        | ErrorCode::HttpRequestHeaderSize(_)
        | ErrorCode::HttpRequestLengthRequired
        | ErrorCode::LoopDetected
        | ErrorCode::ConfigurationError => Transport::BadRequest(d()),
        // DNS, connection, timeouts, TLS handshakes, protocol errors and the
        // host's catch-all (which also covers failed connects): retryable.
        _ => Transport::Network(d()),
    }
}
