// A hand-drawn candlestick chart on a canvas: candles placed by their time on a time axis (local
// time), volume bars under them, a crosshair with a tooltip, and a vertical scale from percentiles
// of the candles so one outlier does not flatten the rest (its wick is clipped at the edge).
// Prices become floating point here and only here, to place pixels; labels print the API's own
// decimal strings where they show a candle.

import { clock, hourMinute, timeMs, zoneName } from './format.js';
import { add, group } from './decimal.js';

/**
 * @typedef {object} Candle
 * @property {string} start "YYYY-MM-DD HH:MM:SS" (UTC)
 * @property {string} open
 * @property {string} high
 * @property {string} low
 * @property {string} close
 * @property {string} [volume] base volume
 */

/** Fraction of candles whose extremes may fall outside the scale (each end). */
const OUTLIER_FRACTION = 0.05;
/** Narrowest time window, in intervals: a market's first candles are not drawn a chart wide. */
const SLOTS_MIN = 30;

/** Fewest candles for which the percentile scale applies (below: plain min and max). */
const ROBUST_MIN_CANDLES = 8;
/** Share of the plot's height given to volume bars. */
const VOLUME_SHARE = 0.2;
/** Most time labels on the axis. */
const TIME_LABELS_MAX = 8;

/**
 * The value at fraction `q` of sorted numbers (linear interpolation).
 * @param {number[]} sorted ascending
 * @param {number} q 0..1
 * @returns {number}
 */
function quantile(sorted, q) {
  const at = (sorted.length - 1) * q;
  const below = Math.floor(at);
  const above = Math.ceil(at);
  return sorted[below] + (sorted[above] - sorted[below]) * (at - below);
}

/**
 * The vertical range of the chart: from the 5th percentile of the lows to the 95th of the highs
 * (plain min and max for few candles), always including every open and close of the newest
 * candle, padded by 8 %. One stray print does not flatten the other candles.
 * @param {Candle[]} candles
 * @returns {{low: number, high: number}}
 */
export function robustRange(candles) {
  const lows = candles.map((c) => Number(c.low)).sort((a, b) => a - b);
  const highs = candles.map((c) => Number(c.high)).sort((a, b) => a - b);
  const robust = candles.length >= ROBUST_MIN_CANDLES;
  let low = robust ? quantile(lows, OUTLIER_FRACTION) : lows[0];
  let high = robust ? quantile(highs, 1 - OUTLIER_FRACTION) : highs[highs.length - 1];
  const last = candles[candles.length - 1];
  for (const value of [Number(last.open), Number(last.close)]) {
    low = Math.min(low, value);
    high = Math.max(high, value);
  }
  if (high === low) {
    const pad = Math.abs(high) * 0.01 || 1;
    return { low: low - pad, high: high + pad };
  }
  const pad = (high - low) * 0.08;
  return { low: low - pad, high: high + pad };
}

/**
 * Round times for the axis between two instants: steps of 1, 5, 15, 30 min, 1, 3, 6, 12 h or a
 * day, the smallest giving at most `max` labels; aligned to local time.
 * @param {number} fromMs
 * @param {number} toMs
 * @param {number} max
 * @returns {number[]} ms
 */
export function timeTicks(fromMs, toMs, max) {
  const minute = 60_000;
  const steps = [1, 5, 15, 30, 60, 180, 360, 720, 1440].map((m) => m * minute);
  const step = steps.find((s) => (toMs - fromMs) / s <= max) ?? steps[steps.length - 1];
  // Align to the local clock: offset of local time from UTC at the start.
  const offset = -new Date(fromMs).getTimezoneOffset() * minute;
  const first = Math.ceil((fromMs + offset) / step) * step - offset;
  const ticks = [];
  for (let t = first; t <= toMs; t += step) ticks.push(t);
  return ticks;
}

/** A chart bound to one canvas; redraws on {@link CandleChart.set}, resizes and pointer moves. */
export class CandleChart {
  /** @param {HTMLCanvasElement} canvas */
  constructor(canvas) {
    this.canvas = canvas;
    /** @type {Candle[]} */
    this.candles = [];
    this.intervalSeconds = 60;
    /** Candles shown at most: the window's widest width in intervals. */
    this.slots = 120;
    this.emptyText = 'No trades yet in this window';
    /** @type {{x: number, y: number} | null} pointer position in CSS pixels */
    this.pointer = null;
    /** @type {number} the window's end (ms) used by the last draw */
    this.endMs = Date.now();
    canvas.addEventListener('pointermove', (event) => {
      this.pointer = { x: event.offsetX, y: event.offsetY };
      this.draw();
    });
    canvas.addEventListener('pointerleave', () => {
      this.pointer = null;
      this.draw();
    });
  }

