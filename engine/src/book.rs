//! Order books: the [`Book`] interface the matching logic uses, and [`OrderBook`], the fast
//! implementation.
//!
//! [`OrderBook`] keeps every resting order in a fixed-capacity arena (room reserved at start-up;
//! never-used slots are appended in order, so they are always the arena's tail; the pages are
//! touched up front by [`OrderBook::prefault`], or later for a book recovery replays on) linked into two intrusive doubly linked lists: its price level's FIFO queue (time priority) and
//! its owner's list (for mass cancels). Levels live in their own arena; each side keeps a vector of
//! `(price, level slot)` sorted so that the best price is the *last* element, which makes the best
//! price O(1) and puts the churn of new and emptied levels near the end of the vector where moving
//! elements is cheap. Only creating or emptying a level touches the sorted vector.
//!
//! **The id index is an array, not a hash map.** The engine numbers orders sequentially, so order
//! id `i`'s slot is kept at `by_id[i mod D]` (`D`, a power of two, at least the capacity): new
//! orders write consecutive entries (a cache line that is already hot, 16 entries to a line), and
//! finding an order by id (cancel, fill, replace) reads one entry and the order itself. A full
//! capacity hash map keyed by id, in contrast, put a random cache and TLB miss on every insert. The
//! entry `i mod D` can still belong to an older order that has rested while `D` more ids were
//! handed out; the new order then *spills* into a small `spilled` map, which lookups consult only
//! when it is not empty. So finding an order is one array read in the common case and one hash
//! lookup otherwise, and cancel by id is O(1) either way. Free order slots are reused last-freed
//! first, so a new order usually lands in the slot a fill has just emptied, still in cache. The id
//! index is derived state: a restored book rebuilds it by inserting the snapshot's orders.
//!
//! Invariants (checked by [`OrderBook::validate_structure`]): a level's total equals the sum of its
//! orders' open quantities and its count their number; every order has a positive open quantity;
//! the side vectors are strictly sorted; every resting order is found by its id (through its
//! `by_id` entry or `spilled`, never both), and the client-id and user indexes agree with the arena.

use crate::{FastMap, new_map};
use codec::{ClientOrderId, OrderId, SelfTradePrevention, Side, Ticks, UserId};

/// A resting order and the funds it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestingOrder {
    /// Exchange id.
    pub order_id: OrderId,
    /// Owner.
    pub user_id: UserId,
    /// Client id (0: none).
    pub client_order_id: ClientOrderId,
    /// Side.
    pub side: Side,
    /// Limit price.
    pub price: Ticks,
    /// Total order quantity in lots (filled part included).
    pub quantity_lots: u64,
    /// Filled so far, in lots.
    pub filled_lots: u64,
    /// Still open, in lots; always positive while resting.
    pub remaining_lots: u64,
    /// Funds locked for this order: quote minor units for bids, base minor units for asks.
    pub reserved: u64,
    /// Self-trade prevention mode (kept for replaces that trade).
    pub self_trade_prevention: SelfTradePrevention,
    /// Post-only flag (kept for replaces).
    pub post_only: bool,
}

/// The aggregate of one price level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelSummary {
    /// Price.
    pub price: Ticks,
    /// Sum of open quantities.
    pub total_lots: u64,
    /// Number of orders.
    pub order_count: u32,
}

/// Why an order could not be inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// No free order slot (capacity fixed at start-up).
    BookFull,
}

