//! FIXT.1.1 / FIX 5.0 SP2 sessions over real TCP: the Logon with DefaultApplVerID(1137)=9, the
//! session layer answered in the session's BeginString, ApplVerID(1128) on application messages,
//! a BeginString that changes mid-session, and an order flow between a FIXT.1.1 and a FIX 4.4
//! session.

mod common;

use common::{FIX44, FIXT, Fix, Harness, now};

#[test]
fn fixt_session_layer_is_answered_in_fixt() {
    let harness = Harness::start(1, |_| {});
    let mut fix = Fix::connect_fixt(harness.address, 1);
    let logon = fix.logon(17, true);
    assert_eq!((logon.msg_type(), logon.at(8), logon.at(1137), logon.at(108)), ("A", FIXT, "9", "17"));
    // TestRequest → Heartbeat with the TestReqID.
    fix.send("1", &[(112, "T1")]);
    let heartbeat = fix.expect("0");
    assert_eq!((heartbeat.at(8), heartbeat.at(112)), (FIXT, "T1"));
    // A gap → ResendRequest; filled by a GapFill.
    fix.send_with_seq("1", 5, &[(112, "gap")]);
    let resend = fix.expect("2");
    assert_eq!((resend.at(8), resend.at(7), resend.at(16)), (FIXT, "3", "0"));
    fix.send_with_seq("4", 3, &[(43, "Y"), (122, &now()), (123, "Y"), (36, "5")]);
    fix.next_seq = 5;
    fix.send("1", &[(112, "after")]);
    assert_eq!(fix.expect("0").at(112), "after");
    // The client's ResendRequest: administrative messages gap-filled, in FIXT.1.1.
    fix.send("2", &[(7, "1"), (16, "0")]);
    let fill = fix.expect("4");
    assert_eq!((fill.at(8), fill.at(123), fill.seq()), (FIXT, "Y", 1));
    // Too low without PossDup: Logout with the standard text.
    fix.send_with_seq("1", 2, &[(112, "low")]);
    let logout = fix.expect("5");
    assert_eq!(logout.at(8), FIXT);
    assert!(logout.at(58).starts_with("MsgSeqNum too low, expecting 7"), "{logout:?}");
    fix.assert_closed();
}

#[test]
fn fixt_logon_needs_default_appl_ver_id_9() {
    let harness = Harness::start(1, |_| {});
    for version in [None, Some("7")] {
        let mut fix = Fix::connect_fixt(harness.address, 1);
        let mut fields = fix.logon_fields(1, 30, true, 1);
        fields.retain(|(tag, _)| *tag != 1137);
        if let Some(version) = version {
            fields.push((1137, version.into()));
        }
        let bytes = fix.frame(&fields);
        fix.write(&bytes).unwrap();
        let logout = fix.expect("5");
        assert_eq!(logout.at(8), FIXT);
        assert!(logout.at(58).contains("DefaultApplVerID"), "{logout:?}");
        fix.assert_closed();
    }
    // The version is chosen at each logon: the same session logs on in FIXT.1.1, then in FIX 4.4.
    let mut fix = harness.client_fixt(1);
    fix.send("5", &[]);
    fix.expect("5");
    fix.assert_closed();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mut fix = Fix::connect(harness.address, 1);
    fix.next_seq = 3;
    let logon = fix.logon(30, false);
    assert_eq!((logon.msg_type(), logon.at(8)), ("A", FIX44));
    assert!(logon.get(1137).is_none());
}

#[test]
fn a_begin_string_other_than_the_logons_ends_the_session() {
    let harness = Harness::start(2, |_| {});
    for (logon_as, then) in [(FIXT, FIX44), (FIX44, FIXT)] {
        let mut fix = if logon_as == FIXT { harness.client_fixt(1) } else { harness.client(2) };
        fix.begin = then;
        fix.send("1", &[(112, "x")]);
        let logout = fix.expect("5");
        assert_eq!(logout.at(8), logon_as);
        assert!(logout.at(58).contains("Incorrect BeginString"), "{logout:?}");
        fix.assert_closed();
    }
}

