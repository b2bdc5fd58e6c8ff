//! FIX session-layer test cases over real TCP with a scripted client: logon success and
//! refusals, heartbeats and test requests, sequence gaps and resends, garbled messages, session
//! rejects, logout, throttling and a restart that keeps sequence numbers.

mod common;

use common::{Fix, GATEWAY, Harness, frame, now};
use std::time::{Duration, Instant};

#[test]
fn logon_is_answered_with_heartbeat_interval_and_reset() {
    let harness = Harness::start(1, |_| {});
    let mut fix = Fix::connect(harness.address, 1);
    let logon = fix.logon(17, true);
    assert_eq!(logon.msg_type(), "A");
    assert_eq!(logon.at(108), "17");
    assert_eq!(logon.at(141), "Y");
    assert_eq!(logon.at(49), GATEWAY);
    assert_eq!(logon.at(56), "CLIENT1");
    assert_eq!(logon.seq(), 1);
    // Logout exchange.
    fix.send("5", &[]);
    let logout = fix.expect("5");
    assert_eq!(logout.seq(), 2);
    fix.assert_closed();
    assert_eq!(harness.stat(|s| &s.logons), 1);
}

#[test]
fn logon_refusals() {
    let harness = Harness::start(2, |_| {});
    // First message not a Logon.
    let mut fix = Fix::connect(harness.address, 1);
    fix.send("0", &[]);
    assert!(fix.expect_logout().contains("First message must be a Logon"));

    // Unknown CompID.
    let mut fix = Fix::connect(harness.address, 1);
    fix.sender = "NOBODY".into();
    let fields = fix.logon_fields(1, 30, true, 1);
    fix.write(&frame(&fields)).unwrap();
    assert!(fix.expect_logout().contains("Unknown CompID"));

    // Signed with another user's key.
    let mut fix = Fix::connect(harness.address, 1);
    let fields = fix.logon_fields(1, 30, true, 2);
    fix.write(&frame(&fields)).unwrap();
    assert!(fix.expect_logout().contains("Invalid credentials"));

    // A signature over other fields (a replayed logon with another SendingTime).
    let mut fix = Fix::connect(harness.address, 1);
    let mut fields = fix.logon_fields(1, 30, true, 1);
    fields[3].1 = "2".into();
    fix.write(&frame(&fields)).unwrap();
    assert!(fix.expect_logout().contains("Invalid credentials"));

    // Bad heartbeat interval.
    let mut fix = Fix::connect(harness.address, 1);
    let fields = fix.logon_fields(1, 0, true, 1);
    fix.write(&frame(&fields)).unwrap();
    assert!(fix.expect_logout().contains("HeartBtInt"));
    assert_eq!(harness.stat(|s| &s.logon_failures), 5);

    // A second connection for a logged-on session: closed without a reply; the first still works.
    let mut first = harness.client(1);
    let mut second = Fix::connect(harness.address, 1);
    let fields = second.logon_fields(2, 30, false, 1);
    second.write(&frame(&fields)).unwrap();
    second.assert_closed();
    first.send("1", &[(112, "still-there")]);
    assert_eq!(first.expect("0").at(112), "still-there");
}

#[test]
fn test_request_is_answered_and_a_silent_client_is_tested_then_cut() {
    let harness = Harness::start(1, |_| {});
    let mut fix = Fix::connect(harness.address, 1);
    assert_eq!(fix.logon(1, true).msg_type(), "A");
    fix.send("1", &[(112, "ABC")]);
    let heartbeat = fix.receive().unwrap();
    assert_eq!((heartbeat.msg_type(), heartbeat.at(112)), ("0", "ABC"));
    // Now stay silent: heartbeats, then a TestRequest, then a Logout and the close.
    let mut saw_test_request = false;
    loop {
        let message = fix.receive().expect("a logout before the close");
        match message.msg_type() {
            "0" => {}
            "1" => {
                assert!(message.get(112).is_some());
                saw_test_request = true;
            }
            "5" => break,
            other => panic!("unexpected {other}: {message:?}"),
        }
    }
    assert!(saw_test_request);
    fix.assert_closed();
}

