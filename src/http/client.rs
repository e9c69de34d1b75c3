//! The one HTTP client both connectors use (timeouts, user agent, compression, connection
//! pool), the adapter that lets the `oauth2` crate's token requests go through it instead of a
//! client of its own, and the server's clock as an answer's `Date` header gives it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// How the client is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSettings {
    /// Giving up on connecting.
    pub connect_timeout: Duration,
    /// Giving up on a whole request (a page of records included).
    pub request_timeout: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// Problems building the client or making a token request.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot set up the HTTP client: {0}")]
    Build(reqwest::Error),
    #[error("token request failed before an answer came: {0}")]
    Send(reqwest::Error),
    #[error("token request could not be built: {0}")]
    Request(String),
}

/// The client, built once per run and shared (it pools connections).
pub fn build_client(settings: ClientSettings) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .user_agent(concat!("crmsync/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        // Token endpoints must not be followed elsewhere with a secret in the body.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(ClientError::Build)
}

/// Our client as the `oauth2` crate's HTTP client.
#[derive(Debug, Clone)]
pub struct OAuthHttp(pub reqwest::Client);

impl<'c> oauth2::AsyncHttpClient<'c> for OAuthHttp {
    type Error = ClientError;
    type Future =
        Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, Self::Error>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let url = parts.uri.to_string();
            let response = self
                .0
                .request(parts.method, url)
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(ClientError::Send)?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await.map_err(ClientError::Send)?.to_vec();
            let mut answer = http::Response::builder().status(status);
            if let Some(answer_headers) = answer.headers_mut() {
                *answer_headers = headers;
            }
            answer
                .body(body)
                .map_err(|error| ClientError::Request(error.to_string()))
        })
    }
}

/// When the server sent an answer, by its `Date` header (`Sun, 06 Dec 2026 20:59:40 GMT`).
pub fn answer_date(headers: &http::HeaderMap) -> Option<jiff::Timestamp> {
    headers
        .get(http::header::DATE)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| jiff::fmt::rfc2822::parse(text).ok())
        .map(|zoned| zoned.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_header_gives_the_servers_clock() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(answer_date(&headers), None);
        headers.insert(
            http::header::DATE,
            http::HeaderValue::from_static("Sun, 06 Dec 2026 20:59:40 GMT"),
        );
        assert_eq!(
            answer_date(&headers),
            "2026-12-06T20:59:40Z".parse::<jiff::Timestamp>().ok()
        );
        headers.insert(
            http::header::DATE,
            http::HeaderValue::from_static("yesterday"),
        );
        assert_eq!(answer_date(&headers), None);
    }
}
