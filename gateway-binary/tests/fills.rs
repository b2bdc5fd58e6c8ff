//! Fills as SBE clients receive them, over real TCP with a real engine (issue #16): the taker's
//! fills of a quote-quantity market order across three levels say which one completes it
//! (`taker_order_complete` on the last only; `taker_remaining_lots` is 0 on all of them), nothing
//! follows the completing fill, and a maker's copy shows nothing of the taker, that flag included.

mod common;

use codec::*;
use common::{Harness, accepted, event, limit, next};
use engine::testkit::commands;

#[test]
fn quote_quantity_market_fills_say_which_completes_the_order() {
    let harness = Harness::start(2, |_| {});
    let mut buyer = harness.client(1);
    let mut seller = harness.client(2);
    for (price, lots, client_order_id) in [(600_000, 2, 1), (600_010, 2, 2), (600_020, 3, 3)] {
        seller.send(&limit(Side::Ask, price, lots, client_order_id)).unwrap();
        accepted(next(&mut seller));
    }
    // 2 lots at 600_000 and 600_010 (2_400_020 + 1_200 fee), then 1 at 600_020 (600_020 + 300):
    // a second lot there would exceed 3_100_000.
    let Command::NewOrder(mut order) = commands::market_buy_quote(0, 1, 3_100_000) else { unreachable!() };
    order.client_order_id = ClientOrderId::new(9);
    buyer.send(&Command::NewOrder(order)).unwrap();
    let id = accepted(next(&mut buyer)).order_id;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let Event::Fill(fill) = event(next(&mut buyer)) else { panic!("expected a fill") };
        assert_eq!((fill.taker_order_id, fill.taker_remaining_lots.get()), (id, 0));
        assert_eq!(fill.maker_order_id, OrderId::ZERO, "the maker is hidden");
        seen.push((fill.price_ticks.get(), fill.quantity_lots.get(), fill.completes_taker()));
    }
    assert_eq!(seen, [(600_000, 2, false), (600_010, 2, false), (600_020, 1, true)]);
    // Nothing follows the completing fill: the next message answers the next command.
    buyer.send(&commands::mass_cancel(0, 0, SideFilter::Both)).unwrap();
    let Event::MassCancelReport(report) = event(next(&mut buyer)) else { panic!("expected no expiry") };
    assert_eq!(report.canceled_count.get(), 0);

    for lots in [2, 2, 1] {
        let Event::Fill(fill) = event(next(&mut seller)) else { panic!("expected the maker fill") };
        assert_eq!(fill.quantity_lots.get(), lots);
        assert_eq!((fill.taker_order_id, fill.taker_user_id), (OrderId::ZERO, UserId::ZERO));
        assert!(!fill.completes_taker(), "the maker learns nothing of the taker's order");
    }
}
