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
//!   the limit is answered `503` and closed.
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
use std::collections::HashMap;
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

/// A TCP listener that keeps at most `connections_max` connections open: one beyond is
/// answered `503 SERVICE_UNAVAILABLE` (`{code, message}`) and closed. Sets `TCP_NODELAY`.
#[derive(Debug)]
pub struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    /// Connections refused because the limit was reached.
    pub refused: Arc<AtomicU64>,
}

impl LimitedListener {
    /// Wraps `inner`.
    pub fn new(inner: TcpListener, connections_max: usize) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(connections_max.clamp(1, Semaphore::MAX_PERMITS))),
            refused: Arc::new(AtomicU64::new(0)),
        }
    }
}

const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n\
Content-Length: 71\r\n\r\n{\"code\":\"SERVICE_UNAVAILABLE\",\"message\":\"Too many connections, retry\"}\n";

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (mut stream, address) = axum::serve::Listener::accept(&mut self.inner).await;
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let _ = stream.set_nodelay(true);
                    return (LimitedStream { stream, _permit: permit }, address);
                }
                Err(_) => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(1), async {
                            let _ = stream.write_all(REFUSED).await;
                            let _ = stream.shutdown().await;
                        })
                        .await;
                    });
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection of a [`LimitedListener`]; closing it frees its place.
#[derive(Debug)]
pub struct LimitedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for LimitedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
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
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
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
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head} / {}", body.len());
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
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
