//! Limits of the HTTP API: request body size, request rates per client IP and per API key, and
//! simultaneous connections. See docs/rest-api.md ("Limits") and `[http]` in exchange.toml.
//!
//! - Body size: [`with_limits`] sets axum's `DefaultBodyLimit`; a larger body is
//!   `413 PAYLOAD_TOO_LARGE` with `{code, message}`.
//! - Per-IP rate: every request is charged to its peer address before it is handled (the peer
//!   address comes from [`PeerAddr`], the connect info of [`LimitedListener`]); over the rate it
//!   is `429 TOO_MANY_REQUESTS` with a `Retry-After` header.
//! - Per-key rate: charged only once a request's signature has verified
//!   ([`KeyRateLimiter::check`], called by the private handlers), so nobody can spend another
//!   user's budget by sending their public key.
//! - Connections: [`LimitedListener`] holds one permit per open connection; a connection beyond
//!   the limit is answered `503` and closed. It also counts open connections per peer IP: one
//!   beyond `connections_per_ip_max` is answered `429` and closed, so one address cannot take
//!   every place of the global limit and lock everyone else out.
//! - Time: [`serve`] closes a connection that does not deliver a complete request head within
//!   `header_read_timeout` (counted from the connection's start or its previous response, so it
//!   also bounds idle keep-alive), and one on which no byte moves either way for `idle_timeout`
//!   (a stalled body, a client that stops reading its response, a silent upgraded connection).
//!
//! Rates are token buckets ([`engine::throttle::TokenBucket`]). The bucket tables are bounded:
//! buckets idle long enough to be full again are dropped when a table reaches
//! [`BUCKETS_MAX`] entries (dropping a full bucket changes nothing).

use crate::ApiError;
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use engine::throttle::TokenBucket;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

/// Most entries of a bucket table before idle ones are dropped.
pub const BUCKETS_MAX: usize = 100_000;

/// The HTTP limits (`[http]` of the server configuration). A rate of 0 disables that limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request body, bytes.
    pub body_bytes_max: usize,
    /// Sustained requests per second per client IP (0: unlimited).
    pub ip_requests_per_second: u32,
    /// Burst above the per-IP rate.
    pub ip_burst: u32,
    /// Sustained signed requests per second per API key (0: unlimited).
    pub key_requests_per_second: u32,
    /// Burst above the per-key rate.
    pub key_burst: u32,
    /// Most simultaneous connections.
    pub connections_max: usize,
    /// Most simultaneous connections from one peer IP address (0: only the global limit).
    pub connections_per_ip_max: usize,
    /// Longest wait for a complete request head, from the connection's start or the end of its
    /// previous response (zero: no limit).
    pub header_read_timeout: Duration,
    /// Longest time a connection may go without a byte read or written (zero: no limit). Must
    /// exceed the WebSocket ping interval, or quiet WebSocket connections are closed.
    pub idle_timeout: Duration,
}

impl Default for HttpLimits {
    /// Generous defaults: far above what a well-behaved client (or the test suites) sends.
    fn default() -> Self {
        Self {
            body_bytes_max: 64 * 1024,
            ip_requests_per_second: 2_000,
            ip_burst: 4_000,
            key_requests_per_second: 1_000,
            key_burst: 2_000,
            connections_max: 1_024,
            // Above the WebSocket API's 50 per IP, so a page with its streams and REST calls
            // fits; far below the global limit, so 16 addresses are needed to fill it.
            connections_per_ip_max: 64,
            header_read_timeout: Duration::from_secs(10),
            // Above the WebSocket ping interval (60 s), whose pings keep quiet streams alive.
            idle_timeout: Duration::from_secs(90),
        }
    }
}

/// `429 TOO_MANY_REQUESTS`.
pub fn too_many_requests(message: impl Into<String>) -> ApiError {
    ApiError { status: StatusCode::TOO_MANY_REQUESTS, code: "TOO_MANY_REQUESTS", message: message.into() }
}

