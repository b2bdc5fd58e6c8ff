//! The engine: command dispatch, order checks, matching and settlement.

mod trigger_orders;

use crate::amm::{self, Pool};
use crate::bands;
use crate::book::{Book, OrderBook, RestingOrder};
use crate::config::{ConfigError, EngineConfig, EngineLimits, MarketSpec};
use crate::event_sink::{EventSink, NoEvents};
use crate::hash::{StateHasher, StateWords};
use crate::ledger::{AccountIndex, Balance, Ledger, LedgerError};
use crate::triggers::{Attachment, TriggerBook};
use codec::GatewayTag;
use codec::{
    AddLiquidity, LiquidityAdded, LiquidityRemoved, OrderRouted, RemoveLiquidity, RoutedOrder, Shares, Swap,
    SwapExecuted, SwapMode,
};
use codec::{
    Amount, AssetId, BalanceChange, BalanceUpdate, BookLevelUpdate, CancelOrder, CancelReason, CancelReplace,
    ClientOrderId, Command, Deposit, Event, ExpireReason, Fill, Lots, MarketAction, MarketControl, MarketId,
    MarketStatusChanged, MassCancel, MassCancelReport, NewOrder, OrderAccepted, OrderCanceled, OrderCount,
    OrderExpired, OrderId, OrderKindFilter, OrderRejected, OrderReplaced, OrderType, RejectReason, Reserved,
    SelfTradePrevention, Sequence, Side, Ticks, TimeInForce, TimestampNs, TradeId, UserId, Withdraw,
};
use std::collections::BTreeMap;

/// What the sequencer stamps on a command: its position in the journal and the time it was
/// accepted. The engine copies both into the events it emits and reads no clock of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandContext {
    /// Global command sequence number.
    pub sequence: Sequence,
    /// Sequencer time.
    pub timestamp_ns: TimestampNs,
    /// The remote gateway process that sent the command and its sequence there (journaled with
    /// the command, [`codec::origin`]); `None` for commands from gateways inside the engine's
    /// process and for every record written before gateway processes existed.
    pub gateway: Option<GatewayTag>,
}

impl CommandContext {
    /// A context from plain integers.
    pub fn new(sequence: u64, timestamp_ns: u64) -> Self {
        Self { sequence: Sequence::new(sequence), timestamp_ns: TimestampNs::new(timestamp_ns), gateway: None }
    }

    /// The same context for a command sent by a gateway process (`None`: from no gateway process).
    pub fn with_gateway(self, gateway: Option<GatewayTag>) -> Self {
        Self { gateway, ..self }
    }
}

/// How many distinct gateway processes the engine remembers (deduplication state). A command from
/// a further gateway id is rejected with [`RejectReason::TooManyGateways`] (deterministically:
/// the table is engine state): configure fewer gateway ids.
pub const GATEWAYS_MAX: usize = 4096;

#[derive(Clone)]
struct MarketState<B> {
    spec: MarketSpec,
    book: B,
    next_trade_id: u64,
    /// Halted by an operator: new orders and replaces are rejected, cancels work.
    halted: bool,
    /// Price of the market's last trade in ticks (0 before the first): the reference of its
    /// price band and the price its trigger orders watch.
    last_trade_ticks: u64,
    /// Pending stop / take-profit orders (see [`crate::triggers`]).
    triggers: TriggerBook,
}

/// An incoming order while it matches.
#[derive(Debug, Clone, Copy)]
struct Taker {
    order_id: OrderId,
    user_id: UserId,
    /// The user's ledger account, looked up once when the taker is made (accounts are never
    /// removed, so it stays valid); `None` without one, which funds checks make impossible for
    /// a taker that trades or rests.
    account: Option<AccountIndex>,
    client_order_id: ClientOrderId,
    side: Side,
    /// Limit price; `None` for market orders.
    limit: Option<u64>,
    /// The market's price band edge in the taker's direction when it was accepted (highest
    /// price a buy may pay, lowest a sell may accept); `None` without a band.
    band_edge: Option<u64>,
    /// Total order quantity (0 for quote-quantity market orders).
    quantity_lots: u64,
    /// Still to fill; `None` when quote bounds the size (quote-quantity market orders).
    remaining_lots: Option<u64>,
    filled_lots: u64,
    /// Most quote (notional + fee) a market buy may spend: its quote quantity, or for a buy by
    /// base quantity the buyer's available quote.
    budget: Option<u64>,
    spent: u64,
    /// Most notional (before the fee) a quote-quantity market sell may sell for.
    proceeds_max: Option<u64>,
    proceeds: u64,
    /// Most lots a quote-quantity market sell can deliver: the seller's available base at
    /// acceptance, in whole lots.
    deliverable_lots: Option<u64>,
    /// This taker's latest fill: where its `Fill` event is, so that it can be marked as
    /// completing the order once matching ends (quote-quantity orders learn that they are done
    /// only when the next lot no longer fits their quote quantity), and its price. Kept here,
    /// never read back from the events, so that a replay without events decides the same.
    last_fill: Option<LastFill>,
    self_trade_prevention: SelfTradePrevention,
    time_in_force: TimeInForce,
    post_only: bool,
}

/// A taker's latest fill (see [`Taker::last_fill`]).
#[derive(Debug, Clone, Copy)]
struct LastFill {
    /// Its `Fill` event's index in the sink ([`EventSink::next_index`]).
    event_index: usize,
    /// Its price in ticks.
    price_ticks: u64,
}

/// Why matching stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchStop {
    Filled,
    PriceLimit,
    NoLiquidity,
    /// The taker's funds ran out (a market buy's available quote, a quote-quantity sell's base).
    FundsExhausted,
    /// A quote-quantity market order cannot take another lot without exceeding its quote
    /// quantity: it is as complete as whole lots allow.
    QuoteQuantityReached,
    SelfTrade,
    /// The next maker's price is beyond the market's price band (market orders).
    PriceBand,
}

/// The matching engine over books of type `B` (the fast [`OrderBook`] by default; tests also run
/// it over a naive reference book and compare). `Clone` copies the whole state: the copy is the
/// same engine, command for command (the exchange's snapshotter keeps one as its shadow).
#[derive(Clone)]
pub struct Engine<B: Book = OrderBook> {
    markets: Vec<MarketState<B>>,
    ledger: Ledger,
    next_order_id: u64,
    limits: EngineLimits,
    /// Reused buffer for mass cancels (capacity: the per-user open-order bound).
    scratch_order_ids: Vec<OrderId>,
    /// AMM pools, in configuration order.
    pools: Vec<Pool>,
    /// Per market (index = market id − 1): the index of its pool in `pools`.
    pool_of_market: Vec<Option<usize>>,
    /// Exactly-once for gateway processes: per gateway id, the highest gateway sequence applied.
    /// A command whose sequence is not above it is a duplicate and is dropped without events.
    /// A `BTreeMap`: hashed and serialised in gateway id order.
    gateway_sequences: BTreeMap<u64, u64>,
}

impl Engine<OrderBook> {
    /// An engine with fast books, all memory for orders allocated now.
    ///
    /// # Errors
    /// When the configuration is inconsistent.
    pub fn new(config: &EngineConfig) -> Result<Self, ConfigError> {
        Self::with_books(config, OrderBook::with_capacity)
    }

    /// An engine like [`Self::new`] whose books' reserved room is allocated but not yet touched
    /// ([`OrderBook::with_capacity_unfaulted`]): for replaying a journal, which touches only what
    /// its orders use. Call [`Self::prefault`] before the engine serves live traffic.
    ///
    /// # Errors
    /// When the configuration is inconsistent.
    pub fn new_unfaulted(config: &EngineConfig) -> Result<Self, ConfigError> {
        Self::with_books(config, OrderBook::with_capacity_unfaulted)
    }
}

type Outcome = Result<(), RejectReason>;

impl<B: Book> Engine<B> {
    /// An engine whose books are made by `make_book(capacity)`.
    ///
    /// # Errors
    /// When the configuration is inconsistent.
    pub fn with_books(config: &EngineConfig, mut make_book: impl FnMut(usize) -> B) -> Result<Self, ConfigError> {
        let specs = config.validate()?;
        let limits = config.limits;
        let mut pool_of_market = vec![None; specs.len()];
        let pools = config
            .pools
            .iter()
            .enumerate()
            .map(|(index, pool)| {
                let market = &specs[pool.market_id.get() as usize - 1].config;
                pool_of_market[pool.market_id.get() as usize - 1] = Some(index);
                Pool::new(pool.market_id, market.base, market.quote, pool.fee_bps)
            })
            .collect();
        Ok(Self {
            pools,
            pool_of_market,
            markets: specs
                .into_iter()
                .map(|spec| MarketState {
                    spec,
                    book: make_book(limits.orders_per_market_max),
                    next_trade_id: 1,
                    halted: false,
                    last_trade_ticks: 0,
                    triggers: TriggerBook::default(),
                })
                .collect(),
            ledger: Ledger::new(config.assets.len(), limits.accounts_expected),
            next_order_id: 1,
            limits,
            scratch_order_ids: Vec::with_capacity(limits.open_orders_per_user_max),
            gateway_sequences: BTreeMap::new(),
        })
    }

    /// Touches every page of the books' reserved room (see [`Book::prefault`]) without changing
    /// the state, so that the orders that follow do not pay page faults.
    pub fn prefault(&mut self) {
        for market in &mut self.markets {
            market.book.prefault();
        }
    }

    /// Executes one command, appending its events to `out`. Either the command is rejected
    /// (exactly one [`OrderRejected`] event, no state change) or it takes effect completely.
    ///
    /// A command from a gateway process ([`CommandContext::gateway`]) whose gateway sequence is
    /// not above the highest applied for that gateway is a duplicate (a gateway re-sent it, or a
    /// new primary re-read the commands topic): it is dropped, with no event and no state change
    /// ([`Self::is_duplicate`] tells beforehand). One from a gateway id the table has no room
    /// for ([`GATEWAYS_MAX`]) is rejected ([`RejectReason::TooManyGateways`]), its gateway not
    /// remembered.
    pub fn execute(&mut self, ctx: CommandContext, command: &Command, out: &mut Vec<Event>) {
        self.execute_into(ctx, command, out);
    }

    /// Executes one command for its state change only, building no events: what a replay that
    /// rebuilds state uses (recovery, shadow engines). The state afterwards is exactly the one
    /// [`Self::execute`] reaches.
    pub fn execute_without_events(&mut self, ctx: CommandContext, command: &Command) {
        self.execute_into(ctx, command, &mut NoEvents);
    }