/// What the matching logic needs from an order book. Implemented by the fast [`OrderBook`] and
/// by the naive reference book in the test kit; both must behave identically.
pub trait Book {
    /// Best (highest bid / lowest ask) price of a side.
    fn best_price(&self, side: Side) -> Option<Ticks>;
    /// The order first in priority on a side (best price, earliest arrival).
    fn front(&self, side: Side) -> Option<&RestingOrder>;
    /// Looks up an open order.
    fn get(&self, order_id: OrderId) -> Option<&RestingOrder>;
    /// Looks up an open order by its owner's client id.
    fn find_client_order(&self, user_id: UserId, client_order_id: ClientOrderId) -> Option<OrderId>;
    /// Number of open orders of a user.
    fn open_orders_of(&self, user_id: UserId) -> usize;
    /// Whether one more order fits.
    fn has_capacity(&self) -> bool;
    /// Touches every page of the room reserved for resting orders, so that later inserts do not
    /// pay page faults (see [`OrderBook::prefault`]). Books without reserved room do nothing.
    fn prefault(&mut self) {}
    /// Appends an order at the back of its price level's queue.
    ///
    /// # Errors
    /// [`InsertError::BookFull`] when no slot is free.
    fn insert(&mut self, order: RestingOrder) -> Result<(), InsertError>;
    /// Removes an order; returns it.
    fn remove(&mut self, order_id: OrderId) -> Option<RestingOrder>;
    /// Applies a fill or a quantity reduction in place, keeping time priority: sets the total,
    /// open and filled quantities and the reservation. `remaining_lots` must stay positive (remove
    /// the order instead when it reaches zero).
    fn update_in_place(
        &mut self,
        order_id: OrderId,
        quantity_lots: u64,
        remaining_lots: u64,
        filled_lots: u64,
        reserved: u64,
    );
    /// Summary of the level at a price, if it exists.
    fn level(&self, side: Side, price: Ticks) -> Option<LevelSummary>;
    /// Visits a side's orders in priority order until `visit` returns false.
    fn visit_in_priority(&self, side: Side, visit: &mut dyn FnMut(&RestingOrder) -> bool);
    /// Visits a side's levels from the best price outwards until `visit` returns false.
    fn visit_levels(&self, side: Side, visit: &mut dyn FnMut(LevelSummary) -> bool);
    /// Appends the ids of a user's open orders, oldest first, to `out`.
    fn orders_of(&self, user_id: UserId, out: &mut Vec<OrderId>);
    /// Number of open orders.
    fn len(&self) -> usize;
    /// Checks the implementation's internal invariants.
    ///
    /// # Errors
    /// A description of the first broken invariant.
    fn validate_structure(&self) -> Result<(), String> {
        Ok(())
    }
    /// Whether the book is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Slot index in an arena; `NIL` marks the end of a list.
type Slot = u32;
const NIL: Slot = Slot::MAX;

/// What a never-used order slot holds once pre-faulted (never read).
const EMPTY_ORDER_NODE: OrderNode = OrderNode {
    order: RestingOrder {
        order_id: OrderId::ZERO,
        user_id: UserId::ZERO,
        client_order_id: ClientOrderId::ZERO,
        side: Side::Bid,
        price: Ticks::ZERO,
        quantity_lots: 0,
        filled_lots: 0,
        remaining_lots: 0,
        reserved: 0,
        self_trade_prevention: SelfTradePrevention::Allow,
        post_only: false,
    },
    level: NIL,
    prev: NIL,
    next: NIL,
    user_prev: NIL,
    user_next: NIL,
};

/// What a never-used level slot holds once pre-faulted (never read).
const EMPTY_LEVEL: Level = Level { price: Ticks::ZERO, total_lots: 0, order_count: 0, head: NIL, tail: NIL };

#[derive(Debug, Clone, Copy)]
struct OrderNode {
    order: RestingOrder,
    level: Slot,
    prev: Slot,
    next: Slot,
    user_prev: Slot,
    user_next: Slot,
}

#[derive(Debug, Clone, Copy)]
struct Level {
    price: Ticks,
    total_lots: u64,
    order_count: u32,
    head: Slot,
    tail: Slot,
}

#[derive(Debug, Clone, Copy)]
struct UserOrders {
    head: Slot,
    tail: Slot,
    count: u32,
}

/// One side's levels sorted so the best price is last.
#[derive(Debug, Clone)]
struct SideLevels {
    side: Side,
    sorted: Vec<(Ticks, Slot)>,
}

impl SideLevels {
    /// Whether `a` is a better price than `b` for this side.
    #[inline]
    fn better(&self, a: Ticks, b: Ticks) -> bool {
        match self.side {
            Side::Bid => a > b,
            Side::Ask => a < b,
        }
    }

