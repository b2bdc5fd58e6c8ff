// The trading page: wires the REST client, the WebSocket streams, the order book, the chart and
// the AMM pool to the DOM. One market is shown at a time; one user may be logged in per browser
// tab. Times are local (labelled with the zone), amounts exact decimal strings (decimal.js).

import * as api from './api.js';
import { ApiError } from './api.js';
import { Applied, OrderBook } from './book.js';
import { CandleChart, foldTrade } from './chart.js';
import { compare, decimalsOf, divideDown, floorToStep, fromUnits, multiply, percentOf, toUnits, trimZeros } from './decimal.js';
import { amount, clock, dateTime, marketName, sideName, statusName, timeMs, zoneName } from './format.js';
import { StreamClient } from './ws.js';

/** @typedef {import('./api.js').Market} Market */
/** @typedef {import('./api.js').Session} Session */
/** @typedef {{id: number, price: string, quantity: string, timeMs: number, takerSide: 'Bid' | 'Ask'}} Trade */

const BOOK_LEVELS = 10;
const TRADES_KEPT = 50;
/** REST polling period while the WebSocket is down (ms). */
const POLL_MS = 2000;
const INTERVAL_SECONDS = /** @type {Record<string, number>} */ ({ '1m': 60, '5m': 300, '15m': 900, '1h': 3600 });
/** How long a notice stays (ms); errors stay longer. */
const TOAST_MS = 5000;
const TOAST_ERROR_MS = 9000;
/** Notices shown at once, at most (the oldest goes first). */
const TOASTS_MAX = 4;
/** A session token is renewed once this fraction of its remaining lifetime has passed. */
const RENEW_FRACTION = 0.5;
/** Retry period of a renewal that failed for a reason other than the session (ms). */
const RENEW_RETRY_MS = 2000;
/** Slippage allowed on a pool swap against its quote, percent. */
const SWAP_SLIPPAGE_PERCENT = 1;
/** The message shown once when a session ends. */
const SESSION_ENDED = 'Your session has ended. Log in again to trade.';

/**
 * @param {string} id
 * @returns {any} the element (the page's ids are fixed, so a missing one is a bug)
 */
const $ = (id) => {
  const element = document.getElementById(id);
  if (!element) throw new Error(`#${id} missing`);
  return element;
};

/** @param {unknown} text @returns {string} text safe inside HTML */
const esc = (text) =>
  String(text ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c);

/**
 * @param {unknown} error
 * @returns {string} what to tell the user: the API's message, with its code
 */
function describe(error) {
  if (error instanceof ApiError) return error.code && error.status ? `${error.message} (${error.code})` : error.message;
  return error instanceof Error ? error.message : String(error);
}

/**
 * Calls `fn` once, `ms` after the last call of the returned function.
 * @param {() => void} fn
 * @param {number} ms
 */
function debounce(fn, ms) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

class App {
  constructor() {
    /** @type {Market[]} */
    this.markets = [];
    /** @type {Market | null} */
    this.market = null;
    this.book = new OrderBook(0);
    /** @type {Trade[]} newest first */
    this.trades = [];
    /** @type {import('./chart.js').Candle[]} */
    this.candles = [];
    this.chart = new CandleChart($('chart'));
    /** @type {Session | null} */
    this.session = null;
    /** @type {Record<string, {available: string, locked: string}> | null} the user's balances */
    this.balances = null;
    /** @type {Record<string, number>} asset -> decimals of its smallest unit */
    this.assetDecimals = {};
    /** @type {Map<string, import('./api.js').Pool>} pools by market symbol */
    this.pools = new Map();
    this.demo = false;
    /** @type {Market | null} the market whose depth snapshot is being fetched */
    this.snapshotInFlight = null;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.poller = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.renewal = undefined;
    /** Which of quantity and total the user typed last (the other is derived from it). */
    this.lastEdited = /** @type {'quantity' | 'total'} */ ('quantity');
    /** Whether a book redraw is queued for the next animation frame. */
    this.bookFrameQueued = false;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    this.stream = new StreamClient(`${scheme}//${location.host}/`, {
      onFrame: (stream, data) => this.onFrame(stream, data),
      onOpen: () => this.onStreamOpen(),
      onDown: () => this.onStreamDown(),
      onError: (message) => this.toast(message, 'error'),
    });
    this.refreshAccountSoon = debounce(() => this.refreshAccount(), 250);
    this.resnapshotSoon = debounce(() => this.snapshot(), 100);
    this.redrawSoon = debounce(() => this.drawChart(), 100);
    this.tickerSoon = debounce(() => this.refreshTicker(), 1000);
    this.poolSoon = debounce(() => this.refreshPool(), 200);
    this.swapQuoteSoon = debounce(() => this.quoteSwap(), 250);
    // After trades seen through REST polling (no stream): the statistics and candles changed.
    this.marketStatsSoon = debounce(() => {
      this.refreshTicker();
      this.refreshChart();
    }, 500);
  }

  async start() {
    this.bindForms();
    for (const element of document.querySelectorAll('.zone')) element.textContent = `(${zoneName()})`;
    const [config, markets, assets] = await Promise.allSettled([api.pageConfig(), api.markets(), api.assets()]);
    this.demo = config.status === 'fulfilled' && Boolean(config.value?.demo);
    if (markets.status === 'rejected') {
      this.setConnection('down', `Cannot load markets: ${describe(markets.reason)}`);
      return;
    }
    this.markets = markets.value;
    if (assets.status === 'fulfilled') {
      for (const asset of assets.value) this.assetDecimals[asset.symbol] = decimalsOf(asset.tokens?.[0]?.minimumWithdrawal ?? '0');
    }
    await this.loadPools();
    const select = $('market');
    select.innerHTML = this.markets.map((m) => `<option value="${esc(m.symbol)}">${esc(m.baseSymbol)} / ${esc(m.quoteSymbol)}</option>`).join('');
    const wanted = new URLSearchParams(location.search).get('market') ?? sessionStorage.getItem('market');
    if (wanted && this.markets.some((m) => m.symbol === wanted)) select.value = wanted;
    const saved = sessionStorage.getItem('jwt');
    if (saved) {
      const session = /** @type {import('./api.js').JwtSession} */ (JSON.parse(saved));
      if (session.expiresAt && session.expiresAt <= Date.now()) {
        sessionStorage.removeItem('jwt');
        $('login-message').textContent = SESSION_ENDED;
      } else {
        this.setSession(session);
      }
    }
    await this.selectMarket(select.value);
    this.stream.open();
    // Until the stream is up (and whenever it is down) the page polls REST.
    this.startPolling();
    setInterval(() => this.refreshTicker(), 10_000);
    setInterval(() => this.refreshChart(), 30_000);
    window.addEventListener('resize', this.redrawSoon);
  }

