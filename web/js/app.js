// The trading page: wires the REST client, the WebSocket streams, the order book and the chart
// to the DOM. One market is shown at a time; one user may be logged in per browser tab.

import * as api from './api.js';
import { ApiError } from './api.js';
import { Applied, OrderBook } from './book.js';
import { drawChart, foldTrade } from './chart.js';
import { decimalsOf, group, multiply } from './decimal.js';
import { StreamClient } from './ws.js';

/** @typedef {import('./api.js').Market} Market */
/** @typedef {import('./api.js').Session} Session */
/** @typedef {{id: number, price: string, quantity: string, timeMs: number, takerSide: 'Bid' | 'Ask'}} Trade */

const BOOK_LEVELS = 10;
const TRADES_KEPT = 50;
/** REST polling period while the WebSocket is down (ms). */
const POLL_MS = 2000;
const INTERVAL_SECONDS = /** @type {Record<string, number>} */ ({ '1m': 60, '5m': 300, '15m': 900, '1h': 3600 });

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

/** @param {number} ms @returns {string} HH:MM:SS local time */
const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });

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
    /** @type {Session | null} */
    this.session = null;
    /** @type {Record<string, {available: string, locked: string}> | null} the user's balances */
    this.balances = null;
    this.demo = false;
    /** @type {Market | null} the market whose depth snapshot is being fetched */
    this.snapshotInFlight = null;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.poller = undefined;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    this.stream = new StreamClient(`${scheme}//${location.host}/`, {
      onFrame: (stream, data) => this.onFrame(stream, data),
      onOpen: () => this.onStreamOpen(),
      onDown: () => this.onStreamDown(),
      onError: (message) => this.flash('account-message', message),
    });
    this.refreshAccountSoon = debounce(() => this.refreshAccount(), 250);
    this.resnapshotSoon = debounce(() => this.snapshot(), 100);
    this.redrawSoon = debounce(() => this.drawChart(), 100);
    this.tickerSoon = debounce(() => this.refreshTicker(), 1000);
    // After trades seen through REST polling (no stream): the statistics and candles changed.
    this.marketStatsSoon = debounce(() => {
      this.refreshTicker();
      this.refreshChart();
    }, 500);
  }

  async start() {
    this.bindForms();
    try {
      this.demo = Boolean((await api.pageConfig()).demo);
    } catch {
      this.demo = false;
    }
    try {
      this.markets = await api.markets();
    } catch (error) {
      this.setConnection('down', `Cannot load markets: ${describe(error)}`);
      return;
    }
    const select = $('market');
    select.innerHTML = this.markets.map((m) => `<option value="${esc(m.symbol)}">${esc(m.baseSymbol)} / ${esc(m.quoteSymbol)}</option>`).join('');
    const wanted = new URLSearchParams(location.search).get('market') ?? sessionStorage.getItem('market');
    if (wanted && this.markets.some((m) => m.symbol === wanted)) select.value = wanted;
    const saved = sessionStorage.getItem('jwt');
    if (saved) this.setSession(JSON.parse(saved));
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
    this.renderBook();
    this.renderTrades();
    this.renderFormHints();
    this.stream.setStreams([`depth.${symbol}`, `trade.${symbol}`]);
    await Promise.all([this.snapshot(), this.loadTrades(true), this.refreshTicker(), this.refreshChart(), this.refreshAccount()]);
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
      $('ticker-last').textContent = group(t.lastPrice);
      const change = $('ticker-change');
      change.textContent = `${t.priceChange} (${percent} %)`;
      change.dataset.sign = t.priceChange.startsWith('-') ? 'down' : 'up';
      $('ticker-high').textContent = group(t.high);
      $('ticker-low').textContent = group(t.low);
      $('ticker-volume').textContent = `${group(t.volume)} ${market.baseSymbol}`;
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
    drawChart($('chart'), this.candles, 'No trades yet in this window');
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
      this.renderBook();
    } else if (stream === `depth.${symbol}`) {
      const result = this.book.applyDiff(data);
      if (result === Applied.GAP) {
        this.book.reset();
        this.resnapshotSoon();
      } else if (result === Applied.APPLIED) {
        this.renderBook();
      }
    } else if (stream === `trade.${symbol}`) {
      const trade = { id: Number(data.t), price: data.p, quantity: data.q, timeMs: Math.floor(Number(data.T) / 1000), takerSide: data.m ? 'Ask' : 'Bid' };
      if (this.addTrade(/** @type {Trade} */ (trade))) {
        this.renderTrades();
        foldTrade(this.candles, INTERVAL_SECONDS[$('interval').value] ?? 60, trade.price, trade.timeMs);
        this.redrawSoon();
        $('ticker-last').textContent = group(trade.price);
        this.tickerSoon();
        // The trade may be ours: a resting order of this user may have been filled.
        if (this.session) this.refreshAccountSoon();
      }
    } else if (stream === 'account.balanceUpdate') {
      // Live balances: a, f, l = asset, available, locked after the change.
      if (this.balances && typeof data?.a === 'string') {
        this.balances[data.a] = { available: data.f, locked: data.l };
        this.renderBalances(this.balances);
      }
    } else if (stream.startsWith('account.')) {
      // Backpack's order update: e event, s symbol, i order id, S side, l / L last fill quantity / price.
      if (data?.e === 'orderFill') {
        const side = data.S === 'Bid' ? 'Bought' : 'Sold';
        this.flash('account-message', `${side} ${data.l} ${data.s ?? ''} at ${data.L} (order ${data.i}).`, 'ok');
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

  renderBook() {
    const market = this.market;
    const asks = this.book.levels('asks', BOOK_LEVELS);
    const bids = this.book.levels('bids', BOOK_LEVELS);
    const rows = (/** @type {import('./book.js').Level[]} */ levels, /** @type {string} */ side) => {
      let total = 0;
      const withTotals = levels.map(([price, quantity]) => {
        total += Number(quantity);
        return { price, quantity, total };
      });
      const stepDecimals = market ? decimalsOf(market.filters.quantity.stepSize) : 0;
      const max = withTotals.length ? withTotals[withTotals.length - 1].total : 1;
      const html = withTotals.map(
        ({ price, quantity, total: sum }) =>
          `<tr data-depth="${((sum / max) * 100).toFixed(1)}%"><td><button type="button" class="price ${side}" data-price="${esc(price)}" aria-label="Use price ${esc(price)}">${esc(group(price))}</button></td><td>${esc(quantity)}</td><td>${sum.toFixed(stepDecimals)}</td></tr>`,
      );
      return html;
    };
    $('asks').innerHTML = rows(asks, 'sell').reverse().join('') || '<tr><td colspan="3" class="empty">No asks</td></tr>';
    $('bids').innerHTML = rows(bids, 'buy').join('') || '<tr><td colspan="3" class="empty">No bids</td></tr>';
    // Depth bars: set through the CSSOM (the page's Content-Security-Policy forbids style attributes).
    for (const row of document.querySelectorAll('#book tr[data-depth]')) {
      /** @type {HTMLElement} */ (row).style.setProperty('--depth', /** @type {HTMLElement} */ (row).dataset.depth ?? '0%');
    }
    const sm = this.book.spreadAndMid();
    $('spread').textContent = sm ? `Spread ${sm.spread} · Mid ${sm.mid}` : 'Spread –';
  }

  renderTrades() {
    $('trades').innerHTML =
      this.trades
        .map((t) => `<tr><td class="${t.takerSide === 'Bid' ? 'buy' : 'sell'}">${esc(group(t.price))}</td><td>${esc(t.quantity)}</td><td>${esc(clock(t.timeMs))}</td></tr>`)
        .join('') || '<tr><td colspan="3" class="empty">No trades yet</td></tr>';
  }

  renderFormHints() {
    const market = this.market;
    if (!market) return;
    $('price-unit').textContent = market.quoteSymbol;
    $('quantity-unit').textContent = market.baseSymbol;
    $('price-hint').textContent = `Tick ${market.filters.price.tickSize}`;
    $('quantity-hint').textContent = `Step ${market.filters.quantity.stepSize}, min ${market.filters.quantity.minQuantity}`;
    this.updateOrderForm();
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
    $('username').textContent = session ? session.username : '';
    if (session?.kind === 'jwt') sessionStorage.setItem('jwt', JSON.stringify(session));
    else sessionStorage.removeItem('jwt');
    this.balances = null;
    this.stream.setPrivate(['account.orderUpdate', 'account.balanceUpdate'], session ? () => this.privateAuth() : null);
    if (!loggedIn) {
      $('open-orders').innerHTML = '';
      $('fills').innerHTML = '';
      $('balances').innerHTML = '';
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

  /** Reloads balances, open orders and fills of the logged-in user. */
  async refreshAccount() {
    const session = this.session;
    const market = this.market;
    if (!session || !market) return;
    const [balances, orders, fills] = await Promise.allSettled([
      api.balances(session),
      api.openOrders(session, market.symbol),
      api.fills(session, market.symbol),
    ]);
    if (session !== this.session) return;
    if (balances.status === 'rejected' && balances.reason instanceof ApiError && balances.reason.status === 401) {
      this.setSession(null);
      $('login-message').textContent = `Session ended: ${describe(balances.reason)}. Log in again.`;
      return;
    }
    if (balances.status === 'fulfilled') {
      this.balances = balances.value;
      this.renderBalances(balances.value);
    }
    if (orders.status === 'fulfilled') this.renderOpenOrders(orders.value);
    if (fills.status === 'fulfilled') this.renderFills(fills.value);
    else $('fills').innerHTML = `<tr><td colspan="7" class="empty">${esc(describe(fills.reason))}</td></tr>`;
  }

  /** @param {Record<string, {available: string, locked: string}>} balances */
  renderBalances(balances) {
    const assets = Object.keys(balances).sort();
    $('balances').innerHTML =
      assets
        .map((asset) => `<tr data-asset="${esc(asset)}"><th scope="row">${esc(asset)}</th><td class="available">${esc(group(balances[asset].available))}</td><td class="locked">${esc(group(balances[asset].locked))}</td></tr>`)
        .join('') || `<tr><td colspan="3" class="empty">No funds yet${this.demo ? ': use "Get test funds"' : ''}</td></tr>`;
  }

  /** @param {import('./api.js').Order[]} orders */
  renderOpenOrders(orders) {
    $('open-orders').innerHTML =
      orders
        .map(
          (o) =>
            `<tr data-order-id="${esc(o.id)}"><td>${esc(o.symbol)}</td><td class="${o.side === 'Bid' ? 'buy' : 'sell'}">${o.side === 'Bid' ? 'Buy' : 'Sell'}</td><td>${esc(o.price ?? 'market')}</td><td>${esc(o.quantity ?? '')}</td><td>${esc(o.executedQuantity)}</td><td>${esc(o.status)}</td>` +
            `<td><button type="button" class="cancel" data-order-id="${esc(o.id)}" data-symbol="${esc(o.symbol)}" aria-label="Cancel order ${esc(o.id)}">Cancel</button></td></tr>`,
        )
        .join('') || '<tr><td colspan="7" class="empty">No open orders</td></tr>';
  }

  /** @param {Array<Record<string, any>>} fills */
  renderFills(fills) {
    $('fills').innerHTML =
      fills
        .map((f) => {
          const time = typeof f.timestamp === 'number' ? clock(f.timestamp) : String(f.timestamp ?? '').replace('T', ' ').slice(0, 19);
          const buy = f.side === 'Bid';
          return `<tr><td>${esc(time)}</td><td>${esc(f.symbol)}</td><td class="${buy ? 'buy' : 'sell'}">${buy ? 'Buy' : 'Sell'}</td><td>${esc(f.price)}</td><td>${esc(f.quantity)}</td><td>${esc(f.fee)} ${esc(f.feeSymbol ?? '')}</td><td>${f.isMaker ? 'Maker' : 'Taker'}</td></tr>`;
        })
        .join('') || '<tr><td colspan="7" class="empty">No fills yet</td></tr>';
  }

  /**
   * Shows a message for a few seconds.
   * @param {string} id
   * @param {string} text
   * @param {'error' | 'ok'} [kind]
   */
  flash(id, text, kind = 'error') {
    const element = $(id);
    element.textContent = text;
    element.dataset.kind = kind;
  }

  // ---- Forms ----

  bindForms() {
    $('market').addEventListener('change', (/** @type {Event} */ e) => this.selectMarket(/** @type {HTMLSelectElement} */ (e.target).value));
    $('interval').addEventListener('change', () => this.refreshChart());
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
    $('order-form').addEventListener('input', () => this.updateOrderForm());
    $('order-form').addEventListener('submit', (/** @type {SubmitEvent} */ e) => {
      e.preventDefault();
      this.submitOrder();
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
        this.updateOrderForm();
      }
    });
    $('open-orders').addEventListener('click', (/** @type {MouseEvent} */ e) => {
      const button = /** @type {HTMLElement} */ (e.target).closest('button.cancel');
      if (button instanceof HTMLButtonElement) this.cancel(button);
    });
    $('faucet').addEventListener('click', () => this.faucet());
    const tabs = [$('tab-open'), $('tab-fills')];
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
        if (e.key === 'ArrowRight' || e.key === 'ArrowLeft') select(tabs[(tabs.indexOf(tab) + 1) % tabs.length]);
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

  updateOrderForm() {
    const market = this.market;
    const buy = $('side-buy').checked;
    const limit = $('type-limit').checked;
    $('price-field').hidden = !limit;
    $('limit-options').hidden = !limit;
    const total = limit ? multiply($('price').value, $('quantity').value) : null;
    $('order-total').textContent = total !== null && market ? `Total ${group(total)} ${market.quoteSymbol} before fees` : '';
    const submit = $('order-submit');
    submit.textContent = `${buy ? 'Buy' : 'Sell'} ${market ? market.baseSymbol : ''}`;
    submit.classList.toggle('buy', buy);
    submit.classList.toggle('sell', !buy);
  }

  async submitOrder() {
    const session = this.session;
    const market = this.market;
    if (!session || !market) return;
    const limit = $('type-limit').checked;
    const price = $('price').value.trim();
    const quantity = $('quantity').value.trim();
    if ((limit && !price) || !quantity) {
      this.flash('order-message', limit ? 'Enter a price and a quantity.' : 'Enter a quantity.');
      (limit && !price ? $('price') : $('quantity')).focus();
      return;
    }
    /** @type {import('./api.js').OrderRequest} */
    const order = { symbol: market.symbol, side: $('side-buy').checked ? 'Bid' : 'Ask', orderType: limit ? 'Limit' : 'Market', quantity };
    if (limit) {
      order.price = price;
      if ($('post-only').checked) order.postOnly = true;
      if ($('ioc').checked) order.timeInForce = 'IOC';
    }
    const submit = $('order-submit');
    submit.disabled = true;
    submit.setAttribute('aria-busy', 'true');
    this.flash('order-message', 'Sending…', 'ok');
    try {
      const placed = await api.placeOrder(session, order);
      const filled = placed.executedQuantity;
      this.flash('order-message', `Order ${placed.id} ${placed.status}${Number(filled) > 0 ? `, filled ${filled}` : ''}.`, 'ok');
    } catch (error) {
      this.flash('order-message', describe(error));
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
      this.flash('order-message', `Order ${button.dataset.orderId} cancelled.`, 'ok');
    } catch (error) {
      this.flash('order-message', describe(error));
      button.disabled = false;
    }
    this.refreshAccount();
  }

  async faucet() {
    const session = this.session;
    if (!session) return;
    const button = $('faucet');
    button.disabled = true;
    try {
      const answer = await api.faucet(session);
      const credited = Object.entries(answer?.credited ?? {}).map(([asset, amount]) => `${amount} ${asset}`).join(', ');
      this.flash('account-message', `Credited ${credited}.`, 'ok');
    } catch (error) {
      this.flash('account-message', describe(error));
    } finally {
      button.disabled = false;
      this.refreshAccount();
    }
  }
}

const app = new App();
/** For tests and the curious: `exchangeApp.stream.drop()` simulates a dropped connection. */
Object.assign(window, { exchangeApp: app });
app.start();