    /// Index in `sorted` where `price` is or would be inserted. The vector is ordered from worst
    /// to best, so "better" prices sort higher.
    #[inline]
    fn search(&self, price: Ticks) -> Result<usize, usize> {
        // Compares ranks, `price ^ flip`, which grow as prices get better: the price itself for
        // bids, its complement for asks. The same order as [`Self::better`], with the side
        // decided once per search instead of once per comparison.
        let flip = match self.side {
            Side::Bid => 0,
            Side::Ask => u64::MAX,
        };
        self.sorted.binary_search_by_key(&(price.get() ^ flip), |&(p, _)| p.get() ^ flip)
    }
}

/// The fast order book of one market. See the module documentation. `Clone` copies it whole,
/// with the same reserved room (the exchange's snapshotter starts its shadow engine as a copy of
/// the recovered one, and a copy must not allocate on its hot path either).
#[derive(Debug)]
pub struct OrderBook {
    /// Order slots ever used (the room for `capacity` is reserved up front; a slot is appended
    /// when no freed one is left, so the never-used slots are always `orders.len()..capacity`).
    orders: Vec<OrderNode>,
    /// Freed order slots, used last-freed first (a slot a fill has just freed is still in cache).
    free_orders: Vec<Slot>,
    /// The id index: order id `i`'s slot at `i & id_mask`, stored complemented (`!slot`) so that
    /// a free entry (`NIL`) is 0 and the index can be allocated as zeroed, untouched pages.
    by_id: Vec<Slot>,
    /// `by_id.len() - 1` (the length is a power of two, at least the capacity).
    id_mask: u64,
    /// Orders whose `by_id` entry was held by an older resting order when they arrived: id -> slot.
    spilled: FastMap<OrderId, Slot>,
    /// Level slots ever used, appended like `orders`.
    levels: Vec<Level>,
    free_levels: Vec<Slot>,
    bids: SideLevels,
    asks: SideLevels,
    by_client_id: FastMap<(UserId, ClientOrderId), OrderId>,
    by_user: FastMap<UserId, UserOrders>,
    len: usize,
    /// Most resting orders.
    capacity: usize,
}

impl Clone for OrderBook {
    fn clone(&self) -> Self {
        let capacity = self.capacity;
        let mut spilled = new_map(capacity);
        spilled.extend(self.spilled.iter().map(|(&id, &slot)| (id, slot)));
        // A book still sized for replay (its client-id map grown only as far as it needed) is
        // copied into a full-capacity map, so the copy does not grow it on its hot path.
        let by_client_id = if self.by_client_id.capacity() >= capacity {
            self.by_client_id.clone()
        } else {
            let mut by_client_id = new_map(capacity);
            by_client_id.extend(self.by_client_id.iter().map(|(&key, &id)| (key, id)));
            by_client_id
        };
        Self {
            orders: with_room(&self.orders, capacity),
            free_orders: with_room(&self.free_orders, capacity),
            by_id: self.by_id.clone(),
            id_mask: self.id_mask,
            spilled,
            levels: with_room(&self.levels, capacity),
            free_levels: with_room(&self.free_levels, capacity),
            bids: SideLevels { side: Side::Bid, sorted: with_room(&self.bids.sorted, capacity) },
            asks: SideLevels { side: Side::Ask, sorted: with_room(&self.asks.sorted, capacity) },
            by_client_id,
            by_user: self.by_user.clone(),
            len: self.len,
            capacity: self.capacity,
        }
    }
}

/// A copy of `items` with room for `room` elements (a plain `Vec` clone keeps only the length).
fn with_room<T: Copy>(items: &[T], room: usize) -> Vec<T> {
    let mut copy = Vec::with_capacity(room.max(items.len()));
    copy.extend_from_slice(items);
    copy
}

impl OrderBook {
    /// A book with room for `capacity` resting orders; every structure is allocated and its
    /// pages touched now ([`Self::prefault`]), so the first orders of the day do not pay page
    /// faults on the hot path.
    ///
    /// # Panics
    /// If `capacity` does not fit the slot index type.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut book = Self::with_capacity_unfaulted(capacity);
        book.prefault();
        book
    }