#[test]
fn heartbeats_keep_the_session_alive() {
    let harness = Harness::start(1, |_| {});
    let mut fix = Fix::connect(harness.address, 1);
    fix.logon(1, true);
    for _ in 0..3 {
        let message = fix.receive().unwrap();
        assert!(matches!(message.msg_type(), "0" | "1"), "{message:?}");
        if message.msg_type() == "1" {
            fix.send("0", &[(112, message.at(112))]);
        } else {
            fix.send("0", &[]);
        }
    }
}

#[test]
fn sequence_gap_is_answered_with_a_resend_request_and_filled() {
    let harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1);
    // Skip 2..=4.
    fix.send_with_seq("1", 5, &[(112, "gap")]);
    let resend = fix.expect("2");
    assert_eq!((resend.at(7), resend.at(16)), ("2", "0"));
    // Fill the gap: a GapFill for 2..=4, then 5 again as a PossDup.
    fix.send_with_seq("4", 2, &[(43, "Y"), (122, &now()), (123, "Y"), (36, "5")]);
    fix.send_with_seq("1", 5, &[(43, "Y"), (122, &now()), (112, "after")]);
    assert_eq!(fix.expect("0").at(112), "after");
    fix.next_seq = 6;
    fix.send("1", &[(112, "normal")]);
    assert_eq!(fix.expect("0").at(112), "normal");
}

#[test]
fn sequence_reset_reset_moves_the_expected_number() {
    let harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1);
    fix.send_with_seq("4", 99, &[(36, "20")]);
    fix.next_seq = 20;
    fix.send("1", &[(112, "x")]);
    assert_eq!(fix.expect("0").at(112), "x");
}

#[test]
fn too_low_without_poss_dup_is_fatal_and_duplicates_are_ignored() {
    let harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1);
    fix.send("1", &[(112, "a")]); // 2
    assert_eq!(fix.expect("0").at(112), "a");
    // A PossDup duplicate: ignored.
    fix.send_with_seq("1", 2, &[(43, "Y"), (122, &now()), (112, "dup")]);
    fix.send("1", &[(112, "b")]); // 3
    assert_eq!(fix.expect("0").at(112), "b");
    // Too low, no PossDup.
    fix.send_with_seq("1", 2, &[(112, "low")]);
    assert_eq!(fix.expect_logout(), "MsgSeqNum too low, expecting 4 but received 2");
}

#[test]
fn resend_request_replays_application_messages_and_gap_fills_the_rest() {
    let harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1); // server 1 = Logon
    fix.send("1", &[(112, "t")]); // server 2 = Heartbeat
    fix.expect("0");
    fix.send("D", &[(11, "x1"), (55, "NOPE"), (54, "1"), (38, "1"), (40, "2"), (44, "1")]); // 3 = j
    let reject = fix.expect("j");
    assert_eq!(reject.seq(), 3);
    fix.limit("o1", "1", "60000", "0.0001"); // 4 = ER New
    let new = fix.expect("8");
    assert_eq!(new.seq(), 4);
    fix.send("2", &[(7, "1"), (16, "0")]);
    let fill = fix.expect("4");
    assert_eq!((fill.seq(), fill.at(123), fill.at(36), fill.at(43)), (1, "Y", "3", "Y"));
    let again = fix.expect("j");
    assert_eq!((again.seq(), again.at(43)), (3, "Y"));
    assert_eq!(again.at(122), reject.at(52));
    assert_eq!(again.at(380), reject.at(380));
    let again = fix.expect("8");
    assert_eq!((again.seq(), again.at(43), again.at(11)), (4, "Y", "o1"));
    assert_eq!(harness.stat(|s| &s.resend_requests), 1);
}

