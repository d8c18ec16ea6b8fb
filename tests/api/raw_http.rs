//! Raw HTTP/1.1 over a blocking `TcpStream`, for tests where the exact bytes on the wire matter
//! (header spellings, framing, dot segments a client library would resolve itself).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

#[derive(Debug, Default)]
pub struct RawReply {
    /// None when no status line arrived in time.
    pub status: Option<u16>,
    pub head: String,
    pub body: Vec<u8>,
    /// The server closed (or reset) the connection.
    pub closed: bool,
    /// From the start of reading to the reply (or the close, or giving up).
    pub elapsed: Duration,
}

impl RawReply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        format!(
            "{}\r\n\r\n{}",
            self.head,
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// Whether `buffer` holds a whole response: head, then Content-Length bytes of body
/// (`with_body: false` for the answer to a HEAD: its Content-Length announces no body).
fn parse_complete_for(buffer: &[u8], with_body: bool) -> Option<(String, Vec<u8>)> {
    let end = buffer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        })
        .filter(|_| with_body)
        .unwrap_or(0);
    let body = &buffer[end + 4..];
    (body.len() >= length).then(|| (head, body[..length].to_vec()))
}

/// Reads one response, for at most `within`.
pub fn read_raw_reply(stream: &mut TcpStream, within: Duration) -> RawReply {
    read_raw_reply_for(stream, within, true)
}

/// Reads one response to a HEAD (a head, whatever its Content-Length), or to anything else.
pub fn read_raw_reply_for(stream: &mut TcpStream, within: Duration, with_body: bool) -> RawReply {
    let started = Instant::now();
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut closed = false;
    loop {
        if let Some((head, body)) = parse_complete_for(&buffer, with_body) {
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse().ok());
            return RawReply {
                status,
                head,
                body,
                closed: false,
                elapsed: started.elapsed(),
            };
        }
        let left = within.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    RawReply {
        status: None,
        head: String::from_utf8_lossy(&buffer).into_owned(),
        body: Vec::new(),
        closed,
        elapsed: started.elapsed(),
    }
}

pub fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_nodelay(true).unwrap();
    stream
}

/// One request on a fresh connection (`Connection: close`), its reply read for at most 10 s.
pub fn raw_exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> RawReply {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
    for (name, value) in headers {
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(
        format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    request.extend_from_slice(body);
    let mut stream = connect(port);
    stream.write_all(&request).expect("send request");
    read_raw_reply(&mut stream, Duration::from_secs(10))
}

/// Runs blocking socket work off the actix test runtime (which also drives the app's
/// background tasks).
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .expect("blocking task")
}

/// Sends `request` exactly as given on a fresh connection; reads one reply for at most 10 s.
pub fn raw_bytes(port: u16, request: &[u8]) -> RawReply {
    let mut stream = connect(port);
    stream.write_all(request).expect("send request");
    read_raw_reply(&mut stream, Duration::from_secs(10))
}
