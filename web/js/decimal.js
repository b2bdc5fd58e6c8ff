// Exact decimal strings. The API sends prices and quantities as decimal strings; the page never
// turns money into floating point except to scale pixels on the chart. Arithmetic is done on
// BigInt "units" (the value times 10^decimals).

/**
 * Number of decimals of a decimal string ("0.001" -> 3, "5" -> 0).
 * @param {string} text
 * @returns {number}
 */
export function decimalsOf(text) {
  const dot = text.indexOf('.');
  return dot < 0 ? 0 : text.length - dot - 1;
}

/**
 * Parses a plain non-negative or negative decimal string into units of 10^-decimals. Returns null
 * when the text is not a plain decimal or has more decimals than `decimals` (nothing is rounded).
 * @param {string} text
 * @param {number} decimals
 * @returns {bigint | null}
 */
export function toUnits(text, decimals) {
  const match = /^(-?)(\d+)(?:\.(\d*))?$/.exec(String(text).trim());
  if (!match) return null;
  const [, sign, whole, fraction = ''] = match;
  const significant = fraction.replace(/0+$/, '');
  if (significant.length > decimals) return null;
  const units = BigInt(whole + fraction.padEnd(decimals, '0').slice(0, decimals));
  return sign ? -units : units;
}

/**
 * Formats units of 10^-decimals as a decimal string with exactly `decimals` decimals.
 * @param {bigint} units
 * @param {number} decimals
 * @returns {string}
 */
export function fromUnits(units, decimals) {
  const negative = units < 0n;
  const digits = (negative ? -units : units).toString().padStart(decimals + 1, '0');
  const whole = digits.slice(0, digits.length - decimals);
  const fraction = digits.slice(digits.length - decimals);
  return (negative ? '-' : '') + (decimals > 0 ? `${whole}.${fraction}` : whole);
}

/**
 * Compares two decimal strings exactly.
 * @param {string} a
 * @param {string} b
 * @returns {number} negative, zero or positive
 */
export function compare(a, b) {
  const decimals = Math.max(decimalsOf(a), decimalsOf(b));
  const x = toUnits(a, decimals);
  const y = toUnits(b, decimals);
  if (x === null || y === null) throw new Error(`not a decimal: ${a} / ${b}`);
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * True when `text` is a positive multiple of `step` (both decimal strings), exactly.
 * @param {string} text
 * @param {string} step
 * @returns {boolean}
 */
export function isMultipleOf(text, step) {
  const decimals = Math.max(decimalsOf(step), decimalsOf(text.trim()));
  const value = toUnits(text, decimals);
  const unit = toUnits(step, decimals);
  return value !== null && unit !== null && unit > 0n && value > 0n && value % unit === 0n;
}

/**
 * Groups the whole part of a decimal string with thin spaces for reading ("64000.5" -> "64 000.5").
 * @param {string} text
 * @returns {string}
 */
export function group(text) {
  const [whole, fraction] = text.split('.');
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, '\u2009');
  return fraction === undefined ? grouped : `${grouped}.${fraction}`;
}

/**
 * The exact product of two decimal strings (e.g. price × quantity), or null if one is not a
 * plain decimal. Trailing zeros of the fraction are trimmed ("150.000" × "2.00" -> "300").
 * @param {string} a
 * @param {string} b
 * @returns {string | null}
 */
export function multiply(a, b) {
  const da = decimalsOf(a.trim());
  const db = decimalsOf(b.trim());
  const x = toUnits(a, da);
  const y = toUnits(b, db);
  if (x === null || y === null) return null;
  const text = fromUnits(x * y, da + db);
  return text.includes('.') ? text.replace(/\.?0+$/, '') : text;
}

/**
 * Removes trailing fraction zeros ("300.500" -> "300.5", "2.000" -> "2").
 * @param {string} text
 * @returns {string}
 */
export function trimZeros(text) {
  return text.includes('.') ? text.replace(/\.?0+$/, '') : text;
}

/**
 * The units of two decimal strings at their common number of decimals.
 * @param {string} a
 * @param {string} b
 * @returns {{x: bigint, y: bigint, decimals: number} | null}
 */
function common(a, b) {
  const decimals = Math.max(decimalsOf(a.trim()), decimalsOf(b.trim()));
  const x = toUnits(a, decimals);
  const y = toUnits(b, decimals);
  return x === null || y === null ? null : { x, y, decimals };
}

/**
 * The exact sum of two decimal strings (trimmed), or null if one is not a plain decimal.
 * @param {string} a
 * @param {string} b
 * @returns {string | null}
 */
export function add(a, b) {
  const c = common(a, b);
  return c && trimZeros(fromUnits(c.x + c.y, c.decimals));
}

/**
 * The exact difference a - b (trimmed), or null if one is not a plain decimal.
 * @param {string} a
 * @param {string} b
 * @returns {string | null}
 */
export function subtract(a, b) {
  const c = common(a, b);
  return c && trimZeros(fromUnits(c.x - c.y, c.decimals));
}

/**
 * a / b rounded down to `decimals` decimals (both non-negative), or null when one is not a plain
 * decimal or b is zero. Used to turn a quote total into a quantity and for average prices.
 * @param {string} a
 * @param {string} b
 * @param {number} decimals
 * @returns {string | null}
 */
export function divideDown(a, b, decimals) {
  const c = common(a, b);
  if (!c || c.y === 0n) return null;
  return fromUnits((c.x * 10n ** BigInt(decimals)) / c.y, decimals);
}

/**
 * The largest multiple of `step` not above `text` (both non-negative), with the step's decimals;
 * null when one is not a plain decimal or the step is not positive.
 * @param {string} text
 * @param {string} step
 * @returns {string | null}
 */
export function floorToStep(text, step) {
  const c = common(text, step);
  if (!c || c.y <= 0n) return null;
  return fromUnits(toUnits(fromUnits((c.x / c.y) * c.y, c.decimals), decimalsOf(step)) ?? 0n, decimalsOf(step));
}

/**
 * `percent` % of a decimal string, rounded down to `decimals` decimals (e.g. 25 % of a balance).
 * @param {string} text
 * @param {number} percent an integer 0..100
 * @param {number} decimals
 * @returns {string | null}
 */
export function percentOf(text, percent, decimals) {
  const d = Math.max(decimals, decimalsOf(text.trim()));
  const units = toUnits(text, d);
  if (units === null) return null;
  const part = (units * BigInt(percent)) / 100n;
  return fromUnits(part / 10n ** BigInt(d - decimals), decimals);
}
