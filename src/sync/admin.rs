//! The relay's admin endpoint: a small HTTP/1.1 server on an address of
//! its own, for monitoring.
//!
//! `GET /metrics` answers the [`RelayMetrics`] in the Prometheus text
//! format (`text/plain; version=0.0.4`); `GET /healthz` answers `200 ok`
//! while the relay serves and `503` once it began shutting down (so a load
//! balancer stops sending clients to a relay that drains). `HEAD` works
//! as `GET` without the body; other methods get 405, other paths 404.
//!
//! Invariant: no client of this port can hang it or make it hold much. A
//! connection gets one request and then `Connection: close`; its request
//! head must arrive whole within [`AdminConfig::read_timeout`] (else
//! `408`) and within [`AdminConfig::max_head`] bytes (else `431`), and the
//! answer must be taken within [`AdminConfig::write_timeout`]. At most
//! [`AdminConfig::max_connections`] connections are served at once, and at
//! most [`AdminConfig::max_per_address`] from one IP address; one over
//! either cap is closed at once, unread. So a scraper that never finishes
//! its header, or opens many idle sockets from one address, costs a
//! bounded buffer each for a bounded time, and other scrapers are
//! answered meanwhile. Nothing here reads a body or keeps a connection
//! alive. Put the address on a private network all the same: the counts
//! are the operator's.
//!
//! ```no_run
//! # async fn example() -> Result<(), meldb::sync::SyncError> {
//! use meldb::sync::{AdminConfig, AdminServer, RelayConfig, RelayMetrics};
//! use std::sync::Arc;
//! let metrics = Arc::new(RelayMetrics::new());
//! let config = RelayConfig::default().metrics(Arc::clone(&metrics));
//! let admin = AdminServer::bind("127.0.0.1:9464", metrics, AdminConfig::default()).await?;
//! let (_stop, shutdown) = tokio::sync::watch::channel(false);
//! tokio::spawn(admin.run(shutdown));
//! // ... Relay::bind(store, addr, config) and run it.
//! # Ok(()) }
//! ```

use super::error::SyncError;
use super::limits::Admission;
use super::listener::Peer;
use super::metrics::RelayMetrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Admin server settings; the defaults suit a Prometheus scraping every
/// few seconds.
#[must_use]
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Connections served at once (at most; default 32).
    pub max_connections: usize,
    /// Of those, from one IP address (at most; default 8).
    pub max_per_address: usize,
    /// The largest request head (request line and headers) read, in bytes
    /// (default 8 KiB).
    pub max_head: usize,
    /// The request head must have arrived this long after the connection
    /// was accepted (default 5 s).
    pub read_timeout: Duration,
    /// The answer must have been taken this long after it was started
    /// (default 5 s).
    pub write_timeout: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            max_connections: 32,
            max_per_address: 8,
            max_head: 8 << 10,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
        }
    }
}

impl AdminConfig {
    /// Caps on connections at once, in all and per address (each at
    /// least 1).
    pub fn max_connections(mut self, total: usize, per_address: usize) -> Self {
        self.max_connections = total.max(1);
        self.max_per_address = per_address.max(1);
        self
    }

    /// The largest request head, in bytes (at least 256).
    pub fn max_head(mut self, bytes: usize) -> Self {
        self.max_head = bytes.max(256);
        self
    }

    /// The read and write deadlines.
    pub fn timeouts(mut self, read: Duration, write: Duration) -> Self {
        self.read_timeout = read;
        self.write_timeout = write;
        self
    }
}

/// The admin HTTP server (see the module docs).
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    metrics: Arc<RelayMetrics>,
    config: AdminConfig,
}

impl AdminServer {
    /// Listens on TCP `addr` (e.g. `127.0.0.1:0` for any free port).
    pub async fn bind(
        addr: &str,
        metrics: Arc<RelayMetrics>,
        config: AdminConfig,
    ) -> Result<AdminServer, SyncError> {
        let listener = TcpListener::bind(addr).await?;
        Ok(AdminServer::new(listener, metrics, config))
    }

