//! The HTTP limits over real sockets: `axum::serve` on a `LimitedListener` with the body-size
//! and per-IP limits of `with_limits`. A connection beyond `connections_max` is answered 503
//! `{code, message}` and closed while the first stays usable; a chunked body over the limit is
//! 413 `{code, message}`; the per-IP rate applies to the peer address the listener records.
//! One address holding connections open (idle, half-sent head, half-sent body) gets its share
//! and no more, and those connections are closed by the header-read and idle timeouts, while a
//! client at another address is served throughout. An answer is written as soon as it is ready,
//! even while part of the client's next pipelined request waits in the server's read buffer.

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
    let listener = LimitedListener::new(listener, &limits);
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

/// A client connection from `source` (any 127.0.0.0/8 address: Linux routes them all to `lo`, so
/// a test can play several client addresses).
fn connect_from(runtime: &tokio::runtime::Runtime, source: [u8; 4], port: u16) -> BufReader<TcpStream> {
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((std::net::Ipv4Addr::from(source), 0).into()).unwrap();
        socket.connect(([127, 0, 0, 1], port).into()).await.unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    BufReader::new(stream)
}

/// Whether the server closes `connection` within `within` (EOF or reset), rather than leaving it
/// open; whatever it sends before closing is read and ignored.
fn closed_by_server(connection: &mut BufReader<TcpStream>, within: Duration) -> bool {
    connection.get_mut().set_read_timeout(Some(within)).unwrap();
    let mut rest = Vec::new();
    match connection.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(error) => !matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

#[test]
fn one_address_holding_connections_does_not_lock_out_others() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let limits = HttpLimits {
        connections_max: 8,
        connections_per_ip_max: 4,
        header_read_timeout: Duration::from_millis(600),
        idle_timeout: Duration::from_millis(1_500),
        ..HttpLimits::default()
    };
    let router = Router::new()
        .route("/ping", get(|| async { axum::Json(serde_json::json!({"ok": true})) }))
        .route("/echo", post(|body: axum::body::Bytes| async move { body.len().to_string() }));
    let router = with_limits(router, &limits, Arc::new(IpRateLimiter::new(0, 0)));
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let listener = LimitedListener::new(listener, &limits);
    let (refused, refused_per_ip) = (listener.refused.clone(), listener.refused_per_ip.clone());
    runtime.spawn(gateway_json::limits::serve(listener, router, std::future::pending()));

    // The hog (127.0.0.1) opens as many connections as the global limit: idle ones, one with
    // half a request head, one with a head and half its body.
    const HOG: [u8; 4] = [127, 0, 0, 1];
    let mut idle = connect_from(&runtime, HOG, port);
    let mut idle_2 = connect_from(&runtime, HOG, port);
    let mut half_head = connect_from(&runtime, HOG, port);
    write!(half_head.get_mut(), "GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
    let mut half_body = connect_from(&runtime, HOG, port);
    write!(half_body.get_mut(), "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut extra: Vec<_> = (0..4).map(|_| connect_from(&runtime, HOG, port)).collect();
    // Beyond its share: 429 {code, message} and closed, without taking a global place.
    for connection in &mut extra {
        let (status, body) = read_response(connection);
        assert_eq!((status, body["code"].as_str()), (429, Some("TOO_MANY_REQUESTS")), "{body}");
        assert!(closed_by_server(connection, Duration::from_secs(2)));
    }
    assert_eq!(refused_per_ip.load(std::sync::atomic::Ordering::Relaxed), 4);

    // Meanwhile a client at another address is served.
    let mut polite = connect_from(&runtime, [127, 0, 0, 2], port);
    assert_eq!(http_get(&mut polite, "/ping").0, 200);
    assert_eq!(refused.load(std::sync::atomic::Ordering::Relaxed), 0, "the global limit was never reached");

    // The hog's connections do not stay open: the half-sent and idle ones are closed by the
    // header-read timeout, the half-sent body by the idle timeout.
    for (name, connection) in [("idle", &mut idle), ("idle 2", &mut idle_2), ("half head", &mut half_head)] {
        assert!(closed_by_server(connection, Duration::from_secs(3)), "{name} connection still open");
    }
    assert!(closed_by_server(&mut half_body, Duration::from_secs(5)), "half-sent body still open");
    // Its places are free again.
    let mut again = connect_from(&runtime, HOG, port);
    assert_eq!(http_get(&mut again, "/ping").0, 200);
    // The polite client's keep-alive connection was idle too long as well; a new one works.
    assert!(closed_by_server(&mut polite, Duration::from_secs(3)));
    let mut polite = connect_from(&runtime, [127, 0, 0, 2], port);
    assert_eq!(http_get(&mut polite, "/ping").0, 200);
}

/// A client that pipelines the start of its next request and then waits for the previous answer
/// gets that answer at once (hyper's `pipeline_flush` would hold it back while those bytes sit
/// unparsed in the read buffer, until a timeout closed the connection).
#[test]
fn an_answer_is_not_held_behind_a_partial_pipelined_request() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let limits = HttpLimits { header_read_timeout: Duration::from_secs(30), ..HttpLimits::default() };
    let router = Router::new().route("/ping", get(|| async { axum::Json(serde_json::json!({"ok": true})) }));
    let router = with_limits(router, &limits, Arc::new(IpRateLimiter::new(0, 0)));
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    runtime.spawn(gateway_json::limits::serve(LimitedListener::new(listener, &limits), router, std::future::pending()));

    let mut client = connect(port);
    client.get_mut().set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    // One complete request and the first bytes of the next, in one write.
    client.get_mut().write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\nGET /ping HTTP/1.1\r\nHo").unwrap();
    let (status, body) = read_response(&mut client);
    assert_eq!((status, body["ok"].as_bool()), (200, Some(true)), "the first answer came");
    client.get_mut().write_all(b"st: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut client).0, 200, "then the second");
}
