//! The web console: three static files embedded in the binary (no build
//! step, no framework, nothing fetched from elsewhere), served by the admin
//! server ([`super::admin`]) at `/`, calling its JSON API under `/api/`
//! from the same origin.
//!
//! Everything the console shows comes from records (documents, questions,
//! answers, dead letters), which are untrusted: `console.js` puts values
//! into the page with `textContent` and DOM calls only, never as markup.
//! The [`CSP`] sent with every response is the second line of defence: no
//! inline script, no script from anywhere but this server, no plugins, no
//! framing, so even markup that slipped through could not run.

use super::http::Response;

const INDEX_HTML: &str = include_str!("index.html");
const CONSOLE_JS: &str = include_str!("console.js");
const CONSOLE_CSS: &str = include_str!("console.css");

/// The `Content-Security-Policy` of every admin response: scripts, styles
/// and requests only from this origin, nothing inline, nothing else loaded
/// (`default-src 'none'`), no `<base>`, no form posts, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                       connect-src 'self'; img-src 'self'; base-uri 'none'; \
                       form-action 'none'; frame-ancestors 'none'";

/// The console file at `path` (`/` is the page), or a 404.
pub fn asset(path: &str) -> Response {
    let (content_type, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", INDEX_HTML),
        "/console.js" => ("text/javascript; charset=utf-8", CONSOLE_JS),
        "/console.css" => ("text/css; charset=utf-8", CONSOLE_CSS),
        _ => {
            return Response::error(
                404,
                &format!("no such page {path:?}: the console is at /, the API under /api/"),
            )
        }
    };
    Response::text(200, content_type, body.to_string())
}

/// Adds the headers every admin response carries: the [`CSP`], no MIME
/// sniffing (a JSON body holding markup is never taken for HTML), no
/// referrer, no framing by older browsers that ignore `frame-ancestors`.
pub fn secure(r: &mut Response) {
    r.headers.extend([
        ("content-security-policy", CSP.to_string()),
        ("x-content-type-options", "nosniff".to_string()),
        ("referrer-policy", "no-referrer".to_string()),
        ("x-frame-options", "DENY".to_string()),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files_and_no_inline_script() {
        // The page names the script and the style sheet the server has,
        // and holds no inline script or handler the CSP would block.
        assert!(INDEX_HTML.contains(r#"<script src="/console.js""#));
        assert!(INDEX_HTML.contains(r#"href="/console.css""#));
        assert_eq!(INDEX_HTML.matches("<script").count(), 1);
        let handler = INDEX_HTML.split(" on").skip(1).any(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            !name.is_empty() && rest[name.len()..].trim_start().starts_with('=')
        });
        assert!(!handler, "an inline event handler");
        assert!(!INDEX_HTML.contains("style="), "an inline style");
        for p in ["/", "/console.js", "/console.css"] {
            assert_eq!(asset(p).status, 200, "{p}");
        }
        assert_eq!(asset("/../Cargo.toml").status, 404);
    }

    #[test]
    fn the_script_never_writes_markup() {
        // Values reach the page through textContent only.
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!CONSOLE_JS.contains(banned), "console.js uses {banned}");
        }
    }
}