/// A table of token buckets by key.
#[derive(Debug)]
struct Buckets<K> {
    table: Mutex<HashMap<K, (TokenBucket, Instant)>>,
    rate: u32,
    burst: u32,
    /// How long a bucket takes to fill up from empty.
    refill: Duration,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(rate: u32, burst: u32) -> Option<Self> {
        (rate > 0).then(|| Self {
            table: Mutex::new(HashMap::new()),
            rate,
            burst,
            refill: Duration::from_micros(u64::from(burst.max(1)) * 1_000_000 / u64::from(rate) + 1),
        })
    }

    /// Takes a token for `key` (`take`), or only tells whether one is there.
    fn admit(&self, key: &K, take: bool) -> bool {
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if table.len() >= BUCKETS_MAX && !table.contains_key(key) {
            let refill = self.refill;
            table.retain(|_, (_, last)| now.saturating_duration_since(*last) < refill);
            if table.len() >= BUCKETS_MAX {
                // Every bucket is in use: forget them all rather than grow without bound.
                table.clear();
            }
        }
        let (bucket, last) =
            table.entry(key.clone()).or_insert_with(|| (TokenBucket::new(self.rate, self.burst, now), now));
        *last = now;
        if take { bucket.try_take(now) } else { bucket.clone().try_take(now) }
    }
}

/// The per-API-key rate limit, applied after a request's signature verified.
#[derive(Debug)]
pub struct KeyRateLimiter {
    buckets: Option<Buckets<String>>,
    /// Requests refused.
    pub refused: AtomicU64,
}

impl KeyRateLimiter {
    /// `rate` signed requests per second per key with `burst` (rate 0: unlimited).
    pub fn new(rate: u32, burst: u32) -> Self {
        Self { buckets: Buckets::new(rate, burst), refused: AtomicU64::new(0) }
    }

    /// Charges one request to `api_key`.
    ///
    /// # Errors
    /// `429 TOO_MANY_REQUESTS` when the key is over its rate.
    pub fn check(&self, api_key: &str) -> Result<(), ApiError> {
        match &self.buckets {
            Some(buckets) if !buckets.admit(&api_key.to_string(), true) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(too_many_requests(format!(
                    "Rate limit exceeded: at most {} requests per second per API key (or session user)",
                    buckets.rate
                )))
            }
            _ => Ok(()),
        }
    }
}

/// The per-IP rate limit (a middleware, see [`with_limits`]).
#[derive(Debug)]
pub struct IpRateLimiter {
    buckets: Option<Buckets<IpAddr>>,
    /// Requests refused.
    pub refused: AtomicU64,
}

impl IpRateLimiter {
    /// `rate` requests per second per IP with `burst` (rate 0: unlimited).
    pub fn new(rate: u32, burst: u32) -> Self {
        Self { buckets: Buckets::new(rate, burst), refused: AtomicU64::new(0) }
    }

    /// Charges one request to `ip`.
    ///
    /// # Errors
    /// `429 TOO_MANY_REQUESTS` when the address is over its rate.
    pub fn check(&self, ip: IpAddr) -> Result<(), ApiError> {
        match &self.buckets {
            Some(buckets) if !buckets.admit(&ip, true) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(too_many_requests(format!(
                    "Rate limit exceeded: at most {} requests per second per IP address",
                    buckets.rate
                )))
            }
            _ => Ok(()),
        }
    }
}

/// The peer address of a connection accepted by [`LimitedListener`] (axum connect info: serve
/// with `router.into_make_service_with_connect_info::<PeerAddr>()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, LimitedListener>> for PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, LimitedListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>> for PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// The client's IP address from the connection info the server records ([`PeerAddr`] through
/// the limited listener, or a plain `SocketAddr`); `None` when the server records none.
pub fn client_ip(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<PeerAddr>>()
        .map(|info| info.0.0.ip())
        .or_else(|| extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip()))
}

async fn limit_ip(State(limiter): State<Arc<IpRateLimiter>>, request: Request, next: Next) -> Response {
    if let Some(ip) = client_ip(request.extensions()) {
        if let Err(error) = limiter.check(ip) {
            let mut response = error.into_response();
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
    }
    next.run(request).await
}

/// Rewrites axum's plain-text `413` (body over the limit) as `{code, message}`.
async fn json_payload_too_large(response: Response) -> Response {
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: "PAYLOAD_TOO_LARGE",
        message: "Request body is too large".into(),
    }
    .into_response()
}

