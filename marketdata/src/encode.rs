//! The JSON text of every stream event, written once per update into a `Bytes` frame
//! `{"stream":"<name>","data":{...}}` (Backpack's envelope). Field names are Backpack's; numbers
//! stay integers until written here with each market's precision ([`crate::format`]).
//!
//! Only ASCII symbols and names from the configuration and fixed strings are written, none of
//! them with characters JSON would need to escape (checked by [`json_safe`] at start-up).

use crate::format::MarketFormat;
use bytes::Bytes;
use std::fmt::Write as _;

/// Whether `text` can be written between JSON quotes as is.
pub fn json_safe(text: &str) -> bool {
    text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f)
}

/// Builds one frame.
pub struct Frame {
    text: String,
}

impl Frame {
    /// Starts `{"stream":"<stream>","data":{"e":"<event>","E":<event_time_us>`.
    pub fn new(stream: &str, event: &str, event_time_us: u64) -> Self {
        let mut text = String::with_capacity(256);
        let _ = write!(text, r#"{{"stream":"{stream}","data":{{"e":"{event}","E":{event_time_us}"#);
        Self { text }
    }

    fn key(&mut self, key: &str) {
        self.text.push_str(",\"");
        self.text.push_str(key);
        self.text.push_str("\":");
    }

    /// `"key":"value"` (value must be [`json_safe`]).
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        self.text.push('"');
        self.text.push_str(value);
        self.text.push('"');
        self
    }

    /// `"key":<integer>`.
    pub fn int(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        let _ = write!(self.text, "{value}");
        self
    }

    /// `"key":true|false`.
    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.text.push_str(if value { "true" } else { "false" });
        self
    }

    /// `"key":[["price","quantity"],...]`; a quantity of 0 is written `"0"` (level removed).
    pub fn levels(
        &mut self,
        key: &str,
        format: &MarketFormat,
        levels: impl IntoIterator<Item = (u64, u64)>,
    ) -> &mut Self {
        self.key(key);
        self.text.push('[');
        for (index, (price, lots)) in levels.into_iter().enumerate() {
            if index > 0 {
                self.text.push(',');
            }
            if lots == 0 {
                // Backpack's removal marker, exactly.
                let _ = write!(self.text, r#"["{}","0"]"#, format.price(price));
            } else {
                let _ = write!(self.text, r#"["{}","{}"]"#, format.price(price), format.quantity(u128::from(lots)));
            }
        }
        self.text.push(']');
        self
    }

    /// Closes the frame.
    pub fn finish(mut self) -> Bytes {
        self.text.push_str("}}");
        Bytes::from(self.text)
    }
}

/// A control frame (not a stream event): `{"event":"<event>", ...}` with the given extra
/// members already JSON text.
pub fn control(event: &str, members: &str) -> Bytes {
    if members.is_empty() {
        Bytes::from(format!(r#"{{"event":"{event}"}}"#))
    } else {
        Bytes::from(format!(r#"{{"event":"{event}",{members}}}"#))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_json() {
        let config = engine::EngineConfig::sample();
        let format = MarketFormat::new(&config, &config.markets[0]);
        let mut frame = Frame::new("depth.BTC_USDC", "depth", 12);
        frame.str("s", "BTC_USDC").levels("a", &format, [(640_005, 120)]).levels("b", &format, []).int("U", 1);
        frame.bool("m", true);
        let text = frame.finish();
        assert_eq!(
            std::str::from_utf8(&text).unwrap(),
            r#"{"stream":"depth.BTC_USDC","data":{"e":"depth","E":12,"s":"BTC_USDC","a":[["64000.5","0.00120"]],"b":[],"U":1,"m":true}}"#
        );
        assert!(json_safe("BTC_USDC") && !json_safe("a\"b") && !json_safe("é"));
        assert_eq!(&control("lagged", r#""dropped":3"#)[..], br#"{"event":"lagged","dropped":3}"#);
    }
}