    /// A book with room for `capacity` resting orders, allocated but not touched: the operating
    /// system maps a page when it is first written. Recovery replays on such books (a replay
    /// touches only what its orders use, instead of paying for every page of the reserved room
    /// first) and pre-faults afterwards, before the engine goes live.
    ///
    /// Its hash maps (client ids, spilled ids) start empty and grow with the orders, instead of
    /// being sized for the whole capacity: a replay's resting orders (thousands, typically) then
    /// keep them small enough to stay in cache, where a full-capacity table (megabytes) made
    /// every client-id insert, lookup and removal a cache and TLB miss and often a page fault.
    /// Growing costs a rehash now and then, which a replay can afford and the live engine
    /// thread cannot: [`Self::prefault`] rebuilds them at full capacity.
    ///
    /// # Panics
    /// If `capacity` does not fit the slot index type.
    pub fn with_capacity_unfaulted(capacity: usize) -> Self {
        assert!(capacity < NIL as usize, "book capacity {capacity} too large");
        let id_entries = capacity.max(1).next_power_of_two();
        Self {
            orders: Vec::with_capacity(capacity),
            free_orders: Vec::with_capacity(capacity),
            // `!NIL` is 0: a zeroed allocation, whose pages are mapped on first write.
            by_id: vec![!NIL; id_entries],
            id_mask: id_entries as u64 - 1,
            spilled: new_map(0),
            levels: Vec::with_capacity(capacity),
            free_levels: Vec::with_capacity(capacity),
            bids: SideLevels { side: Side::Bid, sorted: Vec::with_capacity(capacity) },
            asks: SideLevels { side: Side::Ask, sorted: Vec::with_capacity(capacity) },
            by_client_id: new_map(0),
            by_user: new_map(1024),
            len: 0,
            capacity,
        }
    }

    /// Writes every page of the reserved room (order and level arenas, free lists, id index,
    /// client-id and spill maps, which it first sizes for the whole capacity if they were grown
    /// by a replay) without changing the book's contents, so that later inserts do not pay page
    /// faults or rehashes. Costs about as much as the pages are large (tens of ms for the default
    /// capacities); idempotent.
    pub fn prefault(&mut self) {
        for node in self.orders.spare_capacity_mut() {
            node.write(EMPTY_ORDER_NODE);
        }
        for level in self.levels.spare_capacity_mut() {
            level.write(EMPTY_LEVEL);
        }
        for slot in self.free_orders.spare_capacity_mut().iter_mut().chain(self.free_levels.spare_capacity_mut()) {
            slot.write(NIL);
        }
        for entry in &mut self.by_id {
            // A write of the value already there: `black_box` keeps it from being optimised away.
            *entry = std::hint::black_box(*entry);
        }
        // Insert, then clear keeps the capacity: every page of a fresh map gets written. The
        // entries already there are put back (the placeholder keys could collide with them).
        let mut by_client_id = new_map(self.capacity);
        for i in 0..self.capacity as u64 {
            by_client_id.insert((UserId::new(i), ClientOrderId::new(i)), OrderId::ZERO);
        }
        by_client_id.clear();
        by_client_id.extend(self.by_client_id.drain());
        self.by_client_id = by_client_id;
        // The spill map likewise: it is sized for the whole capacity and spilled ids hash all
        // over it, so without this the engine thread paid a page fault for most spills (and one
        // market's spills touched its whole map, MBs, within a few thousand orders).
        let mut spilled = new_map(self.capacity);
        for i in 0..self.capacity as u64 {
            spilled.insert(OrderId::new(i), NIL);
        }
        spilled.clear();
        spilled.extend(self.spilled.drain());
        self.spilled = spilled;
    }

    /// A free level slot: the last freed one, else the next never-used one.
    #[inline]
    fn take_level_slot(&mut self) -> Option<Slot> {
        if let Some(slot) = self.free_levels.pop() {
            return Some(slot);
        }
        if self.levels.len() == self.capacity {
            return None;
        }
        self.levels.push(EMPTY_LEVEL);
        Some((self.levels.len() - 1) as Slot)
    }