/// `router` with the body-size limit and the per-IP rate limit of `limits` (the per-key limit
/// lives in [`crate::PrivateState::with_key_limits`]; the connection limit in
/// [`LimitedListener`]).
pub fn with_limits(router: Router, limits: &HttpLimits, ip_limiter: Arc<IpRateLimiter>) -> Router {
    router
        .layer(DefaultBodyLimit::max(limits.body_bytes_max))
        .layer(middleware::map_response(json_payload_too_large))
        .layer(middleware::from_fn_with_state(ip_limiter, limit_ip))
}

/// A TCP listener that keeps at most `connections_max` connections open, and at most
/// `connections_per_ip_max` from one peer IP: one beyond the global limit is answered
/// `503 SERVICE_UNAVAILABLE`, one beyond its address's limit `429 TOO_MANY_REQUESTS` (both
/// `{code, message}`), and closed. Its connections close after `idle_timeout` without traffic.
/// Sets `TCP_NODELAY`.
#[derive(Debug)]
pub struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    peers: Arc<PeerConnections>,
    idle_timeout: Option<Duration>,
    header_read_timeout: Option<Duration>,
    /// Connections refused because the global limit was reached.
    pub refused: Arc<AtomicU64>,
    /// Connections refused because their address had its share open already.
    pub refused_per_ip: Arc<AtomicU64>,
}

impl LimitedListener {
    /// Wraps `inner` with the connection limits and timeouts of `limits`.
    pub fn new(inner: TcpListener, limits: &HttpLimits) -> Self {
        let nonzero = |timeout: Duration| (!timeout.is_zero()).then_some(timeout);
        Self {
            inner,
            permits: Arc::new(Semaphore::new(limits.connections_max.clamp(1, Semaphore::MAX_PERMITS))),
            peers: Arc::new(PeerConnections {
                open: Mutex::new(HashMap::new()),
                per_ip_max: match limits.connections_per_ip_max {
                    0 => usize::MAX,
                    max => max,
                },
            }),
            idle_timeout: nonzero(limits.idle_timeout),
            header_read_timeout: nonzero(limits.header_read_timeout),
            refused: Arc::new(AtomicU64::new(0)),
            refused_per_ip: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// Open connections per peer IP. An address is in the table only while it has a connection
/// open, so the table never holds more entries than the global connection limit.
#[derive(Debug)]
struct PeerConnections {
    open: Mutex<HashMap<IpAddr, usize>>,
    per_ip_max: usize,
}

impl PeerConnections {
    /// Counts one more connection from `ip`, unless it has its share open already.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.per_ip_max {
            return None;
        }
        *count += 1;
        Some(PeerSlot { peers: self.clone(), ip })
    }
}

/// One connection's place in [`PeerConnections`]; dropping it frees the place.
#[derive(Debug)]
struct PeerSlot {
    peers: Arc<PeerConnections>,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.peers.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The answer to a connection beyond the global limit.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n\
Content-Length: 71\r\n\r\n{\"code\":\"SERVICE_UNAVAILABLE\",\"message\":\"Too many connections, retry\"}\n";

/// The answer to a connection beyond its address's limit.
const REFUSED_PER_IP: &[u8] =
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nConnection: close\r\n\
Retry-After: 1\r\nContent-Length: 80\r\n\r\n\
{\"code\":\"TOO_MANY_REQUESTS\",\"message\":\"Too many connections from this address\"}\n";

/// Longest time spent writing a refusal before the connection is dropped anyway.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Writes `answer` to a refused connection and closes it, without holding up the accept loop.
fn refuse(mut stream: TcpStream, answer: &'static [u8]) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
            let _ = stream.write_all(answer).await;
            let _ = stream.shutdown().await;
        })
        .await;
    });
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, address) = axum::serve::Listener::accept(&mut self.inner).await;
            // The address's share first: a refused flood from one address must not take
            // global permits, even for a moment.
            let Some(peer) = self.peers.admit(address.ip()) else {
                self.refused_per_ip.fetch_add(1, Ordering::Relaxed);
                refuse(stream, REFUSED_PER_IP);
                continue;
            };
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let _ = stream.set_nodelay(true);
                    let idle = self.idle_timeout.map(|timeout| IdleTimer {
                        timeout,
                        last_activity: tokio::time::Instant::now(),
                        sleep: Box::pin(tokio::time::sleep(timeout)),
                    });
                    return (LimitedStream { stream, idle, _permit: permit, _peer: peer }, address);
                }
                Err(_) => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    refuse(stream, REFUSED);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The idle timer of a connection. Traffic only records its time; the sleep is re-armed when
