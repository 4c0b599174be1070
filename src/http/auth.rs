//! Access control: bearer tokens and basic auth, compared in constant time.
//!
//! Independent guards, each with its own credentials: `write` protects
//! `POST /api/v1/write`, `admin` every endpoint that changes the service's state,
//! `read` every read endpoint, and `/metrics` follows `read` unless
//! `auth.protect_metrics` is off. A guard left unconfigured is open, except for the
//! operator endpoints (approve, reject, roll back): they always need the admin
//! credential and answer 403 while `auth.admin` is not configured. A refused call
//! gets 401 (or 403) before its body is read, so it never reaches the store.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use subtle::ConstantTimeEq;

use super::App;
use crate::config::Credentials;

/// Which guard an endpoint sits behind.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Guard {
    Write,
    Admin,
    /// Approve, reject, roll back: the admin credentials, never open.
    Operator,
    Read,
    /// `/metrics`: the read credentials, if `auth.protect_metrics`.
    Metrics,
}

fn ct_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// True when the request's `Authorization` header satisfies `expected`.
pub(crate) fn authorized(headers: &HeaderMap, expected: &Credentials) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, rest)) = value.split_once(' ') else {
        return false;
    };
    match expected {
        Credentials::Bearer(token) => {
            scheme.eq_ignore_ascii_case("bearer") && ct_eq(rest.trim(), token.expose())
        }
        Credentials::Basic { username, password } => {
            if !scheme.eq_ignore_ascii_case("basic") {
                return false;
            }
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest.trim()) else {
                return false;
            };
            let Ok(decoded) = String::from_utf8(decoded) else {
                return false;
            };
            let Some((user, pass)) = decoded.split_once(':') else {
                return false;
            };
            // Evaluate both comparisons so timing does not tell which one failed.
            let user_ok = ct_eq(user, username);
            let pass_ok = ct_eq(pass, password.expose());
            user_ok & pass_ok
        }
    }
}

fn unauthorized(expected: &Credentials) -> Response {
    let challenge = match expected {
        Credentials::Bearer(_) => "Bearer realm=\"closedloop\"",
        Credentials::Basic { .. } => "Basic realm=\"closedloop\"",
    };
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge)],
        "unauthorized\n",
    )
        .into_response()
}

/// The guard middleware: refuses a request without the guard's credentials.
pub(crate) async fn require(
    State((app, guard)): State<(std::sync::Arc<App>, Guard)>,
    req: Request,
    next: Next,
) -> Response {
    let settings = app.settings();
    let expected = match guard {
        Guard::Write => &settings.write_auth,
        Guard::Admin => &settings.admin_auth,
        Guard::Operator if settings.admin_auth.is_none() => {
            return (
                StatusCode::FORBIDDEN,
                "approvals and rollbacks need the admin credential: configure auth.admin\n",
            )
                .into_response()
        }
        Guard::Operator => &settings.admin_auth,
        Guard::Read => &settings.read_auth,
        Guard::Metrics if settings.protect_metrics => &settings.read_auth,
        Guard::Metrics => &None,
    };
    match expected {
        Some(creds) if !authorized(req.headers(), creds) => unauthorized(creds),
        _ => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CredentialsConfig;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    fn bearer(token: &str) -> Credentials {
        std::env::set_var("CLOSEDLOOP_AUTH_TEST", token);
        CredentialsConfig {
            bearer_token_env: Some("CLOSEDLOOP_AUTH_TEST".into()),
            ..Default::default()
        }
        .resolve("t")
        .unwrap()
    }

    #[test]
    fn bearer_tokens() {
        let c = bearer("abc");
        assert!(authorized(&headers("Bearer abc"), &c));
        assert!(authorized(&headers("bearer abc"), &c));
        assert!(!authorized(&headers("Bearer abd"), &c));
        assert!(!authorized(&headers("Basic abc"), &c));
        assert!(!authorized(&HeaderMap::new(), &c));
    }

    #[test]
    fn basic_auth() {
        std::env::set_var("CLOSEDLOOP_AUTH_PW", "pw:with:colons");
        let c = CredentialsConfig {
            basic_auth: Some(crate::config::BasicAuthConfig {
                username: "prom".into(),
                password_file: None,
                password_env: Some("CLOSEDLOOP_AUTH_PW".into()),
            }),
            ..Default::default()
        }
        .resolve("t")
        .unwrap();
        let enc = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert!(authorized(&headers(&enc("prom:pw:with:colons")), &c));
        assert!(!authorized(&headers(&enc("prom:pw")), &c));
        assert!(!authorized(&headers(&enc("other:pw:with:colons")), &c));
        assert!(!authorized(&headers("Basic !!!"), &c));
    }
}
