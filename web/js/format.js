// How the page shows times, numbers and names, in one place: every time is the browser's local
// time (labelled with its zone), every number is grouped the same way, and the API's identifiers
// (PartiallyFilled, SOL_USDC, Bid) become words.

import { group } from './decimal.js';

/**
 * A server time as ms since the epoch: a number of ms, or the API's UTC date-time text
 * ("2026-12-07 15:38:00" or "2026-12-07T15:38:40.123", without a zone: UTC).
 * @param {number | string | null | undefined} value
 * @returns {number} NaN when it cannot be read
 */
export function timeMs(value) {
  if (typeof value === 'number') return value;
  if (typeof value !== 'string' || !value) return NaN;
  const iso = value.replace(' ', 'T');
  return Date.parse(/[zZ]|[+-]\d\d:\d\d$/.test(iso) ? iso : `${iso}Z`);
}

/** @param {number} n @returns {string} two digits */
const two = (n) => String(n).padStart(2, '0');

/**
 * HH:MM:SS in local time.
 * @param {number} ms
 * @returns {string}
 */
export function clock(ms) {
  if (!Number.isFinite(ms)) return '–';
  const d = new Date(ms);
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/**
 * HH:MM in local time.
 * @param {number} ms
 * @returns {string}
 */
export function hourMinute(ms) {
  const d = new Date(ms);
  return `${two(d.getHours())}:${two(d.getMinutes())}`;
}

/**
 * YYYY-MM-DD HH:MM:SS in local time.
 * @param {number} ms
 * @returns {string}
 */
export function dateTime(ms) {
  if (!Number.isFinite(ms)) return '–';
  const d = new Date(ms);
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${clock(ms)}`;
}

/**
 * The local time zone's short name ("UTC", "GMT+1", "CET"), shown next to every time.
 * @returns {string}
 */
export function zoneName() {
  try {
    const part = new Intl.DateTimeFormat([], { timeZoneName: 'short' }).formatToParts(new Date()).find((p) => p.type === 'timeZoneName');
    return part?.value ?? 'local';
  } catch {
    return 'local';
  }
}

/**
 * An order status in words ("PartiallyFilled" -> "Partially filled").
 * @param {string} status
 * @returns {string}
 */
export function statusName(status) {
  const words = String(status ?? '').replace(/([a-z])([A-Z])/g, '$1 $2').toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/**
 * A market symbol for people ("SOL_USDC" -> "SOL/USDC").
 * @param {string} symbol
 * @returns {string}
 */
export const marketName = (symbol) => String(symbol ?? '').replace('_', '/');

/**
 * A side in words.
 * @param {string} side "Bid" or "Ask"
 * @returns {string}
 */
export const sideName = (side) => (side === 'Bid' ? 'Buy' : 'Sell');

/**
 * A decimal string for reading: grouped, with an optional unit ("1 234.5 USDC"); "–" if absent.
 * @param {string | null | undefined} text
 * @param {string} [unit]
 * @returns {string}
 */
export function amount(text, unit) {
  if (text === null || text === undefined || text === '') return '–';
  return unit ? `${group(String(text))} ${unit}` : group(String(text));
}
