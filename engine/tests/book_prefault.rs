//! A pre-faulted book takes no page faults when orders spill out of its id index: every page of
//! the room reserved for spilled orders is written by `OrderBook::prefault`, as the promise of
//! `OrderBook::with_capacity` says ("every structure ... its pages touched now"). Measured as the
//! process's resident memory while spilling orders are inserted; alone in its file, so no other
//! test allocates meanwhile.

use codec::{ClientOrderId, OrderId, SelfTradePrevention, Side, Ticks, UserId};
use engine::{Book, OrderBook, RestingOrder};

/// Room of the book: its id index has as many entries, its spill map room for as many orders.
const CAPACITY: usize = 1 << 16;
/// Orders resting before the spilling ones (they hold the id index entries).
const HOLDERS: u64 = 30_000;
/// Resident growth tolerated while the spilling orders go in (their order slots are pre-faulted
/// too, so only stray pages of this test's own bookkeeping are expected).
const GROWTH_BYTES_MAX: u64 = 256 * 1024;

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("readable /proc/self/status");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS line");
    let kib: u64 = line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim().parse().expect("kB");
    kib * 1024
}

fn order(id: u64) -> RestingOrder {
    RestingOrder {
        order_id: OrderId::new(id),
        user_id: UserId::new(1 + id % 7),
        client_order_id: ClientOrderId::ZERO,
        side: Side::Bid,
        price: Ticks::new(100 + id % 50),
        quantity_lots: 1,
        filled_lots: 0,
        remaining_lots: 1,
        reserved: 100,
        self_trade_prevention: SelfTradePrevention::Allow,
        post_only: false,
    }
}

#[cfg(target_os = "linux")]
#[test]
fn spilling_orders_touch_no_new_pages() {
    let mut book = OrderBook::with_capacity(CAPACITY);
    for id in 1..=HOLDERS {
        book.insert(order(id)).expect("room");
    }
    let before = resident_bytes();
    // Each of these ids maps to the index entry of a resting holder: all of them spill.
    for id in 1..=HOLDERS {
        book.insert(order(id + CAPACITY as u64)).expect("room");
    }
    let grown = resident_bytes().saturating_sub(before);
    assert_eq!(book.len(), 2 * HOLDERS as usize);
    book.check_structure().expect("consistent book");
    assert!(grown <= GROWTH_BYTES_MAX, "spilling {HOLDERS} orders grew the resident set by {grown} bytes");
}
