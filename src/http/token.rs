//! The REST API's bearer token.
//!
//! The tracker facade, `/stats` and `/metrics` share the API's listener
//! and must stay open (BitTorrent clients and Prometheus send no
//! credentials), so the token guards the `/api/` paths alone. The token
//! is kept as its blake3 hash and compared as one: `blake3::Hash`'s `==`
//! runs in constant time, so a wrong guess learns nothing from timing.

use std::path::Path;

use anyhow::{bail, Context};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use axum::response::IntoResponse;

/// A token the API requires.
#[derive(Clone)]
pub struct ApiToken(blake3::Hash);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

impl ApiToken {
    /// The token in `path`: the file's text without surrounding
    /// whitespace (so a trailing newline does not count).
    pub fn read(path: &Path) -> anyhow::Result<ApiToken> {
        ApiToken::new(&read_text(path)?).with_context(|| {
            format!(
                "the API token file {} holds no usable token",
                path.display()
            )
        })
    }

    /// A token from its text: at least 16 visible ASCII characters, since
    /// it travels in a header and a short one can be guessed.
    pub fn new(token: &str) -> anyhow::Result<ApiToken> {
        if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("a token must be at least 16 printable ASCII characters without spaces");
        }
        Ok(ApiToken(blake3::hash(token.as_bytes())))
    }

    /// Whether `headers` carry `Authorization: Bearer <this token>`.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        blake3::hash(given.trim().as_bytes()) == self.0
    }
}

/// The text of a token file without surrounding whitespace: what the node
/// requires and what the client commands send.
pub fn read_text(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the API token file {}", path.display()))?;
    Ok(text.trim().to_owned())
}

/// Whether `path` is one of the API's.
pub fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// The answer to an API request without the token: 401 in the API's
/// JSON error shape, with the challenge RFC 6750 asks for.
pub fn unauthorized() -> Response<Body> {
    let mut r = super::api::error(
        StatusCode::UNAUTHORIZED,
        "this node's API needs its token: send `Authorization: Bearer TOKEN` \
         (the client commands read SHOAL_API_TOKEN or --api-token-file)",
    )
    .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"shoal\""),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let t = ApiToken::new("correct-horse-battery").unwrap();
        assert!(t.admits(&with("Bearer correct-horse-battery")));
        assert!(!t.admits(&HeaderMap::new()));
        assert!(!t.admits(&with("Bearer correct-horse-batter")));
        assert!(!t.admits(&with("Bearer correct-horse-battery2")));
        assert!(!t.admits(&with("Basic correct-horse-battery")));
        assert!(!t.admits(&with("correct-horse-battery")));
    }

    #[test]
    fn short_or_blank_tokens_are_refused() {
        assert!(ApiToken::new("").is_err());
        assert!(ApiToken::new("short").is_err());
        assert!(ApiToken::new("sixteen chars ok").is_err(), "spaces");
        assert!(ApiToken::new("0123456789abcdef").is_ok());
        let dir = std::env::temp_dir().join(format!("shoal-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("token");
        std::fs::write(&f, "\n  \n").unwrap();
        let e = format!("{:#}", ApiToken::read(&f).unwrap_err());
        assert!(e.contains("holds no usable token"), "{e}");
        std::fs::write(&f, "0123456789abcdef\n").unwrap();
        assert!(
            ApiToken::read(&f).is_ok(),
            "a trailing newline is not part of it"
        );
        assert!(ApiToken::read(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_api_paths_are_guarded() {
        assert!(is_api("/api/v1/torrents"));
        assert!(is_api("/api"));
        for open in ["/announce", "/scrape", "/metrics", "/stats", "/", "/apiary"] {
            assert!(!is_api(open), "{open}");
        }
    }
}