    /// The slot of a resting order: through its id-index entry, or `spilled`.
    #[inline]
    fn slot_of(&self, order_id: OrderId) -> Option<Slot> {
        let slot = !self.by_id[(order_id.get() & self.id_mask) as usize];
        if slot != NIL && self.orders[slot as usize].order.order_id == order_id {
            return Some(slot);
        }
        if self.spilled.is_empty() {
            return None;
        }
        self.spilled.get(&order_id).copied()
    }

    /// Records a new order's slot: in its id-index entry if free, else in `spilled`.
    #[inline]
    fn index_id(&mut self, order_id: OrderId, slot: Slot) {
        let entry = &mut self.by_id[(order_id.get() & self.id_mask) as usize];
        if *entry == !NIL {
            *entry = !slot;
        } else {
            self.spilled.insert(order_id, slot);
        }
    }

    /// Forgets a removed order's slot.
    #[inline]
    fn unindex_id(&mut self, order_id: OrderId, slot: Slot) {
        let entry = &mut self.by_id[(order_id.get() & self.id_mask) as usize];
        if *entry == !slot {
            *entry = !NIL;
        } else {
            self.spilled.remove(&order_id);
        }
    }

    #[inline]
    fn side_levels(&self, side: Side) -> &SideLevels {
        match side {
            Side::Bid => &self.bids,
            Side::Ask => &self.asks,
        }
    }

    #[inline]
    fn side_levels_mut(&mut self, side: Side) -> &mut SideLevels {
        match side {
            Side::Bid => &mut self.bids,
            Side::Ask => &mut self.asks,
        }
    }

    fn level_slot(&self, side: Side, price: Ticks) -> Option<Slot> {
        let levels = self.side_levels(side);
        levels.search(price).ok().map(|index| levels.sorted[index].1)
    }

    /// Checks the structural invariants listed in the module documentation.
    ///
    /// # Errors
    /// A description of the first broken invariant.
    pub fn check_structure(&self) -> Result<(), String> {
        let (mut seen, mut client_ids) = (0usize, 0usize);
        for levels in [&self.bids, &self.asks] {
            for pair in levels.sorted.windows(2) {
                if !levels.better(pair[1].0, pair[0].0) {
                    return Err(format!("{:?} levels not strictly sorted: {:?}", levels.side, pair));
                }
            }
            for &(price, slot) in &levels.sorted {
                let level = &self.levels[slot as usize];
                if level.price != price {
                    return Err(format!("level slot {slot} price {:?} != index price {price:?}", level.price));
                }
                let (mut total, mut count, mut cursor, mut prev) = (0u64, 0u32, level.head, NIL);
                while cursor != NIL {
                    let node = &self.orders[cursor as usize];
                    if node.prev != prev || node.level != slot {
                        return Err(format!("broken level list at slot {cursor}"));
                    }
                    if node.order.remaining_lots == 0 || node.order.price != price || node.order.side != levels.side {
                        return Err(format!("order {:?} misplaced or empty", node.order.order_id));
                    }
                    if self.slot_of(node.order.order_id) != Some(cursor) {
                        return Err(format!("order {:?} not found by its id", node.order.order_id));
                    }
                    let entry = !self.by_id[(node.order.order_id.get() & self.id_mask) as usize];
                    if (entry == cursor) == self.spilled.contains_key(&node.order.order_id) {
                        return Err(format!("order {:?}: id index and spill record disagree", node.order.order_id));
                    }
                    if node.order.client_order_id != ClientOrderId::ZERO {
                        client_ids += 1;
                    }
                    total += node.order.remaining_lots;
                    count += 1;
                    prev = cursor;
                    cursor = node.next;
                }
                if level.tail != prev || total != level.total_lots || count != level.order_count || count == 0 {
                    return Err(format!("level {price:?} totals {total}/{count} disagree with {level:?}"));
                }
                seen += count as usize;
            }
        }
        let indexed = self.by_id.iter().filter(|&&entry| !entry != NIL).count() + self.spilled.len();
        let in_use = self.orders.len() - self.free_orders.len();
        if seen != self.len || indexed != self.len || in_use != self.len {
            return Err(format!("order count {seen} / indexed {indexed} / slots in use {in_use} / len {}", self.len));
        }
        if client_ids != self.by_client_id.len() {
            return Err(format!("client id index has {} entries, expected {client_ids}", self.by_client_id.len()));
        }
        let user_total: u32 = self.by_user.values().map(|u| u.count).sum();
        if user_total as usize != self.len {
            return Err(format!("user lists count {user_total}, book has {}", self.len));
        }
        Ok(())
    }

