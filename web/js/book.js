// The order book of one market: a REST snapshot, then the WebSocket depth diffs applied over it
// in update-id order. A gap in the ids means diffs were lost: the owner must resnapshot.

import { decimalsOf, toUnits, fromUnits, trimZeros } from './decimal.js';

/** @typedef {[string, string]} Level a price and the quantity resting at it, decimal strings */

/**
 * @typedef {object} DepthSnapshot the answer of `GET /api/v1/depth`
 * @property {Level[]} asks ascending prices
 * @property {Level[]} bids ascending prices
 * @property {string} lastUpdateId
 */

/**
 * @typedef {object} DepthDiff the data of a `depth.<symbol>` stream frame
 * @property {Level[]} a asks changed (quantity "0" removes the level)
 * @property {Level[]} b bids changed
 * @property {number} U first update id in this diff
 * @property {number} u last update id in this diff
 */

/** What applying a diff did. */
export const Applied = Object.freeze({
  /** the diff was applied */
  APPLIED: 'applied',
  /** the diff was older than the book and ignored */
  STALE: 'stale',
  /** the diff was buffered until a snapshot arrives */
  BUFFERED: 'buffered',
  /** ids skipped: diffs were lost, the book is no longer trustworthy (resnapshot) */
  GAP: 'gap',
});

export class OrderBook {
  /**
   * @param {number} priceDecimals decimals of the market's tick size
   */
  constructor(priceDecimals) {
    this.priceDecimals = priceDecimals;
    /** @type {Map<string, string>} price (normalised) -> quantity */
    this.asks = new Map();
    /** @type {Map<string, string>} */
    this.bids = new Map();
    /** @type {bigint | null} last applied update id; null until a snapshot is loaded */
    this.lastUpdateId = null;
    /** @type {DepthDiff[]} diffs received before the snapshot */
    this.pending = [];
  }

  /** Forgets everything (before a resnapshot). */
  reset() {
    this.asks.clear();
    this.bids.clear();
    this.lastUpdateId = null;
    this.pending = [];
  }

  /**
   * Normalises a price to the tick's decimals so "100.5" and "100.50" are the same level.
   * @param {string} price
   * @returns {string}
   */
  key(price) {
    const units = toUnits(price, this.priceDecimals);
    return units === null ? price : fromUnits(units, this.priceDecimals);
  }

  /**
   * Loads a REST snapshot, then applies the diffs buffered while it was in flight.
   * @param {DepthSnapshot} snapshot
   * @returns {string} GAP when the buffered diffs do not connect to the snapshot
   */
  loadSnapshot(snapshot) {
    const pending = this.pending;
    this.reset();
    for (const [price, quantity] of snapshot.asks) this.asks.set(this.key(price), quantity);
    for (const [price, quantity] of snapshot.bids) this.bids.set(this.key(price), quantity);
    this.lastUpdateId = BigInt(snapshot.lastUpdateId);
    for (const diff of pending) {
      if (this.applyDiff(diff) === Applied.GAP) return Applied.GAP;
    }
    return Applied.APPLIED;
  }

  /**
   * Applies one depth diff (or buffers it when no snapshot is loaded yet).
   * @param {DepthDiff} diff
   * @returns {string} one of {@link Applied}
   */
  applyDiff(diff) {
    if (this.lastUpdateId === null) {
      this.pending.push(diff);
      return Applied.BUFFERED;
    }
    const first = BigInt(diff.U);
    const last = BigInt(diff.u);
    if (last <= this.lastUpdateId) return Applied.STALE;
    if (first > this.lastUpdateId + 1n) return Applied.GAP;
    for (const [price, quantity] of diff.a) this.set(this.asks, price, quantity);
    for (const [price, quantity] of diff.b) this.set(this.bids, price, quantity);
    this.lastUpdateId = last;
    return Applied.APPLIED;
  }

  /**
   * @param {Map<string, string>} side
   * @param {string} price
   * @param {string} quantity
   */
  set(side, price, quantity) {
    const units = toUnits(quantity, 32);
    if (units === null || units === 0n) side.delete(this.key(price));
    else side.set(this.key(price), quantity);
  }