#[test]
fn garbled_messages_are_ignored_without_consuming_a_sequence_number() {
    let harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1);
    let good = frame(&fix.header("1", 2).into_iter().chain([(112, "ok".to_string())]).collect::<Vec<_>>());
    // Wrong checksum.
    let mut bad_checksum = good.clone();
    let n = bad_checksum.len();
    bad_checksum[n - 2] = if bad_checksum[n - 2] == b'9' { b'8' } else { b'9' };
    fix.write(&bad_checksum).unwrap();
    // Wrong body length.
    let bad_length = String::from_utf8(good.clone()).unwrap().replacen("9=", "9=1", 1);
    fix.write(bad_length.as_bytes()).unwrap();
    // MsgType not third.
    let mut fields = fix.header("1", 2);
    fields.swap(0, 1);
    fields.push((112, "swapped".into()));
    fix.write(&frame(&fields)).unwrap();
    // BeginString not first, BodyLength not second, an unsupported BeginString.
    let text = String::from_utf8(good.clone()).unwrap();
    let (begin, rest) = text.split_once('\x01').unwrap();
    let (length, body) = rest.split_once('\x01').unwrap();
    fix.write(format!("{length}\x01{begin}\x01{body}").as_bytes()).unwrap();
    let (msg_type, fields) = body.split_once('\x01').unwrap();
    fix.write(format!("{begin}\x01{msg_type}\x01{length}\x01{fields}").as_bytes()).unwrap();
    fix.write(text.replace("8=FIX.4.4", "8=FIX.4.2").as_bytes()).unwrap();
    // Plain noise.
    fix.write(b"hello\x01world=\x01").unwrap();
    // The good one, numbered 2, still expected.
    fix.write(&good).unwrap();
    assert_eq!(fix.expect("0").at(112), "ok");
    assert!(harness.stat(|s| &s.garbled) >= 6);
}

#[test]
fn session_rejects() {
    let harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1);
    // Invalid MsgType.
    fix.send("ZZZ", &[]);
    let reject = fix.expect("3");
    assert_eq!((reject.at(373), reject.at(45)), ("11", "2"));
    // Missing required tag (TestReqID).
    fix.send("1", &[]);
    let reject = fix.expect("3");
    assert_eq!((reject.at(373), reject.at(371)), ("1", "112"));
    // Bad value (Side 7).
    fix.send("D", &[(11, "a"), (55, "BTC_USDC"), (54, "7"), (38, "1"), (40, "2"), (44, "1")]);
    let reject = fix.expect("3");
    assert_eq!((reject.at(373), reject.at(371)), ("5", "54"));
    // Bad format (OrderQty).
    fix.send("D", &[(11, "a"), (55, "BTC_USDC"), (54, "1"), (38, "1e3"), (40, "2"), (44, "1")]);
    let reject = fix.expect("3");
    assert_eq!((reject.at(373), reject.at(371)), ("6", "38"));
    // SendingTime too far off.
    let mut fields = fix.header("1", fix.next_seq);
    fix.next_seq += 1;
    fields[4].1 = "20000101-00:00:00.000".into();
    fields.push((112, "old".into()));
    fix.write(&frame(&fields)).unwrap();
    let reject = fix.expect("3");
    assert_eq!((reject.at(373), reject.at(371)), ("10", "52"));
    // PossDup with OrigSendingTime later than SendingTime.
    let seq = fix.next_seq.to_string();
    fix.next_seq += 1;
    let mut fields = fix.header("1", seq.parse().unwrap());
    fields.extend([(43, "Y".to_string()), (122, "29991231-00:00:00.000".into()), (112, "p".into())]);
    fix.write(&frame(&fields)).unwrap();
    assert_eq!(fix.expect("3").at(373), "10");
    // A valid but unsupported MsgType: BusinessMessageReject.
    fix.send("V", &[(262, "md")]);
    let reject = fix.expect("j");
    assert_eq!((reject.at(380), reject.at(372)), ("3", "V"));
    // The numbers were consumed: the session goes on.
    fix.send("1", &[(112, "alive")]);
    assert_eq!(fix.expect("0").at(112), "alive");
    // CompID problem: Reject, then Logout and close.
    let mut fields = fix.header("1", fix.next_seq);
    fields[1].1 = "SOMEONE".into();
    fields.push((112, "c".into()));
    fix.write(&frame(&fields)).unwrap();
    assert_eq!(fix.expect("3").at(373), "9");
    assert!(fix.expect_logout().contains("CompID"));
    assert!(harness.stat(|s| &s.session_rejects) >= 7);
}

