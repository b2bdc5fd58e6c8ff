//! The market view's bookkeeping, fed events directly: book levels and the per-market update id,
//! the bounded trade ring, the rolling ticker windows (24 h vs 7 d, by event time), one-minute
//! candles merged into klines (also for a fill arriving out of order) and their bounded history,
//! and events for unknown markets ignored.

use codec::*;
use engine::EngineConfig;
use marketdata::{KlineInterval, MINUTES_KEPT, MarketView, TRADES_KEPT};

const MINUTE: u64 = 60_000_000_000;
const HOUR: u64 = 60 * MINUTE;

fn level(market: u32, side: Side, price: u64, lots: u64, timestamp_ns: u64) -> Event {
    Event::BookLevelUpdate(BookLevelUpdate {
        timestamp_ns: TimestampNs::new(timestamp_ns),
        price_ticks: Ticks::new(price),
        quantity_lots: Lots::new(lots),
        order_count: OrderCount::new(u32::from(lots > 0)),
        market_id: MarketId::new(market),
        side: side.into(),
        ..Default::default()
    })
}

fn fill(market: u32, id: u64, price: u64, lots: u64, taker: Side, timestamp_ns: u64) -> Event {
    Event::Fill(Fill {
        timestamp_ns: TimestampNs::new(timestamp_ns),
        trade_id: TradeId::new(id),
        price_ticks: Ticks::new(price),
        quantity_lots: Lots::new(lots),
        quote_amount: Amount::new(price * lots),
        market_id: MarketId::new(market),
        taker_side: taker.into(),
        ..Default::default()
    })
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

#[test]
fn book_levels_and_update_ids() {
    let view = MarketView::new(&EngineConfig::sample());
    let market = MarketId::new(1);
    for (side, price, lots) in [(Side::Bid, 10, 5), (Side::Bid, 12, 1), (Side::Bid, 11, 2), (Side::Ask, 15, 3)] {
        view.apply(&level(1, side, price, lots, 7));
    }
    view.apply(&level(1, Side::Bid, 11, 0, 9)); // removed
    view.apply(&level(1, Side::Bid, 10, 4, 9)); // changed
    view.apply(&level(2, Side::Ask, 99, 1, 9)); // another market
    view.apply(&level(9, Side::Ask, 99, 1, 9)); // unknown market: ignored
    let depth = view.depth(market, 10).unwrap();
    assert_eq!(depth.bids, [(12, 1), (10, 4)], "best first");
    assert_eq!(depth.asks, [(15, 3)]);
    assert_eq!(depth.last_update_id, 6, "one per BookLevelUpdate of this market");
    assert_eq!(depth.timestamp_ns, 9);
    assert_eq!(view.depth(market, 1).unwrap().bids, [(12, 1)]);
    assert_eq!(view.depth(MarketId::new(2), 10).unwrap().last_update_id, 1);
    assert!(view.depth(MarketId::new(9), 10).is_none());
    assert!(view.depth(MarketId::new(0), 10).is_none());
}

#[test]
fn trades_are_bounded_and_paged() {
    let view = MarketView::new(&EngineConfig::sample());
    let market = MarketId::new(3);
    let total = TRADES_KEPT as u64 + 5;
    for id in 1..=total {
        view.apply(&fill(3, id, 100, 1, if id % 2 == 0 { Side::Ask } else { Side::Bid }, id));
    }
    let all = view.trades(market, 5_000, 0).unwrap();
    assert_eq!(all.len(), TRADES_KEPT);
    assert_eq!((all[0].id, all.last().unwrap().id), (6, total), "the oldest were dropped; oldest first");
    assert!(all.iter().all(|t| t.buyer_is_maker == (t.id % 2 == 0)), "buyer is maker when the taker sold");
    let page = view.trades(market, 3, 2).unwrap();
    assert_eq!(page.iter().map(|t| t.id).collect::<Vec<_>>(), [total - 4, total - 3, total - 2]);
    assert!(view.trades(market, 3, 5_000).unwrap().is_empty());
}

#[test]
fn ticker_windows_follow_event_time() {
    let view = MarketView::new(&EngineConfig::sample());
    let market = MarketId::new(1);
    assert_eq!(view.ticker(market, 24 * HOUR).unwrap().window, None);
    let now = now_ns();
    view.apply(&fill(1, 1, 100, 2, Side::Bid, now - 25 * HOUR));
    view.apply(&fill(1, 2, 90, 1, Side::Bid, now - 3 * HOUR));
    view.apply(&fill(1, 3, 120, 3, Side::Ask, now - HOUR));
    view.apply(&fill(1, 4, 110, 1, Side::Bid, now - HOUR + 1));
    let day = view.ticker(market, 24 * HOUR).unwrap();
    let window = day.window.unwrap();
    assert_eq!((window.open, window.close, window.high, window.low), (90, 110, 120, 90));
    assert_eq!((window.volume_lots, window.quote_volume, window.trades), (5, 90 + 360 + 110, 3));
    assert_eq!(day.last_price, Some(110));
    let week = view.ticker(market, 7 * 24 * HOUR).unwrap().window.unwrap();
    assert_eq!((week.open, week.trades, week.volume_lots), (100, 4, 7));
    let recent = view.ticker(market, 30 * MINUTE).unwrap();
    assert_eq!((recent.window, recent.last_price), (None, Some(110)), "nothing in the last 30 minutes");
}

#[test]
fn candles_merge_into_klines_and_expire() {
    let view = MarketView::new(&EngineConfig::sample());
    let market = MarketId::new(2);
    let base = 1_700_000_000 / 3_600 * 3_600; // an hour boundary, seconds
    let at = |seconds: u64| seconds * 1_000_000_000;
    view.apply(&fill(2, 1, 50, 1, Side::Bid, at(base + 5)));
    view.apply(&fill(2, 2, 70, 1, Side::Bid, at(base + 130)));
    view.apply(&fill(2, 3, 40, 2, Side::Bid, at(base + 20))); // late: merges into the first minute
    let minutes = view.klines(market, KlineInterval::Seconds(60), base, u64::MAX, 100).unwrap();
    assert_eq!(minutes.len(), 2);
    assert_eq!((minutes[0].start, minutes[0].end, minutes[0].trades, minutes[0].low), (base, base + 60, 2, 40));
    assert_eq!(minutes[1].start, base + 120);
    let hour = view.klines(market, KlineInterval::Seconds(3_600), base + 1_000, u64::MAX, 100).unwrap();
    assert_eq!(hour.len(), 1, "startTime aligned down to the bucket");
    assert_eq!((hour[0].open, hour[0].close, hour[0].high, hour[0].low, hour[0].volume_lots), (50, 70, 70, 40, 4));
    assert_eq!(view.klines(market, KlineInterval::Seconds(60), base, base + 60, 100).unwrap().len(), 1);
    assert_eq!(view.klines(market, KlineInterval::Seconds(60), base, u64::MAX, 1).unwrap().len(), 1, "max");

    // A fill MINUTES_KEPT minutes later pushes the oldest minutes out.
    let later = base + MINUTES_KEPT * 60;
    view.apply(&fill(2, 4, 60, 1, Side::Bid, at(later)));
    let kept = view.klines(market, KlineInterval::Month, 0, u64::MAX, 100).unwrap();
    let trades: u64 = kept.iter().map(|k| k.trades).sum();
    assert_eq!(trades, 2, "only the minute at base + 120 s and the new one remain: {kept:?}");
}

#[test]
fn market_status_follows_halts_and_resumes() {
    let view = MarketView::new(&EngineConfig::sample());
    let status = |market: u32, halted: bool| {
        Event::MarketStatusChanged(MarketStatusChanged {
            market_id: MarketId::new(market),
            halted: halted.into(),
            ..Default::default()
        })
    };
    assert_eq!(view.is_halted(MarketId::new(1)), Some(false));
    view.apply(&status(1, true));
    view.apply(&status(9, true)); // unknown market: ignored
    assert_eq!(view.is_halted(MarketId::new(1)), Some(true));
    assert_eq!(view.is_halted(MarketId::new(2)), Some(false));
    assert_eq!(view.is_halted(MarketId::new(9)), None);
    // Seeding from an engine takes the engine's flags.
    let config = EngineConfig::sample();
    let mut engine = engine::Engine::new(&config).unwrap();
    let mut events = Vec::new();
    engine.execute(engine::CommandContext::new(1, 1), &engine::testkit::commands::market_control(2, true), &mut events);
    view.seed_books(&engine);
    assert_eq!(view.is_halted(MarketId::new(1)), Some(false));
    assert_eq!(view.is_halted(MarketId::new(2)), Some(true));
    view.apply(&status(2, false));
    assert_eq!(view.is_halted(MarketId::new(2)), Some(false));
}
