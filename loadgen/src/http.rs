//! A minimal HTTP/1.1 client over a blocking [`TcpStream`]: request bytes, an incremental
//! response parser, and a one-request-at-a-time helper for setup calls.
//!
//! Hand-written rather than hyper's client (which is in the tree through axum) for exact control
//! of what the load run measures: the request bytes are built (and signed) before their
//! scheduled time, one `write` puts them on the socket, and the receiver thread parses answers
//! straight from its read buffer, stamping each with the time of the read that completed it. With
//! hyper the write would go through a tokio runtime and its connection task, whose scheduling
//! would be in every figure, and the generator's thread model (one pacing sender, one receiver
//! per connection, as in the SBE and FIX runs) would not hold. Requests are **pipelined** on a
//! keep-alive connection (HTTP/1.1 answers come in request order), so the open-loop sender never
//! waits for an answer, and answers are matched to requests first in, first out.
//!
//! The parser takes what the exchange's server sends: a status line, headers, and a body framed
//! by `Content-Length` or `Transfer-Encoding: chunked` (trailers ignored).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One parsed HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The body's JSON `code` (error answers are `{"code","message"}`), or the status alone.
    pub fn reason(&self) -> String {
        let code = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned));
        match code {
            Some(code) => format!("{} {code}", self.status),
            None => self.status.to_string(),
        }
    }
}

/// Parses one response from the start of `buffer`: `Ok(None)` while it is incomplete,
/// `Ok(Some((response, bytes used)))` once whole, `Err` if it is not HTTP/1.1 as expected.
///
/// # Errors
/// A malformed status line, header or chunk size.
pub fn parse_response(buffer: &[u8]) -> Result<Option<(Response, usize)>, String> {
    let Some(head_end) = find(buffer, b"\r\n\r\n") else {
        if buffer.len() > 64 * 1024 {
            return Err("response head longer than 64 KiB".into());
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buffer[..head_end]).map_err(|_| "response head is not UTF-8".to_owned())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 status line: {status_line:?}"));
    }
    let status: u16 =
        parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad status line: {status_line:?}"))?;
    let (mut length, mut chunked) = (None, false);
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| format!("bad header line: {line:?}"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| format!("bad Content-Length: {value:?}"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let body_start = head_end + 4;
    if chunked {
        let mut body = Vec::new();
        let mut at = body_start;
        loop {
            let Some(line_end) = find(&buffer[at..], b"\r\n") else { return Ok(None) };
            let size_text = std::str::from_utf8(&buffer[at..at + line_end]).map_err(|_| "bad chunk size".to_owned())?;
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| format!("bad chunk size: {size_text:?}"))?;
            at += line_end + 2;
            if size == 0 {
                // Trailers (none expected), then the empty line.
                loop {
                    let Some(end) = find(&buffer[at..], b"\r\n") else { return Ok(None) };
                    at += end + 2;
                    if end == 0 {
                        return Ok(Some((Response { status, body }, at)));
                    }
                }
            }
            if buffer.len() < at + size + 2 {
                return Ok(None);
            }
            body.extend_from_slice(&buffer[at..at + size]);
            if &buffer[at + size..at + size + 2] != b"\r\n" {
                return Err("chunk not followed by CRLF".into());
            }
            at += size + 2;
        }
    }
    let length = length.unwrap_or(0);
    if buffer.len() < body_start + length {
        return Ok(None);
    }
    let body = buffer[body_start..body_start + length].to_vec();
    Ok(Some((Response { status, body }, body_start + length)))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The bytes of a request with a JSON body (or none), keep-alive.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: loadgen\r\n");
    for (name, value) in headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    match body {
        Some(body) => {
            out.push_str("Content-Type: application/json; charset=utf-8\r\n");
            out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            out.push_str(body);
        }
        None => out.push_str("\r\n"),
    }
    out.into_bytes()
}

/// A blocking keep-alive connection for setup calls: one request, then its whole answer.
pub struct Client {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Client {
    /// Connects (10 s read timeout).
    ///
    /// # Errors
    /// The connection failed.
    pub fn connect(address: &str) -> Result<Self, String> {
        let stream = TcpStream::connect(address).map_err(|e| format!("connect to {address}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        Ok(Self { stream, buffer: Vec::new() })
    }

    /// Sends `request` (from [`request`]) and reads its answer.
    ///
    /// # Errors
    /// I/O errors, a closed connection or a malformed answer.
    pub fn call(&mut self, request: &[u8]) -> Result<Response, String> {
        self.stream.write_all(request).map_err(|e| format!("send: {e}"))?;
        let mut chunk = [0u8; 8192];
        loop {
            if let Some((response, used)) = parse_response(&self.buffer)? {
                self.buffer.drain(..used);
                return Ok(response);
            }
            let read = self.stream.read(&mut chunk).map_err(|e| format!("receive: {e}"))?;
            if read == 0 {
                return Err("connection closed by the server".into());
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_response_parses_whole_and_byte_by_byte() {
        let error = r#"{"code":"INVALID_ORDER","message":"Off the grid"}"#;
        let wire = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{error}\
             HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{{}}",
            error.len()
        );
        let wire = wire.as_bytes();
        let (first, used) = parse_response(wire).unwrap().unwrap();
        assert_eq!(first.status, 400);
        assert_eq!(first.reason(), "400 INVALID_ORDER");
        let (second, used2) = parse_response(&wire[used..]).unwrap().unwrap();
        assert_eq!((second.status, second.body.as_slice()), (200, b"{}".as_slice()));
        assert_eq!(used + used2, wire.len());
        // Every proper prefix is incomplete, never an error or a wrong answer.
        for cut in 0..used {
            assert_eq!(parse_response(&wire[..cut]).unwrap(), None, "prefix of {cut} bytes");
        }
    }

    #[test]
    fn chunked_response_parses_and_waits_for_the_last_chunk() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=1\r\n:1}\r\n0\r\n\r\nrest";
        let (response, used) = parse_response(wire).unwrap().unwrap();
        assert_eq!(response.body, b"{\"a\":1}");
        assert_eq!(&wire[used..], b"rest");
        for cut in 0..used {
            assert_eq!(parse_response(&wire[..cut]).unwrap(), None, "prefix of {cut} bytes");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_hang() {
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 abc OK\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
        assert!(parse_response(&[b'a'; 70_000]).is_err());
    }

    #[test]
    fn requests_carry_length_and_keep_alive() {
        let bytes = request("POST", "/api/v1/order", &[("X-API-Key", "k")], Some("{}"));
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("POST /api/v1/order HTTP/1.1\r\n"));
        assert!(text.contains("X-API-Key: k\r\n"));
        assert!(text.ends_with("Content-Length: 2\r\n\r\n{}"));
        assert!(!text.to_ascii_lowercase().contains("connection: close"));
    }
}
