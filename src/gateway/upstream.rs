//! The second HTTP exchange: hyper's pooled HTTP/1.1 client, one per worker, with bodies
//! streamed both ways. actix-web speaks `http` 0.2 and hyper `http` 1, so heads are converted
//! here and nowhere else.

use std::io;
use std::time::Duration;

use actix_web::http::header::{HeaderMap as ActixHeaders, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyDataStream, BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

type UpstreamBody = BoxBody<Bytes, io::Error>;

/// How long a connection may take to open; the route's `timeout_ms` bounds the whole wait for
/// the response head on top of it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Chunks of a request body in flight between the client's connection and the upstream's.
const BODY_CHUNKS_IN_FLIGHT: usize = 4;

/// The upstream client of one worker: its connection pool lives on that worker's runtime.
pub struct Upstreams(Client<HttpConnector, UpstreamBody>);

impl Upstreams {
    pub fn new() -> Upstreams {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        Upstreams(Client::builder(TokioExecutor::new()).build(connector))
    }
}

impl Default for Upstreams {
    fn default() -> Self {
        Upstreams::new()
    }
}

/// A request body as the upstream receives it.
pub enum RequestBody {
    Empty,
    /// Streamed as it arrives; `length` (from `Content-Length`) frames it, else chunked.
    Streamed {
        payload: web::Payload,
        length: Option<u64>,
    },
}

/// What to send: method, full URL, and the headers already filtered and completed.
pub struct UpstreamRequest<'a> {
    pub method: &'a actix_web::http::Method,
    pub url: String,
    pub headers: Vec<(&'a HeaderName, &'a HeaderValue)>,
    pub added: Vec<(HeaderName, HeaderValue)>,
    pub body: RequestBody,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no response head within {0:?}")]
    Timeout(Duration),
    #[error("upstream request failed: {0}")]
    Unavailable(String),
}

/// The upstream's answer: status, headers (converted), and its body as a stream.
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: ActixHeaders,
    pub content_length: Option<u64>,
    pub body: BodyDataStream<Incoming>,
}

impl Upstreams {
    pub async fn send(
        &self,
        request: UpstreamRequest<'_>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let method = hyper::Method::from_bytes(request.method.as_str().as_bytes())
            .map_err(|error| UpstreamError::Unavailable(error.to_string()))?;
        let mut builder = http::Request::builder().method(method).uri(&request.url);
        let all = request
            .headers
            .into_iter()
            .chain(request.added.iter().map(|(name, value)| (name, value)));
        for (name, value) in all {
            builder = builder.header(name.as_str(), value.as_bytes());
        }
        let body = match request.body {
            RequestBody::Empty => Empty::new().map_err(|never| match never {}).boxed(),
            RequestBody::Streamed { payload, length } => {
                if let Some(length) = length {
                    builder = builder.header(http::header::CONTENT_LENGTH, length);
                }
                stream_body(payload)
            }
        };
        let upstream = builder
            .body(body)
            .map_err(|error| UpstreamError::Unavailable(error.to_string()))?;
        let response = tokio::time::timeout(request.timeout, self.0.request(upstream))
            .await
            .map_err(|_| UpstreamError::Timeout(request.timeout))?
            .map_err(|error| UpstreamError::Unavailable(format!("{error:#}")))?;
        let (head, body) = response.into_parts();
        let mut headers = ActixHeaders::with_capacity(head.headers.len());
        for (name, value) in &head.headers {
            // Both crates validate names and values the same way; a pair that still fails to
            // convert can't be expressed to the client, so it is left out.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_str().as_bytes()),
                HeaderValue::from_bytes(value.as_bytes()),
            ) {
                headers.append(name, value);
            }
        }
        let content_length = head
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse().ok());
        Ok(UpstreamResponse {
            status: StatusCode::from_u16(head.status.as_u16())
                .map_err(|error| UpstreamError::Unavailable(error.to_string()))?,
            headers,
            content_length,
            body: BodyDataStream::new(body),
        })
    }
}

/// actix's payload is tied to this worker's thread; hyper wants a `Send` body. A local task
/// moves the chunks across a small channel, so back-pressure still reaches the client.
fn stream_body(mut payload: web::Payload) -> UpstreamBody {
    let (chunks, mut received) = tokio::sync::mpsc::channel(BODY_CHUNKS_IN_FLIGHT);
    actix_rt::spawn(async move {
        while let Some(chunk) = payload.next().await {
            let failed = chunk.is_err();
            let frame = chunk
                .map(Frame::data)
                .map_err(|error| io::Error::other(error.to_string()));
            if chunks.send(frame).await.is_err() || failed {
                break;
            }
        }
    });
    let frames = futures_util::stream::poll_fn(move |cx| received.poll_recv(cx));
    BodyExt::boxed(StreamBody::new(frames))
}
