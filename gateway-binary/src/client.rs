//! A small blocking client for the binary gateway (used by tests, loadgen and the example).
//!
//! ```no_run
//! use gateway_binary::client::{Client, Incoming};
//! let seed = [7u8; 32]; // the API secret: an Ed25519 seed
//! let mut client = Client::connect("127.0.0.1:9100", &seed, 1).unwrap();
//! # let order = engine::testkit::commands::gtc(0, 1, codec::Side::Bid, 600_000, 10);
//! client.send(&order).unwrap();
//! match client.receive().unwrap() {
//!     Incoming::Event(event) => println!("{event:?}"),
//!     other => println!("{other:?}"),
//! }
//! ```

use crate::session::logon_payload;
use codec::*;
use ed25519_dalek::Signer;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Something the server sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// An execution report (an engine event about the session's orders), with its sequence.
    Event(Event),
    /// A session-layer message (heartbeat, business reject, retransmission header, terminate…).
    Session(Session),
}

/// Client failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Socket error.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The server ended the session.
    #[error("terminated by the server: {0:?}")]
    Terminated(TerminateReason),
    /// Something that is not our protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// A logged-on session.
pub struct Client {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// What the server said at logon.
    pub ack: EstablishAck,
    api_key: PublicKey,
}

impl Client {
    /// Connects and logs on with the Ed25519 seed `secret`, saying the next server sequence it
    /// expects (1 for a new session). The server does not replay on its own: after a reconnect,
    /// compare `next_expected_sequence` with `ack.next_sequence` and send a `RetransmitRequest`
    /// for the gap.
    ///
    /// # Errors
    /// Connection failure, or the server refusing the logon.
    pub fn connect(
        address: impl ToSocketAddrs,
        secret: &[u8; 32],
        next_expected_sequence: u64,
    ) -> Result<Self, ClientError> {
        Self::connect_with(address, secret, next_expected_sequence, 5_000)
    }

    /// As [`Self::connect`], asking for a keep-alive interval of `keep_alive_ms`. The server
    /// clamps it to [`crate::KEEP_ALIVE_MS_MIN`]..=[`crate::KEEP_ALIVE_MS_MAX`] and says what it
    /// granted in `ack.keep_alive_ms`; the client must then send something (a `SequenceHeartbeat`
    /// when idle) at least that often: a session silent for twice the interval is terminated.
    ///
    /// # Errors
    /// Connection failure, or the server refusing the logon.
    pub fn connect_with(
        address: impl ToSocketAddrs,
        secret: &[u8; 32],
        next_expected_sequence: u64,
        keep_alive_ms: u32,
    ) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let signing = ed25519_dalek::SigningKey::from_bytes(secret);
        let api_key = FixedBytes(signing.verifying_key().to_bytes());
        let mut client = Self { stream, buffer: Vec::with_capacity(8192), ack: EstablishAck::default(), api_key };
        client.send_session(Session::Negotiate(Negotiate { api_key, timestamp_ns: TimestampNs::ZERO }))?;
        let nonce = match client.receive()? {
            Incoming::Session(Session::NegotiateResponse(response)) => response.server_nonce.0,
            other => return Err(ClientError::Protocol(format!("expected NegotiateResponse, got {other:?}"))),
        };
        let signature = signing.sign(&logon_payload(&nonce, &api_key));
        client.send_session(Session::Establish(Establish {
            signature: FixedBytes(signature.to_bytes()),
            next_expected_sequence: Sequence::new(next_expected_sequence),
            keep_alive_ms: keep_alive_ms.into(),
            reserved: Reserved::ZERO,
        }))?;
        match client.receive()? {
            Incoming::Session(Session::EstablishAck(ack)) => client.ack = ack,
            other => return Err(ClientError::Protocol(format!("expected EstablishAck, got {other:?}"))),
        }
        Ok(client)
    }

    /// The API key (public key) of this client.
    pub fn api_key(&self) -> PublicKey {
        self.api_key
    }

    /// Sends an order-entry command (its user id is ignored by the server).
    ///
    /// # Errors
    /// Socket errors.
    pub fn send(&mut self, command: &Command) -> Result<(), ClientError> {
        let mut message = [0u8; Command::ENCODED_BYTES_MAX];
        let length = command.encode(&mut message).expect("fits");
        self.send_raw(&message[..length])
    }

    /// Sends a session-layer message.
    ///
    /// # Errors
    /// Socket errors.
    pub fn send_session(&mut self, message: Session) -> Result<(), ClientError> {
        let mut bytes = [0u8; Session::ENCODED_BYTES_MAX];
        let length = message.encode(&mut bytes).expect("fits");
        self.send_raw(&bytes[..length])
    }

    /// Frames and sends arbitrary message bytes (tests use it to send bad input).
    ///
    /// # Errors
    /// Socket errors.
    pub fn send_raw(&mut self, message: &[u8]) -> Result<(), ClientError> {
        let mut frame = vec![0u8; frame_length(message.len())];
        encode_frame(message, &mut frame).ok_or_else(|| ClientError::Protocol("message too large".into()))?;
        self.stream.write_all(&frame)?;
        Ok(())
    }

    /// Writes raw bytes on the socket, unframed.
    ///
    /// # Errors
    /// Socket errors.
    pub fn write_unframed(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// Waits for the next message (heartbeats included).
    ///
    /// # Errors
    /// Socket errors, timeouts, or bytes that are not our protocol.
    pub fn receive(&mut self) -> Result<Incoming, ClientError> {
        loop {
            if let Some((message, used)) =
                FrameDecoder::next_frame(&self.buffer).map_err(|e| ClientError::Protocol(e.to_string()))?
            {
                let incoming = if let Ok((event, _)) = Event::decode(message) {
                    Incoming::Event(event)
                } else {
                    let (session, _) = Session::decode(message).map_err(|e| ClientError::Protocol(e.to_string()))?;
                    Incoming::Session(session)
                };
                self.buffer.drain(..used);
                return Ok(incoming);
            }
            let mut chunk = [0u8; 8192];
            let read = self.stream.read(&mut chunk)?;
            if read == 0 {
                return Err(ClientError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    /// Waits for the next message that is not a heartbeat; a Terminate becomes an error.
    ///
    /// # Errors
    /// As [`Self::receive`], plus [`ClientError::Terminated`].
    pub fn receive_application(&mut self) -> Result<Incoming, ClientError> {
        loop {
            match self.receive()? {
                Incoming::Session(Session::SequenceHeartbeat(_)) => continue,
                Incoming::Session(Session::Terminate(t)) => {
                    return Err(ClientError::Terminated(t.reason.get().unwrap_or(TerminateReason::ProtocolError)));
                }
                other => return Ok(other),
            }
        }
    }

    /// Sets the read timeout.
    ///
    /// # Errors
    /// Socket errors.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.stream.set_read_timeout(timeout)?;
        Ok(())
    }
}

/// The API key (Ed25519 public key) of a secret seed.
pub fn api_key_of(secret: &[u8; 32]) -> PublicKey {
    FixedBytes(ed25519_dalek::SigningKey::from_bytes(secret).verifying_key().to_bytes())
}