  // ---- Market data ----

  /** @param {string} symbol */
  async selectMarket(symbol) {
    const market = this.markets.find((m) => m.symbol === symbol);
    if (!market) return;
    this.market = market;
    sessionStorage.setItem('market', symbol);
    document.title = `${market.baseSymbol}/${market.quoteSymbol} · Exchange`;
    this.book = new OrderBook(decimalsOf(market.filters.price.tickSize));
    this.trades = [];
    this.candles = [];
    this.clearToasts(symbol);
    this.resetOrderForm();
    this.renderBook();
    this.renderTrades();
    this.renderFormHints();
    const streams = [`depth.${symbol}`, `trade.${symbol}`];
    if (this.pools.has(symbol)) streams.push(`amm.${symbol}`);
    this.stream.setStreams(streams);
    this.renderPool();
    await Promise.all([this.snapshot(), this.loadTrades(true), this.refreshTicker(), this.refreshChart(), this.refreshAccount(), this.refreshPool()]);
  }

  /** Loads the REST depth snapshot; WebSocket diffs received meanwhile are applied over it. */
  async snapshot() {
    const market = this.market;
    if (!market || this.snapshotInFlight === market) return;
    this.snapshotInFlight = market;
    try {
      const snapshot = await api.depth(market.symbol);
      if (market !== this.market) return;
      if (this.book.loadSnapshot(snapshot) === Applied.GAP) this.resnapshotSoon();
      this.renderBook();
    } catch (error) {
      $('spread').textContent = `Order book unavailable: ${describe(error)}`;
    } finally {
      if (this.snapshotInFlight === market) this.snapshotInFlight = null;
    }
  }

  /** @param {boolean} [initial] the first load for this market (nothing is new then) */
  async loadTrades(initial = false) {
    const market = this.market;
    if (!market) return;
    try {
      const trades = await api.trades(market.symbol, TRADES_KEPT);
      if (market !== this.market) return;
      let added = false;
      for (const t of trades) {
        added = this.addTrade({ id: t.id, price: t.price, quantity: t.quantity, timeMs: t.timestamp, takerSide: t.isBuyerMaker ? 'Ask' : 'Bid' }) || added;
      }
      this.renderTrades();
      if (added && !initial) {
        this.marketStatsSoon();
        if (this.session) this.refreshAccountSoon();
      }
    } catch {
      // The feed stays as it was; the next poll or stream frame retries.
    }
  }

  /** @param {Trade} trade @returns {boolean} whether it was new */
  addTrade(trade) {
    if (this.trades.some((t) => t.id === trade.id)) return false;
    this.trades.push(trade);
    this.trades.sort((a, b) => b.id - a.id);
    this.trades.length = Math.min(this.trades.length, TRADES_KEPT);
    return true;
  }

  async refreshTicker() {
    const market = this.market;
    if (!market) return;
    try {
      const t = await api.ticker(market.symbol);
      if (market !== this.market) return;
      const percent = (Number(t.priceChangePercent) * 100).toFixed(2);
      $('ticker-last').textContent = amount(t.lastPrice);
      const change = $('ticker-change');
      change.textContent = `${amount(t.priceChange)} (${percent} %)`;
      change.dataset.sign = String(t.priceChange ?? '').startsWith('-') ? 'down' : 'up';
      $('ticker-high').textContent = amount(t.high);
      $('ticker-low').textContent = amount(t.low);
      $('ticker-volume').textContent = amount(t.volume, market.baseSymbol);
    } catch {
      // Statistics are optional.
    }
  }

  async refreshChart() {
    const market = this.market;
    if (!market) return;
    const interval = $('interval').value;
    const seconds = INTERVAL_SECONDS[interval] ?? 60;
    try {
      const candles = await api.klines(market.symbol, interval, Math.floor(Date.now() / 1000) - seconds * 120);
      if (market !== this.market) return;
      this.candles = candles;
    } catch {
      // Keep the candles we have.
    }
    this.drawChart();
  }

  drawChart() {
    this.chart.set(this.candles, INTERVAL_SECONDS[$('interval').value] ?? 60);
  }

  /**
   * One WebSocket frame.
   * @param {string} stream
   * @param {any} data
   */
  onFrame(stream, data) {
    const symbol = this.market?.symbol;
    if (stream === `depth.${symbol}` && data?.e === 'depthSnapshot') {
      // After a lag the server resynchronises the stream with a full book: replace ours.
      this.book.reset();
      this.book.loadSnapshot({ asks: data.a, bids: data.b, lastUpdateId: String(data.u) });
      this.renderBookSoon();
    } else if (stream === `depth.${symbol}`) {
      const result = this.book.applyDiff(data);
      if (result === Applied.GAP) {
        this.book.reset();
        this.resnapshotSoon();
      } else if (result === Applied.APPLIED) {
        this.renderBookSoon();
      }
    } else if (stream === `trade.${symbol}`) {
      const trade = { id: Number(data.t), price: data.p, quantity: data.q, timeMs: Math.floor(Number(data.T) / 1000), takerSide: data.m ? 'Ask' : 'Bid' };
      if (this.addTrade(/** @type {Trade} */ (trade))) {
        this.renderTrades();
        foldTrade(this.candles, INTERVAL_SECONDS[$('interval').value] ?? 60, trade.price, trade.quantity, trade.timeMs);
        this.redrawSoon();
        $('ticker-last').textContent = amount(trade.price);
        this.tickerSoon();
        // The trade may be ours: a resting order of this user may have been filled.
        if (this.session) this.refreshAccountSoon();
      }
    } else if (stream === `amm.${symbol}`) {
      this.poolSoon();
      if (this.session) this.refreshAccountSoon();
    } else if (stream === 'account.balanceUpdate') {
      // Live balances: a, f, l = asset, available, locked after the change.
      if (this.balances && typeof data?.a === 'string') {
        this.balances[data.a] = { available: data.f, locked: data.l };
        this.renderBalances(this.balances);
        this.updateOrderForm();
      }
    } else if (stream.startsWith('account.')) {
      // Backpack's order update: e event, s symbol, i order id, S side, l / L last fill quantity / price.
      if (data?.e === 'orderFill') {
        const market = this.markets.find((m) => m.symbol === data.s);
        const verb = data.S === 'Bid' ? 'Bought' : 'Sold';
        this.toast(`${verb} ${amount(data.l, market?.baseSymbol)} at ${amount(data.L, market?.quoteSymbol)} on ${marketName(data.s)}.`, 'ok', data.s);
      }
      this.refreshAccountSoon();
    }
  }