  /**
   * @param {Candle[]} candles oldest first
   * @param {number} intervalSeconds
   */
  set(candles, intervalSeconds) {
    this.candles = candles;
    this.intervalSeconds = intervalSeconds;
    this.draw();
  }

  /** Draws into the canvas, sized to its CSS box. */
  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    canvas.width = Math.max(1, Math.round(width * ratio));
    canvas.height = Math.max(1, Math.round(height * ratio));
    const g = canvas.getContext('2d');
    if (!g || width < 10 || height < 10) return;
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    const style = getComputedStyle(canvas);
    const colour = (/** @type {string} */ name, /** @type {string} */ fallback) => style.getPropertyValue(name).trim() || fallback;
    const up = colour('--buy', '#1a7f37');
    const down = colour('--sell', '#c62828');
    const ink = colour('--muted', '#666');
    const grid = colour('--grid', '#e5e5e5');
    const panel = colour('--panel', '#fff');
    const text = colour('--ink', '#111');
    g.clearRect(0, 0, width, height);
    g.font = '11px system-ui, sans-serif';
    const candles = this.candles;
    if (!candles.length) {
      g.fillStyle = ink;
      g.textAlign = 'center';
      g.fillText(this.emptyText, width / 2, height / 2);
      return;
    }
    const axis = 62;
    const top = 8;
    const bottom = 20;
    const plotWidth = width - axis - 4;
    const plotHeight = height - top - bottom;
    const priceHeight = plotHeight * (1 - VOLUME_SHARE);
    const intervalMs = this.intervalSeconds * 1000;
    // The time window: the last `slots` intervals up to the current one (candles by time), but
    // no wider than the candles there are (at least SLOTS_MIN), so a young market's few candles
    // fill the chart instead of huddling at its right edge.
    const lastStart = timeMs(candles[candles.length - 1].start);
    const endMs = Math.max(Math.floor(Date.now() / intervalMs) * intervalMs, lastStart) + intervalMs;
    const history = Math.ceil((endMs - timeMs(candles[0].start)) / intervalMs);
    const slots = Math.min(this.slots, Math.max(SLOTS_MIN, history));
    const startMs = endMs - slots * intervalMs;
    this.endMs = endMs;
    const slot = plotWidth / slots;
    const xOf = (/** @type {number} */ ms) => ((ms - startMs) / intervalMs) * slot;
    const { low, high } = robustRange(candles);
    const clamp = (/** @type {number} */ v) => Math.min(Math.max(v, top), top + priceHeight);
    const y = (/** @type {string | number} */ price) => clamp(top + ((high - Number(price)) / (high - low)) * priceHeight);
    const decimals = Math.max(...candles.map((c) => (c.close.split('.')[1] ?? '').length));

    // Grid and price axis.
    g.strokeStyle = grid;
    g.fillStyle = ink;
    g.lineWidth = 1;
    g.textAlign = 'left';
    for (let i = 0; i <= 4; i++) {
      const value = high - ((high - low) * i) / 4;
      const py = Math.round(top + (priceHeight * i) / 4) + 0.5;
      g.beginPath();
      g.moveTo(0, py);
      g.lineTo(plotWidth, py);
      g.stroke();
      g.fillText(group(value.toFixed(decimals)), plotWidth + 6, py + 4);
    }
    // Time axis: round local times, labelled with the zone once.
    g.textAlign = 'center';
    for (const t of timeTicks(startMs, endMs, Math.max(2, Math.min(TIME_LABELS_MAX, Math.floor(plotWidth / 70))))) {
      const px = Math.round(xOf(t)) + 0.5;
      g.beginPath();
      g.moveTo(px, top);
      g.lineTo(px, top + plotHeight);
      g.stroke();
      // A label centred within half a label of either edge would run into the zone's label or
      // off the canvas: its grid line is enough there.
      if (px > 18 && px < plotWidth - 18) g.fillText(hourMinute(t), px, height - 5);
    }
    g.textAlign = 'left';
    g.fillText(zoneName(), plotWidth + 6, height - 5);