    fn unlink_from_level(&mut self, slot: Slot) {
        // The links and the fields needed, not a copy of the whole node.
        let node = &self.orders[slot as usize];
        let (level_slot, prev, next) = (node.level, node.prev, node.next);
        let (remaining_lots, side) = (node.order.remaining_lots, node.order.side);
        if prev != NIL {
            self.orders[prev as usize].next = next;
        } else {
            self.levels[level_slot as usize].head = next;
        }
        if next != NIL {
            self.orders[next as usize].prev = prev;
        } else {
            self.levels[level_slot as usize].tail = prev;
        }
        let level = &mut self.levels[level_slot as usize];
        level.total_lots -= remaining_lots;
        level.order_count -= 1;
        if level.order_count == 0 {
            let price = level.price;
            let levels = self.side_levels_mut(side);
            if let Ok(index) = levels.search(price) {
                levels.sorted.remove(index);
            }
            self.free_levels.push(level_slot);
        }
    }

    fn unlink_from_user(&mut self, slot: Slot) {
        let node = &self.orders[slot as usize];
        let (user_id, user_prev, user_next) = (node.order.user_id, node.user_prev, node.user_next);
        if user_prev != NIL {
            self.orders[user_prev as usize].user_next = user_next;
        }
        if user_next != NIL {
            self.orders[user_next as usize].user_prev = user_prev;
        }
        let mut emptied = false;
        if let Some(list) = self.by_user.get_mut(&user_id) {
            if list.head == slot {
                list.head = user_next;
            }
            if list.tail == slot {
                list.tail = user_prev;
            }
            list.count -= 1;
            emptied = list.count == 0;
        }
        if emptied {
            self.by_user.remove(&user_id);
        }
    }
}

impl Book for OrderBook {
    #[inline]
    fn best_price(&self, side: Side) -> Option<Ticks> {
        self.side_levels(side).sorted.last().map(|&(price, _)| price)
    }

    #[inline]
    fn front(&self, side: Side) -> Option<&RestingOrder> {
        let &(_, level) = self.side_levels(side).sorted.last()?;
        let head = self.levels[level as usize].head;
        Some(&self.orders[head as usize].order)
    }

    #[inline]
    fn get(&self, order_id: OrderId) -> Option<&RestingOrder> {
        self.slot_of(order_id).map(|slot| &self.orders[slot as usize].order)
    }

    #[inline]
    fn find_client_order(&self, user_id: UserId, client_order_id: ClientOrderId) -> Option<OrderId> {
        self.by_client_id.get(&(user_id, client_order_id)).copied()
    }

    #[inline]
    fn open_orders_of(&self, user_id: UserId) -> usize {
        self.by_user.get(&user_id).map_or(0, |list| list.count as usize)
    }

    #[inline]
    fn has_capacity(&self) -> bool {
        (!self.free_orders.is_empty() || self.orders.len() < self.capacity)
            && (!self.free_levels.is_empty() || self.levels.len() < self.capacity)
    }

    fn prefault(&mut self) {
        OrderBook::prefault(self);
    }