  onStreamOpen() {
    this.setConnection('live', 'Live');
    this.stopPolling();
    // Everything the stream carried while we were away is lost: start again from REST.
    this.book.reset();
    this.snapshot();
    this.loadTrades();
    this.refreshAccountSoon();
  }

  onStreamDown() {
    this.setConnection('down', 'Stream down: polling, reconnecting…');
    this.startPolling();
  }

  startPolling() {
    if (this.poller !== undefined) return;
    this.poller = setInterval(() => {
      if (this.stream.connected) return this.stopPolling();
      this.book.reset();
      this.snapshot();
      this.loadTrades();
      this.refreshAccount();
    }, POLL_MS);
  }

  stopPolling() {
    clearInterval(this.poller);
    this.poller = undefined;
  }

  /** @param {'live' | 'down' | 'connecting'} state @param {string} text */
  setConnection(state, text) {
    const element = $('connection');
    element.dataset.state = state;
    element.textContent = text;
  }

  /** Redraws the book at the next animation frame, once however many diffs arrive before it. */
  renderBookSoon() {
    if (this.bookFrameQueued) return;
    this.bookFrameQueued = true;
    requestAnimationFrame(() => {
      this.bookFrameQueued = false;
      this.renderBook();
    });
  }

  renderBook() {
    const market = this.market;
    const asks = this.book.levels('asks', BOOK_LEVELS);
    const bids = this.book.levels('bids', BOOK_LEVELS);
    const stepDecimals = market ? decimalsOf(market.filters.quantity.stepSize) : 0;
    const rows = (/** @type {import('./book.js').Level[]} */ levels, /** @type {string} */ side) => {
      // Cumulative sizes, exactly, in step units; bar widths only become floats.
      let total = 0n;
      const withTotals = levels.map(([price, quantity]) => {
        total += toUnits(quantity, stepDecimals) ?? 0n;
        return { price, quantity, total };
      });
      const max = withTotals.length ? Number(withTotals[withTotals.length - 1].total) || 1 : 1;
      return withTotals.map(
        ({ price, quantity, total: sum }) =>
          `<tr data-depth="${((Number(sum) / max) * 100).toFixed(1)}%"><td><button type="button" class="price ${side}" data-price="${esc(price)}" aria-label="Use price ${esc(price)}">${esc(amount(price))}</button></td><td>${esc(amount(quantity))}</td><td>${esc(amount(trimZeros(fromUnits(sum, stepDecimals))))}</td></tr>`,
      );
    };
    $('asks').innerHTML = rows(asks, 'sell').reverse().join('') || '<tr><td colspan="3" class="empty">No asks</td></tr>';
    $('bids').innerHTML = rows(bids, 'buy').join('') || '<tr><td colspan="3" class="empty">No bids</td></tr>';
    // Depth bars: set through the CSSOM (the page's Content-Security-Policy forbids style attributes).
    for (const row of document.querySelectorAll('#book tr[data-depth]')) {
      /** @type {HTMLElement} */ (row).style.setProperty('--depth', /** @type {HTMLElement} */ (row).dataset.depth ?? '0%');
    }
    const sm = this.book.spreadAndMid();
    $('spread').textContent = sm ? `Spread ${amount(sm.spread)} · Mid ${amount(sm.mid)}` : 'Spread –';
    // A market order's estimate follows the book.
    if (!$('type-limit').checked) this.updateOrderForm();
  }

  renderTrades() {
    $('trades').innerHTML =
      this.trades
        .map((t) => `<tr><td class="${t.takerSide === 'Bid' ? 'buy' : 'sell'}">${esc(amount(t.price))}</td><td>${esc(amount(t.quantity))}</td><td>${esc(clock(t.timeMs))}</td></tr>`)
        .join('') || '<tr><td colspan="3" class="empty">No trades yet</td></tr>';
  }

  renderFormHints() {
    const market = this.market;
    if (!market) return;
    $('price-unit').textContent = market.quoteSymbol;
    $('quantity-unit').textContent = market.baseSymbol;
    $('total-unit').textContent = market.quoteSymbol;
    $('price-hint').textContent = `Tick ${market.filters.price.tickSize}`;
    $('trigger-unit').textContent = market.quoteSymbol;
    $('quantity-hint').textContent = `Step ${market.filters.quantity.stepSize}, min ${market.filters.quantity.minQuantity}`;
    $('swap-unit').textContent = market.baseSymbol;
    $('liq-base-unit').textContent = market.baseSymbol;
    $('liq-quote-unit').textContent = market.quoteSymbol;
    this.updateOrderForm();
  }

  // ---- Notices ----

  /**
   * Shows a notice that dismisses itself (errors stay longer), scoped to a market when given:
   * switching markets removes the other market's notices.
   * @param {string} text
   * @param {'error' | 'ok'} [kind]
   * @param {string | null} [scope] market symbol; default: the current market
   */
  toast(text, kind = 'ok', scope = this.market?.symbol ?? null) {
    const box = $('toasts');
    const toast = document.createElement('div');
    toast.className = 'toast';
    toast.dataset.kind = kind;
    if (scope) toast.dataset.market = scope;
    if (kind === 'error') toast.setAttribute('role', 'alert');
    const message = document.createElement('span');
    message.textContent = text;
    const close = document.createElement('button');
    close.type = 'button';
    close.textContent = '×';
    close.setAttribute('aria-label', 'Dismiss');
    close.addEventListener('click', () => toast.remove());
    toast.append(message, close);
    box.append(toast);
    while (box.children.length > TOASTS_MAX) box.firstElementChild?.remove();
    setTimeout(() => toast.remove(), kind === 'error' ? TOAST_ERROR_MS : TOAST_MS);
  }

