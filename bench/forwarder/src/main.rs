//! `make bench` only (xtask/src/bench/clients.rs): one actix-web worker that forwards every
//! request to one upstream with awc or with hyper-util's pooled legacy client, so the two
//! clients are compared inside the same server, on the same upstream, under the same load.
//!
//! Both sides keep the gateway's forwarding semantics (src/gateway/forward.rs, upstream.rs):
//! hop-by-hop headers dropped both ways, request and response bodies streamed (sized when
//! the length is known), a bound on the wait for the response head, a keepalive pool per
//! worker. Neither authenticates: what differs is the client and nothing else.
//!
//! usage: bench-forwarder awc|hyper UPSTREAM_URL PORT_FILE
//! (listens on 127.0.0.1:0 and writes the port the kernel picked to PORT_FILE)

use std::io;
use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpResponseBuilder, HttpServer};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyDataStream, BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The gateway's route timeout in the bench config (timeout_ms = 5000).
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// src/gateway/upstream.rs: CONNECT_TIMEOUT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// src/gateway/upstream.rs: BODY_CHUNKS_IN_FLIGHT.
const BODY_CHUNKS_IN_FLIGHT: usize = 4;

type HyperBody = BoxBody<Bytes, io::Error>;

/// One worker's upstream client.
enum Upstream {
    Awc(awc::Client),
    Hyper(Client<HttpConnector, HyperBody>),
}

struct Forwarder {
    client: Upstream,
    base: String,
}

/// RFC 9110 §7.6.1, as src/gateway/headers.rs `for_each_end_to_end` applies it; Host is set
/// by the client from the URL and Content-Length by the body type.
fn end_to_end(headers: &HeaderMap) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    headers.iter().filter(move |(name, _)| {
        !matches!(
            name.as_str(),
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
                | "content-length"
                | "host"
        ) && !named.iter().any(|n| n == name.as_str())
    })
}

/// src/gateway/forward.rs `request_body`: a body only when the head announces one.
fn announced_length(headers: &HeaderMap) -> Option<Option<u64>> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Some(None);
    }
    let length: u64 = headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    (length > 0).then_some(Some(length))
}

fn bad_gateway(error: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::BadGateway().body(format!("upstream: {error}"))
}

fn respond(
    method: &Method,
    status: StatusCode,
    headers: &HeaderMap,
    body: impl futures_util::Stream<Item = Result<Bytes, io::Error>> + 'static,
) -> HttpResponse {
    let mut answer = HttpResponseBuilder::new(status);
    for (name, value) in end_to_end(headers) {
        answer.append_header((name.clone(), value.clone()));
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse().ok());
    if matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED) {
        return answer.finish();
    }
    match length {
        Some(length) if method == Method::HEAD => answer.body(SizedStream::new(
            length,
            futures_util::stream::empty::<Result<Bytes, io::Error>>(),
        )),
        Some(length) => answer.body(SizedStream::new(length, body)),
        None => answer.streaming(body),
    }
}

async fn forward(
    req: HttpRequest,
    payload: web::Payload,
    forwarder: web::Data<Forwarder>,
) -> HttpResponse {
    let url = format!(
        "{}{}",
        forwarder.base,
        req.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    let body = announced_length(req.headers());
    match &forwarder.client {
        Upstream::Awc(client) => {
            let mut upstream = client
                .request(req.method().clone(), url.as_str())
                .timeout(HEAD_TIMEOUT);
            for (name, value) in end_to_end(req.headers()) {
                upstream = upstream.append_header((name.clone(), value.clone()));
            }
            let sent = match body {
                None => upstream.send().await,
                Some(length) => {
                    if let Some(length) = length {
                        upstream = upstream.insert_header((header::CONTENT_LENGTH, length));
                    }
                    upstream.send_stream(payload).await
                }
            };
            match sent {
                Ok(response) => {
                    let (status, headers) = (response.status(), response.headers().clone());
                    let stream = response.map_err(|error| io::Error::other(error.to_string()));
                    respond(req.method(), status, &headers, stream)
                }
                Err(error) => bad_gateway(error),
            }
        }
        Upstream::Hyper(client) => {
            let method = match hyper::Method::from_bytes(req.method().as_str().as_bytes()) {
                Ok(method) => method,
                Err(error) => return bad_gateway(error),
            };
            let mut builder = http::Request::builder().method(method).uri(&url);
            for (name, value) in end_to_end(req.headers()) {
                builder = builder.header(name.as_str(), value.as_bytes());
            }
            let body = match body {
                None => Empty::new().map_err(|never| match never {}).boxed(),
                Some(length) => {
                    if let Some(length) = length {
                        builder = builder.header(http::header::CONTENT_LENGTH, length);
                    }
                    stream_body(payload)
                }
            };
            let request = match builder.body(body) {
                Ok(request) => request,
                Err(error) => return bad_gateway(error),
            };
            let response = match tokio::time::timeout(HEAD_TIMEOUT, client.request(request)).await {
                Ok(Ok(response)) => response,
                Ok(Err(error)) => return bad_gateway(error),
                Err(_) => return bad_gateway("no response head in time"),
            };
            let (head, body) = response.into_parts();
            let mut headers = HeaderMap::with_capacity(head.headers.len());
            for (name, value) in &head.headers {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_str().as_bytes()),
                    HeaderValue::from_bytes(value.as_bytes()),
                ) {
                    headers.append(name, value);
                }
            }
            let status = match StatusCode::from_u16(head.status.as_u16()) {
                Ok(status) => status,
                Err(error) => return bad_gateway(error),
            };
            let stream = BodyDataStream::new(body).map_err(io::Error::other);
            respond(req.method(), status, &headers, stream)
        }
    }
}

/// As src/gateway/upstream.rs: actix's payload stays on this worker's thread, hyper wants a
/// `Send` body, so a local task moves the chunks across a small channel.
fn stream_body(mut payload: web::Payload) -> HyperBody {
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

fn client(kind: &str) -> Upstream {
    match kind {
        "awc" => Upstream::Awc(
            awc::Client::builder()
                .connector(awc::Connector::new().timeout(CONNECT_TIMEOUT))
                .disable_redirects()
                // A proxy adds no User-Agent of its own; hyper-util adds none either.
                .no_default_headers()
                .finish(),
        ),
        _ => {
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
            connector.set_nodelay(true);
            Upstream::Hyper(Client::builder(TokioExecutor::new()).build(connector))
        }
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, base, port_file] = args.as_slice() else {
        eprintln!("usage: bench-forwarder awc|hyper UPSTREAM_URL PORT_FILE");
        std::process::exit(2);
    };
    if !matches!(kind.as_str(), "awc" | "hyper") {
        eprintln!("the client is awc or hyper, not {kind:?}");
        std::process::exit(2);
    }
    let (kind, base) = (kind.clone(), base.trim_end_matches('/').to_owned());
    actix_rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(Forwarder {
                    client: client(&kind),
                    base: base.clone(),
                }))
                .default_service(web::to(forward))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))?;
        let port = server.addrs()[0].port();
        std::fs::write(port_file, port.to_string())?;
        server.run().await
    })
}
