//! `--demo`: funded demo users, a market maker quoting around a drifting mid on every market, and
//! a few traders that occasionally cross, so a fresh exchange shows a live book and trades. The
//! market maker also funds the first configured AMM pool (ETH_USDC by default) at the starting
//! mid, and on that market half of the traders' market orders are routed between book and pool;
//! the other pools start empty for users to provide the first liquidity.
//!
//! The flow is driven by a seeded xorshift generator, so a demo run is repeatable given the same
//! interleaving; it pushes commands through the ingress ring like any gateway would.

use crate::runtime::{IngressCommand, IngressRing};
use codec::*;
use engine::EngineConfig;
use engine::testkit::commands;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// User id of the demo market maker.
pub const MARKET_MAKER: u64 = 1;
/// User ids of the demo traders.
pub const TRADERS: std::ops::RangeInclusive<u64> = 2..=4;

/// API secrets (Ed25519 seeds) of the demo users, registered with `--demo`: user `n`'s seed is
/// 32 bytes of value `n`. Public knowledge: never use them outside a demo.
pub fn demo_secrets() -> Vec<(u64, [u8; 32])> {
    std::iter::once(MARKET_MAKER).chain(TRADERS).map(|user| (user, [user as u8; 32])).collect()
}

/// First user id of the load-test users (`--load-users N` creates `LOAD_USER_FIRST..+N`).
pub const LOAD_USER_FIRST: u64 = 1_000_001;

/// API secret of load-test user `user`: its id's 8 little-endian bytes, repeated four times.
/// Public knowledge, like the demo secrets: for benchmarks on a private machine only.
pub fn load_user_secret(user: u64) -> [u8; 32] {
    let mut secret = [0u8; 32];
    for chunk in secret.chunks_exact_mut(8) {
        chunk.copy_from_slice(&user.to_le_bytes());
    }
    secret
}

/// Deposits that fund load-test users generously in every asset.
pub fn load_user_funding(config: &EngineConfig, count: u64) -> Vec<Command> {
    let mut funding = Vec::new();
    for user in LOAD_USER_FIRST..LOAD_USER_FIRST + count {
        for asset in &config.assets {
            let amount = 10u64.pow(u32::from(asset.decimals)) * 10_000_000;
            funding.push(commands::deposit(user, asset.id.get(), amount));
        }
    }
    funding
}

