// Unit tests of the order book's snapshot + diff logic (node --test web/test).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Applied, OrderBook } from '../js/book.js';

const snapshot = {
  asks: [['101.0', '1.00'], ['102.0', '2.00']],
  bids: [['98.0', '3.00'], ['99.0', '4.00']],
  lastUpdateId: '10',
};

test('a snapshot sorts both sides best first and gives spread and mid exactly', () => {
  const book = new OrderBook(1);
  assert.equal(book.loadSnapshot(snapshot), Applied.APPLIED);
  assert.deepEqual(book.levels('asks', 5), [['101.0', '1.00'], ['102.0', '2.00']]);
  assert.deepEqual(book.levels('bids', 5), [['99.0', '4.00'], ['98.0', '3.00']]);
  assert.deepEqual(book.spreadAndMid(), { spread: '2.0', mid: '100.00' });
  assert.deepEqual(book.levels('asks', 1), [['101.0', '1.00']]);
});

test('diffs apply in id order; stale ones are ignored; a gap asks for a resnapshot', () => {
  const book = new OrderBook(1);
  book.loadSnapshot(snapshot);
  assert.equal(book.applyDiff({ a: [['101.0', '9.00']], b: [], U: 5, u: 10 }), Applied.STALE);
  assert.deepEqual(book.levels('asks', 1), [['101.0', '1.00']]);
  // Overlapping the snapshot (U <= last + 1 <= u) is fine.
  assert.equal(book.applyDiff({ a: [['101.0', '0']], b: [['99.5', '1.00']], U: 9, u: 11 }), Applied.APPLIED);
  assert.deepEqual(book.levels('asks', 1), [['102.0', '2.00']]);
  assert.equal(book.bestBid(), '99.5');
  // The same price written differently is the same level.
  assert.equal(book.applyDiff({ a: [], b: [['99.50', '0']], U: 12, u: 12 }), Applied.APPLIED);
  assert.equal(book.bestBid(), '99.0');
  assert.equal(book.applyDiff({ a: [], b: [['97.0', '1']], U: 14, u: 14 }), Applied.GAP);
  assert.equal(book.lastUpdateId, 12n, 'a gap changes nothing');
});

test('diffs received before the snapshot are buffered and replayed over it', () => {
  const book = new OrderBook(1);
  assert.equal(book.applyDiff({ a: [['100.0', '5.00']], b: [], U: 9, u: 10 }), Applied.BUFFERED);
  assert.equal(book.applyDiff({ a: [['100.0', '6.00']], b: [], U: 11, u: 11 }), Applied.BUFFERED);
  assert.equal(book.loadSnapshot(snapshot), Applied.APPLIED);
  assert.equal(book.bestAsk(), '100.0');
  assert.deepEqual(book.levels('asks', 1), [['100.0', '6.00']]);
  assert.equal(book.lastUpdateId, 11n);
  // A buffered diff that does not connect to the snapshot is a gap.
  const late = new OrderBook(1);
  late.applyDiff({ a: [], b: [], U: 20, u: 20 });
  assert.equal(late.loadSnapshot(snapshot), Applied.GAP);
});

test('an empty side has no spread', () => {
  const book = new OrderBook(3);
  book.loadSnapshot({ asks: [['150.000', '2.00']], bids: [], lastUpdateId: '0' });
  assert.equal(book.spreadAndMid(), null);
  assert.equal(book.bestBid(), null);
});