/// it fires early, so reads and writes cost no timer operations.
#[derive(Debug)]
struct IdleTimer {
    timeout: Duration,
    last_activity: tokio::time::Instant,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimer {
    /// `Ready(error)` once nothing has moved for the timeout; otherwise arms the waker.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let deadline = self.last_activity + self.timeout;
            if tokio::time::Instant::now() >= deadline {
                return Poll::Ready(std::io::Error::new(std::io::ErrorKind::TimedOut, "connection idle"));
            }
            self.sleep.as_mut().reset(deadline);
        }
    }
}

/// A connection of a [`LimitedListener`]; closing it frees its places.
#[derive(Debug)]
pub struct LimitedStream {
    stream: TcpStream,
    idle: Option<IdleTimer>,
    _permit: OwnedSemaphorePermit,
    _peer: PeerSlot,
}

impl LimitedStream {
    /// Records traffic when `poll` made progress; fails a pending one once the idle time is up.
    fn track<T>(&mut self, cx: &mut Context<'_>, poll: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        match (&mut self.idle, poll) {
            (None, poll) => poll,
            (Some(idle), Poll::Pending) => idle.poll_expired(cx).map(Err),
            (Some(idle), ready) => {
                idle.last_activity = tokio::time::Instant::now();
                ready
            }
        }
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        this.track(cx, poll)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.track(cx, poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.track(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets open requests finish.
///
/// Like `axum::serve` with `into_make_service_with_connect_info::<PeerAddr>()` (handlers see
/// `ConnectInfo<PeerAddr>`; WebSocket upgrades work), plus what `axum::serve` cannot set:
/// hyper's header-read timeout (`header_read_timeout` of the listener's limits), without which
/// a client sending a request head slowly, or never, holds its connection for ever.
pub async fn serve(mut listener: LimitedListener, router: Router, shutdown: impl Future<Output = ()>) {
    use axum::serve::Listener as _;
    let (stop_connections, stopping) = tokio::sync::watch::channel(false);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    // Not `pipeline_flush`: it holds an answer back while unparsed bytes of the next request sit
    // in the read buffer, so a client that sends part of its next request and waits for the
    // previous answer would wait until a timeout.
    http1.timer(TokioTimer::new()).header_read_timeout(listener.header_read_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, address) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let peer = axum::extract::ConnectInfo(PeerAddr(address));
        let service = router.clone().map_request(move |mut request: Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(peer);
            request
        });
        let connection = http1.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection.with_upgrades());
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stopping.wait_for(|stop| *stop) => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
    }
    drop((listener, stopping));
    let _ = stop_connections.send(true);
    // Every connection task holds a receiver; all are gone once every connection has closed.
    stop_connections.closed().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bucket_burst_then_refuse() {
        let limiter = KeyRateLimiter::new(1, 3);
        assert!((0..3).all(|_| limiter.check("a").is_ok()));
        let error = limiter.check("a").unwrap_err();
        assert_eq!((error.status, error.code), (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS"));
        assert!(limiter.check("b").is_ok(), "keys have separate buckets");
        assert!(KeyRateLimiter::new(0, 0).check("a").is_ok(), "rate 0 is unlimited");
        assert_eq!(limiter.refused.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn refusal_body_length_matches() {
        for refusal in [REFUSED, REFUSED_PER_IP] {
            let text = std::str::from_utf8(refusal).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head} / {}", body.len());
            assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
        }
    }

    #[test]
    fn tables_stay_bounded() {
        let buckets: Buckets<u32> = Buckets::new(1_000_000, 1).unwrap();
        for key in 0..(BUCKETS_MAX as u32 + 10) {
            buckets.admit(&key, true);
        }
        assert!(buckets.table.lock().unwrap().len() <= BUCKETS_MAX);
    }
}