    fn insert(&mut self, order: RestingOrder) -> Result<(), InsertError> {
        debug_assert!(order.remaining_lots > 0);
        if !self.has_capacity() {
            return Err(InsertError::BookFull);
        }
        // One search finds the level or where a new one goes.
        let levels = self.side_levels(order.side);
        let level_slot = match levels.search(order.price) {
            Ok(index) => levels.sorted[index].1,
            Err(index) => {
                let level_slot = self.take_level_slot().ok_or(InsertError::BookFull)?;
                self.levels[level_slot as usize] =
                    Level { price: order.price, total_lots: 0, order_count: 0, head: NIL, tail: NIL };
                self.side_levels_mut(order.side).sorted.insert(index, (order.price, level_slot));
                level_slot
            }
        };
        // A never-used slot is appended below, with the node itself (no placeholder written first).
        let slot = match self.free_orders.pop() {
            Some(slot) => slot,
            None if self.orders.len() < self.capacity => self.orders.len() as Slot,
            None => return Err(InsertError::BookFull),
        };
        self.index_id(order.order_id, slot);
        let level = &mut self.levels[level_slot as usize];
        let prev = level.tail;
        level.tail = slot;
        if level.head == NIL {
            level.head = slot;
        }
        level.total_lots += order.remaining_lots;
        level.order_count += 1;
        if prev != NIL {
            self.orders[prev as usize].next = slot;
        }

        let user = self.by_user.entry(order.user_id).or_insert(UserOrders { head: NIL, tail: NIL, count: 0 });
        let user_prev = user.tail;
        user.tail = slot;
        if user.head == NIL {
            user.head = slot;
        }
        user.count += 1;
        if user_prev != NIL {
            self.orders[user_prev as usize].user_next = slot;
        }

        let node = OrderNode { order, level: level_slot, prev, next: NIL, user_prev, user_next: NIL };
        if slot as usize == self.orders.len() {
            self.orders.push(node);
        } else {
            self.orders[slot as usize] = node;
        }
        if order.client_order_id != ClientOrderId::ZERO {
            self.by_client_id.insert((order.user_id, order.client_order_id), order.order_id);
        }
        self.len += 1;
        Ok(())
    }

    fn remove(&mut self, order_id: OrderId) -> Option<RestingOrder> {
        let slot = self.slot_of(order_id)?;
        self.unlink_from_level(slot);
        self.unlink_from_user(slot);
        self.unindex_id(order_id, slot);
        let order = self.orders[slot as usize].order;
        if order.client_order_id != ClientOrderId::ZERO {
            self.by_client_id.remove(&(order.user_id, order.client_order_id));
        }
        self.free_orders.push(slot);
        self.len -= 1;
        Some(order)
    }

    fn update_in_place(
        &mut self,
        order_id: OrderId,
        quantity_lots: u64,
        remaining_lots: u64,
        filled_lots: u64,
        reserved: u64,
    ) {
        debug_assert!(remaining_lots > 0);
        let Some(slot) = self.slot_of(order_id) else {
            debug_assert!(false, "update of unknown order {order_id:?}");
            return;
        };
        let node = &mut self.orders[slot as usize];
        let before = node.order.remaining_lots;
        node.order.quantity_lots = quantity_lots;
        node.order.remaining_lots = remaining_lots;
        node.order.filled_lots = filled_lots;
        node.order.reserved = reserved;
        let level = &mut self.levels[node.level as usize];
        level.total_lots = level.total_lots - before + remaining_lots;
    }

    fn level(&self, side: Side, price: Ticks) -> Option<LevelSummary> {
        let level = &self.levels[self.level_slot(side, price)? as usize];
        Some(LevelSummary { price: level.price, total_lots: level.total_lots, order_count: level.order_count })
    }

    fn visit_in_priority(&self, side: Side, visit: &mut dyn FnMut(&RestingOrder) -> bool) {
        for &(_, level_slot) in self.side_levels(side).sorted.iter().rev() {
            let mut cursor = self.levels[level_slot as usize].head;
            while cursor != NIL {
                let node = &self.orders[cursor as usize];
                if !visit(&node.order) {
                    return;
                }
                cursor = node.next;
            }
        }
    }

    fn visit_levels(&self, side: Side, visit: &mut dyn FnMut(LevelSummary) -> bool) {
        for &(_, level_slot) in self.side_levels(side).sorted.iter().rev() {
            let level = &self.levels[level_slot as usize];
            let summary =
                LevelSummary { price: level.price, total_lots: level.total_lots, order_count: level.order_count };
            if !visit(summary) {
                return;
            }
        }
    }