  /** @param {string} symbol the market now shown: notices of other markets go */
  clearToasts(symbol) {
    for (const toast of document.querySelectorAll('#toasts .toast[data-market]')) {
      if (/** @type {HTMLElement} */ (toast).dataset.market !== symbol) toast.remove();
    }
  }

  // ---- Account ----

  /** @param {Session | null} session */
  setSession(session) {
    this.session = session;
    const loggedIn = session !== null;
    $('login-form').hidden = loggedIn;
    $('order-form').hidden = !loggedIn;
    $('balances-section').hidden = !loggedIn;
    $('account-bar').hidden = !loggedIn;
    $('faucet').hidden = !(loggedIn && this.demo);
    $('pool-login').hidden = loggedIn;
    $('swap-submit').disabled = !loggedIn;
    $('liq-add').disabled = !loggedIn;
    $('liq-remove').disabled = !loggedIn;
    $('cancel-all').disabled = !loggedIn;
    $('username').textContent = session ? session.username : '';
    if (loggedIn) $('login-message').textContent = '';
    if (session?.kind === 'jwt') sessionStorage.setItem('jwt', JSON.stringify(session));
    else sessionStorage.removeItem('jwt');
    this.balances = null;
    this.scheduleRenewal();
    this.stream.setPrivate(['account.orderUpdate', 'account.balanceUpdate'], session ? () => this.privateAuth() : null);
    if (!loggedIn) {
      for (const id of ['open-orders', 'order-history', 'fills', 'balances']) $(id).innerHTML = '';
      $('pool-shares').textContent = '–';
      $('available').textContent = '';
    }
  }

  /** Ends the session (expired or refused) with one message, however many requests saw it. */
  endSession() {
    if (!this.session) return;
    this.setSession(null);
    $('login-message').textContent = SESSION_ENDED;
    this.showPanel('order-form-panel');
  }

  /**
   * Renews a JWT session before it expires: after {@link RENEW_FRACTION} of its remaining
   * lifetime, again and again while the page is open (the server bounds a session's total age).
   */
  scheduleRenewal() {
    clearTimeout(this.renewal);
    const session = this.session;
    if (session?.kind !== 'jwt' || !session.expiresAt) return;
    const remaining = session.expiresAt - Date.now();
    this.renewal = setTimeout(() => this.renew(session), Math.max(0, remaining * RENEW_FRACTION));
  }

  /** @param {import('./api.js').JwtSession} session */
  async renew(session) {
    if (session !== this.session) return;
    try {
      const renewed = await api.refresh(session);
      if (session !== this.session) return;
      // In place: requests in flight keep matching `this.session` (they compare identities).
      Object.assign(session, renewed);
      sessionStorage.setItem('jwt', JSON.stringify(session));
      this.scheduleRenewal();
    } catch (error) {
      if (session !== this.session) return;
      if ((error instanceof ApiError && error.status === 401) || Date.now() >= session.expiresAt) {
        this.endSession();
      } else {
        // Unreachable for now: try again while the token is still valid.
        this.renewal = setTimeout(() => this.renew(session), RENEW_RETRY_MS);
      }
    }
  }

  /** @returns {Promise<import('./ws.js').PrivateAuth>} */
  async privateAuth() {
    const session = this.session;
    if (!session) throw new Error('not logged in');
    if (session.kind === 'jwt') return { jwt: session.token };
    const timestamp = Date.now();
    const signed = `instruction=subscribe&timestamp=${timestamp}&window=5000`;
    const signature = await crypto.subtle.sign({ name: 'Ed25519' }, session.privateKey, new TextEncoder().encode(signed));
    return { signature: [session.apiKey, btoa(String.fromCharCode(...new Uint8Array(signature))), String(timestamp), '5000'] };
  }

  /** Reloads balances, orders, order history and fills of the logged-in user, and pool shares. */
  async refreshAccount() {
    const session = this.session;
    const market = this.market;
    if (!session || !market) return;
    const scope = $('all-markets').checked ? undefined : market.symbol;
    const [balances, orders, history, fills, shares] = await Promise.allSettled([
      api.balances(session),
      api.openOrders(session, scope),
      api.orderHistory(session, scope),
      api.fills(session, scope),
      this.pools.has(market.symbol) ? api.shares(session, market.symbol) : Promise.resolve([]),
    ]);
    if (session !== this.session || market !== this.market) return;
    const refused = [balances, orders, history, fills].some((r) => r.status === 'rejected' && r.reason instanceof ApiError && r.reason.status === 401);
    if (refused) return this.endSession();
    if (balances.status === 'fulfilled') {
      this.balances = balances.value;
      this.renderBalances(balances.value);
      this.updateOrderForm();
    }
    if (orders.status === 'fulfilled') this.renderOpenOrders(orders.value);
    if (history.status === 'fulfilled') this.renderOrderHistory(history.value);
    else $('order-history').innerHTML = `<tr><td colspan="8" class="empty">${esc(describe(history.reason))}</td></tr>`;
    if (fills.status === 'fulfilled') this.renderFills(fills.value);
    else $('fills').innerHTML = `<tr><td colspan="7" class="empty">${esc(describe(fills.reason))}</td></tr>`;
    if (shares.status === 'fulfilled') {
      const mine = shares.value.find((s) => s.symbol === market.symbol);
      $('pool-shares').textContent = mine
        ? `${amount(mine.shares)} (≈ ${amount(mine.baseQuantity, market.baseSymbol)} + ${amount(mine.quoteQuantity, market.quoteSymbol)})`
        : '0';
    }
  }

