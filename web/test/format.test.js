// Unit tests of the page's pure helpers added for issue #21: exact decimal helpers of the order
// form (% of balance, total -> quantity), the market-order estimate walked through the book,
// server times read as UTC, names in words, and the chart's robust vertical scale.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { divideDown, floorToStep, percentOf, add, subtract } from '../js/decimal.js';
import { OrderBook } from '../js/book.js';
import { statusName, marketName, timeMs } from '../js/format.js';
import { robustRange } from '../js/chart.js';

test('percentages, division and steps are exact and round down', () => {
  assert.equal(percentOf('100', 25, 2), '25.00');
  assert.equal(percentOf('0.07', 50, 2), '0.03');
  assert.equal(percentOf('99548.774500', 25, 6), '24887.193625');
  assert.equal(divideDown('25000', '150.000', 2), '166.66');
  assert.equal(floorToStep('166.666', '0.01'), '166.66');
  assert.equal(floorToStep('7', '0.5'), '7.0');
  assert.equal(add('0.1', '0.2'), '0.3');
  assert.equal(subtract('1', '0.25'), '0.75');
});

test('a market order is estimated by walking the book, exactly', () => {
  const book = new OrderBook(3);
  book.loadSnapshot({ asks: [['150.000', '2'], ['151.000', '2']], bids: [['149.000', '1']], lastUpdateId: '1' });
  assert.deepEqual(book.estimate('Bid', { quantity: '3' }, '0.01'), { quantity: '3.00', total: '451', average: '150.33333', complete: true });
  assert.deepEqual(book.estimate('Bid', { quantity: '5' }, '0.01'), { quantity: '4.00', total: '602', average: '150.5', complete: false });
  // A quote budget buys whole steps only: 300 + 75.5 = 0.5 SOL more at 151.
  assert.deepEqual(book.estimate('Bid', { quote: '375.5' }, '0.01'), { quantity: '2.50', total: '375.5', average: '150.2', complete: true });
  assert.deepEqual(book.estimate('Ask', { quantity: '1' }, '0.01'), { quantity: '1.00', total: '149', average: '149', complete: true });
  assert.equal(book.estimate('Bid', { quantity: '0' }, '0.01'), null);
});

test('server times are UTC; names are words', () => {
  assert.equal(timeMs('2026-12-07 15:38:00'), Date.UTC(2026, 11, 7, 15, 38, 0));
  assert.equal(timeMs('2026-12-07T15:38:40.123'), Date.UTC(2026, 11, 7, 15, 38, 40, 123));
  assert.equal(timeMs(1796657924474), 1796657924474);
  assert.equal(statusName('PartiallyFilled'), 'Partially filled');
  assert.equal(marketName('SOL_USDC'), 'SOL/USDC');
});

test('one outlier does not set the chart scale', () => {
  const candle = (/** @type {number} */ low, /** @type {number} */ high) => ({ start: '', open: String(low), close: String(high), low: String(low), high: String(high) });
  const candles = Array.from({ length: 30 }, (_, i) => candle(100 + (i % 3), 101 + (i % 3)));
  candles[10] = candle(100, 10_000);
  const { low, high } = robustRange(candles);
  assert.ok(high < 110 && low > 90, `range ${low}..${high}`);
  // The newest candle is always inside.
  candles.push(candle(120, 125));
  assert.ok(robustRange(candles).high >= 125);
});
