//! Errors of an OpenAI-compatible HTTP call, classified so the host knows
//! whether to retry (transient), stop (config) or dead-letter (invalid input).
//!
//! This file is shared verbatim by `openai-generator` and `openai-embedder`.

/// Mirrors the WIT `error-kind`, so this module compiles natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    InvalidInput,
    Config,
    Transient,
    Internal,
}

/// A classified failure with a message meant for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }

    pub fn config(message: impl Into<String>) -> Failure {
        Failure::new(FailureKind::Config, message)
    }

    pub fn invalid_input(message: impl Into<String>) -> Failure {
        Failure::new(FailureKind::InvalidInput, message)
    }

    pub fn transient(message: impl Into<String>) -> Failure {
        Failure::new(FailureKind::Transient, message)
    }

    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::new(FailureKind::Internal, message)
    }
}

/// A transport-level error, independent of the `wasi` bindings (which only
/// exist on wasm) so its classification is testable natively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// The host refused the destination (not in `grants.outbound_hosts`).
    Denied,
    /// The request cannot be made as configured (bad URI, forbidden address).
    BadRequest(String),
    /// The request body is larger than the host or server accepts.
    TooLarge(String),
    /// The server's certificate was rejected.
    Certificate(String),
    /// Name resolution, connection, timeout or protocol trouble: may pass.
    Network(String),
}

/// Classifies a transport error for a request to `url` (whose scheme and
/// authority are `origin`, as they must appear in the grant).
pub fn classify_transport(t: Transport, url: &str, origin: &str) -> Failure {
    match t {
        Transport::Denied => Failure::config(format!(
            "outbound HTTP to {origin} is not granted to this stage: add \"{origin}\" to its grants.outbound_hosts"
        )),
        Transport::BadRequest(e) => Failure::config(format!("cannot send POST {url}: {e}")),
        Transport::TooLarge(e) => Failure::invalid_input(format!("POST {url}: request too large: {e}")),
        Transport::Certificate(e) => Failure::config(format!(
            "POST {url}: the server's TLS certificate was rejected: {e}"
        )),
        Transport::Network(e) => Failure::transient(format!("POST {url} failed: {e}")),
    }
}

/// Classifies a non-2xx HTTP status, quoting the API's error message.
///
/// 429 and 5xx are worth retrying; 401/403 (credentials) and 404 (wrong
/// `base_url` or `model`) will fail for every item, so they are config
/// errors; other 4xx reject this particular input; redirects are config
/// errors because wasi:http does not follow them.
pub fn classify_status(status: u16, body: &[u8], url: &str) -> Failure {
    let detail = api_error_message(body);
    let msg = |hint: &str| {
        let mut m = format!("POST {url}: HTTP {status}");
        if !detail.is_empty() {
            m.push_str(": ");
            m.push_str(&detail);
        }
        if !hint.is_empty() {
            m.push_str(" (");
            m.push_str(hint);
            m.push(')');
        }
        m
    };
    match status {
        401 | 403 => Failure::config(msg(
            "check the API key: the environment variable named by `api_key_env` must be set on the host and listed in the stage's grants.env",
        )),
        404 => Failure::config(msg("check `base_url` and `model`")),
        408 | 425 | 429 => Failure::transient(msg("")),
        500..=599 => Failure::transient(msg("")),
        300..=399 => Failure::config(msg("redirects are not followed: set `base_url` to the final URL")),
        400..=499 => Failure::invalid_input(msg("")),
        _ => Failure::internal(msg("unexpected status")),
    }
}

/// The most useful error text in a response body: OpenAI's
/// `{"error":{"message":...}}`, a plain `{"error":"..."}` or `{"message":...}`,
/// else the start of the body as text.
pub fn api_error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let found = v
            .pointer("/error/message")
            .or_else(|| v.get("error"))
            .or_else(|| v.get("message"))
            .or_else(|| v.get("detail"))
            .and_then(|m| m.as_str());
        if let Some(m) = found {
            return truncate(m.trim(), 300);
        }
    }
    truncate(String::from_utf8_lossy(body).trim(), 300)
}

/// At most `max` characters of `s`, marked with `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod failure_tests {
    use super::*;

    const URL: &str = "http://127.0.0.1:8080/v1/x";

    #[test]
    fn statuses_are_classified() {
        let k = |s| classify_status(s, b"", URL).kind;
        assert_eq!(k(429), FailureKind::Transient);
        assert_eq!(k(500), FailureKind::Transient);
        assert_eq!(k(503), FailureKind::Transient);
        assert_eq!(k(408), FailureKind::Transient);
        assert_eq!(k(401), FailureKind::Config);
        assert_eq!(k(403), FailureKind::Config);
        assert_eq!(k(404), FailureKind::Config);
        assert_eq!(k(301), FailureKind::Config);
        assert_eq!(k(400), FailureKind::InvalidInput);
        assert_eq!(k(413), FailureKind::InvalidInput);
        assert_eq!(k(422), FailureKind::InvalidInput);
        assert_eq!(k(101), FailureKind::Internal);
    }

    #[test]
    fn api_messages_are_quoted() {
        let body =
            br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}}"#;
        let f = classify_status(401, body, URL);
        assert!(
            f.message
                .starts_with(&format!("POST {URL}: HTTP 401: Incorrect API key provided")),
            "{}",
            f.message
        );
        assert!(f.message.contains("api_key_env"));
        assert_eq!(
            api_error_message(br#"{"error":"model not loaded"}"#),
            "model not loaded"
        );
        assert_eq!(api_error_message(b"Bad Gateway\n"), "Bad Gateway");
        assert_eq!(api_error_message(&[b'x'; 1000]).chars().count(), 301);
    }

    #[test]
    fn transport_errors_are_classified() {
        let origin = "http://127.0.0.1:8080";
        let f = classify_transport(Transport::Denied, URL, origin);
        assert_eq!(f.kind, FailureKind::Config);
        assert!(f.message.contains("not granted"), "{}", f.message);
        assert!(f.message.contains("grants.outbound_hosts"));
        assert!(f.message.contains("\"http://127.0.0.1:8080\""));
        let net = classify_transport(Transport::Network("connection refused".into()), URL, origin);
        assert_eq!(net.kind, FailureKind::Transient);
        let big = classify_transport(Transport::TooLarge("10 MB".into()), URL, origin);
        assert_eq!(big.kind, FailureKind::InvalidInput);
        let cert = classify_transport(Transport::Certificate("expired".into()), URL, origin);
        assert_eq!(cert.kind, FailureKind::Config);
    }
}
