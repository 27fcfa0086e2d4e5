//! The `base_url` setting and the endpoints under it.
//!
//! This file is shared verbatim by `openai-generator` and `openai-embedder`.

/// `http` or `https`, the only schemes wasi:http speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpScheme {
    Http,
    Https,
}

impl HttpScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpScheme::Http => "http",
            HttpScheme::Https => "https",
        }
    }
}

/// A parsed base URL such as `http://127.0.0.1:8080/v1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub scheme: HttpScheme,
    /// `host` or `host:port`, exactly as the request will carry it.
    pub authority: String,
    /// The path prefix without a trailing slash (`/v1`, or empty).
    pub path: String,
}

/// One API endpoint: where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: HttpScheme,
    pub authority: String,
    /// The absolute path, e.g. `/v1/chat/completions`.
    pub path: String,
}

impl BaseUrl {
    /// Parses a base URL, rejecting what the request could not express or
    /// what hints at a mistake: other schemes, user info, query, fragment.
    pub fn parse(s: &str) -> Result<BaseUrl, String> {
        let s = s.trim();
        let bad = |why: &str| format!("config `base_url` {s:?} {why}");
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| bad("must start with http:// or https://"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => HttpScheme::Http,
            "https" => HttpScheme::Https,
            _ => return Err(bad("must start with http:// or https://")),
        };
        if rest.contains(['?', '#']) {
            return Err(bad("must not have a query or fragment"));
        }
        if rest.chars().any(char::is_whitespace) {
            return Err(bad("must not contain whitespace"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(bad("has no host"));
        }
        if authority.contains('@') {
            return Err(bad(
                "must not contain user info; use `api_key_env` for credentials",
            ));
        }
        Ok(BaseUrl {
            scheme,
            authority: authority.to_string(),
            path: path.trim_end_matches('/').to_string(),
        })
    }

    /// The endpoint `suffix` (e.g. `/embeddings`) under this base.
    pub fn endpoint(&self, suffix: &str) -> Endpoint {
        Endpoint {
            scheme: self.scheme,
            authority: self.authority.clone(),
            path: format!("{}{}", self.path, suffix),
        }
    }
}

impl Endpoint {
    /// The full URL, for messages.
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme.as_str(), self.authority, self.path)
    }

    /// Scheme and authority, as an `outbound_hosts` grant names them.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme.as_str(), self.authority)
    }
}

#[cfg(test)]
mod endpoint_tests {
    use super::*;

    #[test]
    fn parses_base_urls() {
        let b = BaseUrl::parse("http://127.0.0.1:8080/v1/").unwrap();
        assert_eq!(b.scheme, HttpScheme::Http);
        assert_eq!(b.authority, "127.0.0.1:8080");
        assert_eq!(b.path, "/v1");
        let e = b.endpoint("/chat/completions");
        assert_eq!(e.url(), "http://127.0.0.1:8080/v1/chat/completions");
        assert_eq!(e.origin(), "http://127.0.0.1:8080");
        let b = BaseUrl::parse(" HTTPS://api.openai.com ").unwrap();
        assert_eq!(b.scheme, HttpScheme::Https);
        assert_eq!(b.endpoint("/embeddings").path, "/embeddings");
    }

    #[test]
    fn rejects_bad_base_urls() {
        for s in [
            "api.openai.com/v1",
            "ftp://x/v1",
            "http:///v1",
            "http://user:pw@host/v1",
            "http://host/v1?x=1",
            "http://host/v 1",
        ] {
            assert!(BaseUrl::parse(s).is_err(), "{s}");
        }
    }
}