#[test]
fn the_throttle_rejects_naming_the_limit_then_logs_out() {
    let harness = Harness::start(1, |config| {
        config.messages_per_second = 1;
        config.burst = 2;
        config.throttle_strikes_max = 3;
    });
    let mut fix = harness.client(1);
    for n in 0..2 {
        fix.send("D", &[(11, &format!("t{n}")), (55, "NOPE"), (54, "1"), (38, "1"), (40, "2"), (44, "1")]);
        assert_eq!(fix.expect("j").at(380), "2");
    }
    for _ in 0..3 {
        fix.send("D", &[(11, "t"), (55, "NOPE"), (54, "1"), (38, "1"), (40, "2"), (44, "1")]);
        let reject = fix.expect("j");
        assert!(reject.at(58).contains("1 messages per second"), "{reject:?}");
    }
    fix.send("D", &[(11, "t"), (55, "NOPE"), (54, "1"), (38, "1"), (40, "2"), (44, "1")]);
    assert!(fix.expect_logout().contains("Throttle"));
}

#[test]
fn sequence_numbers_survive_a_restart() {
    let mut harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1); // server 1
    fix.send("1", &[(112, "a")]); // in 2, server 2
    fix.expect("0");
    fix.limit("r1", "1", "60000", "0.0001"); // in 3, server 3 = ER New
    assert_eq!(fix.expect("8").seq(), 3);
    fix.send("5", &[]); // in 4, server 4
    fix.expect("5");
    fix.assert_closed();
    harness.restart_gateway();
    let mut fix = Fix::connect(harness.address, 1);
    fix.next_seq = 5;
    let logon = fix.logon(30, false);
    assert_eq!((logon.msg_type(), logon.seq()), ("A", 5));
    // A too-low logon is refused with the expected number.
    let mut fix2 = Fix::connect(harness.address, 1);
    fix.send("5", &[]);
    fix.expect("5");
    fix.assert_closed();
    std::thread::sleep(Duration::from_millis(100));
    fix2.next_seq = 3;
    let logout = fix2.logon(30, false);
    assert_eq!(logout.msg_type(), "5");
    assert_eq!(logout.at(58), "MsgSeqNum too low, expecting 7 but received 3");
    // The stored ER can still be resent after the restart.
    let mut fix = Fix::connect(harness.address, 1);
    fix.next_seq = 7;
    fix.logon(30, false);
    fix.send("2", &[(7, "3"), (16, "3")]);
    let again = fix.expect("8");
    assert_eq!((again.seq(), again.at(43), again.at(11)), (3, "Y", "r1"));
}

#[test]
fn a_logon_with_a_higher_number_is_accepted_then_asked_to_resend() {
    let harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1);
    fix.send("5", &[]);
    fix.expect("5");
    fix.assert_closed();
    std::thread::sleep(Duration::from_millis(50));
    let mut fix = Fix::connect(harness.address, 1);
    fix.next_seq = 10;
    assert_eq!(fix.logon(30, false).msg_type(), "A");
    let resend = fix.expect("2");
    assert_eq!((resend.at(7), resend.at(16)), ("3", "0"));
    // The client gap-fills 3..=10 (its Logon included); the session goes on at 11.
    fix.send_with_seq("4", 3, &[(43, "Y"), (122, &now()), (123, "Y"), (36, "11")]);
    fix.next_seq = 11;
    fix.send("1", &[(112, "on")]);
    assert_eq!(fix.expect("0").at(112), "on");
}

#[test]
fn a_replayed_logon_is_refused() {
    let harness = Harness::start(1, |_| {});
    let mut fix = Fix::connect(harness.address, 1);
    let fields = fix.logon_fields(1, 30, true, 1);
    fix.write(&frame(&fields)).unwrap();
    assert_eq!(fix.expect("A").at(141), "Y");
    fix.send_with_seq("5", 2, &[]);
    fix.expect("5");
    fix.assert_closed();
    std::thread::sleep(Duration::from_millis(50));
    // The same bytes again (captured and replayed within the SendingTime tolerance).
    let mut replay = Fix::connect(harness.address, 1);
    replay.write(&frame(&fields)).unwrap();
    assert!(replay.expect_logout().contains("Invalid credentials"));
}

