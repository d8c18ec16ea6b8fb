//! A TCP forwarder in front of Postgres that a test can break and mend:
//! - `cut()`: close every live connection and refuse new ones (Postgres down or restarting);
//! - `blackhole()`: keep connections open but forward nothing, and accept new ones without
//!   ever answering (a network partition);
//! - `restore()`: forward again (connections closed or held meanwhile stay gone).
//!
//! Point the app's `database.url` at `proxy.url_through(&db.url)`.

// Each test module uses a different subset.
#![allow(dead_code)]

use std::net::SocketAddr;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Open,
    Cut,
    Blackhole,
}

pub struct PgProxy {
    pub port: u16,
    mode: watch::Sender<Mode>,
    accept: JoinHandle<()>,
}

impl PgProxy {
    /// A proxy on 127.0.0.1:<free port> in front of the host and port of `db_url`.
    pub async fn in_front_of(db_url: &str) -> PgProxy {
        let config: tokio_postgres::Config = db_url.parse().expect("database URL parses");
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            other => panic!("the proxy needs a TCP host, got {other:?}"),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let upstream = tokio::net::lookup_host((host.as_str(), port))
            .await
            .expect("resolve the Postgres host")
            .next()
            .expect("the Postgres host has an address");
        PgProxy::start(upstream).await
    }

    pub async fn start(upstream: SocketAddr) -> PgProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let (mode, watcher) = watch::channel(Mode::Open);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let current = *watcher.borrow();
                match current {
                    Mode::Cut => drop(inbound),
                    Mode::Blackhole => {
                        tokio::spawn(hold_until_open(vec![inbound], watcher.clone()));
                    }
                    Mode::Open => {
                        tokio::spawn(forward(inbound, upstream, watcher.clone()));
                    }
                }
            }
        });
        PgProxy { port, mode, accept }
    }

    /// `db_url` with its host and port replaced by this proxy's.
    pub fn url_through(&self, db_url: &str) -> String {
        with_host_port(db_url, "127.0.0.1", self.port)
    }

    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    pub fn blackhole(&self) {
        self.mode.send_replace(Mode::Blackhole);
    }

    pub fn restore(&self) {
        self.mode.send_replace(Mode::Open);
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        // Closes every connection too: each task ends when the mode channel does.
        self.mode.send_replace(Mode::Cut);
        self.accept.abort();
    }
}

/// Copies both ways until either side closes or the mode leaves Open.
async fn forward(mut inbound: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let changed = tokio::select! {
        _ = copy_bidirectional(&mut inbound, &mut outbound) => None,
        changed = mode.wait_for(|m| *m != Mode::Open) => changed.ok().map(|m| *m),
    };
    if changed == Some(Mode::Blackhole) {
        hold_until_open(vec![inbound, outbound], mode).await;
    }
    // Cut (or the proxy dropped): both sockets close here.
}

/// Keeps sockets open, reading and writing nothing, until the black hole ends; then closes
/// them (what a partition's survivors see once it heals: a dead connection).
async fn hold_until_open(sockets: Vec<TcpStream>, mut mode: watch::Receiver<Mode>) {
    let _ = mode.wait_for(|m| *m != Mode::Blackhole).await;
    drop(sockets);
}

/// `url` (`postgres://[user[:password]@]host[:port][/db][?params]`) with another host and port.
pub fn with_host_port(url: &str, host: &str, port: u16) -> String {
    let scheme_end = url.find("://").expect("a URL with a scheme") + 3;
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let userinfo = authority
        .rfind('@')
        .map(|at| &authority[..=at])
        .unwrap_or("");
    format!(
        "{}{userinfo}{host}:{port}{}",
        &url[..scheme_end],
        &rest[authority_end..]
    )
}

#[test]
fn with_host_port_replaces_only_host_and_port() {
    assert_eq!(
        with_host_port("postgres://postgres@127.0.0.1:5432/db", "127.0.0.1", 6543),
        "postgres://postgres@127.0.0.1:6543/db"
    );
    assert_eq!(
        with_host_port("postgres://u:p@db.example:5433/x?sslmode=disable", "h", 1),
        "postgres://u:p@h:1/x?sslmode=disable"
    );
    assert_eq!(
        with_host_port("postgres://host/db", "127.0.0.1", 6543),
        "postgres://127.0.0.1:6543/db"
    );
}