/// Pushes commands through the ingress ring in order (waiting while it is full).
pub fn push_all(ring: &IngressRing, commands: Vec<Command>, stop: &AtomicBool) {
    for command in commands {
        push(ring, command, stop);
    }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Pushes a command, waiting while the ring is full (the demo is a polite producer).
fn push(ring: &IngressRing, command: Command, stop: &AtomicBool) {
    let mut item = IngressCommand::new(0, command);
    while let Err(rejected) = ring.push(item) {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        item = rejected;
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Mid prices in ticks for the sample markets (BTC 60,000, ETH 3,000, SOL 150 USDC).
fn mid_ticks(config: &EngineConfig, market: usize) -> u64 {
    let spec = &config.markets[market];
    let quote_decimals = config.assets[spec.quote.get() as usize].decimals;
    let price_quote = match spec.symbol.as_str() {
        s if s.starts_with("BTC") => 60_000,
        s if s.starts_with("ETH") => 3_000,
        _ => 150,
    };
    (price_quote * 10u64.pow(u32::from(quote_decimals)) / spec.tick_size).max(10)
}

/// The demo's command stream: funding for every demo user, then an endless, seeded mix of maker
/// quotes, maker quote refreshes (mass cancels) and trader market orders. A pure function of the
/// configuration, so tests can rebuild exactly what a demo run sent.
pub struct DemoFlow {
    config: EngineConfig,
    rng: XorShift,
    mids: Vec<u64>,
    client_id: u64,
    funding: std::vec::IntoIter<Command>,
    /// Market of the pool the demo trades with, if any.
    pool_market: Option<MarketId>,
}

impl DemoFlow {
    /// The flow for a configuration.
    pub fn new(config: &EngineConfig) -> Self {
        let mut funding = Vec::new();
        for user in std::iter::once(MARKET_MAKER).chain(TRADERS) {
            for asset in &config.assets {
                let amount = 10u64.pow(u32::from(asset.decimals)) * 1_000_000;
                funding.push(commands::deposit(user, asset.id.get(), amount));
            }
        }
        // The market maker funds the first pool with 100 base at the starting mid.
        let pool_market = config.pools.first().map(|pool| pool.market_id);
        if let Some(market_id) = pool_market {
            let index = market_id.get() as usize - 1;
            let market = &config.markets[index];
            let base_decimals = config.assets[market.base.get() as usize].decimals;
            let base = 100 * 10u64.pow(u32::from(base_decimals));
            let quote = 100 * mid_ticks(config, index) * market.tick_size;
            funding.push(commands::add_liquidity(MARKET_MAKER, market_id.get(), base, quote));
        }
        Self {
            pool_market,
            mids: (0..config.markets.len()).map(|m| mid_ticks(config, m)).collect(),
            config: config.clone(),
            rng: XorShift(0x00de_0000_5eed_0001),
            client_id: 0,
            funding: funding.into_iter(),
        }
    }
}

impl Iterator for DemoFlow {
    type Item = Command;

    fn next(&mut self) -> Option<Command> {
        if let Some(deposit) = self.funding.next() {
            return Some(deposit);
        }
        let rng = &mut self.rng;
        let market_index = (rng.next() % self.config.markets.len() as u64) as usize;
        let market = &self.config.markets[market_index];
        let market_id = market.id.get();
        let mid = &mut self.mids[market_index];
        // A slow random walk.
        let step = (*mid / 2_000).max(1);
        if rng.next() % 2 == 0 {
            *mid += step
        } else {
            *mid = mid.saturating_sub(step).max(step * 10)
        }
        let lots = rng.range(1, 50) * market.min_quantity_lots.max(1);
        self.client_id = self.client_id % 1_000_000 + 1;
        Some(match rng.next() % 10 {
            // The maker refreshes its quotes: cancel everything, then quote both sides.
            0 => commands::mass_cancel(MARKET_MAKER, market_id, SideFilter::Both),
            1..=6 => {
                let side = if rng.next() % 2 == 0 { Side::Bid } else { Side::Ask };
                let offset = rng.range(1, 20) * step;
                let price = match side {
                    Side::Bid => mid.saturating_sub(offset).max(1),
                    Side::Ask => *mid + offset,
                };
                commands::limit(MARKET_MAKER, market_id, side, price, lots, TimeInForce::Gtc, self.client_id)
            }
            _ => {
                let trader = rng.range(*TRADERS.start(), *TRADERS.end());
                let side = if rng.next() % 2 == 0 { Side::Bid } else { Side::Ask };
                let lots = lots.min(market.max_quantity_lots);
                if self.pool_market == Some(market.id) && rng.next() % 2 == 0 {
                    commands::routed(trader, market_id, side, lots, 0)
                } else {
                    commands::market(trader, market_id, side, lots)
                }
            }
        })
    }
}

/// Runs the demo flow until `stop`, at about `orders_per_second`; `limit` bounds the number of
/// commands (0: unbounded).
pub fn run(config: EngineConfig, ring: Arc<IngressRing>, stop: Arc<AtomicBool>, orders_per_second: u64, limit: u64) {
    let pause = Duration::from_nanos(1_000_000_000 / orders_per_second.max(1));
    for (sent, command) in DemoFlow::new(&config).enumerate() {
        if stop.load(Ordering::Relaxed) || (limit != 0 && sent as u64 >= limit) {
            return;
        }
        push(&ring, command, &stop);
        std::thread::sleep(pause);
    }
}