  /** @param {Record<string, {available: string, locked: string}>} balances */
  renderBalances(balances) {
    const assets = Object.keys(balances).sort();
    $('balances').innerHTML =
      assets
        .map((asset) => `<tr data-asset="${esc(asset)}"><th scope="row">${esc(asset)}</th><td class="available">${esc(amount(balances[asset].available))}</td><td class="locked">${esc(amount(balances[asset].locked))}</td></tr>`)
        .join('') || `<tr><td colspan="3" class="empty">No funds yet${this.demo ? ': use "Get test funds"' : ''}</td></tr>`;
  }

  /**
   * @param {string} symbol
   * @returns {Market | undefined}
   */
  marketOf(symbol) {
    return this.markets.find((m) => m.symbol === symbol);
  }

  /** @param {import('./api.js').Order[]} orders */
  renderOpenOrders(orders) {
    $('open-orders').innerHTML =
      orders
        .map((o) => {
          const m = this.marketOf(o.symbol);
          return (
            `<tr data-order-id="${esc(o.id)}" data-symbol="${esc(o.symbol)}"><td>${esc(dateTime(timeMs(o.createdAt)))}</td><td>${esc(marketName(o.symbol))}</td><td class="${o.side === 'Bid' ? 'buy' : 'sell'}">${sideName(o.side)}</td>` +
            `<td>${esc(o.price ? amount(o.price, m?.quoteSymbol) : 'Market')}</td><td>${esc(amount(o.triggerPrice, m?.quoteSymbol))}</td><td>${esc(amount(o.quantity, m?.baseSymbol))}</td><td>${esc(amount(o.executedQuantity))}</td><td>${esc(statusName(o.status))}</td>` +
            `<td><button type="button" class="cancel" data-order-id="${esc(o.id)}" data-symbol="${esc(o.symbol)}" aria-label="Cancel order ${esc(o.id)}">Cancel</button></td></tr>`
          );
        })
        .join('') || '<tr><td colspan="9" class="empty">No open orders</td></tr>';
  }

  /** @param {Array<import('./api.js').Order & {orderType: string, createdAt: string | number}>} orders */
  renderOrderHistory(orders) {
    $('order-history').innerHTML =
      orders
        .map((o) => {
          const m = this.marketOf(o.symbol);
          return (
            `<tr data-order-id="${esc(o.id)}"><td>${esc(dateTime(timeMs(o.createdAt)))}</td><td>${esc(marketName(o.symbol))}</td><td class="${o.side === 'Bid' ? 'buy' : 'sell'}">${sideName(o.side)}</td>` +
            `<td>${esc(o.orderType)}</td><td>${esc(o.price ? amount(o.price, m?.quoteSymbol) : 'Market')}</td><td>${esc(amount(o.quantity, m?.baseSymbol))}</td><td>${esc(amount(o.executedQuantity))}</td><td>${esc(statusName(o.status))}</td></tr>`
          );
        })
        .join('') || '<tr><td colspan="8" class="empty">No orders yet</td></tr>';
  }

  /** @param {Array<Record<string, any>>} fills */
  renderFills(fills) {
    $('fills').innerHTML =
      fills
        .map((f) => {
          const buy = f.side === 'Bid';
          const m = this.marketOf(f.symbol);
          return `<tr><td>${esc(dateTime(timeMs(f.timestamp)))}</td><td>${esc(marketName(f.symbol))}</td><td class="${buy ? 'buy' : 'sell'}">${sideName(f.side)}</td><td>${esc(amount(f.price, m?.quoteSymbol))}</td><td>${esc(amount(f.quantity, m?.baseSymbol))}</td><td>${esc(amount(f.fee, f.feeSymbol ?? ''))}</td><td>${f.isMaker ? 'Maker' : 'Taker'}</td></tr>`;
        })
        .join('') || '<tr><td colspan="7" class="empty">No fills yet</td></tr>';
  }

  // ---- Panels (narrow screens show one at a time) ----

  /** @param {string} id the panel to show */
  showPanel(id) {
    for (const button of document.querySelectorAll('#panel-nav button')) {
      const panel = /** @type {HTMLElement} */ (button).dataset.panel ?? '';
      button.setAttribute('aria-pressed', String(panel === id));
      $(panel).classList.toggle('active', panel === id);
    }
    if (id === 'chart-panel') this.drawChart();
  }

  /** @returns {boolean} whether the page shows one panel at a time */
  get narrow() {
    return getComputedStyle($('panel-nav')).display !== 'none';
  }

  // ---- Forms ----

