//! The fast order book against the naive reference book, operation by operation, with order ids
//! chosen to collide in the fast book's id index (ids far apart, small capacities), so that orders
//! spill to the overflow map, are found, filled and cancelled there, and index entries are
//! reused. After every operation both books must answer every query identically and the fast
//! book's structure check must pass. The same holds for a book built unfaulted (as recovery builds
//! it) and pre-faulted at any point, orders resting or not.

use codec::{ClientOrderId, OrderId, SelfTradePrevention, Side, Ticks, UserId};
use engine::testkit::NaiveBook;
use engine::{Book, OrderBook, RestingOrder};
use proptest::prelude::*;

const USERS: u64 = 3;
const CLIENT_IDS: u64 = 4;

#[derive(Debug, Clone)]
enum Op {
    /// A new order `gap` ids after the previous one.
    Insert { gap: u64, user: u64, client: u64, bid: bool, price: u64, lots: u64 },
    /// Removes the `pick`-th id ever inserted (possibly gone already).
    Remove { pick: usize },
    /// Fills `lots` of the front order of a side (removing it when that fills it).
    Fill { bid: bool, lots: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (prop_oneof![3 => 1..3u64, 1 => 1..200u64], 1..=USERS, 0..=CLIENT_IDS, any::<bool>(), 95..105u64, 1..10u64)
            .prop_map(|(gap, user, client, bid, price, lots)| Op::Insert { gap, user, client, bid, price, lots }),
        3 => (0..64usize).prop_map(|pick| Op::Remove { pick }),
        2 => (any::<bool>(), 1..6u64).prop_map(|(bid, lots)| Op::Fill { bid, lots }),
    ]
}

fn side(bid: bool) -> Side {
    if bid { Side::Bid } else { Side::Ask }
}

fn order(id: u64, user: u64, client: u64, bid: bool, price: u64, lots: u64) -> RestingOrder {
    RestingOrder {
        order_id: OrderId::new(id),
        user_id: UserId::new(user),
        client_order_id: ClientOrderId::new(client),
        side: side(bid),
        price: Ticks::new(price),
        quantity_lots: lots,
        filled_lots: 0,
        remaining_lots: lots,
        reserved: lots * price,
        self_trade_prevention: SelfTradePrevention::RejectTaker,
        post_only: false,
    }
}

/// Every query both books answer, for the ids seen so far.
fn assert_same(fast: &OrderBook, naive: &NaiveBook, ids: &[u64]) {
    fast.check_structure().unwrap();
    assert_eq!(fast.len(), naive.len());
    assert_eq!(fast.has_capacity(), naive.has_capacity());
    for side in [Side::Bid, Side::Ask] {
        assert_eq!(fast.best_price(side), naive.best_price(side));
        assert_eq!(fast.front(side), naive.front(side));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        fast.visit_in_priority(side, &mut |o| {
            a.push(*o);
            true
        });
        naive.visit_in_priority(side, &mut |o| {
            b.push(*o);
            true
        });
        assert_eq!(a, b);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        fast.visit_levels(side, &mut |l| {
            a.push(l);
            true
        });
        naive.visit_levels(side, &mut |l| {
            b.push(l);
            true
        });
        assert_eq!(a, b);
        for level in a {
            assert_eq!(fast.level(side, level.price), Some(level));
        }
    }
    for &id in ids.iter().chain([0, 1, u64::MAX].iter()) {
        assert_eq!(fast.get(OrderId::new(id)), naive.get(OrderId::new(id)), "order {id}");
    }
    for user in 1..=USERS {
        let user = UserId::new(user);
        assert_eq!(fast.open_orders_of(user), naive.open_orders_of(user));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        fast.orders_of(user, &mut a);
        naive.orders_of(user, &mut b);
        assert_eq!(a, b);
        for client in 1..=CLIENT_IDS {
            let client = ClientOrderId::new(client);
            assert_eq!(fast.find_client_order(user, client), naive.find_client_order(user, client));
        }
    }
}

fn run(capacity: usize, ops: &[Op]) {
    run_on(OrderBook::with_capacity(capacity), capacity, ops, None);
}