#[test]
fn resends_are_bounded_per_request() {
    let harness = Harness::start(1, |config| config.resend_max = 3);
    let mut fix = harness.client(1);
    for n in 0..5 {
        fix.send("1", &[(112, &n.to_string())]);
        fix.expect("0");
    }
    // Server sent 1..=6; ask for everything: only 1..=3 come back (as one gap fill).
    fix.send("2", &[(7, "1"), (16, "0")]);
    let fill = fix.expect("4");
    assert_eq!((fill.seq(), fill.at(36)), (1, "4"));
    fix.send("1", &[(112, "next")]);
    let heartbeat = fix.expect("0");
    assert_eq!((heartbeat.at(112), heartbeat.seq()), ("next", 7));
}

#[test]
fn a_message_without_msg_seq_num_ends_the_session() {
    let harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1);
    let mut fields = fix.header("1", 2);
    fields.remove(3);
    fields.push((112, "no-seq".into()));
    fix.write(&frame(&fields)).unwrap();
    assert!(fix.expect_logout().contains("MsgSeqNum"));
}

#[test]
fn resend_requests_are_throttled() {
    let harness = Harness::start(1, |config| {
        config.messages_per_second = 1;
        config.burst = 2;
    });
    let mut fix = harness.client(1);
    for _ in 0..2 {
        fix.send("2", &[(7, "1"), (16, "1")]);
        assert_eq!(fix.expect("4").at(36), "2");
    }
    fix.send("2", &[(7, "1"), (16, "1")]);
    let reject = fix.expect("3");
    assert_eq!(reject.at(373), "99");
    assert!(reject.at(58).contains("1 messages per second"));
}

#[test]
fn sequence_reset_reset_never_moves_the_expected_number_back() {
    let harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1);
    fix.send("1", &[(112, "a")]); // 2
    fix.expect("0");
    fix.send("1", &[(112, "b")]); // 3
    fix.expect("0");
    // Reset mode with NewSeqNo below the expected 4: Reject 373=5, the number stays.
    fix.send_with_seq("4", 4, &[(36, "2")]);
    let reject = fix.expect("3");
    assert_eq!((reject.at(373), reject.at(371)), ("5", "36"));
    fix.send_with_seq("1", 4, &[(112, "still-4")]);
    assert_eq!(fix.expect("0").at(112), "still-4");
}

#[test]
fn reset_seq_num_flag_resets_both_series_of_a_used_session() {
    let harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1);
    for n in 0..3 {
        fix.send("1", &[(112, &n.to_string())]);
        fix.expect("0");
    }
    fix.send("5", &[]); // in 5, server 5
    assert_eq!(fix.expect("5").seq(), 5);
    fix.assert_closed();
    std::thread::sleep(Duration::from_millis(50));
    // Without the flag the session continues at 6 / 6.
    let mut fix = Fix::connect(harness.address, 1);
    fix.next_seq = 6;
    assert_eq!(fix.logon(30, false).seq(), 6);
    fix.send("5", &[]);
    fix.expect("5");
    fix.assert_closed();
    std::thread::sleep(Duration::from_millis(50));
    // With ResetSeqNumFlag=Y: both series restart at 1.
    let mut fix = Fix::connect(harness.address, 1);
    let logon = fix.logon(30, true);
    assert_eq!((logon.seq(), logon.at(141)), (1, "Y"));
    fix.send("1", &[(112, "two")]);
    let heartbeat = fix.expect("0");
    assert_eq!((heartbeat.seq(), heartbeat.at(112)), (2, "two"));
    // The old messages are gone: a resend of everything is one gap fill.
    fix.send("2", &[(7, "1"), (16, "0")]);
    let fill = fix.expect("4");
    assert_eq!((fill.seq(), fill.at(36)), (1, "3"));
}

/// The store of session 1 in `harness`.
fn outbound_log_bytes(harness: &Harness) -> u64 {
    std::fs::metadata(harness.store_dir.join(format!("{}@{GATEWAY}", common::client_id(1))).join("outbound.log"))
        .unwrap()
        .len()
}