  bindForms() {
    $('market').addEventListener('change', (/** @type {Event} */ e) => this.selectMarket(/** @type {HTMLSelectElement} */ (e.target).value));
    $('interval').addEventListener('change', () => this.refreshChart());
    $('panel-nav').addEventListener('click', (/** @type {MouseEvent} */ e) => {
      const button = /** @type {HTMLElement} */ (e.target).closest('button[data-panel]');
      if (button instanceof HTMLElement && button.dataset.panel) this.showPanel(button.dataset.panel);
    });
    $('login-form').addEventListener('submit', (/** @type {SubmitEvent} */ e) => {
      e.preventDefault();
      this.authenticate(() => api.login($('login-username').value.trim(), $('login-password').value));
    });
    $('register-submit').addEventListener('click', () => {
      const form = $('login-form');
      if (!form.reportValidity()) return;
      this.authenticate(() => api.register($('login-username').value.trim(), $('login-password').value));
    });
    $('key-submit').addEventListener('click', () => this.authenticate(() => api.keySession($('api-secret').value)));
    $('logout').addEventListener('click', () => {
      this.setSession(null);
      $('login-username').focus();
    });
    $('order-form').addEventListener('input', (/** @type {Event} */ e) => {
      const id = /** @type {HTMLElement} */ (e.target).id;
      if (id === 'quantity' || id === 'total') this.lastEdited = id;
      this.updateOrderForm(id);
    });
    $('order-form').addEventListener('submit', (/** @type {SubmitEvent} */ e) => {
      e.preventDefault();
      this.submitOrder();
    });
    $('order-form').addEventListener('click', (/** @type {MouseEvent} */ e) => {
      const button = /** @type {HTMLElement} */ (e.target).closest('button[data-percent]');
      if (button instanceof HTMLElement) this.applyPercent(Number(button.dataset.percent));
    });
    $('post-only').addEventListener('change', () => {
      if ($('post-only').checked) $('ioc').checked = false;
    });
    $('ioc').addEventListener('change', () => {
      if ($('ioc').checked) $('post-only').checked = false;
    });
    $('book').addEventListener('click', (/** @type {MouseEvent} */ e) => {
      const button = /** @type {HTMLElement} */ (e.target).closest('button[data-price]');
      if (button instanceof HTMLElement && button.dataset.price) {
        $('price').value = button.dataset.price;
        $('type-limit').checked = true;
        this.updateOrderForm('price');
        if (this.narrow && this.session) this.showPanel('order-form-panel');
      }
    });
    $('open-orders').addEventListener('click', (/** @type {MouseEvent} */ e) => {
      const button = /** @type {HTMLElement} */ (e.target).closest('button.cancel');
      if (button instanceof HTMLButtonElement) this.cancel(button);
    });
    $('cancel-all').addEventListener('click', () => this.cancelAll());
    $('all-markets').addEventListener('change', () => this.refreshAccount());
    $('faucet').addEventListener('click', () => this.faucet());
    $('swap-form').addEventListener('input', () => this.swapQuoteSoon());
    $('swap-form').addEventListener('submit', (/** @type {SubmitEvent} */ e) => {
      e.preventDefault();
      this.submitSwap();
    });
    $('liq-base').addEventListener('input', () => this.matchLiquidity());
    $('liquidity-form').addEventListener('submit', (/** @type {SubmitEvent} */ e) => {
      e.preventDefault();
      this.addLiquidity();
    });
    $('liq-remove').addEventListener('click', () => this.removeLiquidity());
    const tabs = [$('tab-open'), $('tab-history'), $('tab-fills')];
    const select = (/** @type {HTMLElement} */ tab) => {
      for (const t of tabs) {
        const selected = t === tab;
        t.setAttribute('aria-selected', String(selected));
        t.tabIndex = selected ? 0 : -1;
        $(t.getAttribute('aria-controls')).hidden = !selected;
      }
      tab.focus();
    };
    for (const tab of tabs) {
      tab.addEventListener('click', () => select(tab));
      tab.addEventListener('keydown', (/** @type {KeyboardEvent} */ e) => {
        const step = e.key === 'ArrowRight' ? 1 : e.key === 'ArrowLeft' ? tabs.length - 1 : 0;
        if (step) select(tabs[(tabs.indexOf(tab) + step) % tabs.length]);
      });
    }
  }