    /// [`Self::execute`] into any [`EventSink`]; the engine's decisions never depend on the sink.
    pub fn execute_into(&mut self, ctx: CommandContext, command: &Command, out: &mut impl EventSink) {
        let mut untracked_gateway = false;
        if let Some(tag) = ctx.gateway {
            if self.is_duplicate(tag) {
                return;
            }
            if self.gateway_table_full_for(tag) {
                untracked_gateway = true;
            } else {
                self.gateway_sequences.insert(tag.gateway_id, tag.gateway_sequence);
            }
        }
        let result =
            if untracked_gateway { Err(RejectReason::TooManyGateways) } else { self.dispatch(ctx, command, out) }; // Trades may have moved a market's last price: fire the trigger orders it reached.
        if result.is_ok()
            && let Command::NewOrder(NewOrder { market_id, .. })
            | Command::CancelReplace(CancelReplace { market_id, .. })
            | Command::RoutedOrder(RoutedOrder { market_id, .. }) = command
            && let Some(mi) = self.market_index(*market_id)
            // Nothing can fire without pending triggers (most markets, most of the time).
            && !self.markets[mi].triggers.is_empty()
        {
            self.fire_triggers(ctx, mi, out);
        }
        if let Err(reason) = result {
            let (client_order_id, order_id, market_id) = match command {
                Command::NewOrder(m) => (m.client_order_id, OrderId::ZERO, m.market_id),
                Command::CancelOrder(m) => (m.client_order_id, m.order_id, m.market_id),
                Command::CancelReplace(m) => (m.client_order_id, m.order_id, m.market_id),
                Command::MassCancel(m) => (ClientOrderId::ZERO, OrderId::ZERO, m.market_id),
                Command::MarketControl(m) => (ClientOrderId::ZERO, OrderId::ZERO, m.market_id),
                Command::Deposit(_) | Command::Withdraw(_) => (ClientOrderId::ZERO, OrderId::ZERO, MarketId::ZERO),
                Command::AddLiquidity(m) => (ClientOrderId::ZERO, OrderId::ZERO, m.market_id),
                Command::RemoveLiquidity(m) => (ClientOrderId::ZERO, OrderId::ZERO, m.market_id),
                Command::Swap(m) => (ClientOrderId::ZERO, OrderId::ZERO, m.market_id),
                Command::RoutedOrder(m) => (ClientOrderId::ZERO, OrderId::ZERO, m.market_id),
            };
            out.push(Event::OrderRejected(OrderRejected {
                sequence: ctx.sequence,
                timestamp_ns: ctx.timestamp_ns,
                user_id: command.user_id(),
                client_order_id,
                order_id,
                market_id,
                reason: reason.into(),
                command_template_id: command.template_id().into(),
            }));
        }
    }

    /// Executes `command` by its kind (no deduplication: [`Self::execute`] did that).
    fn dispatch(
        &mut self,
        ctx: CommandContext,
        command: &Command,
        out: &mut impl EventSink,
    ) -> Result<(), RejectReason> {
        match command {
            Command::NewOrder(m) => self.new_order(ctx, m, None, out),
            Command::CancelOrder(m) => self.cancel_order(ctx, m, out),
            Command::CancelReplace(m) => self.cancel_replace(ctx, m, out),
            Command::MassCancel(m) => self.mass_cancel(ctx, m, out),
            Command::Deposit(m) => self.deposit(ctx, m, out),
            Command::Withdraw(m) => self.withdraw(ctx, m, out),
            Command::MarketControl(m) => self.market_control(ctx, m, out),
            Command::AddLiquidity(m) => self.add_liquidity(ctx, m, out),
            Command::RemoveLiquidity(m) => self.remove_liquidity(ctx, m, out),
            Command::Swap(m) => self.swap(ctx, m, out),
            Command::RoutedOrder(m) => self.routed_order(ctx, m, out),
        }
    }

    // ------------------------------------------------------------------------------------------
    // Queries
    // ------------------------------------------------------------------------------------------

