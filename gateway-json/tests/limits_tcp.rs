//! The HTTP limits over real sockets: `axum::serve` on a `LimitedListener` with the body-size
//! and per-IP limits of `with_limits`. A connection beyond `connections_max` is answered 503
//! `{code, message}` and closed while the first stays usable; a chunked body over the limit is
//! 413 `{code, message}`; the per-IP rate applies to the peer address the listener records.

use axum::Router;
use axum::routing::{get, post};
use gateway_json::limits::{HttpLimits, IpRateLimiter, LimitedListener, PeerAddr, with_limits};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

/// Reads one HTTP/1.1 response with a Content-Length body.
fn read_response(reader: &mut BufReader<TcpStream>) -> (u16, Value) {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut length = 0;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn connect(port: u16) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    BufReader::new(stream)
}

fn http_get(reader: &mut BufReader<TcpStream>, path: &str) -> (u16, Value) {
    write!(reader.get_mut(), "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    read_response(reader)
}

#[test]
fn connection_body_and_ip_limits_on_a_real_listener() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let limits = HttpLimits {
        body_bytes_max: 256,
        ip_requests_per_second: 1,
        ip_burst: 6,
        connections_max: 1,
        ..HttpLimits::default()
    };
    let router = Router::new()
        .route("/ping", get(|| async { axum::Json(serde_json::json!({"ok": true})) }))
        .route("/echo", post(|body: axum::body::Bytes| async move { body.len().to_string() }));
    let router = with_limits(router, &limits, Arc::new(IpRateLimiter::new(1, 6)));
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let listener = LimitedListener::new(listener, limits.connections_max);
    let refused = listener.refused.clone();
    runtime.spawn(async move {
        axum::serve(listener, router.into_make_service_with_connect_info::<PeerAddr>()).await.unwrap();
    });

    let mut first = connect(port);
    assert_eq!(http_get(&mut first, "/ping").0, 200);
    // A second connection while the first is open: 503 and closed.
    let mut second = connect(port);
    let (status, body) = read_response(&mut second);
    assert_eq!((status, body["code"].as_str()), (503, Some("SERVICE_UNAVAILABLE")), "{body}");
    let mut rest = Vec::new();
    assert_eq!(second.read_to_end(&mut rest).unwrap_or(0), 0, "closed after the refusal");
    assert_eq!(refused.load(std::sync::atomic::Ordering::Relaxed), 1);

    // The first connection still works; a chunked body over the limit is 413 {code, message}.
    let chunk = "x".repeat(200);
    write!(
        first.get_mut(),
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len(),
        chunk.len()
    )
    .unwrap();
    let (status, body) = read_response(&mut first);
    assert_eq!((status, body["code"].as_str()), (413, Some("PAYLOAD_TOO_LARGE")), "{body}");
    drop(first);

    // Once the first connection is closed, a new one is accepted; the peer's burst of 6 is
    // spent by now (2 requests above + these), then 429.
    std::thread::sleep(Duration::from_millis(100));
    let mut third = connect(port);
    let statuses: Vec<u16> = (0..6).map(|_| http_get(&mut third, "/ping").0).collect();
    assert_eq!(&statuses[..4], &[200, 200, 200, 200], "{statuses:?}");
    assert_eq!(statuses[5], 429, "{statuses:?}");
    let (status, body) = http_get(&mut third, "/ping");
    assert_eq!((status, body["code"].as_str()), (429, Some("TOO_MANY_REQUESTS")));
}