#[test]
fn fixt_order_flow_with_a_fix44_counterparty() {
    let harness = Harness::start(2, |_| {});
    let mut maker = harness.client_fixt(1);
    let mut taker = harness.client(2);
    // NewOrderSingle with ApplVerID 9 → ExecutionReport New in FIXT.1.1.
    maker.send(
        "D",
        &[(1128, "9"), (11, "F1"), (55, "BTC_USDC"), (54, "2"), (38, "0.0003"), (40, "2"), (44, "60000"), (60, &now())],
    );
    let new = maker.expect("8");
    assert_eq!((new.at(8), new.at(150), new.at(39), new.at(11), new.at(151)), (FIXT, "0", "0", "F1", "0.0003"));
    // Without ApplVerID: the session's default (9).
    maker.send("D", &[(11, "F2"), (55, "BTC_USDC"), (54, "2"), (38, "0.0001"), (40, "2"), (44, "61000"), (60, &now())]);
    assert_eq!(maker.expect("8").at(150), "0");
    // An unsupported ApplVerID: Reject 373=18.
    maker.send(
        "D",
        &[(1128, "6"), (11, "F3"), (55, "BTC_USDC"), (54, "2"), (38, "0.0001"), (40, "2"), (44, "1"), (60, &now())],
    );
    let reject = maker.expect("3");
    assert_eq!((reject.at(8), reject.at(373), reject.at(371)), (FIXT, "18", "1128"));
    // The FIX 4.4 taker crosses: fills reported to each in its own BeginString.
    taker.limit("T1", "1", "60000", "0.0001");
    assert_eq!(taker.expect("8").at(150), "0");
    let fill = taker.expect("8");
    assert_eq!((fill.at(8), fill.at(150), fill.at(39)), (FIX44, "F", "2"));
    let fill = maker.expect("8");
    assert_eq!((fill.at(8), fill.at(150), fill.at(39), fill.at(11)), (FIXT, "F", "1", "F1"));
    assert_eq!((fill.at(14), fill.at(151), fill.at(6), fill.at(851)), ("0.0001", "0.0002", "60000", "1"));
    // Replace and cancel over FIXT.1.1.
    maker.send(
        "G",
        &[(11, "F4"), (41, "F1"), (55, "BTC_USDC"), (54, "2"), (38, "0.0004"), (40, "2"), (44, "60500"), (60, &now())],
    );
    let replaced = maker.expect("8");
    assert_eq!((replaced.at(8), replaced.at(150), replaced.at(39), replaced.at(11)), (FIXT, "5", "1", "F4"));
    assert_eq!((replaced.at(14), replaced.at(151)), ("0.0001", "0.0003"));
    maker.send("F", &[(11, "F5"), (41, "F4"), (55, "BTC_USDC"), (54, "2"), (60, &now())]);
    let canceled = maker.expect("8");
    assert_eq!((canceled.at(8), canceled.at(150), canceled.at(41), canceled.at(14)), (FIXT, "4", "F4", "0.0001"));
    // Mass cancel: the remaining F2.
    maker.send("q", &[(11, "MC"), (530, "7"), (60, &now())]);
    assert_eq!(maker.expect("8").at(150), "4");
    let report = maker.expect("r");
    assert_eq!((report.at(8), report.at(533)), (FIXT, "1"));
    // A valid FIX 5.0 message type the gateway does not support: BusinessMessageReject.
    maker.send("BW", &[(1, "x")]);
    let reject = maker.expect("j");
    assert_eq!((reject.at(8), reject.at(380)), (FIXT, "3"));
}

#[test]
fn messages_stored_under_fix44_are_resent_in_fixt() {
    let harness = Harness::start(1, |_| {});
    let mut fix = harness.client(1); // FIX.4.4, server 1 = Logon
    fix.limit("V1", "1", "50000", "0.0001"); // server 2 = ER New
    assert_eq!(fix.expect("8").at(8), FIX44);
    fix.send("5", &[]); // server 3
    fix.expect("5");
    fix.assert_closed();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mut fixt = Fix::connect_fixt(harness.address, 1);
    fixt.next_seq = fix.next_seq;
    let logon = fixt.logon(30, false);
    assert_eq!((logon.at(8), logon.seq()), (FIXT, 4));
    fixt.send("2", &[(7, "1"), (16, "0")]);
    let fill = fixt.expect("4");
    assert_eq!((fill.at(8), fill.seq(), fill.at(36)), (FIXT, 1, "2"));
    let again = fixt.expect("8");
    assert_eq!((again.at(8), again.seq(), again.at(43), again.at(11)), (FIXT, 2, "Y", "V1"));
    let fill = fixt.expect("4");
    assert_eq!((fill.seq(), fill.at(36)), (3, "5"));
}