    fn orders_of(&self, user_id: UserId, out: &mut Vec<OrderId>) {
        let Some(list) = self.by_user.get(&user_id) else { return };
        let mut cursor = list.head;
        while cursor != NIL {
            let node = &self.orders[cursor as usize];
            out.push(node.order.order_id);
            cursor = node.user_next;
        }
    }

    #[inline]
    fn len(&self) -> usize {
        self.len
    }

    fn validate_structure(&self) -> Result<(), String> {
        self.check_structure()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Room of the books of these tests: far more than the orders they hold.
    const CAPACITY: usize = 1 << 16;
    /// Orders with client ids inserted into each book.
    const ORDERS: u64 = 100;
    /// Deepest side the level search test builds.
    const SEARCHED_DEPTH: u64 = 12;

    fn order(id: u64) -> RestingOrder {
        RestingOrder {
            order_id: OrderId::new(id),
            user_id: UserId::new(1 + id % 7),
            client_order_id: ClientOrderId::new(1_000 + id),
            side: if id % 2 == 0 { Side::Bid } else { Side::Ask },
            price: Ticks::new(if id % 2 == 0 { 100 - id % 10 } else { 200 + id % 10 }),
            quantity_lots: 1,
            filled_lots: 0,
            remaining_lots: 1,
            reserved: 100,
            self_trade_prevention: SelfTradePrevention::Allow,
            post_only: false,
        }
    }

    /// The level search (by rank, `price ^ flip`) finds exactly what a binary search by the
    /// side's price order ([`SideLevels::better`]) finds, for every price in and around books of
    /// every depth up to [`SEARCHED_DEPTH`] levels, on both sides.
    #[test]
    fn level_search_agrees_with_a_plain_binary_search() {
        for side in [Side::Bid, Side::Ask] {
            for depth in 0..=SEARCHED_DEPTH {
                // Prices 10, 12, 14, ... sorted worst to best for the side.
                let mut prices: Vec<u64> = (0..depth).map(|i| 10 + 2 * i).collect();
                if side == Side::Ask {
                    prices.reverse();
                }
                let levels = SideLevels { side, sorted: prices.iter().map(|&p| (Ticks::new(p), p as Slot)).collect() };
                for price in 0..(14 + 2 * depth) {
                    let expected = levels.sorted.binary_search_by(|&(p, _)| {
                        if p.get() == price {
                            core::cmp::Ordering::Equal
                        } else if levels.better(p, Ticks::new(price)) {
                            core::cmp::Ordering::Greater
                        } else {
                            core::cmp::Ordering::Less
                        }
                    });
                    assert_eq!(levels.search(Ticks::new(price)), expected, "{side:?} depth {depth} price {price}");
                }
            }
        }
    }

    fn assert_client_ids_found(book: &OrderBook) {
        for id in 1..=ORDERS {
            let order = order(id);
            assert_eq!(book.find_client_order(order.user_id, order.client_order_id), Some(order.order_id));
        }
        book.check_structure().expect("consistent book");
    }

    /// Recovery's book keeps its client-id map as small as its orders need (a full-capacity
    /// table made every replayed client id a cache miss); a copy of it and its pre-fault size the
    /// map for the whole capacity, so the live engine thread never rehashes it.
    #[test]
    fn an_unfaulted_book_grows_its_client_id_map_and_a_prefault_or_copy_sizes_it_fully() {
        let mut book = OrderBook::with_capacity_unfaulted(CAPACITY);
        for id in 1..=ORDERS {
            book.insert(order(id)).expect("room");
        }
        assert!(book.by_client_id.capacity() < CAPACITY / 16, "replay map sized {}", book.by_client_id.capacity());
        assert_client_ids_found(&book);

        let copy = book.clone();
        assert!(copy.by_client_id.capacity() >= CAPACITY);
        assert_client_ids_found(&copy);

        book.prefault();
        assert!(book.by_client_id.capacity() >= CAPACITY);
        assert!(book.spilled.capacity() >= CAPACITY);
        assert_client_ids_found(&book);

        let live = OrderBook::with_capacity(CAPACITY);
        assert!(live.by_client_id.capacity() >= CAPACITY);
    }
}
