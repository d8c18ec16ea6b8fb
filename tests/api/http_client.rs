//! The tests' HTTP client: reqwest (HTTP/1.1 only) behind the small request/response API the
//! tests are written against, answering in actix-web's `http` types so assertions compare
//! with `StatusCode::OK` and friends directly.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::web::Bytes;
use serde::Serialize;

#[derive(Clone, Default)]
pub struct Client {
    inner: reqwest::Client,
}

#[derive(Default)]
pub struct ClientBuilder {
    timeout: Option<Duration>,
}

impl ClientBuilder {
    /// The longest a request may take, response body included.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn finish(self) -> Client {
        let mut builder = reqwest::Client::builder();
        if let Some(timeout) = self.timeout {
            builder = builder.timeout(timeout);
        }
        Client {
            inner: builder.build().expect("the test client builds"),
        }
    }
}

impl Client {
    pub fn new() -> Client {
        Client::builder().finish()
    }

    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    pub fn request(&self, method: Method, url: impl AsRef<str>) -> ClientRequest {
        let method =
            reqwest::Method::from_bytes(method.as_str().as_bytes()).expect("a valid method");
        ClientRequest {
            inner: self.inner.request(method, url.as_ref()),
        }
    }

    pub fn get(&self, url: impl AsRef<str>) -> ClientRequest {
        self.request(Method::GET, url)
    }

    pub fn post(&self, url: impl AsRef<str>) -> ClientRequest {
        self.request(Method::POST, url)
    }

    pub fn delete(&self, url: impl AsRef<str>) -> ClientRequest {
        self.request(Method::DELETE, url)
    }
}

/// A header value in any of the forms the tests write one.
pub trait IntoHeaderValue {
    fn into_value(self) -> http::HeaderValue;
}

impl IntoHeaderValue for &str {
    fn into_value(self) -> http::HeaderValue {
        http::HeaderValue::from_str(self).expect("a valid header value")
    }
}

impl IntoHeaderValue for String {
    fn into_value(self) -> http::HeaderValue {
        self.as_str().into_value()
    }
}

impl IntoHeaderValue for &String {
    fn into_value(self) -> http::HeaderValue {
        self.as_str().into_value()
    }
}

impl IntoHeaderValue for HeaderValue {
    fn into_value(self) -> http::HeaderValue {
        http::HeaderValue::from_bytes(self.as_bytes()).expect("a valid header value")
    }
}

pub struct ClientRequest {
    inner: reqwest::RequestBuilder,
}

impl ClientRequest {
    pub fn insert_header(self, (name, value): (impl AsRef<str>, impl IntoHeaderValue)) -> Self {
        ClientRequest {
            inner: self.inner.header(name.as_ref(), value.into_value()),
        }
    }

    pub async fn send(self) -> Result<ClientResponse, SendRequestError> {
        ClientResponse::from(self.inner.send().await)
    }

    pub async fn send_json(
        self,
        body: &impl Serialize,
    ) -> Result<ClientResponse, SendRequestError> {
        ClientResponse::from(self.inner.json(body).send().await)
    }

    pub async fn send_body(
        self,
        body: impl Into<reqwest::Body>,
    ) -> Result<ClientResponse, SendRequestError> {
        ClientResponse::from(self.inner.body(body).send().await)
    }

    pub async fn send_stream<S, E>(self, stream: S) -> Result<ClientResponse, SendRequestError>
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let body = reqwest::Body::wrap_stream(stream);
        ClientResponse::from(self.inner.body(body).send().await)
    }
}

pub struct ClientResponse {
    status: StatusCode,
    headers: HeaderMap,
    inner: Option<reqwest::Response>,
}

impl ClientResponse {
    fn from(sent: reqwest::Result<reqwest::Response>) -> Result<ClientResponse, SendRequestError> {
        let response = sent.map_err(SendRequestError::from)?;
        let mut headers = HeaderMap::new();
        for (name, value) in response.headers() {
            headers.append(
                HeaderName::from_bytes(name.as_str().as_bytes()).expect("a valid name"),
                HeaderValue::from_bytes(value.as_bytes()).expect("a valid value"),
            );
        }
        Ok(ClientResponse {
            status: StatusCode::from_u16(response.status().as_u16()).expect("a valid status"),
            headers,
            inner: Some(response),
        })
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The whole body (once), as JSON.
    pub async fn json<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, PayloadError> {
        let bytes = self.body().await?;
        serde_json::from_slice(&bytes).map_err(|error| PayloadError::Read(error.to_string()))
    }

    /// The whole body (once); `.limit(n)` fails a body longer than `n` bytes.
    pub fn body(&mut self) -> BodyRead {
        BodyRead {
            response: self.inner.take(),
            limit: 8 * 1024 * 1024,
        }
    }
}

pub struct BodyRead {
    response: Option<reqwest::Response>,
    limit: usize,
}

impl BodyRead {
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("the body was already read")]
    AlreadyRead,
    #[error("the body is over {0} bytes")]
    Overflow(usize),
    #[error("reading the body failed: {0}")]
    Read(String),
}

impl IntoFuture for BodyRead {
    type Output = Result<Bytes, PayloadError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output>>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let mut response = self.response.ok_or(PayloadError::AlreadyRead)?;
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|error| PayloadError::Read(chain(&error)))?
            {
                if body.len() + chunk.len() > self.limit {
                    return Err(PayloadError::Overflow(self.limit));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Bytes::from(body))
        })
    }
}

/// Why a request got no response, in the classes the drills tell apart.
#[derive(Debug, thiserror::Error)]
pub enum SendRequestError {
    #[error("timed out")]
    Timeout,
    #[error("connect: {0}")]
    Connect(ConnectError),
    #[error("{0}")]
    Other(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The connection closed before any response head (an EOF, not a refused connect).
    #[error("disconnected before a response")]
    Disconnected,
    #[error("{0}")]
    Failed(String),
}

impl From<reqwest::Error> for SendRequestError {
    fn from(error: reqwest::Error) -> Self {
        if error.is_timeout() {
            return SendRequestError::Timeout;
        }
        if error.is_connect() {
            return SendRequestError::Connect(ConnectError::Failed(chain(&error)));
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(cause) = source {
            if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
                if hyper.is_incomplete_message() {
                    return SendRequestError::Connect(ConnectError::Disconnected);
                }
            }
            source = cause.source();
        }
        SendRequestError::Other(chain(&error))
    }
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