#[test]
fn the_outbound_store_is_bounded_and_older_messages_are_gap_filled() {
    let mut harness = Harness::start(1, |config| {
        config.resend_window = 4;
        config.messages_per_second = 100_000;
        config.burst = 10_000;
    });
    let mut fix = harness.client(1); // server 1 = Logon
    // 300 application messages (BusinessMessageRejects: unknown symbol), server 2..=301.
    for n in 0..300 {
        fix.send("D", &[(11, &format!("u{n}")), (55, "NOPE"), (54, "1"), (38, "1"), (40, "2"), (44, "1")]);
    }
    for n in 0..300 {
        let reject = fix.expect("j");
        assert_eq!((reject.seq(), reject.at(379)), (n + 2, format!("u{n}").as_str()));
    }
    // Without compaction the log would hold 301 records (~30 kB); it is rewritten to the window
    // (and open orders) whenever it grows past twice that plus 64 records.
    let bytes = outbound_log_bytes(&harness);
    assert!(bytes < 12_000, "outbound.log is {bytes} bytes");
    // Everything older than the window is gap-filled; the last 4 come again.
    fix.send("2", &[(7, "1"), (16, "0")]);
    let fill = fix.expect("4");
    assert_eq!((fill.seq(), fill.at(123), fill.at(36)), (1, "Y", "298"));
    for seq in 298..=301 {
        let again = fix.expect("j");
        assert_eq!((again.seq(), again.at(43)), (seq, "Y"));
    }
    fix.send("1", &[(112, "on")]);
    assert_eq!((fix.expect("0").seq()), 302);
    fix.send("5", &[]);
    assert_eq!(fix.expect("5").seq(), 303);
    fix.assert_closed();
    // After a restart (the compacted log reloaded): same numbers, same window.
    harness.restart_gateway();
    let mut fix2 = Fix::connect(harness.address, 1);
    fix2.next_seq = fix.next_seq;
    assert_eq!(fix2.logon(30, false).seq(), 304);
    fix2.send("2", &[(7, "290"), (16, "0")]);
    let fill = fix2.expect("4");
    assert_eq!((fill.seq(), fill.at(36)), (290, "298"));
    for seq in 298..=301 {
        assert_eq!(fix2.expect("j").seq(), seq);
    }
    let fill = fix2.expect("4");
    assert_eq!((fill.seq(), fill.at(36)), (302, "305"));
    fix2.send("1", &[(112, "still")]);
    assert_eq!(fix2.expect("0").seq(), 305);
}

/// A connection that does not log on within `logon_timeout` is closed (the timer runs in both
/// I/O modes: a tokio interval, or the I/O thread's poll timeout).
#[test]
fn a_connection_that_does_not_log_on_is_closed_at_the_logon_timeout() {
    let harness = Harness::start(1, |config| config.logon_timeout = Duration::from_millis(300));
    let started = Instant::now();
    let mut fix = Fix::connect(harness.address, 1);
    fix.assert_closed();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(5), "closed after {waited:?}");
}

/// A gateway that stops logs its sessions out ("Server shutdown") before closing them.
#[test]
fn shutdown_logs_sessions_out() {
    let mut harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1);
    harness.shutdown_gateway();
    let logout = fix.expect("5");
    assert_eq!(logout.at(58), "Server shutdown", "{logout:?}");
    fix.assert_closed();
}

/// Connections beyond `connections_max` are not served; the ones within are.
#[test]
fn connections_beyond_the_limit_are_not_served() {
    let harness = Harness::start(2, |config| config.connections_max = 1);
    let mut first = harness.client(1);
    let mut second = Fix::connect(harness.address, 2);
    // Refused at accept: the socket is closed without an answer to its Logon.
    let logon = second.logon_fields(1, 30, true, 2);
    let frame = second.frame(&logon);
    let _ = second.write(&frame);
    second.assert_closed();
    first.send("1", &[(112, "STILL")]);
    assert_eq!(first.expect("0").at(112), "STILL");
}