  /**
   * The best `count` levels of a side, best first.
   * @param {'asks' | 'bids'} sideName
   * @param {number} count
   * @returns {Level[]}
   */
  levels(sideName, count) {
    const side = sideName === 'asks' ? this.asks : this.bids;
    const decimals = this.priceDecimals;
    const sorted = [...side.entries()]
      .map(([price, quantity]) => ({ price, quantity, units: toUnits(price, decimals) ?? 0n }))
      .sort((x, y) => (x.units < y.units ? -1 : x.units > y.units ? 1 : 0));
    if (sideName === 'bids') sorted.reverse();
    return sorted.slice(0, count).map(({ price, quantity }) => [price, quantity]);
  }

  /** @returns {string | null} the best (highest) bid price */
  bestBid() {
    return this.levels('bids', 1)[0]?.[0] ?? null;
  }

  /** @returns {string | null} the best (lowest) ask price */
  bestAsk() {
    return this.levels('asks', 1)[0]?.[0] ?? null;
  }

  /**
   * Spread (ask - bid) and mid ((ask + bid) / 2, one more decimal than the tick) as exact decimal
   * strings, or null when a side is empty.
   * @returns {{spread: string, mid: string} | null}
   */
  spreadAndMid() {
    const bid = this.bestBid();
    const ask = this.bestAsk();
    if (bid === null || ask === null) return null;
    const d = this.priceDecimals;
    const b = toUnits(bid, d) ?? 0n;
    const a = toUnits(ask, d) ?? 0n;
    return { spread: fromUnits(a - b, d), mid: fromUnits((a + b) * 5n, d + 1) };
  }

  /**
   * What a market order would do against this book now (before fees): walks the side it takes
   * (a buy takes the asks, best first) for a base `quantity`, or for a quote budget `quote`
   * (whole steps of `stepSize` only). Exact decimal arithmetic on BigInt units.
   * @param {'Bid' | 'Ask'} side the order's side
   * @param {{quantity?: string, quote?: string}} amount exactly one of the two
   * @param {string} stepSize the market's quantity step
   * @returns {Estimate | null} null when the amount is not a positive decimal
   */
  estimate(side, amount, stepSize) {
    const pd = this.priceDecimals;
    const qd = decimalsOf(stepSize);
    const step = toUnits(stepSize, qd);
    const levels = this.levels(side === 'Bid' ? 'asks' : 'bids', Infinity);
    /** quote units have pd + qd decimals (price units x quantity units) */
    let filled = 0n;
    let quote = 0n;
    if (amount.quantity !== undefined) {
      const wanted = toUnits(amount.quantity, qd);
      if (wanted === null || wanted <= 0n) return null;
      for (const [price, size] of levels) {
        if (filled >= wanted) break;
        const p = toUnits(price, pd) ?? 0n;
        const available = toUnits(size, qd) ?? 0n;
        const take = available < wanted - filled ? available : wanted - filled;
        filled += take;
        quote += p * take;
      }
      return this.estimateOf(filled, quote, filled === wanted, qd);
    }
    const budget = toUnits(amount.quote ?? '', pd + qd);
    if (budget === null || budget <= 0n || step === null || step <= 0n) return null;
    let complete = false;
    for (const [price, size] of levels) {
      const p = toUnits(price, pd) ?? 0n;
      const available = toUnits(size, qd) ?? 0n;
      if (p <= 0n) continue;
      const affordable = (((budget - quote) / p) / step) * step;
      const take = available < affordable ? available : affordable;
      filled += take;
      quote += p * take;
      if (take < available) {
        complete = true;
        break;
      }
    }
    return this.estimateOf(filled, quote, complete, qd);
  }

  /**
   * @param {bigint} filled quantity units
   * @param {bigint} quote quote units (price decimals + quantity decimals)
   * @param {boolean} complete
   * @param {number} qd quantity decimals
   * @returns {Estimate}
   */
  estimateOf(filled, quote, complete, qd) {
    const pd = this.priceDecimals;
    // Average price to two more decimals than the tick, rounded down.
    const averageDecimals = pd + 2;
    const average = filled > 0n ? fromUnits((quote * 10n ** BigInt(averageDecimals - pd)) / filled, averageDecimals) : null;
    return {
      quantity: fromUnits(filled, qd),
      total: trimZeros(fromUnits(quote, pd + qd)),
      average: average === null ? null : trimZeros(average),
      complete,
    };
  }
}

/**
 * @typedef {object} Estimate a market order walked through the book
 * @property {string} quantity base quantity filled
 * @property {string} total quote paid or received, before fees
 * @property {string | null} average average price (null when nothing fills)
 * @property {boolean} complete whether the book holds the whole amount
 */
