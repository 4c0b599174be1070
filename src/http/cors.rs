//! CORS on the read API as Prometheus's `--web.cors.origin` sets it
//! (`util/httputil/cors.go`): for a request with an `Origin` whose value the
//! anchored regex matches, `Access-Control-Allow-Origin` names it — `*` when the
//! regex is `.*`, the default — with methods `GET, POST, OPTIONS`, headers
//! `Accept, Authorization, Content-Type, Origin`, `Date` exposed and `Vary:
//! Origin`; preflight `OPTIONS` requests are answered. Other origins get no CORS
//! headers, so browsers refuse the response.

use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The layer for `web.cors_origin` (a regex, anchored at both ends).
pub(crate) fn layer(origin: &str) -> Result<CorsLayer, String> {
    let re = anchored(origin)?;
    let allow = if origin == ".*" {
        AllowOrigin::any()
    } else {
        AllowOrigin::predicate(move |o: &HeaderValue, _| o.to_str().is_ok_and(|o| re.is_match(o)))
    };
    Ok(CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::ACCEPT,
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("origin"),
        ])
        .expose_headers([header::DATE])
        .vary([header::ORIGIN]))
}

/// `^(?:origin)$`, as Prometheus compiles the flag.
pub(crate) fn anchored(origin: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(&format!("^(?:{origin})$")).map_err(|e| e.to_string())
}
