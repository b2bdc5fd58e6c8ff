//! A minimal FIX 4.4 initiator for a load-test user's session (`LOAD<id>`, see exchange::demo):
//! connecting, and sending messages with the standard header, a signed Logon (553/554),
//! BodyLength and CheckSum. How replies are read and checked differs between the tests, so that
//! stays in each test file.

use base64::Engine as _;
use ed25519_dalek::Signer;
use gateway_fix::encoder::{checksum, time};
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

/// A FIX message as (tag, value) pairs in wire order.
pub type Msg = Vec<(u32, String)>;

/// The value of `tag` in `message`; a missing tag fails the test.
pub fn get(message: &Msg, tag: u32) -> &str {
    message.iter().find(|(t, _)| *t == tag).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("{tag} in {message:?}"))
}

/// The sending half of a load-test user's FIX session, plus the bytes received but not yet parsed.
pub struct FixClient {
    /// The connection to the FIX gateway.
    pub stream: TcpStream,
    /// Bytes read from `stream` that do not yet form a complete message.
    pub buffer: Vec<u8>,
    /// The load-test user whose session (`LOAD<id>`) this is.
    pub user: u64,
    /// MsgSeqNum of the next message to send.
    pub next_seq: u64,
}

impl FixClient {
    /// Connects to the FIX gateway on `port` with `next_seq` as the next number to send.
    pub fn connect(port: u16, user: u64, next_seq: u64) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Self { stream, buffer: Vec::new(), user, next_seq }
    }

    /// SenderCompID of the session: `LOAD<id>`.
    pub fn sender(&self) -> String {
        format!("LOAD{}", self.user)
    }

    /// Sends a `msg_type` message with `body` after the header (a Logon is signed with the
    /// user's demo key).
    pub fn send(&mut self, msg_type: &str, body: &[(u32, String)]) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let sending_time = String::from_utf8(time::format(time::now_ms()).to_vec()).unwrap();
        let mut fields = vec![
            (35, msg_type.to_string()),
            (49, self.sender()),
            (56, "EXCHANGE".to_string()),
            (34, seq.to_string()),
            (52, sending_time.clone()),
        ];
        if msg_type == "A" {
            let key = ed25519_dalek::SigningKey::from_bytes(&exchange::demo::load_user_secret(self.user));
            let payload = gateway_fix::logon_payload(
                sending_time.as_bytes(),
                seq.to_string().as_bytes(),
                self.sender().as_bytes(),
                b"EXCHANGE",
            );
            let b64 = base64::engine::general_purpose::STANDARD;
            fields.push((553, b64.encode(key.verifying_key().to_bytes())));
            fields.push((554, b64.encode(key.sign(&payload).to_bytes())));
        }
        fields.extend(body.iter().cloned());
        let body: String = fields.iter().map(|(tag, value)| format!("{tag}={value}\x01")).collect();
        let mut message = format!("8=FIX.4.4\x019={}\x01{body}", body.len()).into_bytes();
        let sum = checksum(&message);
        message.extend_from_slice(format!("10={sum:03}\x01").as_bytes());
        self.stream.write_all(&message).unwrap();
    }
}