    /// A user's balance of an asset.
    pub fn balance(&self, user_id: UserId, asset: AssetId) -> Balance {
        self.ledger.balance(user_id, asset)
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The book of a market.
    pub fn book(&self, market_id: MarketId) -> Option<&B> {
        self.market_index(market_id).map(|i| &self.markets[i].book)
    }

    /// Number of markets (ids 1..=count).
    pub fn market_count(&self) -> usize {
        self.markets.len()
    }

    /// Number of pending trigger orders on a market (0 for an unknown market).
    pub fn pending_triggers(&self, market_id: MarketId) -> usize {
        self.triggers(market_id).map_or(0, TriggerBook::len)
    }

    /// The pending trigger orders of a market.
    pub fn triggers(&self, market_id: MarketId) -> Option<&TriggerBook> {
        self.market_index(market_id).map(|i| &self.markets[i].triggers)
    }

    /// Price of a market's last trade in ticks (0: none yet).
    pub fn last_trade_price(&self, market_id: MarketId) -> Option<u64> {
        self.market_index(market_id).map(|i| self.markets[i].last_trade_ticks)
    }

    /// Whether a market is halted (`None`: no such market).
    pub fn is_halted(&self, market_id: MarketId) -> Option<bool> {
        self.market_index(market_id).map(|i| self.markets[i].halted)
    }

    /// Visits each market's next trade id and book, in market id order.
    pub fn visit_markets(&self, visit: &mut dyn FnMut(u64, &B)) {
        for market in &self.markets {
            visit(market.next_trade_id, &market.book);
        }
    }

    pub(crate) fn ledger_mut(&mut self) -> &mut Ledger {
        &mut self.ledger
    }

    /// Loads counters, halted flags and resting orders (each market's orders in priority order,
    /// bids first)
    /// into a freshly built engine.
    pub(crate) fn restore_markets(
        &mut self,
        next_order_id: u64,
        markets: Vec<(u64, bool, Vec<RestingOrder>)>,
    ) -> Result<(), String> {
        self.next_order_id = next_order_id;
        for (market, (next_trade_id, halted, orders)) in self.markets.iter_mut().zip(markets) {
            market.next_trade_id = next_trade_id;
            market.halted = halted;
            for order in orders {
                if order.order_id.get() >= next_order_id || market.book.get(order.order_id).is_some() {
                    return Err(format!("order {} out of range or duplicated", order.order_id));
                }
                market
                    .book
                    .insert(order)
                    .map_err(|_| format!("{}: book capacity exceeded", market.spec.config.symbol))?;
            }
        }
        Ok(())
    }

    /// Each market's last trade price and pending triggers, in market id order (for snapshots).
    pub(crate) fn visit_trigger_state(&self, visit: &mut dyn FnMut(u64, &TriggerBook)) {
        for market in &self.markets {
            visit(market.last_trade_ticks, &market.triggers);
        }
    }

    /// Restores each market's last trade price, pending triggers and attachments (snapshot
    /// formats 4 and 5).
    pub(crate) fn restore_trigger_state(&mut self, markets: Vec<(u64, TriggerBook)>) -> Result<(), String> {
        for (market, (last_trade_ticks, triggers)) in self.markets.iter_mut().zip(markets) {
            if let Some(orphan) = triggers.attachments().find(|a| market.book.get(a.parent_order_id).is_none()) {
                return Err(format!("attachment of {} whose parent is not open", orphan.parent_order_id));
            }
            market.last_trade_ticks = last_trade_ticks;
            market.triggers = triggers;
        }
        Ok(())
    }

    /// The AMM pool beside a market, if it has one.
    pub fn pool(&self, market_id: MarketId) -> Option<&Pool> {
        let index = self.market_index(market_id)?;
        self.pool_of_market[index].map(|p| &self.pools[p])
    }

    /// Every AMM pool, in configuration order.
    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// Replaces the pools' state (restoring a snapshot) and the ledger's pool account with it.
    pub(crate) fn restore_pools(&mut self, pools: Vec<Pool>) -> Result<(), String> {
        if pools.len() != self.pools.len() {
            return Err(format!("{} pools, configuration has {}", pools.len(), self.pools.len()));
        }
        let mut pooled = vec![0u128; self.ledger.asset_count()];
        for (slot, pool) in self.pools.iter_mut().zip(pools) {
            if pool.market_id != slot.market_id {
                return Err(format!("pool of market {} where {} is configured", pool.market_id, slot.market_id));
            }
            pool.validate()?;
            pooled[slot.base.get() as usize] += u128::from(pool.base_reserve);
            pooled[slot.quote.get() as usize] += u128::from(pool.quote_reserve);
            slot.base_reserve = pool.base_reserve;
            slot.quote_reserve = pool.quote_reserve;
            slot.total_shares = pool.total_shares;
            slot.holders = pool.holders;
        }
        for (asset, amount) in pooled.into_iter().enumerate() {
            let amount = u64::try_from(amount).map_err(|_| format!("asset {asset}: pools hold more than u64"))?;
            self.ledger.set_pooled(AssetId::new(asset as u32), amount);
        }
        Ok(())
    }

    /// Whether a command from a gateway process with this tag would be dropped as a duplicate
    /// (its sequence is not above the highest applied for its gateway).
    pub fn is_duplicate(&self, tag: GatewayTag) -> bool {
        self.gateway_sequences.get(&tag.gateway_id).is_some_and(|&highest| tag.gateway_sequence <= highest)
    }

    /// Whether a command from a gateway process with this tag would be rejected with
    /// [`RejectReason::TooManyGateways`]: its gateway id is not in the deduplication table and
    /// the table holds [`GATEWAYS_MAX`] ids already.
    pub fn gateway_table_full_for(&self, tag: GatewayTag) -> bool {
        !self.gateway_sequences.contains_key(&tag.gateway_id) && self.gateway_sequences.len() >= GATEWAYS_MAX
    }

    /// The highest gateway sequence applied for `gateway_id` (`None`: none yet).
    pub fn gateway_sequence(&self, gateway_id: u64) -> Option<u64> {
        self.gateway_sequences.get(&gateway_id).copied()
    }

    /// The deduplication state: (gateway id, highest sequence applied), in gateway id order.
    pub fn gateway_sequences(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.gateway_sequences.iter().map(|(id, sequence)| (*id, *sequence))
    }

    /// Restores the deduplication state (snapshot restore).
    pub(crate) fn restore_gateway_sequences(&mut self, sequences: BTreeMap<u64, u64>) {
        self.gateway_sequences = sequences;
    }

    /// The id the next accepted order will get.
    pub fn next_order_id(&self) -> OrderId {
        OrderId::new(self.next_order_id)
    }

    /// A hash of the complete engine state (books in priority order with every order field,
    /// balances in account order, fees, flows, id counters): XXH3-64 over those words (see
    /// [`StateHasher`]). Equal states have equal hashes on any platform and run.
    pub fn state_hash(&self) -> u64 {
        let mut hasher = StateHasher::default();
        self.hash_state_into(&mut hasher);
        hasher.finish()
    }

    /// The state hash of snapshot format versions 1 and 2 (FNV-1a over the same words), to check
    /// such a snapshot when it is restored.
    pub(crate) fn legacy_state_hash(&self) -> u64 {
        let mut hasher = crate::hash::LegacyStateHasher::default();
        self.hash_state_into(&mut hasher);
        hasher.finish()
    }

    /// Feeds every word of the state, in the documented order.
    fn hash_state_into<H: StateWords>(&self, hasher: &mut H) {
        hasher.u64(self.next_order_id);
        for market in &self.markets {
            hasher.u64(market.next_trade_id);
            // Only a halted market adds to the hash, so states without halts hash as before the
            // flag existed (and version-1 snapshots still verify).
            if market.halted {
                hasher.u64(u64::MAX);
            }
            // Likewise the last trade price and the pending triggers add to the hash only once
            // they exist (a state from before them hashes as it did).
            if market.last_trade_ticks != 0 || !market.triggers.is_empty() {
                hasher.u64(market.last_trade_ticks);
                hasher.u64(market.triggers.len() as u64);
                for trigger in market.triggers.iter() {
                    for word in trigger.words() {
                        hasher.u64(word);
                    }
                    // Attached children only (so that other triggers hash as before siblings).
                    if trigger.sibling != OrderId::ZERO {
                        hasher.u64(trigger.sibling.get());
                    }
                }
            }
            // Attachments of open parents, only when there are some (likewise).
            if !market.triggers.is_empty_of_attachments() {
                hasher.u64(u64::MAX - 1);
                for attachment in market.triggers.attachments() {
                    let words = attachment.words();
                    let (before_uncovered, uncovered) = words.split_at(crate::triggers::ATTACHMENT_WORDS_V5);
                    for &word in before_uncovered {
                        hasher.u64(word);
                    }
                    // Accumulated lots only when there are some (so that format-5 snapshots, which
                    // have none, still verify).
                    for &word in uncovered.iter().filter(|&&word| word != 0) {
                        hasher.u64(word);
                    }
                }
            }
            for side in [Side::Bid, Side::Ask] {
                hasher.u64(market.book.len() as u64);
                market.book.visit_in_priority(side, &mut |order| {
                    hash_order(hasher, order);
                    true
                });
            }
        }
        self.ledger.hash_into(hasher);
        // Nothing is added without pools, so hashes of pool-less configurations are unchanged.
        for pool in &self.pools {
            pool.hash_into(hasher);
        }
        // Likewise the deduplication state, only once a gateway process has sent a command.
        if !self.gateway_sequences.is_empty() {
            hasher.u64(u64::MAX - 2);
            hasher.u64(self.gateway_sequences.len() as u64);
            for (gateway_id, sequence) in &self.gateway_sequences {
                hasher.u64(*gateway_id);
                hasher.u64(*sequence);
            }
        }
    }

    /// Checks every book and ledger invariant: books not crossed and internally consistent,
    /// each order's reservation exact, each user's locked balance equal to the sum of their
    /// orders' reservations, conservation of every asset, per-user order bounds.
    ///
    /// # Errors
    /// A description of the first broken invariant.
    pub fn validate(&self) -> Result<(), String> {
        let mut locked_by_orders: BTreeMap<(UserId, AssetId), u128> = BTreeMap::new();
        let mut open_by_user: BTreeMap<(MarketId, UserId), usize> = BTreeMap::new();
        for market in &self.markets {
            let spec = &market.spec;
            let symbol = &spec.config.symbol;
            market.book.validate_structure().map_err(|e| format!("{symbol}: {e}"))?;
            market.triggers.validate().map_err(|e| format!("{symbol}: {e}"))?;
            for trigger in market.triggers.iter() {
                if trigger.order_id.get() >= self.next_order_id || market.book.get(trigger.order_id).is_some() {
                    return Err(format!("{symbol}: trigger {} id out of range or also resting", trigger.order_id));
                }
            }
            for attachment in market.triggers.attachments() {
                if market.book.get(attachment.parent_order_id).is_none_or(|o| o.user_id != attachment.user_id) {
                    return Err(format!(
                        "{symbol}: attachment of {} whose parent is not open",
                        attachment.parent_order_id
                    ));
                }
            }
            if let (Some(bid), Some(ask)) = (market.book.best_price(Side::Bid), market.book.best_price(Side::Ask))
                && bid >= ask
            {
                return Err(format!("{symbol}: book crossed at rest: bid {bid:?} >= ask {ask:?}"));
            }
            let mut problem = None;
            for side in [Side::Bid, Side::Ask] {
                market.book.visit_in_priority(side, &mut |order| {
                    let expected = match order.side {
                        Side::Bid => spec.bid_reservation(order.price.get(), order.remaining_lots),
                        Side::Ask => spec.base_amount(order.remaining_lots),
                    };
                    if order.remaining_lots == 0
                        || order.filled_lots + order.remaining_lots != order.quantity_lots
                        || expected != Some(order.reserved)
                    {
                        problem =
                            Some(format!("{symbol}: order state wrong: {order:?}, expected reservation {expected:?}"));
                        return false;
                    }
                    let asset = match order.side {
                        Side::Bid => spec.config.quote,
                        Side::Ask => spec.config.base,
                    };
                    *locked_by_orders.entry((order.user_id, asset)).or_default() += u128::from(order.reserved);
                    *open_by_user.entry((spec.config.id, order.user_id)).or_default() += 1;
                    true
                });
            }
            if let Some(problem) = problem {
                return Err(problem);
            }
        }
        if let Some(((market, user), count)) =
            open_by_user.iter().find(|&(_, &count)| count > self.limits.open_orders_per_user_max)
        {
            return Err(format!("user {user} has {count} open orders on market {market}"));
        }
        let mut problem = None;
        self.ledger.visit_balances(&mut |user, asset, balance| {
            let expected = locked_by_orders.remove(&(user, asset)).unwrap_or(0);
            if u128::from(balance.locked) != expected && problem.is_none() {
                problem = Some(format!(
                    "user {user} asset {asset}: locked {} != order reservations {expected}",
                    balance.locked
                ));
            }
        });
        if let Some(problem) = problem {
            return Err(problem);
        }
        if let Some(((user, asset), amount)) = locked_by_orders.into_iter().next() {
            return Err(format!("user {user} asset {asset}: orders reserve {amount} but no account"));
        }
        // Pools: their own invariants, and their reserves are exactly the ledger's pool account.
        let mut pooled = vec![0u128; self.ledger.asset_count()];
        for pool in &self.pools {
            pool.validate()?;
            pooled[pool.base.get() as usize] += u128::from(pool.base_reserve);
            pooled[pool.quote.get() as usize] += u128::from(pool.quote_reserve);
        }
        for (asset, reserves) in pooled.into_iter().enumerate() {
            let account = self.ledger.pooled(AssetId::new(asset as u32));
            if u128::from(account) != reserves {
                return Err(format!("asset {asset}: pool reserves {reserves} != ledger pool account {account}"));
            }
        }
        self.ledger.check_conservation()
    }

    // ------------------------------------------------------------------------------------------
    // Commands
    // ------------------------------------------------------------------------------------------

    fn market_index(&self, market_id: MarketId) -> Option<usize> {
        let index = (market_id.get() as usize).checked_sub(1)?;
        (index < self.markets.len()).then_some(index)
    }

    /// A new order, or (with `fired`) the order a trigger places when it fires, which keeps the
    /// trigger's id.
    fn new_order(
        &mut self,
        ctx: CommandContext,
        m: &NewOrder,
        fired: Option<OrderId>,
        out: &mut impl EventSink,
    ) -> Outcome {
        let mi = self.market_index(m.market_id).ok_or(RejectReason::UnknownMarket)?;
        if self.markets[mi].halted {
            return Err(RejectReason::MarketHalted);
        }
        let invalid = |_| RejectReason::InvalidEnumValue;
        let side = m.side.get().map_err(invalid)?;
        let order_type = m.order_type.get().map_err(invalid)?;
        let time_in_force = m.time_in_force.get().map_err(invalid)?;
        let self_trade_prevention = m.self_trade_prevention.get().map_err(invalid)?;
        let post_only = bool::from(m.post_only.get().map_err(invalid)?);
        let market = &self.markets[mi];
        let spec = &market.spec;
        let config = &spec.config;
        let (price, quantity, quote_quantity) = (m.price_ticks.get(), m.quantity_lots.get(), m.quote_quantity.get());

        // Shape of the order.
        match order_type {
            OrderType::Limit => {
                if quote_quantity != 0 {
                    return Err(RejectReason::InvalidOrderType);
                }
                if price == 0 || price > config.max_price_ticks {
                    return Err(RejectReason::InvalidPrice);
                }
                if quantity == 0 {
                    return Err(RejectReason::InvalidQuantity);
                }
                if post_only && time_in_force != TimeInForce::Gtc {
                    return Err(RejectReason::InvalidTimeInForce);
                }
            }
            OrderType::Market => {
                if price != 0 || post_only || (quantity != 0 && quote_quantity != 0) {
                    return Err(RejectReason::InvalidOrderType);
                }
                if quantity == 0 && quote_quantity == 0 {
                    return Err(RejectReason::InvalidQuantity);
                }
                if quote_quantity != 0 && time_in_force == TimeInForce::Fok {
                    return Err(RejectReason::InvalidTimeInForce);
                }
            }
        }
        if quantity != 0 {
            if quantity < config.min_quantity_lots {
                return Err(RejectReason::QuantityBelowMinimum);
            }
            if quantity > config.max_quantity_lots {
                return Err(RejectReason::QuantityAboveMaximum);
            }
        }
        let minimum_value = match order_type {
            OrderType::Limit => spec.notional(price, quantity).ok_or(RejectReason::ArithmeticOverflow)?,
            OrderType::Market if quote_quantity != 0 => quote_quantity,
            OrderType::Market => u64::MAX, // price unknown until it trades
        };
        if minimum_value < config.min_notional {
            return Err(RejectReason::NotionalBelowMinimum);
        }
        let client_order_id = m.client_order_id;
        if client_order_id != ClientOrderId::ZERO
            && (market.book.find_client_order(m.user_id, client_order_id).is_some()
                || market.triggers.find_client_order(m.user_id, client_order_id).is_some())
        {
            return Err(RejectReason::DuplicateClientOrderId);
        }
        let trigger_kind = m.trigger_kind.get().map_err(invalid)?;
        let attachment = if has_attachment(m) {
            self.check_attachment(
                mi,
                m,
                side,
                fired.is_some() || trigger_kind != codec::TriggerKind::None || m.trigger_price_ticks.get() != 0,
            )?
        } else {
            None
        };
        let market = &self.markets[mi];
        match trigger_kind {
            codec::TriggerKind::None if m.trigger_price_ticks.get() == 0 => {}
            codec::TriggerKind::None => return Err(RejectReason::InvalidTriggerPrice),
            kind => return self.accept_trigger(ctx, mi, m, kind, out),
        }
        // The price band around the reference price, fixed for the whole order (no reference to
        // compute for a market without a band).
        let price_band = spec.config.price_band;
        let band = if price_band.is_enabled() {
            price_band.limits(bands::reference_price(
                market.last_trade_ticks,
                market.book.best_price(Side::Bid).map(Ticks::get),
                market.book.best_price(Side::Ask).map(Ticks::get),
            ))
        } else {
            None
        };
        if let Some(band) = band
            && order_type == OrderType::Limit
            && !band.contains(price)
        {
            return Err(RejectReason::PriceOutsideBand);
        }
        let band_edge = band.map(|band| match side {
            Side::Bid => band.upper,
            Side::Ask => band.lower,
        });
        let may_rest = order_type == OrderType::Limit && time_in_force == TimeInForce::Gtc;
        if may_rest {
            // A user holds at most the whole book: below the bound, the per-user count (a lookup
            // by user) cannot have reached it.
            let bound = self.limits.open_orders_per_user_max;
            if market.book.len() >= bound && market.book.open_orders_of(m.user_id) >= bound {
                return Err(RejectReason::TooManyOpenOrders);
            }
            if !market.book.has_capacity() {
                return Err(RejectReason::BookFull);
            }
        }

        // Funds: the whole order must be affordable at its limit (takers pay from available).
        // The account is looked up once, for these checks, the fills and the rest.
        let (base, quote) = (config.base, config.quote);
        let account = self.ledger.account_index(m.user_id);
        let available = |asset| account.map_or(0, |account| self.ledger.balance_at(account, asset).available);
        let budget = match (order_type, side) {
            (OrderType::Limit, Side::Bid) => {
                // A limit order's minimum value is its notional, computed above.
                let needed = spec.bid_reservation_of(minimum_value).ok_or(RejectReason::ArithmeticOverflow)?;
                if available(quote) < needed {
                    return Err(RejectReason::InsufficientBalance);
                }
                None
            }
            (OrderType::Market, Side::Ask) if quote_quantity != 0 => {
                // Sells what it holds, in whole lots, until the quote quantity is reached: it
                // needs at least one lot now; how many it sells depends on the bids it meets.
                if available(base) < config.lot_size {
                    return Err(RejectReason::InsufficientBalance);
                }
                None
            }
            (_, Side::Ask) => {
                let needed = spec.base_amount(quantity).ok_or(RejectReason::ArithmeticOverflow)?;
                if available(base) < needed {
                    return Err(RejectReason::InsufficientBalance);
                }
                None
            }
            (OrderType::Market, Side::Bid) => {
                let available = available(quote);
                if available == 0 || available < quote_quantity {
                    return Err(RejectReason::InsufficientBalance);
                }
                Some(match (quote_quantity, band_edge) {
                    (0, None) => available,
                    // By base quantity under a band: at most the whole quantity at the band's
                    // highest price, fee included, not the whole balance.
                    (0, Some(upper)) => {
                        spec.bid_reservation(upper, quantity).map_or(available, |worst| worst.min(available))
                    }
                    (quote_quantity, _) => quote_quantity,
                })
            }
        };

        let sells_by_quote = order_type == OrderType::Market && side == Side::Ask && quote_quantity != 0;
        let opposite = side.opposite();
        match order_type {
            OrderType::Limit => {
                if post_only && market.book.best_price(opposite).is_some_and(|best| crosses(side, price, best.get())) {
                    return Err(RejectReason::PostOnlyWouldTake);
                }
            }
            OrderType::Market => {
                if market.book.best_price(opposite).is_none() {
                    return Err(RejectReason::NoLiquidity);
                }
            }
        }
        let mut taker = Taker {
            order_id: fired.unwrap_or(OrderId::new(self.next_order_id)),
            user_id: m.user_id,
            account,
            client_order_id,
            side,
            limit: (order_type == OrderType::Limit).then_some(price),
            band_edge,
            quantity_lots: quantity,
            remaining_lots: (quantity != 0).then_some(quantity),
            filled_lots: 0,
            budget,
            spent: 0,
            proceeds_max: sells_by_quote.then_some(quote_quantity),
            proceeds: 0,
            deliverable_lots: sells_by_quote.then(|| available(base) / self.markets[mi].spec.config.lot_size),
            last_fill: None,
            self_trade_prevention,
            time_in_force,
            post_only,
        };
        if time_in_force == TimeInForce::Fok {
            self.check_fill_or_kill(mi, &taker)?;
        }

        // Accepted: from here on the command takes effect.
        if fired.is_none() {
            self.next_order_id += 1;
        }
        out.push(Event::OrderAccepted(OrderAccepted {
            sequence: ctx.sequence,
            timestamp_ns: ctx.timestamp_ns,
            user_id: m.user_id,
            order_id: taker.order_id,
            client_order_id,
            price_ticks: m.price_ticks,
            quantity_lots: m.quantity_lots,
            quote_quantity: m.quote_quantity,
            market_id: m.market_id,
            side: m.side,
            order_type: m.order_type,
            time_in_force: m.time_in_force,
            self_trade_prevention: m.self_trade_prevention,
            post_only: m.post_only,
            reserved: Reserved::ZERO,
            // The attachment as accepted, so that every consumer of the events can show it on
            // the parent (a fired trigger order has none).
            stop_loss_trigger_ticks: Ticks::new(attachment.map_or(0, |a| a.stop_loss_trigger_ticks)),
            stop_loss_limit_ticks: Ticks::new(attachment.map_or(0, |a| a.stop_loss_limit_ticks)),
            take_profit_trigger_ticks: Ticks::new(attachment.map_or(0, |a| a.take_profit_trigger_ticks)),
            take_profit_limit_ticks: Ticks::new(attachment.map_or(0, |a| a.take_profit_limit_ticks)),
        }));
        if let Some(attachment) = attachment {
            self.markets[mi].triggers.attach(Attachment { parent_order_id: taker.order_id, ..attachment });
        }
        let stop = self.match_taker(ctx, mi, &mut taker, out);
        self.finish_taker(ctx, mi, &taker, stop, out);
        Ok(())
    }

    fn cancel_order(&mut self, ctx: CommandContext, m: &CancelOrder, out: &mut impl EventSink) -> Outcome {
        let mi = self.market_index(m.market_id).ok_or(RejectReason::UnknownMarket)?;
        if let Some(order_id) = self.find_own_trigger(mi, m.user_id, m.order_id, m.client_order_id)? {
            self.cancel_trigger(ctx, mi, order_id, CancelReason::UserRequested, out);
            return Ok(());
        }
        let order_id = self.find_own_order(mi, m.user_id, m.order_id, m.client_order_id)?;
        self.cancel_resting(ctx, mi, order_id, CancelReason::UserRequested, out);
        Ok(())
    }

    fn mass_cancel(&mut self, ctx: CommandContext, m: &MassCancel, out: &mut impl EventSink) -> Outcome {
        let filter = m.side.get().map_err(|_| RejectReason::InvalidEnumValue)?;
        let kinds = m.kinds.get().map_err(|_| RejectReason::InvalidEnumValue)?;
        let resting = matches!(kinds, OrderKindFilter::All | OrderKindFilter::Resting);
        let triggers = matches!(kinds, OrderKindFilter::All | OrderKindFilter::Trigger);
        let markets = if m.market_id == MarketId::ZERO {
            0..self.markets.len()
        } else {
            let mi = self.market_index(m.market_id).ok_or(RejectReason::UnknownMarket)?;
            mi..mi + 1
        };
        let mut ids = core::mem::take(&mut self.scratch_order_ids);
        let mut canceled = 0u32;
        for mi in markets {
            ids.clear();
            if resting {
                self.markets[mi].book.orders_of(m.user_id, &mut ids);
            }
            // Cancel in id order: the events then depend only on the book's contents, not on the
            // history that built it, so an engine restored from a snapshot behaves identically.
            ids.sort_unstable();
            for &order_id in &ids {
                let side = self.markets[mi].book.get(order_id).map(|o| o.side);
                let wanted = side.is_some_and(|side| filter.admits(side));
                if wanted {
                    self.cancel_resting(ctx, mi, order_id, CancelReason::MassCancel, out);
                    canceled += 1;
                }
            }
            if triggers {
                canceled += self.mass_cancel_triggers(ctx, mi, m.user_id, filter, &mut ids, out);
            }
        }
        ids.clear();
        self.scratch_order_ids = ids;
        out.push(Event::MassCancelReport(MassCancelReport {
            sequence: ctx.sequence,
            timestamp_ns: ctx.timestamp_ns,
            user_id: m.user_id,
            market_id: m.market_id,
            canceled_count: OrderCount::new(canceled),
            side: m.side,
            reserved: Reserved::ZERO,
        }));
        Ok(())
    }

    fn cancel_replace(&mut self, ctx: CommandContext, m: &CancelReplace, out: &mut impl EventSink) -> Outcome {
        let mi = self.market_index(m.market_id).ok_or(RejectReason::UnknownMarket)?;
        if self.markets[mi].halted {
            return Err(RejectReason::MarketHalted);
        }
        if let Some(order_id) = self.find_own_trigger(mi, m.user_id, m.order_id, m.client_order_id)? {
            return self.replace_trigger(ctx, mi, order_id, m, out);
        }
        let order_id = self.find_own_order(mi, m.user_id, m.order_id, m.client_order_id)?;
        let market = &self.markets[mi];
        let spec = &market.spec;
        let config = &spec.config;
        let order = *market.book.get(order_id).ok_or(RejectReason::UnknownOrder)?;
        let new_price = if m.new_price_ticks.get() == 0 { order.price.get() } else { m.new_price_ticks.get() };
        let new_quantity = if m.new_quantity_lots.get() == 0 { order.quantity_lots } else { m.new_quantity_lots.get() };
        if new_price > config.max_price_ticks {
            return Err(RejectReason::InvalidPrice);
        }
        if new_quantity > config.max_quantity_lots {
            return Err(RejectReason::QuantityAboveMaximum);
        }
        if new_quantity < config.min_quantity_lots {
            return Err(RejectReason::QuantityBelowMinimum);
        }
        if (new_price == order.price.get() && new_quantity == order.quantity_lots) || new_quantity <= order.filled_lots
        {
            return Err(RejectReason::InvalidReplace);
        }
        if spec.notional(new_price, new_quantity).ok_or(RejectReason::ArithmeticOverflow)? < config.min_notional {
            return Err(RejectReason::NotionalBelowMinimum);
        }
        if new_price != order.price.get()
            && let Some(band) = config.price_band.limits(bands::reference_price(
                market.last_trade_ticks,
                market.book.best_price(Side::Bid).map(Ticks::get),
                market.book.best_price(Side::Ask).map(Ticks::get),
            ))
            && !band.contains(new_price)
        {
            return Err(RejectReason::PriceOutsideBand);
        }
        // The attached stop-loss / take-profit keep their trigger prices: they must stay on their
        // sides of the new price.
        if new_price != order.price.get()
            && market.triggers.attachment(order_id).is_some_and(|attachment| !attachment.fits_price(new_price))
        {
            return Err(RejectReason::InvalidTriggerPrice);
        }
        let opposite = order.side.opposite();
        let would_cross =
            market.book.best_price(opposite).is_some_and(|best| crosses(order.side, new_price, best.get()));
        if order.post_only && would_cross {
            return Err(RejectReason::PostOnlyWouldTake);
        }
        let remaining = new_quantity - order.filled_lots;
        let (asset, reservation) = match order.side {
            Side::Bid => (config.quote, spec.bid_reservation(new_price, remaining)),
            Side::Ask => (config.base, spec.base_amount(remaining)),
        };
        let reservation = reservation.ok_or(RejectReason::ArithmeticOverflow)?;
        let available = self.ledger.get(m.user_id, asset).available;
        if reservation > order.reserved && reservation - order.reserved > available {
            return Err(RejectReason::InsufficientBalance);
        }

        let priority_kept = new_price == order.price.get() && new_quantity < order.quantity_lots;
        let replaced = |remaining_lots: u64| {
            Event::OrderReplaced(OrderReplaced {
                sequence: ctx.sequence,
                timestamp_ns: ctx.timestamp_ns,
                user_id: order.user_id,
                order_id,
                client_order_id: order.client_order_id,
                price_ticks: Ticks::new(new_price),
                quantity_lots: Lots::new(new_quantity),
                filled_lots: Lots::new(order.filled_lots),
                remaining_lots: Lots::new(remaining_lots),
                market_id: m.market_id,
                side: order.side.into(),
                priority_kept: priority_kept.into(),
                reserved: Reserved::ZERO,
            })
        };
        if priority_kept {
            // A pure reduction: stays in place; the freed reservation goes back to available.
            let released = order.reserved - reservation;
            let book = &mut self.markets[mi].book;
            book.update_in_place(order_id, new_quantity, remaining, order.filled_lots, reservation);
            out.push(replaced(remaining));
            self.emit_level(ctx, mi, order.side, order.price.get(), out);
            let balance = self.ledger.unlock(order.user_id, asset, released).expect("reservation held in locked");
            self.emit_balance(ctx, order.user_id, asset, balance, BalanceChange::OrderReleased, out);
            return Ok(());
        }

        // Loses priority: leave the book, release the old reservation, then trade and/or rest at
        // the new price like a new GTC order (funds for that were checked above).
        self.markets[mi].book.remove(order_id);
        out.push(replaced(remaining));
        self.emit_level(ctx, mi, order.side, order.price.get(), out);
        let balance = self.ledger.unlock(order.user_id, asset, order.reserved).expect("reservation held in locked");
        self.emit_balance(ctx, order.user_id, asset, balance, BalanceChange::OrderReleased, out);
        let mut taker = Taker {
            order_id,
            user_id: order.user_id,
            account: self.ledger.account_index(order.user_id),
            client_order_id: order.client_order_id,
            side: order.side,
            limit: Some(new_price),
            band_edge: None,
            quantity_lots: new_quantity,
            remaining_lots: Some(remaining),
            filled_lots: order.filled_lots,
            budget: None,
            spent: 0,
            proceeds_max: None,
            proceeds: 0,
            deliverable_lots: None,
            last_fill: None,
            self_trade_prevention: order.self_trade_prevention,
            time_in_force: TimeInForce::Gtc,
            post_only: order.post_only,
        };
        let stop = if would_cross { self.match_taker(ctx, mi, &mut taker, out) } else { MatchStop::PriceLimit };
        self.finish_taker(ctx, mi, &taker, stop, out);
        Ok(())
    }

    fn deposit(&mut self, ctx: CommandContext, m: &Deposit, out: &mut impl EventSink) -> Outcome {
        self.check_asset(m.asset_id, m.amount)?;
        let balance = self.ledger.deposit(m.user_id, m.asset_id, m.amount.get()).map_err(|e| match e {
            LedgerError::Overflow => RejectReason::ArithmeticOverflow,
            LedgerError::Insufficient => RejectReason::InsufficientBalance,
        })?;
        self.emit_balance(ctx, m.user_id, m.asset_id, balance, BalanceChange::Deposit, out);
        Ok(())
    }

    fn withdraw(&mut self, ctx: CommandContext, m: &Withdraw, out: &mut impl EventSink) -> Outcome {
        self.check_asset(m.asset_id, m.amount)?;
        let balance = self
            .ledger
            .withdraw(m.user_id, m.asset_id, m.amount.get())
            .map_err(|_| RejectReason::InsufficientBalance)?;
        self.emit_balance(ctx, m.user_id, m.asset_id, balance, BalanceChange::Withdrawal, out);
        Ok(())
    }

    fn market_control(&mut self, ctx: CommandContext, m: &MarketControl, out: &mut impl EventSink) -> Outcome {
        let mi = self.market_index(m.market_id).ok_or(RejectReason::UnknownMarket)?;
        let halted = match m.action.get().map_err(|_| RejectReason::InvalidEnumValue)? {
            MarketAction::Halt => true,
            MarketAction::Resume => false,
        };
        self.markets[mi].halted = halted;
        out.push(Event::MarketStatusChanged(MarketStatusChanged {
            sequence: ctx.sequence,
            timestamp_ns: ctx.timestamp_ns,
            market_id: m.market_id,
            halted: halted.into(),
            reserved: Reserved::ZERO,
        }));
        Ok(())
    }

    fn check_asset(&self, asset: AssetId, amount: Amount) -> Outcome {
        if asset.get() as usize >= self.ledger.asset_count() {
            return Err(RejectReason::UnknownAsset);
        }
        if amount.get() == 0 {
            return Err(RejectReason::AmountZero);
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------------------
    // AMM pools
    // ------------------------------------------------------------------------------------------

    /// The index of the pool beside a market.
    fn pool_index(&self, market_id: MarketId) -> Result<usize, RejectReason> {
        let mi = self.market_index(market_id).ok_or(RejectReason::UnknownMarket)?;
        self.pool_of_market[mi].ok_or(RejectReason::PoolNotFound)
    }

    /// A halted market's pool takes no new liquidity and no trades (swaps, routed orders), like its
    /// book; removing liquidity, like cancelling, still works.
    fn refuse_if_halted(&self, market_id: MarketId) -> Result<(), RejectReason> {
        match self.is_halted(market_id) {
            Some(true) => Err(RejectReason::MarketHalted),
            _ => Ok(()),
        }
    }

    fn add_liquidity(&mut self, ctx: CommandContext, m: &AddLiquidity, out: &mut impl EventSink) -> Outcome {
        let pi = self.pool_index(m.market_id)?;
        self.refuse_if_halted(m.market_id)?;
        let pool = &self.pools[pi];
        let deposit = amm::add_liquidity(
            pool.base_reserve,
            pool.quote_reserve,
            pool.total_shares,
            m.max_base_amount.get(),
            m.max_quote_amount.get(),
        )?;
        if deposit.shares < m.min_shares.get() {
            return Err(RejectReason::SlippageExceeded);
        }
        let (base, quote) = (pool.base, pool.quote);
        if self.ledger.get(m.user_id, base).available < deposit.base
            || self.ledger.get(m.user_id, quote).available < deposit.quote
        {
            return Err(RejectReason::InsufficientBalance);
        }
        let overflow = RejectReason::ArithmeticOverflow;
        let base_reserve = pool.base_reserve.checked_add(deposit.base).ok_or(overflow)?;
        let quote_reserve = pool.quote_reserve.checked_add(deposit.quote).ok_or(overflow)?;
        let user_shares = pool.shares_of(m.user_id).checked_add(deposit.shares).ok_or(overflow)?;

        const INVARIANT: &str = "funds checked above";
        let base_balance = self.ledger.pay_into_pool(m.user_id, base, deposit.base).expect(INVARIANT);
        let quote_balance = self.ledger.pay_into_pool(m.user_id, quote, deposit.quote).expect(INVARIANT);
        let pool = &mut self.pools[pi];
        pool.base_reserve = base_reserve;
        pool.quote_reserve = quote_reserve;
        pool.total_shares = deposit.total_shares_after;
        pool.holders.insert(m.user_id, user_shares);
        out.push(Event::LiquidityAdded(LiquidityAdded {
            sequence: ctx.sequence,
            timestamp_ns: ctx.timestamp_ns,
            user_id: m.user_id,
            base_amount: Amount::new(deposit.base),
            quote_amount: Amount::new(deposit.quote),
            shares: Shares::new(deposit.shares),
            user_shares: Shares::new(user_shares),
            total_shares: Shares::new(pool.total_shares),
            base_reserve: Amount::new(base_reserve),
            quote_reserve: Amount::new(quote_reserve),
            market_id: m.market_id,
            reserved: Reserved::ZERO,
        }));
        self.emit_balance(ctx, m.user_id, base, base_balance, BalanceChange::Pool, out);
        self.emit_balance(ctx, m.user_id, quote, quote_balance, BalanceChange::Pool, out);
        Ok(())
    }

    fn remove_liquidity(&mut self, ctx: CommandContext, m: &RemoveLiquidity, out: &mut impl EventSink) -> Outcome {
        let pi = self.pool_index(m.market_id)?;
        let pool = &self.pools[pi];
        let shares = m.shares.get();
        if shares == 0 {
            return Err(RejectReason::InvalidAmount);
        }
        if pool.total_shares == 0 {
            return Err(RejectReason::PoolEmpty);
        }
        let held = pool.shares_of(m.user_id);
        if held < shares {
            return Err(RejectReason::InsufficientShares);
        }
        let (base_out, quote_out) =
            amm::remove_liquidity(pool.base_reserve, pool.quote_reserve, pool.total_shares, shares)?;
        if base_out < m.min_base_amount.get() || quote_out < m.min_quote_amount.get() {
            return Err(RejectReason::SlippageExceeded);
        }
        let (base, quote) = (pool.base, pool.quote);

        const INVARIANT: &str = "payouts are at most the reserves, which the pool account holds";
        let base_balance = self.ledger.pay_out_of_pool(m.user_id, base, base_out).expect(INVARIANT);
        let quote_balance = self.ledger.pay_out_of_pool(m.user_id, quote, quote_out).expect(INVARIANT);
        let pool = &mut self.pools[pi];
        pool.base_reserve -= base_out;
        pool.quote_reserve -= quote_out;
        pool.total_shares -= shares;
        let user_shares = held - shares;
        if user_shares == 0 {
            pool.holders.remove(&m.user_id);
        } else {
            pool.holders.insert(m.user_id, user_shares);
        }
        out.push(Event::LiquidityRemoved(LiquidityRemoved {
            sequence: ctx.sequence,
            timestamp_ns: ctx.timestamp_ns,
            user_id: m.user_id,
            base_amount: Amount::new(base_out),
            quote_amount: Amount::new(quote_out),
            shares: Shares::new(shares),
            user_shares: Shares::new(user_shares),
            total_shares: Shares::new(pool.total_shares),
            base_reserve: Amount::new(pool.base_reserve),
            quote_reserve: Amount::new(pool.quote_reserve),
            market_id: m.market_id,
            reserved: Reserved::ZERO,
        }));
        self.emit_balance(ctx, m.user_id, base, base_balance, BalanceChange::Pool, out);
        self.emit_balance(ctx, m.user_id, quote, quote_balance, BalanceChange::Pool, out);
        Ok(())
    }

    fn swap(&mut self, ctx: CommandContext, m: &Swap, out: &mut impl EventSink) -> Outcome {
        let pi = self.pool_index(m.market_id)?;
        self.refuse_if_halted(m.market_id)?;
        let side = m.side.get().map_err(|_| RejectReason::InvalidEnumValue)?;
        let mode = m.mode.get().map_err(|_| RejectReason::InvalidEnumValue)?;
        let pool = &self.pools[pi];
        let result = amm::swap(pool.base_reserve, pool.quote_reserve, side, mode, m.amount.get(), pool.fee_bps)?;
        let limit = m.limit.get();
        let slipped = match mode {
            SwapMode::ExactIn => result.amount_out < limit,
            SwapMode::ExactOut => limit != 0 && result.amount_in > limit,
        };
        if slipped {
            return Err(RejectReason::SlippageExceeded);
        }
        let (asset_in, asset_out) = match side {
            Side::Bid => (pool.quote, pool.base),
            Side::Ask => (pool.base, pool.quote),
        };
        if self.ledger.get(m.user_id, asset_in).available < result.amount_in {
            return Err(RejectReason::InsufficientBalance);
        }

        const INVARIANT: &str = "funds checked above; the payout is below the reserve";
        let in_balance = self.ledger.pay_into_pool(m.user_id, asset_in, result.amount_in).expect(INVARIANT);
        let out_balance = self.ledger.pay_out_of_pool(m.user_id, asset_out, result.amount_out).expect(INVARIANT);
        let pool = &mut self.pools[pi];
        match side {
            Side::Bid => (pool.quote_reserve, pool.base_reserve) = (result.reserve_in_after, result.reserve_out_after),
            Side::Ask => (pool.base_reserve, pool.quote_reserve) = (result.reserve_in_after, result.reserve_out_after),
        }
        out.push(Event::SwapExecuted(SwapExecuted {
            sequence: ctx.sequence,
            timestamp_ns: ctx.timestamp_ns,
            user_id: m.user_id,
            amount_in: Amount::new(result.amount_in),
            amount_out: Amount::new(result.amount_out),
            fee: Amount::new(result.fee),
            base_reserve: Amount::new(pool.base_reserve),
            quote_reserve: Amount::new(pool.quote_reserve),
            market_id: m.market_id,
            side: m.side,
            mode: m.mode,
            reserved: Reserved::ZERO,
        }));
        self.emit_balance(ctx, m.user_id, asset_in, in_balance, BalanceChange::Pool, out);
        self.emit_balance(ctx, m.user_id, asset_out, out_balance, BalanceChange::Pool, out);
        Ok(())
    }

    /// A market order split between the book and the pool ([`amm::plan_route`]), all or nothing.
    /// The book leg is an IOC market order for the planned lots that skips (and, by self-trade
    /// prevention `RejectMaker`, cancels) the user's own resting orders, exactly as planned; the
    /// pool leg a swap of the rest. Funds and the quote limit are checked on the exact plan before
    /// anything happens.
    fn routed_order(&mut self, ctx: CommandContext, m: &RoutedOrder, out: &mut impl EventSink) -> Outcome {
        let pi = self.pool_index(m.market_id)?;
        self.refuse_if_halted(m.market_id)?;
        let mi = m.market_id.get() as usize - 1;
        let side = m.side.get().map_err(|_| RejectReason::InvalidEnumValue)?;
        let quantity = m.quantity_lots.get();
        let spec = &self.markets[mi].spec;
        let config = &spec.config;
        if quantity == 0 {
            return Err(RejectReason::InvalidQuantity);
        }
        if quantity < config.min_quantity_lots {
            return Err(RejectReason::QuantityBelowMinimum);
        }
        if quantity > config.max_quantity_lots {
            return Err(RejectReason::QuantityAboveMaximum);
        }
        // The price band applies to both legs: the book leg takes only makers inside it, and the
        // pool leg may not move the pool's price beyond it (checked on the plan below).
        let market = &self.markets[mi];
        let band = config.price_band.limits(bands::reference_price(
            market.last_trade_ticks,
            market.book.best_price(Side::Bid).map(Ticks::get),
            market.book.best_price(Side::Ask).map(Ticks::get),
        ));
        let band_edge = band.map(|band| match side {
            Side::Bid => band.upper,
            Side::Ask => band.lower,
        });
        // The opposite side in priority order, without the user's own orders, up to the quantity
        // or the band's edge.
        let mut ladder = Vec::new();
        let mut gathered = 0u64;
        market.book.visit_in_priority(side.opposite(), &mut |order| {
            if band_edge.is_some_and(|edge| !crosses(side, edge, order.price.get())) {
                return false;
            }
            if order.user_id != m.user_id {
                ladder.push((order.remaining_lots, order.price.get()));
                gathered = gathered.saturating_add(order.remaining_lots);
            }
            gathered < quantity
        });
        let terms = amm::BookTerms {
            quote_per_tick_lot: spec.quote_per_tick_lot,
            lot_size: config.lot_size,
            taker_fee_ppm: config.taker_fee_ppm,
        };
        let pool = &self.pools[pi];
        let plan =
            amm::plan_route(&ladder, side, quantity, terms, pool.base_reserve, pool.quote_reserve, pool.fee_bps)?;
        if let Some(edge) = band_edge
            && plan.pool_base > 0
            && !pool_stays_in_band(pool, side, plan.pool_base, terms, edge)?
        {
            return Err(RejectReason::PriceOutsideBand);
        }
        let total = u64::try_from(plan.total_quote()).map_err(|_| RejectReason::ArithmeticOverflow)?;
        let limit = m.quote_limit.get();
        let (base, quote) = (config.base, config.quote);
        match side {
            Side::Bid => {
                if limit != 0 && total > limit {
                    return Err(RejectReason::SlippageExceeded);
                }
                if self.ledger.get(m.user_id, quote).available < total {
                    return Err(RejectReason::InsufficientBalance);
                }
            }
            Side::Ask => {
                if total < limit {
                    return Err(RejectReason::SlippageExceeded);
                }
                let base_amount = spec.base_amount(quantity).ok_or(RejectReason::ArithmeticOverflow)?;
                if self.ledger.get(m.user_id, base).available < base_amount {
                    return Err(RejectReason::InsufficientBalance);
                }
            }
        }

        // Accepted: the book leg, then the pool leg, then the report.
        let mut order_id = OrderId::ZERO;
        if plan.book_lots > 0 {
            order_id = OrderId::new(self.next_order_id);
            self.next_order_id += 1;
            out.push(Event::OrderAccepted(OrderAccepted {
                sequence: ctx.sequence,
                timestamp_ns: ctx.timestamp_ns,
                user_id: m.user_id,
                order_id,
                client_order_id: ClientOrderId::ZERO,
                price_ticks: Ticks::ZERO,
                quantity_lots: Lots::new(plan.book_lots),
                quote_quantity: Amount::ZERO,
                market_id: m.market_id,
                side: m.side,
                order_type: OrderType::Market.into(),
                time_in_force: TimeInForce::Ioc.into(),
                self_trade_prevention: SelfTradePrevention::RejectMaker.into(),
                post_only: false.into(),
                reserved: Reserved::ZERO,
                ..OrderAccepted::default()
            }));
            let mut taker = Taker {
                order_id,
                user_id: m.user_id,
                account: self.ledger.account_index(m.user_id),
                client_order_id: ClientOrderId::ZERO,
                side,
                limit: None,
                band_edge,
                quantity_lots: plan.book_lots,
                remaining_lots: Some(plan.book_lots),
                filled_lots: 0,
                budget: None,
                spent: 0,
                proceeds_max: None,
                proceeds: 0,
                deliverable_lots: None,
                last_fill: None,
                self_trade_prevention: SelfTradePrevention::RejectMaker,
                time_in_force: TimeInForce::Ioc,
                post_only: false,
            };
            let stop = self.match_taker(ctx, mi, &mut taker, out);
            debug_assert_eq!(stop, MatchStop::Filled, "the plan took only what the book holds");
            self.finish_taker(ctx, mi, &taker, stop, out);
        }
        if plan.pool_base > 0 {
            let mode = match side {
                Side::Bid => SwapMode::ExactOut,
                Side::Ask => SwapMode::ExactIn,
            };
            let swap = Swap {
                user_id: m.user_id,
                amount: Amount::new(plan.pool_base),
                limit: Amount::ZERO,
                market_id: m.market_id,
                side: m.side,
                mode: mode.into(),
                reserved: Reserved::ZERO,
            };
            // Planned against this very pool state with the funds checked: cannot fail.
            self.swap(ctx, &swap, out).expect("the pool leg was planned on the same state");
        }
        out.push(Event::OrderRouted(OrderRouted {
            sequence: ctx.sequence,
            timestamp_ns: ctx.timestamp_ns,
            user_id: m.user_id,
            order_id,
            book_lots: Lots::new(plan.book_lots),
            book_quote: Amount::new(plan.book_quote),
            pool_base_amount: Amount::new(plan.pool_base),
            pool_quote: Amount::new(plan.pool_quote),
            market_id: m.market_id,
            side: m.side,
            reserved: Reserved::ZERO,
        }));
        Ok(())
    }

    // ------------------------------------------------------------------------------------------
    // Matching
    // ------------------------------------------------------------------------------------------

    /// Finds the caller's own open order by id or client id.
    fn find_own_order(
        &self,
        mi: usize,
        user_id: UserId,
        order_id: OrderId,
        client_order_id: ClientOrderId,
    ) -> Result<OrderId, RejectReason> {
        let book = &self.markets[mi].book;
        if order_id != OrderId::ZERO {
            let order = book.get(order_id).ok_or(RejectReason::UnknownOrder)?;
            if order.user_id != user_id {
                return Err(RejectReason::NotOrderOwner);
            }
            Ok(order_id)
        } else if client_order_id != ClientOrderId::ZERO {
            book.find_client_order(user_id, client_order_id).ok_or(RejectReason::UnknownOrder)
        } else {
            Err(RejectReason::UnknownOrder)
        }
    }

    /// Dry run of a fill-or-kill order: would it fill completely right now? Mirrors
    /// [`Self::match_taker`] without changing anything.
    fn check_fill_or_kill(&self, mi: usize, taker: &Taker) -> Outcome {
        let market = &self.markets[mi];
        let spec = &market.spec;
        let Some(mut needed) = taker.remaining_lots else { return Err(RejectReason::InvalidTimeInForce) };
        let mut budget_left = taker.budget;
        let mut self_trade = false;
        market.book.visit_in_priority(taker.side.opposite(), &mut |maker| {
            if taker.limit.is_some_and(|limit| !crosses(taker.side, limit, maker.price.get())) {
                return false;
            }
            if taker.band_edge.is_some_and(|edge| !crosses(taker.side, edge, maker.price.get())) {
                return false;
            }
            if maker.user_id == taker.user_id {
                match taker.self_trade_prevention {
                    SelfTradePrevention::Allow => {}
                    SelfTradePrevention::RejectMaker => return true,
                    SelfTradePrevention::RejectTaker | SelfTradePrevention::RejectBoth => {
                        self_trade = true;
                        return false;
                    }
                }
            }
            let mut lots = needed.min(maker.remaining_lots);
            if let Some(left) = budget_left.as_mut() {
                lots = lots.min(affordable_lots(spec, maker.price.get(), *left, lots));
                *left -= taker_cost(spec, maker.price.get(), lots);
                if lots == 0 {
                    return false;
                }
            }
            needed -= lots;
            needed > 0
        });
        match (needed, self_trade) {
            (0, _) => Ok(()),
            (_, true) => Err(RejectReason::SelfTradePrevented),
            (_, false) => Err(RejectReason::FillOrKillNotFillable),
        }
    }

    /// Matches a taker against the opposite side until it fills, stops crossing, runs out of
    /// liquidity or funds, or self-trade prevention stops it.
    fn match_taker(
        &mut self,
        ctx: CommandContext,
        mi: usize,
        taker: &mut Taker,
        out: &mut impl EventSink,
    ) -> MatchStop {
        let opposite = taker.side.opposite();
        loop {
            if taker.remaining_lots == Some(0) {
                return MatchStop::Filled;
            }
            let market = &self.markets[mi];
            let Some(front) = market.book.front(opposite) else {
                return if quote_quantity_reached(&market.spec, taker) {
                    MatchStop::QuoteQuantityReached
                } else {
                    MatchStop::NoLiquidity
                };
            };
            // Most takers stop here, at a price they do not cross: check before copying the maker.
            if taker.limit.is_some_and(|limit| !crosses(taker.side, limit, front.price.get())) {
                return MatchStop::PriceLimit;
            }
            let maker = *front;
            if taker.band_edge.is_some_and(|edge| !crosses(taker.side, edge, maker.price.get())) {
                return MatchStop::PriceBand;
            }
            if maker.user_id == taker.user_id {
                match taker.self_trade_prevention {
                    SelfTradePrevention::Allow => {}
                    SelfTradePrevention::RejectMaker => {
                        self.cancel_resting(ctx, mi, maker.order_id, CancelReason::SelfTradePrevention, out);
                        continue;
                    }
                    SelfTradePrevention::RejectTaker => return MatchStop::SelfTrade,
                    SelfTradePrevention::RejectBoth => {
                        self.cancel_resting(ctx, mi, maker.order_id, CancelReason::SelfTradePrevention, out);
                        return MatchStop::SelfTrade;
                    }
                }
            }
            let mut lots = taker.remaining_lots.unwrap_or(u64::MAX).min(maker.remaining_lots);
            if let Some(budget) = taker.budget {
                lots = affordable_lots(&market.spec, maker.price.get(), budget - taker.spent, lots);
                if lots == 0 {
                    // A buy by quote quantity spends its own quantity (funds were checked to
                    // cover it); a buy by base quantity spends the buyer's available quote.
                    return if taker.remaining_lots.is_none() {
                        MatchStop::QuoteQuantityReached
                    } else {
                        MatchStop::FundsExhausted
                    };
                }
            }
            if let Some(proceeds_max) = taker.proceeds_max {
                lots = lots.min(sellable_lots(&market.spec, maker.price.get(), proceeds_max - taker.proceeds));
                if lots == 0 {
                    return MatchStop::QuoteQuantityReached;
                }
            }
            if let Some(deliverable) = taker.deliverable_lots {
                lots = lots.min(deliverable - taker.filled_lots);
                if lots == 0 {
                    return MatchStop::FundsExhausted;
                }
            }
            self.settle_fill(ctx, mi, taker, &maker, lots, out);
        }
    }

    /// Settles one fill of `lots` at the maker's price: moves base and quote between the two
    /// users, charges both fees, updates or removes the maker and emits the events.
    fn settle_fill(
        &mut self,
        ctx: CommandContext,
        mi: usize,
        taker: &mut Taker,
        maker: &RestingOrder,
        lots: u64,
        out: &mut impl EventSink,
    ) {
        let market = &mut self.markets[mi];
        let spec = &market.spec;
        let (base, quote) = (spec.config.base, spec.config.quote);
        let price = maker.price.get();
        // Bounded by the configuration check: price and quantity within their maxima.
        let notional = spec.notional(price, lots).expect("notional bounded by market limits");
        let base_amount = spec.base_amount(lots).expect("quantity bounded by market limits");
        let maker_fee = MarketSpec::fee(notional, spec.config.maker_fee_ppm);
        let taker_fee = MarketSpec::fee(notional, spec.config.taker_fee_ppm);
        let trade_id = market.next_trade_id;
        market.next_trade_id += 1;
        market.last_trade_ticks = price;

        let maker_remaining = maker.remaining_lots - lots;
        let maker_filled = maker.filled_lots + lots;
        // What the maker's reservation still has to cover after this fill.
        let (maker_spent, maker_required) = match maker.side {
            Side::Bid => (
                notional + maker_fee,
                spec.bid_reservation(price, maker_remaining).expect("bounded by the original reservation"),
            ),
            Side::Ask => (base_amount, spec.base_amount(maker_remaining).expect("bounded")),
        };
        let maker_reserved_after = maker.reserved - maker_spent;
        let maker_release = maker_reserved_after - maker_required;

        const INVARIANT: &str = "funds checked before matching";
        let ledger = &mut self.ledger;
        // Both accounts exist (the taker pays from one, the maker's reservation sits in the
        // other): look each up once, not once per operation.
        let taker_account = taker.account.expect(INVARIANT);
        let maker_account = ledger.account_index(maker.user_id).expect(INVARIANT);
        match taker.side {
            Side::Bid => {
                ledger.spend_available_at(taker_account, quote, notional + taker_fee).expect(INVARIANT);
                ledger.credit_at(taker_account, base, base_amount);
                ledger.spend_locked_at(maker_account, base, base_amount).expect(INVARIANT);
                ledger.credit_at(maker_account, quote, notional - maker_fee);
                taker.spent += notional + taker_fee;
            }
            Side::Ask => {
                ledger.spend_available_at(taker_account, base, base_amount).expect(INVARIANT);
                ledger.credit_at(taker_account, quote, notional - taker_fee);
                ledger.spend_locked_at(maker_account, quote, notional + maker_fee).expect(INVARIANT);
                ledger.credit_at(maker_account, base, base_amount);
                taker.proceeds += notional;
            }
        }
        let maker_asset = match maker.side {
            Side::Bid => quote,
            Side::Ask => base,
        };
        if maker_release > 0 {
            ledger.unlock_at(maker_account, maker_asset, maker_release).expect(INVARIANT);
        }
        ledger.collect_fee(quote, maker_fee + taker_fee);
        if maker_remaining == 0 {
            market.book.remove(maker.order_id);
        } else {
            market.book.update_in_place(
                maker.order_id,
                maker.quantity_lots,
                maker_remaining,
                maker_filled,
                maker_required,
            );
        }
        taker.filled_lots += lots;
        if let Some(remaining) = taker.remaining_lots.as_mut() {
            *remaining -= lots;
        }

        taker.last_fill = Some(LastFill { event_index: out.next_index(), price_ticks: price });
        out.push(Event::Fill(Fill {
            sequence: ctx.sequence,
            timestamp_ns: ctx.timestamp_ns,
            trade_id: TradeId::new(trade_id),
            price_ticks: maker.price,
            quantity_lots: Lots::new(lots),
            quote_amount: Amount::new(notional),
            maker_user_id: maker.user_id,
            maker_order_id: maker.order_id,
            maker_client_order_id: maker.client_order_id,
            maker_remaining_lots: Lots::new(maker_remaining),
            maker_fee: Amount::new(maker_fee),
            taker_user_id: taker.user_id,
            taker_order_id: taker.order_id,
            taker_client_order_id: taker.client_order_id,
            taker_remaining_lots: Lots::new(taker.remaining_lots.unwrap_or(0)),
            taker_fee: Amount::new(taker_fee),
            market_id: spec.config.id,
            taker_side: taker.side.into(),
            taker_order_complete: (taker.remaining_lots == Some(0)).into(),
            reserved: Reserved::ZERO,
        }));
        // Without events the balances are not even read (they would only describe the change).
        if out.keeps_events() {
            for (user, account, asset) in [
                (taker.user_id, taker_account, quote),
                (taker.user_id, taker_account, base),
                (maker.user_id, maker_account, quote),
                (maker.user_id, maker_account, base),
            ] {
                let balance = self.ledger.balance_at(account, asset);
                self.emit_balance(ctx, user, asset, balance, BalanceChange::Trade, out);
            }
        }
        self.emit_level(ctx, mi, maker.side, price, out);
        // Attached stop-loss / take-profit grow with each fill of their parent, maker or taker.
        if !self.markets[mi].triggers.is_empty_of_attachments() {
            self.grow_attached(ctx, mi, maker.order_id, lots, out);
            self.grow_attached(ctx, mi, taker.order_id, lots, out);
            if maker_remaining == 0 {
                self.markets[mi].triggers.detach(maker.order_id);
            }
        }
    }

    /// After matching: rest a GTC remainder, or expire / cancel what is left.
    fn finish_taker(
        &mut self,
        ctx: CommandContext,
        mi: usize,
        taker: &Taker,
        stop: MatchStop,
        out: &mut impl EventSink,
    ) {
        let remaining = taker.remaining_lots.unwrap_or(0);
        let expire = |reason: ExpireReason| {
            Event::OrderExpired(OrderExpired {
                sequence: ctx.sequence,
                timestamp_ns: ctx.timestamp_ns,
                user_id: taker.user_id,
                order_id: taker.order_id,
                client_order_id: taker.client_order_id,
                filled_lots: Lots::new(taker.filled_lots),
                expired_lots: Lots::new(remaining),
                market_id: self.markets[mi].spec.config.id,
                side: taker.side.into(),
                reason: reason.into(),
                reserved: Reserved::ZERO,
            })
        };
        match stop {
            MatchStop::Filled => {}
            MatchStop::SelfTrade => {
                out.push(Event::OrderCanceled(OrderCanceled {
                    sequence: ctx.sequence,
                    timestamp_ns: ctx.timestamp_ns,
                    user_id: taker.user_id,
                    order_id: taker.order_id,
                    client_order_id: taker.client_order_id,
                    filled_lots: Lots::new(taker.filled_lots),
                    canceled_lots: Lots::new(remaining),
                    market_id: self.markets[mi].spec.config.id,
                    side: taker.side.into(),
                    reason: CancelReason::SelfTradePrevention.into(),
                    reserved: Reserved::ZERO,
                }));
            }
            MatchStop::FundsExhausted => out.push(expire(ExpireReason::FundsExhausted)),
            MatchStop::PriceBand => out.push(expire(ExpireReason::PriceBand)),
            // As close to its quote quantity as whole lots allow: the order is filled, and its
            // last fill says so. A quote quantity too small for a single lot expires instead.
            MatchStop::QuoteQuantityReached => match taker.last_fill {
                Some(last) => out.mark_taker_order_complete(last.event_index),
                None => out.push(expire(ExpireReason::FundsExhausted)),
            },
            MatchStop::PriceLimit | MatchStop::NoLiquidity => match (taker.limit, taker.time_in_force) {
                (Some(price), TimeInForce::Gtc) => self.rest(ctx, mi, taker, price, out),
                (Some(_), _) => out.push(expire(ExpireReason::ImmediateOrCancel)),
                (None, _) => out.push(expire(ExpireReason::NoLiquidity)),
            },
        }
        // A parent that does not rest gets no children for its unfilled part (without any
        // attachment in the market there is nothing to detach).
        let market = &mut self.markets[mi];
        if !market.triggers.is_empty_of_attachments() && market.book.get(taker.order_id).is_none() {
            market.triggers.detach(taker.order_id);
        }
    }

    /// Puts a GTC remainder on the book and locks its reservation.
    fn rest(&mut self, ctx: CommandContext, mi: usize, taker: &Taker, price: u64, out: &mut impl EventSink) {
        let market = &mut self.markets[mi];
        let spec = &market.spec;
        let remaining = taker.remaining_lots.unwrap_or(0);
        let (asset, reserved) = match taker.side {
            Side::Bid => (spec.config.quote, spec.bid_reservation(price, remaining)),
            Side::Ask => (spec.config.base, spec.base_amount(remaining)),
        };
        let reserved = reserved.expect("bounded by market limits");
        const INVARIANT: &str = "funds and capacity checked before acceptance";
        let account = taker.account.expect(INVARIANT);
        let balance = self.ledger.lock_at(account, asset, reserved).expect(INVARIANT);
        market
            .book
            .insert(RestingOrder {
                order_id: taker.order_id,
                user_id: taker.user_id,
                client_order_id: taker.client_order_id,
                side: taker.side,
                price: Ticks::new(price),
                quantity_lots: taker.quantity_lots,
                filled_lots: taker.filled_lots,
                remaining_lots: remaining,
                reserved,
                self_trade_prevention: taker.self_trade_prevention,
                post_only: taker.post_only,
            })
            .expect(INVARIANT);
        self.emit_balance(ctx, taker.user_id, asset, balance, BalanceChange::OrderLocked, out);
        self.emit_level(ctx, mi, taker.side, price, out);
    }

    /// Removes a resting order, releases its reservation and emits the events.
    fn cancel_resting(
        &mut self,
        ctx: CommandContext,
        mi: usize,
        order_id: OrderId,
        reason: CancelReason,
        out: &mut impl EventSink,
    ) {
        let market = &mut self.markets[mi];
        let Some(order) = market.book.remove(order_id) else { return };
        market.triggers.detach(order_id);
        let asset = match order.side {
            Side::Bid => market.spec.config.quote,
            Side::Ask => market.spec.config.base,
        };
        let market_id = market.spec.config.id;
        let balance = self.ledger.unlock(order.user_id, asset, order.reserved).expect("reservation held in locked");
        out.push(Event::OrderCanceled(OrderCanceled {
            sequence: ctx.sequence,
            timestamp_ns: ctx.timestamp_ns,
            user_id: order.user_id,
            order_id,
            client_order_id: order.client_order_id,
            filled_lots: Lots::new(order.filled_lots),
            canceled_lots: Lots::new(order.remaining_lots),
            market_id,
            side: order.side.into(),
            reason: reason.into(),
            reserved: Reserved::ZERO,
        }));
        self.emit_level(ctx, mi, order.side, order.price.get(), out);
        self.emit_balance(ctx, order.user_id, asset, balance, BalanceChange::OrderReleased, out);
    }

    fn emit_level(&self, ctx: CommandContext, mi: usize, side: Side, price: u64, out: &mut impl EventSink) {
        // The level's new totals only describe the change: not looked up without events.
        if !out.keeps_events() {
            return;
        }
        let market = &self.markets[mi];
        let (total, count) =
            market.book.level(side, Ticks::new(price)).map_or((0, 0), |level| (level.total_lots, level.order_count));
        out.push(Event::BookLevelUpdate(BookLevelUpdate {
            sequence: ctx.sequence,
            timestamp_ns: ctx.timestamp_ns,
            price_ticks: Ticks::new(price),
            quantity_lots: Lots::new(total),
            order_count: OrderCount::new(count),
            market_id: market.spec.config.id,
            side: side.into(),
            reserved: Reserved::ZERO,
        }));
    }

    fn emit_balance(
        &self,
        ctx: CommandContext,
        user_id: UserId,
        asset: AssetId,
        balance: Balance,
        reason: BalanceChange,
        out: &mut impl EventSink,
    ) {
        out.push(Event::BalanceUpdate(BalanceUpdate {
            sequence: ctx.sequence,
            timestamp_ns: ctx.timestamp_ns,
            user_id,
            available: Amount::new(balance.available),
            locked: Amount::new(balance.locked),
            asset_id: asset,
            reason: reason.into(),
            reserved: Reserved::ZERO,
        }));
    }
}

/// Whether a new order carries a stop-loss / take-profit attachment (any of its four prices set):
/// only then is there an attachment to check.
#[inline]
fn has_attachment(m: &NewOrder) -> bool {
    (m.stop_loss_trigger_ticks.get()
        | m.stop_loss_limit_ticks.get()
        | m.take_profit_trigger_ticks.get()
        | m.take_profit_limit_ticks.get())
        != 0
}

/// Whether a `side` order at `limit` trades against a resting order at `resting`.
#[inline]
fn crosses(side: Side, limit: u64, resting: u64) -> bool {
    match side {
        Side::Bid => limit >= resting,
        Side::Ask => limit <= resting,
    }
}

/// Whether the pool leg of a routed order (`pool_base` base units bought or sold) leaves the
/// pool's price within the band edge `edge_ticks` (the highest price a buy may pay, the lowest a
/// sell may accept). The pool's price after the swap, the worst its leg reaches, is its reserves'
/// ratio in ticks: `quote × lot_size / (base × quote_per_tick_lot)`; compared by cross
/// multiplication in u128, where a product too large for u128 means a price far beyond any edge
/// (buy) or far above it (sell).
///
/// # Errors
/// The swap's own errors (the plan was made on the same state, so none is expected).
fn pool_stays_in_band(
    pool: &Pool,
    side: Side,
    pool_base: u64,
    terms: amm::BookTerms,
    edge_ticks: u64,
) -> Result<bool, RejectReason> {
    let mode = match side {
        Side::Bid => codec::SwapMode::ExactOut,
        Side::Ask => codec::SwapMode::ExactIn,
    };
    let result = amm::swap(pool.base_reserve, pool.quote_reserve, side, mode, pool_base, pool.fee_bps)?;
    let (base_after, quote_after) = match side {
        Side::Bid => (result.reserve_out_after, result.reserve_in_after),
        Side::Ask => (result.reserve_in_after, result.reserve_out_after),
    };
    // Both products of two u64 values fit in u128; the edge side has three factors.
    let price_side = u128::from(quote_after) * u128::from(terms.lot_size);
    let edge_side = (u128::from(edge_ticks) * u128::from(terms.quote_per_tick_lot)).checked_mul(u128::from(base_after));
    Ok(match (side, edge_side) {
        (Side::Bid, Some(edge)) => price_side <= edge,
        (Side::Ask, Some(edge)) => price_side >= edge,
        (Side::Bid, None) => true,
        (Side::Ask, None) => false,
    })
}

/// What a taker buy pays for `lots` at `price`: notional plus taker fee.
#[inline]
fn taker_cost(spec: &MarketSpec, price: u64, lots: u64) -> u64 {
    let notional = spec.notional(price, lots).expect("bounded by market limits");
    notional + MarketSpec::fee(notional, spec.config.taker_fee_ppm)
}

/// Whether a quote-quantity order that met an empty book could not have taken another lot at any
/// price the book might have offered: a buy cannot pay for one more lot at its last fill's price
/// (any later ask is at least as dear), a sell cannot sell one more lot even at the lowest price.
fn quote_quantity_reached(spec: &MarketSpec, taker: &Taker) -> bool {
    if let Some(budget) = taker.budget
        && taker.remaining_lots.is_none()
        && let Some(last) = taker.last_fill
    {
        return affordable_lots(spec, last.price_ticks, budget - taker.spent, 1) == 0;
    }
    if let Some(proceeds_max) = taker.proceeds_max {
        return taker.last_fill.is_some() && sellable_lots(spec, 1, proceeds_max - taker.proceeds) == 0;
    }
    false
}

/// The most lots a quote-quantity sell can sell at `price` without its notional exceeding
/// `proceeds_left`.
fn sellable_lots(spec: &MarketSpec, price: u64, proceeds_left: u64) -> u64 {
    let per_lot = u128::from(price) * u128::from(spec.quote_per_tick_lot);
    u64::try_from(u128::from(proceeds_left) / per_lot).unwrap_or(u64::MAX)
}

/// The most lots (at most `max_lots`) a taker buy can pay for at `price` with `budget`.
fn affordable_lots(spec: &MarketSpec, price: u64, budget: u64, max_lots: u64) -> u64 {
    let per_lot = u128::from(price) * u128::from(spec.quote_per_tick_lot);
    let per_lot_with_fee =
        per_lot * u128::from(crate::config::FEE_PPM_DENOMINATOR + u64::from(spec.config.taker_fee_ppm));
    // Lower bound: the exact cost with an unrounded fee is <= budget.
    let estimate = u128::from(budget) * u128::from(crate::config::FEE_PPM_DENOMINATOR) / per_lot_with_fee;
    let mut lots = u64::try_from(estimate).unwrap_or(u64::MAX).min(max_lots);
    // The rounded-down fee can make one more lot affordable, never two.
    if lots < max_lots && taker_cost(spec, price, lots + 1) <= budget {
        lots += 1;
    }
    lots
}

fn hash_order<H: StateWords>(hasher: &mut H, order: &RestingOrder) {
    for value in [
        order.order_id.get(),
        order.user_id.get(),
        order.client_order_id.get(),
        order.side as u64,
        order.price.get(),
        order.quantity_lots,
        order.filled_lots,
        order.remaining_lots,
        order.reserved,
        order.self_trade_prevention as u64,
        u64::from(order.post_only),
    ] {
        hasher.u64(value);
    }
}
