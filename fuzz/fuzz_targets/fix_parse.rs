//! Fuzz target for the FIX parser: any byte stream is parsed as a receive loop would, and the
//! parser must never panic, always make progress and only wait for more bytes while less than
//! one maximal message is buffered.
//!
//! Run with `cargo fuzz run fix_parse` from `fuzz/`.

#![no_main]

use gateway_fix::parser::{MESSAGE_BYTES_MAX, Parsed, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    for _ in 0..=data.len() {
        match parse(rest) {
            Parsed::Complete(message, used) => {
                assert!(used > 0 && used <= rest.len());
                let _ = message.msg_type();
                let _ = message.get(34);
                rest = &rest[used..];
            }
            Parsed::Garbled(skip) => {
                assert!(skip > 0 && skip <= rest.len());
                rest = &rest[skip..];
            }
            Parsed::Incomplete => {
                assert!(rest.len() < MESSAGE_BYTES_MAX + 32);
                return;
            }
        }
    }
    panic!("the parser made no progress");
});
