// A hand-drawn candlestick chart on a canvas. Prices become floating point here and only here,
// to place pixels; labels print the API's own decimal strings.

/**
 * @typedef {object} Candle
 * @property {string} start "YYYY-MM-DD HH:MM:SS" (UTC)
 * @property {string} open
 * @property {string} high
 * @property {string} low
 * @property {string} close
 */

/**
 * Draws candles (oldest first) into the canvas, sized to its CSS box.
 * @param {HTMLCanvasElement} canvas
 * @param {Candle[]} candles
 * @param {string} emptyText shown when there are no candles
 */
export function drawChart(canvas, candles, emptyText) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  canvas.width = Math.max(1, Math.round(width * ratio));
  canvas.height = Math.max(1, Math.round(height * ratio));
  const g = canvas.getContext('2d');
  if (!g) return;
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  const style = getComputedStyle(canvas);
  const colour = (/** @type {string} */ name, /** @type {string} */ fallback) => style.getPropertyValue(name).trim() || fallback;
  const up = colour('--buy', '#1a7f37');
  const down = colour('--sell', '#c62828');
  const ink = colour('--muted', '#666');
  const grid = colour('--grid', '#e5e5e5');
  g.clearRect(0, 0, width, height);
  g.font = '11px system-ui, sans-serif';
  if (!candles.length) {
    g.fillStyle = ink;
    g.textAlign = 'center';
    g.fillText(emptyText, width / 2, height / 2);
    return;
  }
  const axis = 64;
  const top = 8;
  const bottom = 18;
  const plotWidth = width - axis - 4;
  const plotHeight = height - top - bottom;
  let low = Infinity;
  let high = -Infinity;
  for (const c of candles) {
    low = Math.min(low, Number(c.low));
    high = Math.max(high, Number(c.high));
  }
  if (high === low) {
    high += 1;
    low -= 1;
  }
  const pad = (high - low) * 0.08;
  high += pad;
  low -= pad;
  const y = (/** @type {string} */ price) => top + ((high - Number(price)) / (high - low)) * plotHeight;
  // Grid and price axis: four lines, labelled with the price of the nearest candle value.
  g.strokeStyle = grid;
  g.fillStyle = ink;
  g.textAlign = 'left';
  g.lineWidth = 1;
  const decimals = Math.max(...candles.map((c) => (c.close.split('.')[1] ?? '').length));
  for (let i = 0; i <= 4; i++) {
    const value = high - ((high - low) * i) / 4;
    const py = top + (plotHeight * i) / 4;
    g.beginPath();
    g.moveTo(0, Math.round(py) + 0.5);
    g.lineTo(plotWidth, Math.round(py) + 0.5);
    g.stroke();
    g.fillText(value.toFixed(decimals), plotWidth + 6, py + 4);
  }
  const slot = plotWidth / Math.max(candles.length, 30);
  const body = Math.max(1, slot * 0.6);
  candles.forEach((c, i) => {
    const x = i * slot + slot / 2;
    const rising = Number(c.close) >= Number(c.open);
    g.strokeStyle = g.fillStyle = rising ? up : down;
    g.beginPath();
    g.moveTo(Math.round(x) + 0.5, y(c.high));
    g.lineTo(Math.round(x) + 0.5, y(c.low));
    g.stroke();
    const y1 = y(rising ? c.close : c.open);
    const y2 = y(rising ? c.open : c.close);
    g.fillRect(x - body / 2, y1, body, Math.max(1, y2 - y1));
  });
  // Time labels: first and last candle start (HH:MM).
  g.fillStyle = ink;
  g.textAlign = 'left';
  g.fillText(candles[0].start.slice(11, 16), 0, height - 4);
  g.textAlign = 'right';
  const last = candles.length - 1;
  g.fillText(`${candles[last].start.slice(11, 16)} UTC  close ${candles[last].close}`, plotWidth, height - 4);
}

/**
 * Folds a live trade into the candles of `intervalSeconds` (the last one, or a new one).
 * @param {Candle[]} candles oldest first, modified in place
 * @param {number} intervalSeconds
 * @param {string} price
 * @param {number} timeMs trade time
 */
export function foldTrade(candles, intervalSeconds, price, timeMs) {
  const startSeconds = Math.floor(timeMs / 1000 / intervalSeconds) * intervalSeconds;
  const start = new Date(startSeconds * 1000).toISOString().slice(0, 19).replace('T', ' ');
  const last = candles[candles.length - 1];
  if (last && last.start === start) {
    if (Number(price) > Number(last.high)) last.high = price;
    if (Number(price) < Number(last.low)) last.low = price;
    last.close = price;
  } else if (!last || last.start < start) {
    candles.push({ start, open: price, high: price, low: price, close: price });
  }
}