/// Runs `ops` on `fast` and on a naive book of `capacity`, pre-faulting `fast` before the
/// operation at index `prefault_before` (if any).
fn run_on(mut fast: OrderBook, capacity: usize, ops: &[Op], prefault_before: Option<usize>) {
    let mut naive = NaiveBook::with_capacity(capacity);
    let mut ids: Vec<u64> = Vec::new();
    let mut next_id = 0u64;
    for (index, op) in ops.iter().enumerate() {
        if prefault_before == Some(index) {
            fast.prefault();
            assert_same(&fast, &naive, &ids);
        }
        match *op {
            Op::Insert { gap, user, mut client, bid, price, lots } => {
                next_id += gap;
                // The engine rejects a client id its owner already uses on an open order.
                if naive.find_client_order(UserId::new(user), ClientOrderId::new(client)).is_some() {
                    client = 0;
                }
                let order = order(next_id, user, client, bid, price, lots);
                assert_eq!(fast.insert(order), naive.insert(order));
                ids.push(next_id);
            }
            Op::Remove { pick } => {
                if let Some(&id) = ids.get(pick) {
                    assert_eq!(fast.remove(OrderId::new(id)), naive.remove(OrderId::new(id)));
                }
            }
            Op::Fill { bid, lots } => {
                let Some(&front) = naive.front(side(bid)) else { continue };
                let lots = lots.min(front.remaining_lots);
                if lots == front.remaining_lots {
                    assert_eq!(fast.remove(front.order_id), naive.remove(front.order_id));
                } else {
                    let (remaining, filled) = (front.remaining_lots - lots, front.filled_lots + lots);
                    let reserved = remaining * front.price.get();
                    for book in [&mut fast as &mut dyn Book, &mut naive] {
                        book.update_in_place(front.order_id, front.quantity_lots, remaining, filled, reserved);
                    }
                }
            }
        }
        assert_same(&fast, &naive, &ids);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Small capacities make ids collide in the id index all the time.
    #[test]
    fn fast_book_matches_the_naive_book(capacity in 1..12usize, ops in prop::collection::vec(op(), 1..120)) {
        run(capacity, &ops);
    }

    /// A book allocated without touching its pages (recovery's) behaves exactly like one
    /// pre-faulted up front, before and after its own pre-fault, which must keep every order,
    /// index entry and free slot (the slots it hands out next included).
    #[test]
    fn an_unfaulted_book_prefaulted_midway_matches_the_naive_book(
        capacity in 1..12usize,
        ops in prop::collection::vec(op(), 1..120),
        prefault_before in 0..130usize,
    ) {
        run_on(OrderBook::with_capacity_unfaulted(capacity), capacity, &ops, Some(prefault_before));
    }
}

/// A full book refuses one more order whether its never-used slots were handed out before or
/// after the pre-fault, and takes one again once an order leaves.
#[test]
fn an_unfaulted_book_is_full_at_its_capacity() {
    for prefault_first in [false, true] {
        let mut book = OrderBook::with_capacity_unfaulted(3);
        if prefault_first {
            book.prefault();
        }
        for id in 1..=3 {
            assert!(book.has_capacity());
            book.insert(order(id, 1, 0, id % 2 == 0, 100 + id, 1)).unwrap();
        }
        assert!(!book.has_capacity());
        assert_eq!(book.insert(order(4, 1, 0, true, 90, 1)), Err(engine::book::InsertError::BookFull));
        book.prefault();
        assert!(!book.has_capacity());
        assert!(book.remove(OrderId::new(2)).is_some());
        book.insert(order(5, 1, 0, true, 90, 1)).unwrap();
        book.check_structure().unwrap();
        assert_eq!(book.len(), 3);
    }
}

/// An order whose id-index entry is held by an older resting order spills; it is still found,
/// filled in place and cancelled by id, and once the older order is gone a later id takes the
/// entry again.
#[test]
fn an_order_whose_id_index_entry_is_taken_is_found_and_cancelled_by_id() {
    // Capacity 4: four id-index entries, so ids 1, 5, 9, 13 and 17 share entry 1.
    let mut book = OrderBook::with_capacity(4);
    let ops = [
        Op::Insert { gap: 1, user: 1, client: 1, bid: true, price: 100, lots: 5 }, // id 1, direct
        Op::Insert { gap: 4, user: 2, client: 1, bid: true, price: 100, lots: 5 }, // id 5, spills
        Op::Insert { gap: 4, user: 2, client: 2, bid: false, price: 101, lots: 5 }, // id 9, spills
    ];
    let mut next_id = 0;
    for op in &ops {
        if let Op::Insert { gap, user, client, bid, price, lots } = *op {
            next_id += gap;
            book.insert(order(next_id, user, client, bid, price, lots)).unwrap();
        }
    }
    book.check_structure().unwrap();
    assert_eq!(book.get(OrderId::new(5)).map(|o| o.user_id), Some(UserId::new(2)));
    assert_eq!(book.find_client_order(UserId::new(2), ClientOrderId::new(2)), Some(OrderId::new(9)));
    book.update_in_place(OrderId::new(5), 5, 2, 3, 200);
    assert_eq!(book.get(OrderId::new(5)).map(|o| o.remaining_lots), Some(2));
    assert_eq!(book.remove(OrderId::new(5)).map(|o| o.order_id), Some(OrderId::new(5)));
    assert!(book.get(OrderId::new(5)).is_none());
    book.check_structure().unwrap();
    // Id 13 spills too (entry 1 still holds id 1).
    book.insert(order(13, 3, 0, true, 99, 1)).unwrap();
    book.check_structure().unwrap();
    // Id 1 leaves; id 17 takes entry 1.
    assert!(book.remove(OrderId::new(1)).is_some());
    book.insert(order(17, 3, 0, true, 98, 1)).unwrap();
    book.check_structure().unwrap();
    for id in [9, 13, 17] {
        assert_eq!(book.get(OrderId::new(id)).map(|o| o.order_id), Some(OrderId::new(id)));
    }
    assert!(book.get(OrderId::new(1)).is_none());
    assert_eq!(book.len(), 3);
}

/// A copy has the same orders and keeps working like the original (it is what the snapshotter's
/// shadow engine starts from).
#[test]
fn a_copy_of_a_book_with_spilled_orders_behaves_like_the_original() {
    let mut book = OrderBook::with_capacity(2);
    book.insert(order(1, 1, 0, true, 100, 1)).unwrap();
    book.insert(order(3, 1, 0, true, 100, 1)).unwrap(); // entry 1 held by id 1: spills
    let mut copy = book.clone();
    copy.check_structure().unwrap();
    for b in [&mut book, &mut copy] {
        assert!(b.remove(OrderId::new(3)).is_some());
        b.insert(order(5, 2, 0, false, 101, 1)).unwrap();
        b.check_structure().unwrap();
    }
    let ids = |b: &OrderBook| {
        let mut out = Vec::new();
        b.visit_in_priority(Side::Ask, &mut |o| {
            out.push(o.order_id);
            true
        });
        out
    };
    assert_eq!(ids(&book), ids(&copy));
}
