// Unit tests of the page's exact decimal helpers (node --test web/test).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compare, decimalsOf, fromUnits, group, isMultipleOf, multiply, toUnits } from '../js/decimal.js';

test('decimal strings convert to units exactly and back', () => {
  assert.equal(toUnits('64000.5', 1), 640005n);
  assert.equal(toUnits('0.00120', 5), 120n);
  assert.equal(toUnits('0.001200', 5), 120n, 'trailing zeros beyond the decimals are fine');
  assert.equal(toUnits('1', 9), 1_000_000_000n);
  assert.equal(toUnits('-2.5', 2), -250n);
  assert.equal(toUnits('0.123', 2), null, 'nothing is rounded');
  for (const bad of ['', 'abc', '1e5', '1.2.3', '--1', '0x10']) assert.equal(toUnits(bad, 4), null, bad);
  assert.equal(fromUnits(640005n, 1), '64000.5');
  assert.equal(fromUnits(5n, 3), '0.005');
  assert.equal(fromUnits(-250n, 2), '-2.50');
  assert.equal(fromUnits(7n, 0), '7');
  // Beyond 2^53: BigInt keeps every digit.
  assert.equal(fromUnits(toUnits('12345678901234567.123456789', 9) ?? 0n, 9), '12345678901234567.123456789');
});

test('comparisons, grid checks and grouping', () => {
  assert.equal(decimalsOf('0.001'), 3);
  assert.equal(decimalsOf('5'), 0);
  assert.ok(compare('100.5', '100.50') === 0);
  assert.ok(compare('99.99', '100') < 0);
  assert.ok(compare('-1', '0') < 0);
  assert.ok(isMultipleOf('150.000', '0.001'));
  assert.ok(!isMultipleOf('150.0005', '0.001'));
  assert.ok(isMultipleOf('0.03', '0.01'));
  assert.ok(!isMultipleOf('0', '0.01'), 'zero is not a positive multiple');
  assert.equal(group('1234567.891'), '1\u2009234\u2009567.891');
  assert.equal(group('999'), '999');
});

test('products are exact', () => {
  assert.equal(multiply('150.000', '2.00'), '300');
  assert.equal(multiply('64000.5', '0.00120'), '76.8006');
  assert.equal(multiply('0.1', '0.2'), '0.02', 'no binary floating point');
  assert.equal(multiply('100', '3'), '300');
  assert.equal(multiply('1.5', 'x'), null);
});