  /** @param {() => Promise<Session>} how */
  async authenticate(how) {
    const buttons = ['login-submit', 'register-submit', 'key-submit'].map($);
    buttons.forEach((b) => (b.disabled = true));
    $('login-message').textContent = '';
    try {
      const session = await how();
      this.setSession(session);
      $('login-password').value = '';
      $('api-secret').value = '';
      await this.refreshAccount();
      $('quantity').focus();
    } catch (error) {
      $('login-message').textContent = describe(error);
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  }

  /** A new market starts with an empty form: buy, limit, nothing typed. */
  resetOrderForm() {
    $('side-buy').checked = true;
    $('type-limit').checked = true;
    for (const id of ['price', 'trigger-price', 'quantity', 'total', 'swap-quantity', 'liq-base', 'liq-quote', 'liq-shares']) $(id).value = '';
    $('post-only').checked = false;
    $('ioc').checked = false;
    $('swap-buy').checked = true;
    $('swap-quote').textContent = '';
    this.lastEdited = 'quantity';
  }

  /**
   * @param {string} asset
   * @returns {string | null} the user's available balance of `asset` ("0" when none)
   */
  available(asset) {
    if (!this.balances) return null;
    return this.balances[asset]?.available ?? '0';
  }

  /**
   * Keeps the form consistent after an edit: price x quantity <-> total for limit orders, the
   * book's estimate for market orders, the available balance of the side's asset.
   * @param {string} [changed] id of the field the user changed
   */
  updateOrderForm(changed) {
    const market = this.market;
    const buy = $('side-buy').checked;
    const limit = $('type-limit').checked;
    $('price-field').hidden = !limit;
    $('limit-options').hidden = !limit;
    const submit = $('order-submit');
    submit.textContent = `${buy ? 'Buy' : 'Sell'} ${market ? market.baseSymbol : ''}`;
    submit.classList.toggle('buy', buy);
    submit.classList.toggle('sell', !buy);
    if (!market) return;
    const asset = buy ? market.quoteSymbol : market.baseSymbol;
    const available = this.available(asset);
    $('available').textContent = available === null ? '' : `Available ${amount(available, asset)}`;
    const step = market.filters.quantity.stepSize;
    const price = $('price').value.trim();
    const quantity = $('quantity').value.trim();
    const total = $('total').value.trim();
    let note = '';
    if (limit) {
      if (this.lastEdited === 'total' && changed !== 'quantity') {
        const derived = price && total ? divideDown(total, price, decimalsOf(step)) : null;
        const stepped = derived === null ? null : floorToStep(derived, step);
        if (changed) $('quantity').value = stepped ?? '';
        if (stepped) note = `Total ${amount(multiply(price, stepped), market.quoteSymbol)} for ${amount(stepped, market.baseSymbol)}, before fees`;
      } else {
        const product = price && quantity ? multiply(price, quantity) : null;
        if (changed && changed !== 'total') $('total').value = product ?? '';
        if (product) note = `Total ${amount(product, market.quoteSymbol)} before fees`;
      }
    } else {
      const side = buy ? 'Bid' : 'Ask';
      const byTotal = this.lastEdited === 'total';
      if (changed === 'type-market' || changed === 'quantity') $('total').value = byTotal ? total : '';
      if (changed === 'total') $('quantity').value = '';
      const estimate = byTotal ? (total ? this.book.estimate(side, { quote: total }, step) : null) : quantity ? this.book.estimate(side, { quantity }, step) : null;
      if (estimate && estimate.average) {
        note =
          `Estimate: ${amount(trimZeros(estimate.quantity), market.baseSymbol)} at ≈ ${amount(estimate.average, market.quoteSymbol)} average, ` +
          `total ≈ ${amount(estimate.total, market.quoteSymbol)} before fees${estimate.complete ? '' : ' (the book is thinner than this)'}`;
      } else if (estimate) {
        note = 'Estimate: the book has nothing on this side';
      }
    }
    $('order-total').textContent = note;
    $('trigger-hint').textContent = this.triggerHint(buy, $('trigger-price').value.trim());
  }

  /**
   * What a trigger price means next to the last trade price (docs/rest-api.md, trigger orders):
   * the order waits, reserving nothing, until the last trade crosses it; a buy above the market
   * (a sell below it) is a stop, the other way round a take-profit.
   * @param {boolean} buy
   * @param {string} trigger the typed trigger price ('' for none)
   * @returns {string}
   */
  triggerHint(buy, trigger) {
    const last = this.trades[0]?.price;
    if (!trigger) return 'Empty: the order is placed now';
    let side = 0;
    try {
      side = last ? compare(trigger, last) : 0;
    } catch {
      return '';
    }
    const waits = 'Placed when the last trade crosses it; nothing is reserved until then';
    if (!last || side === 0) return waits;
    const stop = buy ? side > 0 : side < 0;
    return `${stop ? 'Stop' : 'Take-profit'} ${buy ? 'buy' : 'sell'} (${side > 0 ? 'above' : 'below'} the last price ${amount(last)}). ${waits}`;
  }

  /** @param {number} percent part of the available balance to use */
  applyPercent(percent) {
    const market = this.market;
    if (!market) return;
    const buy = $('side-buy').checked;
    const limit = $('type-limit').checked;
    const step = market.filters.quantity.stepSize;
    const asset = buy ? market.quoteSymbol : market.baseSymbol;
    const available = this.available(asset);
    if (available === null) return;
    if (!buy) {
      const part = percentOf(available, percent, decimalsOf(step));
      $('quantity').value = part === null ? '' : (floorToStep(part, step) ?? '');
      this.lastEdited = 'quantity';
      this.updateOrderForm('quantity');
      return;
    }
    if (limit && !$('price').value.trim()) {
      this.toast('Enter a price first: the quantity follows from it.', 'error');
      $('price').focus();
      return;
    }
    $('total').value = percentOf(available, percent, this.assetDecimals[asset] ?? decimalsOf(available)) ?? '';
    this.lastEdited = 'total';
    this.updateOrderForm('total');
  }

  async submitOrder() {
    const session = this.session;
    const market = this.market;
    if (!session || !market) return;
    const limit = $('type-limit').checked;
    const price = $('price').value.trim();
    const quantity = $('quantity').value.trim();
    const total = $('total').value.trim();
    const byTotal = !limit && this.lastEdited === 'total' && total !== '';
    if ((limit && !price) || (!quantity && !byTotal)) {
      this.toast(limit ? 'Enter a price and a quantity.' : 'Enter a quantity or a total.', 'error');
      (limit && !price ? $('price') : $('quantity')).focus();
      return;
    }
    /** @type {import('./api.js').OrderRequest & {quoteQuantity?: string}} */
    const order = { symbol: market.symbol, side: $('side-buy').checked ? 'Bid' : 'Ask', orderType: limit ? 'Limit' : 'Market' };
    const trigger = $('trigger-price').value.trim();
    if (byTotal) order.quoteQuantity = total;
    else if (trigger) order.triggerQuantity = quantity;
    else order.quantity = quantity;
    if (trigger) order.triggerPrice = trigger;
    if (limit) {
      order.price = price;
      if ($('post-only').checked) order.postOnly = true;
      if ($('ioc').checked) order.timeInForce = 'IOC';
    }
    const submit = $('order-submit');
    submit.disabled = true;
    submit.setAttribute('aria-busy', 'true');
    try {
      const placed = await api.placeOrder(session, order);
      const filled = placed.executedQuantity;
      const done = toUnits(filled ?? '0', 32);
      this.toast(
        `${sideName(placed.side)} order ${placed.id} on ${marketName(placed.symbol)}: ${statusName(placed.status)}${done ? `, filled ${amount(filled, market.baseSymbol)}` : ''}.`,
        'ok',
        market.symbol,
      );
    } catch (error) {
      this.toast(describe(error), 'error', market.symbol);
    } finally {
      submit.disabled = false;
      submit.removeAttribute('aria-busy');
      this.refreshAccount();
    }
  }

  /** @param {HTMLButtonElement} button */
  async cancel(button) {
    const session = this.session;
    if (!session || !button.dataset.orderId || !button.dataset.symbol) return;
    button.disabled = true;
    try {
      await api.cancelOrder(session, button.dataset.symbol, button.dataset.orderId);
      this.toast(`Order ${button.dataset.orderId} on ${marketName(button.dataset.symbol)} cancelled.`, 'ok', button.dataset.symbol);
    } catch (error) {
      this.toast(describe(error), 'error');
      button.disabled = false;
    }
    this.refreshAccount();
  }

  /** Cancels every open order shown (all markets, or the current one). */
  async cancelAll() {
    const session = this.session;
    if (!session) return;
    const symbols = [...new Set([...document.querySelectorAll('#open-orders tr[data-symbol]')].map((row) => /** @type {HTMLElement} */ (row).dataset.symbol ?? ''))];
    if (!symbols.length) return this.toast('No open orders to cancel.', 'ok');
    const button = $('cancel-all');
    button.disabled = true;
    const results = await Promise.allSettled(symbols.map((symbol) => api.cancelAll(session, symbol)));
    const cancelled = results.reduce((n, r) => n + (r.status === 'fulfilled' ? r.value.length : 0), 0);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed && failed.status === 'rejected') this.toast(describe(failed.reason), 'error');
    else this.toast(`Cancelled ${cancelled} order${cancelled === 1 ? '' : 's'}.`, 'ok');
    button.disabled = false;
    this.refreshAccount();
  }

  async faucet() {
    const session = this.session;
    if (!session) return;
    const button = $('faucet');
    button.disabled = true;
    try {
      const answer = await api.faucet(session);
      const credited = Object.entries(answer?.credited ?? {}).map(([asset, value]) => amount(value, asset)).join(', ');
      this.toast(`Credited ${credited}.`, 'ok', null);
    } catch (error) {
      this.toast(describe(error), 'error', null);
    } finally {
      button.disabled = false;
      this.refreshAccount();
    }
  }

