//! Just enough HTTP/1.1 for the tasks' setup calls to a local gateway: one request per
//! connection (`Connection: close`), so a response ends where the stream ends.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {}", self.body))
    }

    /// Fails unless the status is `expected`.
    pub fn expect_status(self, expected: u16, what: &str) -> Result<Response> {
        if self.status != expected {
            bail!(
                "{what}: HTTP {} (expected {expected}): {}",
                self.status,
                self.body
            );
        }
        Ok(self)
    }

    /// Fails unless the status is `expected`; the parsed body otherwise.
    pub fn expect(self, expected: u16, what: &str) -> Result<Value> {
        self.expect_status(expected, what)?.json()
    }
}

/// `http://host:port/path` → ("host:port", "/path").
fn split_url(url: &str) -> Result<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("only http:// URLs: {url}"))?;
    Ok(match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    })
}

/// A connection opened ahead of its one request, so what a caller times (or fires at several
/// servers at once) is the request itself, not the TCP handshake.
pub struct Prepared {
    stream: TcpStream,
    url: String,
}

/// Connects to `url`'s server; the request goes with [`Prepared::send`].
pub fn prepare(url: &str) -> Result<Prepared> {
    let (authority, _) = split_url(url)?;
    let stream =
        TcpStream::connect(authority).with_context(|| format!("cannot connect to {url}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(Prepared {
        stream,
        url: url.to_owned(),
    })
}

impl Prepared {
    pub fn send(
        mut self,
        method: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Response> {
        let url = self.url.as_str();
        let (authority, path) = split_url(url)?;
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
        if let Some(token) = bearer {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let payload = body.map(Value::to_string).unwrap_or_default();
        if body.is_some() {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                payload.len()
            ));
        }
        head.push_str("\r\n");
        // One write: a request split over two segments can wait on delayed ACKs.
        head.push_str(&payload);
        self.stream.write_all(head.as_bytes())?;
        let mut raw = Vec::new();
        self.stream
            .read_to_end(&mut raw)
            .with_context(|| format!("{method} {url}: reading the response"))?;
        parse(&raw).with_context(|| format!("{method} {url}"))
    }
}

pub fn request(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> Result<Response> {
    prepare(url)?.send(method, bearer, body)
}

pub fn get(url: &str, bearer: Option<&str>) -> Result<Response> {
    request("GET", url, bearer, None)
}

pub fn post(url: &str, bearer: &str, body: &Value) -> Result<Response> {
    request("POST", url, Some(bearer), Some(body))
}

fn parse(raw: &[u8]) -> Result<Response> {
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .context("no end of headers in the response")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .context("no status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|window| window == b"\r\n")
            .context("a chunk size line without an end")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            bail!("a chunk shorter than its size");
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sized_response_is_read_whole() {
        let response = parse(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"a\":10}").unwrap();
        assert_eq!(response.status, 201);
        assert_eq!(response.json().unwrap()["a"], 10);
    }

    #[test]
    fn a_chunked_response_is_put_together() {
        let response = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\n\r\n").unwrap();
        assert_eq!(response.body, "abcdefg");
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n").is_err());
    }

    #[test]
    fn a_prepared_request_is_sent_whole_on_its_open_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/api/v1/keys/k1", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                stream.read_exact(&mut byte).unwrap();
                head.push(byte[0]);
            }
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            String::from_utf8(head).unwrap()
        });
        let prepared = prepare(&url).unwrap();
        let response = prepared.send("DELETE", Some("mk"), None).unwrap();
        assert_eq!((response.status, response.body.as_str()), (200, "ok"));
        let head = server.join().unwrap();
        assert!(
            head.starts_with("DELETE /api/v1/keys/k1 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nAuthorization: Bearer mk\r\n"), "{head}");
        assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
    }

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:80/a/b?c").unwrap(),
            ("127.0.0.1:80", "/a/b?c")
        );
        assert_eq!(split_url("http://h:1").unwrap(), ("h:1", "/"));
        assert!(split_url("https://h/").is_err());
    }
}