    /// Serves `metrics` on a listener the application bound.
    pub fn new(listener: TcpListener, metrics: Arc<RelayMetrics>, config: AdminConfig) -> Self {
        AdminServer {
            listener,
            metrics,
            config,
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, SyncError> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` turns true (or its sender is dropped), then
    /// drops the requests in progress and returns. `/healthz` says 503
    /// from when the relay began shutting down: give this a watch that
    /// turns true after the relay's `run` returned to keep saying so while
    /// the relay drains, or the relay's own to stop with it.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), SyncError> {
        tracing::info!(addr = %self.local_addr_text(), "admin listening");
        let config = Arc::new(self.config);
        // The relay's pending-slot accounting, reused: a total cap and one
        // per address, given back when a request's task ends.
        let slots = Admission::new(1, config.max_connections, config.max_per_address);
        let mut tasks = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = shutdown.wait_for(|stop| *stop) => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            };
            let (stream, addr) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            };
            let slot = match slots.admit(&Peer::at(addr)) {
                Ok(slot) => slot,
                Err(limit) => {
                    tracing::debug!(source = %addr, reason = %limit, "admin connection refused");
                    continue;
                }
            };
            let (metrics, config) = (Arc::clone(&self.metrics), Arc::clone(&config));
            tasks.spawn(async move {
                let _slot = slot;
                answer(stream, &metrics, &config).await;
            });
        }
        tasks.shutdown().await;
        Ok(())
    }

    fn local_addr_text(&self) -> String {
        self.listener
            .local_addr()
            .map_or_else(|e| format!("(address unknown: {e})"), |a| a.to_string())
    }
}

/// How long the server waits after a failed accept.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// What a closing connection still reads and discards, and for how long,
/// so that the answer is not lost to a reset.
const DRAIN_BYTES: u64 = 64 << 10;
const DRAIN_TIME: Duration = Duration::from_millis(500);

/// Reads one request head and answers it, each under its deadline.
async fn answer<S>(mut stream: S, metrics: &RelayMetrics, config: &AdminConfig)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let head = tokio::time::timeout(config.read_timeout, read_head(&mut stream, config.max_head));
    let response = match head.await {
        Ok(Ok(Some(head))) => route(&head, metrics),
        Ok(Ok(None)) | Ok(Err(Head::Io)) => return,
        Ok(Err(Head::TooLarge)) => Response::text(431, "request head too large\n"),
        Err(_) => Response::text(408, "request head not received in time\n"),
    };
    let _ = tokio::time::timeout(config.write_timeout, async {
        stream.write_all(&response.bytes()).await?;
        stream.shutdown().await?;
        let mut rest = (&mut stream).take(DRAIN_BYTES);
        let _ = tokio::time::timeout(
            DRAIN_TIME,
            tokio::io::copy(&mut rest, &mut tokio::io::sink()),
        )
        .await;
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// Why no request head was read.
#[derive(Debug)]
enum Head {
    /// Over the size limit before its end.
    TooLarge,
    /// The connection failed.
    Io,
}

/// Reads up to the blank line that ends a request head: `None` if the
/// peer closed first, [`Head::TooLarge`] past `limit` bytes.
async fn read_head<S>(stream: &mut S, limit: usize) -> Result<Option<Vec<u8>>, Head>
where
    S: AsyncRead + Unpin,
{
    let mut head = Vec::with_capacity(limit.min(1024));
    let mut chunk = [0u8; 1024];
    loop {
        let room = (limit + 1).saturating_sub(head.len()).min(chunk.len());
        let n = stream
            .read(&mut chunk[..room])
            .await
            .map_err(|_| Head::Io)?;
        if n == 0 {
            return Ok(None);
        }
        // The end may straddle the previous read.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&head[from..]) {
            head.truncate(from + end);
            return Ok(Some(head));
        }
        if head.len() > limit {
            return Err(Head::TooLarge);
        }
    }
}

/// Where the blank line ending a head ends in `bytes` (`\r\n\r\n`, or
/// `\n\n` from lenient clients).
fn head_end(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len()).find_map(|i| {
        if bytes[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if bytes[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

/// Answers a request head.
fn route(head: &[u8], metrics: &RelayMetrics) -> Response {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return Response::text(400, "bad request line\n");
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Response::text(400, "bad request line\n");
    };
    if !version.starts_with("HTTP/") {
        return Response::text(400, "bad request line\n");
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Response::text(505, "HTTP/1.1 only\n");
    }
    let path = target.split('?').next().unwrap_or_default();
    if !matches!(path, "/metrics" | "/healthz") {
        return Response::text(404, "not found: try /metrics or /healthz\n");
    }
    if method != "GET" && method != "HEAD" {
        return Response {
            allow: true,
            ..Response::text(405, "only GET and HEAD\n")
        };
    }
    let response = match path {
        "/metrics" => Response {
            content_type: METRICS_TYPE,
            ..Response::text(200, &metrics.render())
        },
        _ if metrics.is_shutting_down() => Response::text(503, "shutting down\n"),
        _ => Response::text(200, "ok\n"),
    };
    Response {
        head_only: method == "HEAD",
        ..response
    }
}

/// The content type of the Prometheus text format.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An answer.
#[derive(Debug)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    /// Whether to list the methods allowed (a 405).
    allow: bool,
    /// A `HEAD`: the headers of the `GET`, without the body.
    head_only: bool,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_string(),
            allow: false,
            head_only: false,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if self.allow {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        if !self.head_only {
            out.push_str(&self.body);
        }
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `request` to [`answer`] over an in-memory pipe and returns
    /// everything it wrote back.
    async fn exchange(request: &[u8], metrics: &RelayMetrics, config: &AdminConfig) -> String {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let serve = answer(server, metrics, config);
        let talk = async {
            client.write_all(request).await.ok();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.ok();
            String::from_utf8_lossy(&got).into_owned()
        };
        tokio::join!(serve, talk).1
    }

    async fn get(request: &str) -> String {
        exchange(
            request.as_bytes(),
            &RelayMetrics::new(),
            &AdminConfig::default(),
        )
        .await
    }

    #[tokio::test]
    async fn metrics_and_health_answer_get_and_head() {
        let metrics = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(metrics.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert!(metrics.contains("Connection: close\r\n"));
        assert!(metrics.contains("\r\n\r\n# HELP meldb_relay_connections "));
        let health = get("GET /healthz?probe=1 HTTP/1.0\n\n").await;
        assert!(health.starts_with("HTTP/1.1 200 OK\r\n") && health.ends_with("\r\n\r\nok\n"));
        let head = get("HEAD /healthz HTTP/1.1\r\n\r\n").await;
        assert!(
            head.contains("Content-Length: 3\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn health_says_503_once_shutdown_began() {
        let metrics = RelayMetrics::new();
        metrics.begin_shutdown();
        let got = exchange(
            b"GET /healthz HTTP/1.1\r\n\r\n",
            &metrics,
            &AdminConfig::default(),
        )
        .await;
        assert!(
            got.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{got}"
        );
    }

    #[tokio::test]
    async fn other_paths_methods_and_bad_lines_are_refused() {
        for (request, status) in [
            ("GET / HTTP/1.1\r\n\r\n", "404 Not Found"),
            ("POST /metrics HTTP/1.1\r\n\r\n", "405 Method Not Allowed"),
            ("GET /metrics\r\n\r\n", "400 Bad Request"),
            ("GET /metrics HTTP/1.1 extra\r\n\r\n", "400 Bad Request"),
            ("GET /metrics FTP/1.1\r\n\r\n", "400 Bad Request"),
            (
                "GET /metrics HTTP/2.0\r\n\r\n",
                "505 HTTP Version Not Supported",
            ),
            ("\u{ff}\u{fe} / HTTP/1.1\r\n\r\n", "404 Not Found"),
        ] {
            let got = get(request).await;
            assert!(
                got.starts_with(&format!("HTTP/1.1 {status}\r\n")),
                "{request:?}: {got}"
            );
        }
        let refused = get("DELETE /healthz HTTP/1.1\r\n\r\n").await;
        assert!(refused.contains("Allow: GET, HEAD\r\n"));
        let invalid = exchange(
            b"GET /\xff HTTP/1.1\r\n\r\n",
            &RelayMetrics::new(),
            &AdminConfig::default(),
        )
        .await;
        assert!(invalid.starts_with("HTTP/1.1 400 "), "{invalid}");
    }

    #[tokio::test]
    async fn a_head_over_the_limit_is_refused_whole() {
        // The attacker: a header that never ends, 10 KiB of it at once.
        let mut request = b"GET /metrics HTTP/1.1\r\nX-Junk: ".to_vec();
        request.resize(10 << 10, b'a');
        let config = AdminConfig::default().max_head(8 << 10);
        let got = exchange(&request, &RelayMetrics::new(), &config).await;
        assert!(got.starts_with("HTTP/1.1 431 "), "{got}");
        assert!(!got.contains("# HELP"), "no metrics for it");
    }

    #[tokio::test]
    async fn a_head_not_finished_in_time_gets_408() {
        // The attacker sends half a request line and nothing more.
        let config =
            AdminConfig::default().timeouts(Duration::from_millis(50), Duration::from_secs(5));
        let (mut client, server) = tokio::io::duplex(1 << 10);
        let metrics = RelayMetrics::new();
        let serve = answer(server, &metrics, &config);
        let talk = async {
            client.write_all(b"GET /met").await.ok();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.ok();
            String::from_utf8_lossy(&got).into_owned()
        };
        let got = tokio::join!(serve, talk).1;
        assert!(got.starts_with("HTTP/1.1 408 "), "{got}");
    }

    #[test]
    fn the_blank_line_is_found_across_reads() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        assert_eq!(head_end(b"\r\n\r\nrest"), Some(4));
        assert_eq!(head_end(b"a\n\nb"), Some(3));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    #[tokio::test]
    async fn a_head_split_in_single_bytes_is_read() {
        struct OneByte(&'static [u8]);
        impl AsyncRead for OneByte {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                if let Some((first, rest)) = self.0.split_first() {
                    buf.put_slice(&[*first]);
                    self.0 = rest;
                }
                std::task::Poll::Ready(Ok(()))
            }
        }
        let mut stream = OneByte(b"GET /healthz HTTP/1.1\r\nA: b\r\n\r\nbody");
        let head = read_head(&mut stream, 1024).await.ok().flatten();
        assert_eq!(
            head.as_deref(),
            Some(&b"GET /healthz HTTP/1.1\r\nA: b\r\n\r\n"[..])
        );
    }
}