  // ---- AMM pool ----

  async loadPools() {
    try {
      this.pools = new Map((await api.pools()).map((p) => [p.symbol, p]));
    } catch {
      this.pools = new Map();
    }
  }

  async refreshPool() {
    const market = this.market;
    if (!market || !this.pools.has(market.symbol)) return;
    try {
      const pool = (await api.pools()).find((p) => p.symbol === market.symbol);
      if (pool) this.pools.set(pool.symbol, pool);
    } catch {
      // Keep the last state.
    }
    if (market === this.market) this.renderPool();
  }

  renderPool() {
    const market = this.market;
    const pool = market ? this.pools.get(market.symbol) : undefined;
    $('pool-none').hidden = Boolean(pool);
    $('pool-body').hidden = !pool;
    if (!pool || !market) return;
    $('pool-reserves').textContent = `${amount(pool.baseReserve, pool.baseSymbol)} · ${amount(pool.quoteReserve, pool.quoteSymbol)}`;
    $('pool-price').textContent = pool.price ? amount(pool.price, pool.quoteSymbol) : 'empty pool';
    $('pool-fee').textContent = `${(pool.feeBps / 100).toFixed(2)} %`;
  }

  /**
   * Quotes the swap being typed.
   * @returns {Promise<{side: 'Bid' | 'Ask', quantity: string, quote: any} | null>}
   */
  async quoteSwap() {
    const market = this.market;
    const quantity = $('swap-quantity').value.trim();
    const side = $('swap-buy').checked ? 'Bid' : 'Ask';
    const out = $('swap-quote');
    if (!market || !quantity) {
      out.textContent = '';
      return null;
    }
    try {
      const quote = await api.ammQuote(market.symbol, side, quantity);
      if (market !== this.market) return null;
      const pool = quote.pool;
      if (pool.error) {
        out.textContent = pool.error;
        return null;
      }
      const impact = `${(Number(pool.priceImpact ?? 0) * 100).toFixed(2)} %`;
      out.textContent =
        side === 'Bid'
          ? `Pay ≈ ${amount(pool.amountIn, market.quoteSymbol)} · price ${amount(pool.price)} · impact ${impact}`
          : `Receive ≈ ${amount(pool.amountOut, market.quoteSymbol)} · price ${amount(pool.price)} · impact ${impact}`;
      return { side, quantity, quote: pool };
    } catch (error) {
      out.textContent = describe(error);
      return null;
    }
  }

  async submitSwap() {
    const session = this.session;
    const market = this.market;
    if (!session || !market) return;
    const quoted = await this.quoteSwap();
    if (!quoted) return this.toast('Enter a quantity the pool can quote.', 'error');
    const { side, quantity, quote } = quoted;
    /** @type {{symbol: string, side: 'Bid' | 'Ask', quantity: string, maxAmountIn?: string, minAmountOut?: string}} */
    const request = { symbol: market.symbol, side, quantity };
    // Slippage bound from the quote: pay at most 1 % more, or receive at least 1 % less.
    if (side === 'Bid') request.maxAmountIn = percentOf(quote.amountIn, 100 + SWAP_SLIPPAGE_PERCENT, decimalsOf(quote.amountIn)) ?? undefined;
    else request.minAmountOut = percentOf(quote.amountOut, 100 - SWAP_SLIPPAGE_PERCENT, decimalsOf(quote.amountOut)) ?? undefined;
    const button = $('swap-submit');
    button.disabled = true;
    try {
      const done = await api.swap(session, request);
      this.toast(`Swapped ${amount(done.amountIn, done.assetIn)} for ${amount(done.amountOut, done.assetOut)} (fee ${amount(done.fee, done.assetIn)}).`, 'ok', market.symbol);
      $('swap-quantity').value = '';
      $('swap-quote').textContent = '';
    } catch (error) {
      this.toast(describe(error), 'error', market.symbol);
    } finally {
      button.disabled = false;
      this.refreshPool();
      this.refreshAccount();
    }
  }

  /** Fills the quote amount at the pool's ratio when base is typed (a funded pool). */
  matchLiquidity() {
    const market = this.market;
    const pool = market ? this.pools.get(market.symbol) : undefined;
    const base = $('liq-base').value.trim();
    if (!market || !pool || !base || toUnits(pool.baseReserve, 32) === 0n) return;
    const product = multiply(base, pool.quoteReserve);
    const quote = product === null ? null : divideDown(product, pool.baseReserve, this.assetDecimals[market.quoteSymbol] ?? 6);
    if (quote !== null) $('liq-quote').value = trimZeros(quote);
  }

  async addLiquidity() {
    const session = this.session;
    const market = this.market;
    const base = $('liq-base').value.trim();
    const quote = $('liq-quote').value.trim();
    if (!session || !market) return;
    if (!base || !quote) return this.toast('Enter both amounts.', 'error');
    try {
      const done = await api.liquidityAdd(session, market.symbol, base, quote);
      this.toast(`Added ${amount(done.baseQuantity, market.baseSymbol)} and ${amount(done.quoteQuantity, market.quoteSymbol)}: ${amount(done.shares)} shares.`, 'ok', market.symbol);
      $('liq-base').value = '';
      $('liq-quote').value = '';
    } catch (error) {
      this.toast(describe(error), 'error', market.symbol);
    }
    this.refreshPool();
    this.refreshAccount();
  }

  async removeLiquidity() {
    const session = this.session;
    const market = this.market;
    const shares = $('liq-shares').value.trim();
    if (!session || !market) return;
    if (!shares) return this.toast('Enter the shares to remove.', 'error');
    try {
      const done = await api.liquidityRemove(session, market.symbol, shares);
      this.toast(`Removed ${amount(done.shares)} shares: ${amount(done.baseQuantity, market.baseSymbol)} and ${amount(done.quoteQuantity, market.quoteSymbol)}.`, 'ok', market.symbol);
      $('liq-shares').value = '';
    } catch (error) {
      this.toast(describe(error), 'error', market.symbol);
    }
    this.refreshPool();
    this.refreshAccount();
  }
}

const app = new App();
/** For tests and the curious: `exchangeApp.stream.drop()` simulates a dropped connection. */
Object.assign(window, { exchangeApp: app });
app.start();