    // Volume bars along the bottom of the plot.
    const volumes = candles.map((c) => Number(c.volume ?? 0));
    const maxVolume = Math.max(...volumes);
    const body = Math.max(1, slot * 0.7);
    if (maxVolume > 0) {
      g.globalAlpha = 0.35;
      candles.forEach((c, i) => {
        const h = (volumes[i] / maxVolume) * plotHeight * VOLUME_SHARE * 0.9;
        g.fillStyle = Number(c.close) >= Number(c.open) ? up : down;
        g.fillRect(xOf(timeMs(c.start)) + (slot - body) / 2, top + plotHeight - h, body, h);
      });
      g.globalAlpha = 1;
    }
    // Candles: wick and body; a wick beyond the scale ends at the edge.
    for (const c of candles) {
      const x = xOf(timeMs(c.start)) + slot / 2;
      if (x < 0) continue;
      const rising = Number(c.close) >= Number(c.open);
      g.strokeStyle = g.fillStyle = rising ? up : down;
      g.beginPath();
      g.moveTo(Math.round(x) + 0.5, y(c.high));
      g.lineTo(Math.round(x) + 0.5, y(c.low));
      g.stroke();
      const y1 = y(rising ? c.close : c.open);
      const y2 = y(rising ? c.open : c.close);
      g.fillRect(x - body / 2, y1, body, Math.max(1, y2 - y1));
    }

    // Crosshair and tooltip of the candle under the pointer.
    const pointer = this.pointer;
    if (pointer && pointer.x >= 0 && pointer.x <= plotWidth && pointer.y >= top && pointer.y <= top + plotHeight) {
      g.strokeStyle = ink;
      g.setLineDash([3, 3]);
      g.beginPath();
      g.moveTo(Math.round(pointer.x) + 0.5, top);
      g.lineTo(Math.round(pointer.x) + 0.5, top + plotHeight);
      g.moveTo(0, Math.round(pointer.y) + 0.5);
      g.lineTo(plotWidth, Math.round(pointer.y) + 0.5);
      g.stroke();
      g.setLineDash([]);
      if (pointer.y <= top + priceHeight) {
        const price = high - ((pointer.y - top) / priceHeight) * (high - low);
        g.fillStyle = text;
        g.fillRect(plotWidth + 2, pointer.y - 8, axis, 16);
        g.fillStyle = panel;
        g.fillText(group(price.toFixed(decimals)), plotWidth + 6, pointer.y + 4);
      }
      const at = startMs + Math.floor(pointer.x / slot) * intervalMs;
      const candle = candles.find((c) => timeMs(c.start) === at);
      const lines = candle
        ? [
            `${clock(at)} ${zoneName()}`,
            `O ${group(candle.open)}  H ${group(candle.high)}`,
            `L ${group(candle.low)}  C ${group(candle.close)}`,
            `Vol ${group(candle.volume ?? '0')}`,
          ]
        : [`${clock(at)} ${zoneName()}`, 'no trades'];
      const boxWidth = Math.max(...lines.map((l) => g.measureText(l).width)) + 12;
      const boxX = pointer.x + 12 + boxWidth > plotWidth ? pointer.x - 12 - boxWidth : pointer.x + 12;
      g.fillStyle = panel;
      g.strokeStyle = grid;
      g.fillRect(boxX, top + 4, boxWidth, lines.length * 14 + 8);
      g.strokeRect(boxX + 0.5, top + 4.5, boxWidth, lines.length * 14 + 8);
      g.fillStyle = text;
      lines.forEach((line, i) => g.fillText(line, boxX + 6, top + 18 + i * 14));
    }
  }
}

/**
 * Folds a live trade into the candles of `intervalSeconds` (the last one, or a new one).
 * @param {Candle[]} candles oldest first, modified in place
 * @param {number} intervalSeconds
 * @param {string} price
 * @param {string} quantity
 * @param {number} timeMs trade time
 */
export function foldTrade(candles, intervalSeconds, price, quantity, timeMs) {
  const startSeconds = Math.floor(timeMs / 1000 / intervalSeconds) * intervalSeconds;
  const start = new Date(startSeconds * 1000).toISOString().slice(0, 19).replace('T', ' ');
  const last = candles[candles.length - 1];
  if (last && last.start === start) {
    if (Number(price) > Number(last.high)) last.high = price;
    if (Number(price) < Number(last.low)) last.low = price;
    last.close = price;
    last.volume = add(last.volume ?? '0', quantity) ?? last.volume;
  } else if (!last || last.start < start) {
    candles.push({ start, open: price, high: price, low: price, close: price, volume: quantity });
  }
}
