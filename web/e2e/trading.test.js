// End-to-end test of the trading page: the real exchange binary, two users in two contexts of a
// real headless Chromium. Run by scripts/web-test (which builds the binary and installs Chromium
// and playwright-core); screenshots go to target/web-e2e/.
//
// Environment: EXCHANGE_BIN (default target/debug/exchange), WEB_E2E_ARTIFACTS (default
// target/web-e2e), CHROMIUM (default /usr/bin/chromium).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { toUnits, fromUnits } from '../js/decimal.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const binary = process.env.EXCHANGE_BIN ?? join(root, 'target/debug/exchange');
const artifacts = process.env.WEB_E2E_ARTIFACTS ?? join(root, 'target/web-e2e');
const SYMBOL = 'SOL_USDC';
const WAIT_MS = 15_000;
/** Session token lifetime of the test server (s): short, so the page must renew sessions. */
const JWT_TTL_SECONDS = 15;
/** The page's message when a session ends (web/js/app.js SESSION_ENDED). */
const SESSION_ENDED = 'Your session has ended. Log in again to trade.';

/** @type {import('node:child_process').ChildProcess} */
let server;
/** @type {string} */
let base;
/** @type {string} */
let dataDir;
/** @type {import('playwright-core').Browser} */
let browser;
/** Whether the server has the JWT login (`/api/v1/auth/*`); else the test logs in with API keys. */
let hasJwt = false;
/** @type {string[]} */
const serverLog = [];

/** Starts the exchange: demo mode (faucet on) with the demo flow stopped after its funding. */
function startServer() {
  dataDir = mkdtempSync(join(tmpdir(), 'web-e2e-'));
  // 16 commands = the demo funding (4 users x 4 assets): the books stay empty but the demo users'
  // API keys and the faucet exist.
  const args = ['--demo', '--demo-orders', '16', '--data', dataDir, '--http-port', '0', '--sbe-port', '0', '--fix-port', '0', '--jwt-ttl-seconds', String(JWT_TTL_SECONDS)];
  server = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, EXCHANGE_LOG: 'info' } });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${serverLog.join('')}`)), 30_000);
    server.on('exit', (code) => reject(new Error(`server exited with ${code}:\n${serverLog.join('')}`)));
    server.stderr?.setEncoding('utf8');
    server.stderr?.on('data', (chunk) => {
      serverLog.push(chunk);
      const match = /HTTP listening.*listen=(\S+)/.exec(serverLog.join(''));
      if (match && !base) {
        clearTimeout(timer);
        base = `http://${match[1].replace(/\x1b\[[0-9;]*m/g, '')}`;
        resolvePromise(undefined);
      }
    });
  });
}

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  await startServer();
  const probe = await fetch(`${base}/api/v1/auth/login`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' });
  hasJwt = probe.status !== 404 && probe.status !== 405;
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

after(async () => {
  await browser?.close();
  server?.kill('SIGTERM');
  await new Promise((r) => (server?.exitCode !== null ? r(undefined) : server.once('exit', r)));
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

/**
 * Polls `probe` until it returns a truthy value.
 * @template T
 * @param {() => Promise<T>} probe
 * @param {string} what
 * @returns {Promise<T>}
 */
async function eventually(probe, what) {
  const deadline = Date.now() + WAIT_MS;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * A user's page: a fresh browser context (own storage), 1280x800 unless told, failing on page
 * errors.
 * @param {string} name
 * @param {import('playwright-core').BrowserContextOptions} [options]
 */
async function openPage(name, options = { viewport: { width: 1280, height: 800 } }) {
  const context = await browser.newContext(options);
  const page = await context.newPage();
  // The test machine may be busy (parallel builds): generous, but bounded, waits for loads.
  page.setDefaultNavigationTimeout(90_000);
  /** @type {string[]} */
  const problems = [];
  page.on('pageerror', (error) => problems.push(`${name}: page error ${error.message}`));
  page.on('console', (message) => {
    // A CSP violation or a failed module would show here; 404s of endpoints a branch lacks and
    // WebSocket failures before the WS API exists are expected.
    if (message.type() === 'error' && /Content Security Policy|SyntaxError|TypeError/.test(message.text())) {
      problems.push(`${name}: console ${message.text()}`);
    }
  });
  await page.goto(`${base}/`);
  await page.waitForSelector('#market option', { state: 'attached' });
  await page.selectOption('#market', SYMBOL);
  return { page, problems, context };
}

/**
 * Logs in through the form: a new username and password (JWT servers), or a demo user's API key.
 * @param {import('playwright-core').Page} page
 * @param {number} demoUser demo user whose key to use without JWT (its secret: 32 bytes of its id)
 * @param {string} username
 */
async function logIn(page, demoUser, username) {
  if (hasJwt) {
    await page.getByLabel('Username').fill(username);
    await page.getByLabel('Password').fill('correct horse battery staple');
    await page.getByRole('button', { name: 'Register' }).click();
  } else {
    await page.locator('summary', { hasText: 'API key' }).click();
    await page.getByLabel(/Ed25519 secret/).fill(Buffer.alloc(32, demoUser).toString('base64'));
    await page.getByRole('button', { name: 'Use key' }).click();
  }
  await page.getByRole('button', { name: 'Log out' }).waitFor();
}

/**
 * A balance from the page's table, as units of 10^-9 (enough for every asset here).
 * @param {import('playwright-core').Page} page
 * @param {string} asset
 * @param {'available' | 'locked'} column
 */
async function balance(page, asset, column) {
  const text = await page.locator(`#balances tr[data-asset="${asset}"] td.${column}`).textContent({ timeout: WAIT_MS });
  const units = toUnits((text ?? '').replace(/\s/g, ''), 9);
  assert.notEqual(units, null, `balance ${asset} ${column}: ${text}`);
  return /** @type {bigint} */ (units);
}

/** @param {bigint} units */
const show = (units) => fromUnits(units, 9);

/**
 * Chooses an option of a segmented control by clicking its label, as a user does.
 * @param {import('playwright-core').Page} page
 * @param {string} label e.g. "Buy", "Market", "Pool buy"
 */
async function choose(page, label) {
  await page.locator('.segmented label', { hasText: new RegExp(`^${label}$`) }).click();
  assert.equal(await page.getByRole('radio', { name: label, exact: true }).isChecked(), true, `${label} chosen`);
}

/**
 * Fills and submits the order form.
 * @param {import('playwright-core').Page} page
 * @param {{side: 'Buy' | 'Sell', price: string, quantity: string}} order
 */
async function placeLimit(page, order) {
  await choose(page, order.side);
  await choose(page, 'Limit');
  await page.locator('#price').fill(order.price);
  await page.locator('#quantity').fill(order.quantity);
  await page.locator('#order-submit').click();
}

/**
 * The notice (toast) holding `text`.
 * @param {import('playwright-core').Page} page
 * @param {string | RegExp} text
 */
const toast = (page, text) => page.locator('#toasts .toast', { hasText: text }).first();

/** @param {import('playwright-core').Page} page @param {string} name */
const screenshot = (page, name) => page.screenshot({ path: join(artifacts, `${name}.png`) });

test('two users trade through the page and both see the trade, the book and their balances', async () => {
  const seller = await openPage('seller');
  const buyer = await openPage('buyer');
  const stamp = Date.now().toString(36);

  // Public data loads: markets, the (empty) book, the chart.
  assert.equal(await seller.page.locator('#market option').count(), 3);
  await seller.page.locator('#asks', { hasText: 'No asks' }).waitFor();
  await screenshot(seller.page, '01-market');

  await logIn(seller.page, 2, `seller-${stamp}`);
  await logIn(buyer.page, 3, `buyer-${stamp}`);

  // Every visible control has an accessible name (a label, aria-label or text).
  const unnamed = await seller.page.evaluate(() =>
    [...document.querySelectorAll('input, select, button, [role="tab"]')]
      .filter((el) => /** @type {HTMLElement} */ (el).offsetParent !== null || el.matches('.segmented input'))
      .filter((el) => {
        const labels = /** @type {HTMLInputElement} */ (el).labels;
        return !(labels && labels.length) && !el.getAttribute('aria-label') && !el.textContent?.trim();
      })
      .map((el) => el.outerHTML.slice(0, 80)),
  );
  assert.deepEqual(unnamed, []);

  // Test funds from the demo faucet, through the button.
  for (const { page } of [seller, buyer]) {
    const before = hasJwt ? 0n : await balance(page, 'SOL', 'available');
    await page.getByRole('button', { name: 'Get test funds' }).click();
    await toast(page, 'Credited').waitFor({ timeout: WAIT_MS });
    await eventually(async () => (await balance(page, 'SOL', 'available')) === before + 100_000_000_000n, 'faucet SOL');
  }
  await screenshot(buyer.page, '02-funded');

  // A bad order shows the API's own message: a price off the tick (0.001 for SOL_USDC).
  await placeLimit(buyer.page, { side: 'Buy', price: '150.0005', quantity: '1' });
  await toast(buyer.page, 'tick size').waitFor({ timeout: WAIT_MS });
  assert.match(await toast(buyer.page, 'tick size').textContent() ?? '', /INVALID_ORDER/);
  // And an unaffordable one: the engine's insufficient-balance rejection.
  await placeLimit(buyer.page, { side: 'Buy', price: '150.000', quantity: '999999' });
  await toast(buyer.page, 'INSUFFICIENT_FUNDS').waitFor({ timeout: WAIT_MS });
  await screenshot(buyer.page, '03-rejected');

  const sellerSol = await balance(seller.page, 'SOL', 'available');
  const sellerUsdc = await balance(seller.page, 'USDC', 'available');
  const buyerSol = await balance(buyer.page, 'SOL', 'available');
  const buyerUsdc = await balance(buyer.page, 'USDC', 'available');

  // The seller rests an ask; both books show it; the seller's SOL is locked.
  await placeLimit(seller.page, { side: 'Sell', price: '150.000', quantity: '2' });
  await toast(seller.page, 'New').waitFor({ timeout: WAIT_MS });
  await seller.page.locator('#open-orders tr[data-order-id]', { hasText: '150.000' }).waitFor({ timeout: WAIT_MS });
  for (const { page } of [seller, buyer]) {
    await page.locator('#asks button[data-price="150.000"]').waitFor({ timeout: WAIT_MS });
  }
  await eventually(async () => (await balance(seller.page, 'SOL', 'locked')) === 2_000_000_000n, 'SOL locked by the ask');
  await screenshot(seller.page, '04-resting-ask');

  // The buyer takes it; the submit button is disabled while the order is in flight.
  await buyer.page.route('**/api/v1/order', async (route) => {
    await new Promise((r) => setTimeout(r, 400));
    await route.continue();
  });
  await buyer.page.locator('#asks button[data-price="150.000"]').click(); // fills the price field
  assert.equal(await buyer.page.locator('#price').inputValue(), '150.000');
  await choose(buyer.page, 'Buy');
  await buyer.page.locator('#quantity').fill('2');
  await buyer.page.locator('#order-submit').click();
  assert.equal(await buyer.page.locator('#order-submit').isDisabled(), true, 'submit disabled while pending');
  await toast(buyer.page, 'Filled').waitFor({ timeout: WAIT_MS });
  assert.equal(await buyer.page.locator('#order-submit').isDisabled(), false);
  await buyer.page.unroute('**/api/v1/order');

  // Both see the trade and the ask gone from the book.
  for (const { page } of [seller, buyer]) {
    await page.locator('#trades tr', { hasText: '150.000' }).filter({ hasText: '2.00' }).first().waitFor({ timeout: WAIT_MS });
    await page.locator('#asks', { hasText: 'No asks' }).waitFor({ timeout: WAIT_MS });
  }
  // Balances, exactly: 2 SOL at 150 = 300 USDC; the taker pays 500 ppm (0.15), the maker 200 ppm (0.06).
  await eventually(async () => (await balance(buyer.page, 'SOL', 'available')) === buyerSol + 2_000_000_000n, 'buyer SOL');
  await eventually(async () => (await balance(buyer.page, 'USDC', 'available')) === buyerUsdc - 300_150_000_000n, 'buyer USDC');
  await eventually(async () => (await balance(seller.page, 'USDC', 'available')) === sellerUsdc + 299_940_000_000n, 'seller USDC');
  await eventually(async () => (await balance(seller.page, 'SOL', 'locked')) === 0n, 'seller SOL unlocked');
  assert.equal(show(await balance(seller.page, 'SOL', 'available')), show(sellerSol - 2_000_000_000n));
  await seller.page.locator('#open-orders', { hasText: 'No open orders' }).waitFor({ timeout: WAIT_MS });
  await screenshot(buyer.page, '05-after-trade-buyer');
  await screenshot(seller.page, '06-after-trade-seller');

  // Own fill history (when the server has it).
  const fillsAvailable = (await fetch(`${base}/wapi/v1/history/fills`)).status !== 404;
  if (fillsAvailable) {
    await buyer.page.getByRole('tab', { name: 'Fill history' }).click();
    await buyer.page.locator('#fills tr', { hasText: '150.000' }).waitFor({ timeout: WAIT_MS });
    await screenshot(buyer.page, '07-fills');
  }

  // Cancel: a resting bid of the buyer, cancelled from the open-orders table.
  await buyer.page.getByRole('tab', { name: 'Open orders' }).click();
  await placeLimit(buyer.page, { side: 'Buy', price: '140.000', quantity: '1' });
  await buyer.page.locator('#bids button[data-price="140.000"]').waitFor({ timeout: WAIT_MS });
  await seller.page.locator('#bids button[data-price="140.000"]').waitFor({ timeout: WAIT_MS });
  await buyer.page.getByRole('button', { name: /^Cancel order/ }).click();
  await toast(buyer.page, 'cancelled').waitFor({ timeout: WAIT_MS });
  await seller.page.locator('#bids', { hasText: 'No bids' }).waitFor({ timeout: WAIT_MS });

  // The WebSocket drops: the page reconnects (or polls) and its book matches the server's again.
  const live = await buyer.page.evaluate(() => /** @type {any} */ (window).exchangeApp.stream.connected);
  if (live) {
    await buyer.page.evaluate(() => /** @type {any} */ (window).exchangeApp.stream.drop());
    await placeLimit(seller.page, { side: 'Sell', price: '151.000', quantity: '1' });
    await buyer.page.locator('#connection[data-state="live"]').waitFor({ timeout: WAIT_MS });
  } else {
    await placeLimit(seller.page, { side: 'Sell', price: '151.000', quantity: '1' });
  }
  await buyer.page.locator('#asks button[data-price="151.000"]').waitFor({ timeout: WAIT_MS });
  const depth = await (await fetch(`${base}/api/v1/depth?symbol=${SYMBOL}`)).json();
  const shown = await buyer.page.locator('#asks button[data-price]').evaluateAll((buttons) => buttons.map((b) => b.getAttribute('data-price')));
  assert.deepEqual(shown.reverse(), depth.asks.map((/** @type {string[]} */ level) => level[0]));
  await screenshot(buyer.page, '08-final');

  assert.deepEqual([...seller.problems, ...buyer.problems], []);
  console.log(`web e2e: login=${hasJwt ? 'jwt' : 'api-key'} websocket=${live ? 'live' : 'absent (REST polling)'} fills=${fillsAvailable}`);
  await seller.context.close();
  await buyer.context.close();
});

/**
 * A new user on a fresh page, logged in and funded by the faucet.
 * @param {string} name
 * @param {import('playwright-core').BrowserContextOptions} [options]
 */
async function fundedUser(name, options) {
  const user = await openPage(name, options);
  if (options?.isMobile) await user.page.locator('#panel-nav').getByRole('button', { name: 'Trade', exact: true }).tap();
  await logIn(user.page, 0, `${name}-${Date.now().toString(36)}`);
  await user.page.getByRole('button', { name: 'Get test funds' }).click();
  await eventually(async () => (await balance(user.page, 'USDC', 'available')) === 100_000_000_000_000n, `${name} funded`);
  return user;
}

test('order form: available balance, % buttons, market estimate, reset on market switch; order history; toasts clear', async () => {
  assert.ok(hasJwt, 'these tests register users with the JWT login');
  const maker = await fundedUser('maker');
  const taker = await fundedUser('taker');
  const page = taker.page;

  // Available balance of the side's asset, and the % buttons (exact: 25 % of 100 SOL on the
  // 0.01 step; 25 % of 100 000 USDC at 100 USDC = 250 SOL).
  await choose(page, 'Sell');
  await page.locator('#available', { hasText: 'Available 100 SOL' }).waitFor({ timeout: WAIT_MS });
  await page.getByRole('button', { name: '25%' }).click();
  assert.equal(await page.locator('#quantity').inputValue(), '25.00');
  await choose(page, 'Buy');
  await page.locator('#available', { hasText: /Available 100\s000 USDC/ }).waitFor({ timeout: WAIT_MS });
  await page.locator('#price').fill('100.000');
  await page.getByRole('button', { name: '25%' }).click();
  assert.equal(await page.locator('#quantity').inputValue(), '250.00');
  assert.equal(toUnits(await page.locator('#total').inputValue(), 6), 25_000_000_000n);
  // Price x quantity <-> total.
  await page.locator('#quantity').fill('1.5');
  assert.equal(await page.locator('#total').inputValue(), '150');

  // The maker rests two asks; a market buy of 3 is estimated from the book: 2 at 150 and 1 at
  // 151 = 451 USDC, 150.33333 on average (rounded down).
  await placeLimit(maker.page, { side: 'Sell', price: '150.000', quantity: '2' });
  await placeLimit(maker.page, { side: 'Sell', price: '151.000', quantity: '2' });
  await page.locator('#asks button[data-price="151.000"]').waitFor({ timeout: WAIT_MS });
  await choose(page, 'Market');
  await page.locator('#quantity').fill('3');
  await page.locator('#order-total', { hasText: '150.33333' }).waitFor({ timeout: WAIT_MS });
  assert.match(await page.locator('#order-total').textContent() ?? '', /total ≈ 451 USDC/);
  await screenshot(page, '10-market-estimate');
  await page.locator('#order-submit').click();
  await toast(page, 'Filled').waitFor({ timeout: WAIT_MS });

  // Order history: the market order, filled, in words.
  await page.getByRole('tab', { name: 'Order history' }).click();
  await page.locator('#order-history tr', { hasText: 'Market' }).filter({ hasText: 'Filled' }).first().waitFor({ timeout: WAIT_MS });
  const statuses = await page.locator('#order-history tr td:nth-child(8)').allTextContents();
  assert.ok(statuses.every((s) => !/[a-z][A-Z]/.test(s)), `statuses in words: ${statuses}`);
  await screenshot(page, '11-order-history');

  // Notices dismiss themselves.
  await eventually(async () => (await page.locator('#toasts .toast').count()) === 0, 'toasts cleared');

  // A market switch resets the form and drops the old market's notices.
  await choose(page, 'Sell');
  await choose(page, 'Limit');
  await page.locator('#price').fill('149.000');
  await page.locator('#quantity').fill('0.5');
  await page.locator('#order-submit').click();
  await toast(page, 'New').waitFor({ timeout: WAIT_MS });
  await page.selectOption('#market', 'ETH_USDC');
  assert.equal(await page.locator('#toasts .toast').count(), 0, 'SOL_USDC notices gone');
  assert.equal(await page.locator('#price').inputValue(), '');
  assert.equal(await page.locator('#quantity').inputValue(), '');
  assert.equal(await page.locator('#side-buy').isChecked(), true);
  assert.equal(await page.locator('#type-limit').isChecked(), true);
  // Open orders of all markets (the SOL_USDC ask), and cancel-all.
  await page.getByRole('tab', { name: 'Open orders' }).click();
  await page.locator('#open-orders tr[data-symbol="SOL_USDC"]').waitFor({ timeout: WAIT_MS });
  await page.getByRole('button', { name: 'Cancel all' }).click();
  await toast(page, 'Cancelled 1 order').waitFor({ timeout: WAIT_MS });
  await page.locator('#open-orders', { hasText: 'No open orders' }).waitFor({ timeout: WAIT_MS });
  assert.deepEqual([...maker.problems, ...taker.problems], []);
  await maker.context.close();
  await taker.context.close();
});

test('AMM panel: add liquidity, quote with price impact, swap', async () => {
  const provider = await fundedUser('provider');
  const page = provider.page;
  await page.locator('#pool-body').waitFor();
  await page.locator('#liquidity summary').click();
  await page.getByLabel(/^Base/).fill('10');
  await page.getByLabel(/^Quote/).fill('1500');
  await page.getByRole('button', { name: 'Add liquidity' }).click();
  await toast(page, 'Added').waitFor({ timeout: WAIT_MS });
  await page.locator('#pool-reserves', { hasText: /10 SOL · 1\s500 USDC/ }).waitFor({ timeout: WAIT_MS });
  await page.locator('#pool-price', { hasText: '150 USDC' }).waitFor({ timeout: WAIT_MS });
  const solBefore = await balance(page, 'SOL', 'available');

  // Buy 1 SOL from the pool: quoted with its price impact, then swapped.
  await choose(page, 'Pool buy');
  await page.locator('#swap-quantity').fill('1');
  await page.locator('#swap-quote', { hasText: 'impact' }).waitFor({ timeout: WAIT_MS });
  assert.match(await page.locator('#swap-quote').textContent() ?? '', /Pay ≈ 167\.\d+ USDC .* impact \d+\.\d\d %/);
  await screenshot(page, '12-pool-quote');
  await page.locator('#swap-submit').click();
  await toast(page, 'Swapped').waitFor({ timeout: WAIT_MS });
  await page.locator('#pool-reserves', { hasText: /^9 SOL/ }).waitFor({ timeout: WAIT_MS });
  await eventually(async () => (await balance(page, 'SOL', 'available')) === solBefore + 1_000_000_000n, 'SOL from the pool');
  assert.deepEqual(provider.problems, []);
  await provider.context.close();
});

/**
 * Submits the order form; returns what was sent to `POST /api/v1/order` and the answer.
 * @param {import('playwright-core').Page} page
 * @returns {Promise<{sent: Record<string, any>, placed: Record<string, any>}>}
 */
async function submitAndRead(page) {
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/api/v1/order') && r.request().method() === 'POST', { timeout: WAIT_MS }),
    page.locator('#order-submit').click(),
  ]);
  return { sent: response.request().postDataJSON(), placed: await response.json() };
}

test('trigger orders: a stop-loss from the page waits in open orders, a take-profit is cancelled, a trade fires the stop', async () => {
  assert.ok(hasJwt, 'these tests register users with the JWT login');
  // BTC_USDC: no pool and no other test's orders, so the prices here are the only ones.
  const maker = await fundedUser('trigger-maker');
  const trader = await fundedUser('trigger-trader');
  const page = trader.page;
  for (const user of [maker, trader]) await user.page.selectOption('#market', 'BTC_USDC');

  // A trade at 60 000 gives the last price the triggers are placed against.
  await placeLimit(maker.page, { side: 'Sell', price: '60000.0', quantity: '0.01' });
  await toast(maker.page, 'New').waitFor({ timeout: WAIT_MS });
  await placeLimit(page, { side: 'Buy', price: '60000.0', quantity: '0.01' });
  await toast(page, 'Filled').waitFor({ timeout: WAIT_MS });
  await eventually(() => page.evaluate(() => /** @type {any} */ (window).exchangeApp.trades[0]?.price === '60000.0'), 'the trade on the page');

  // A stop-loss: sell 0.01 BTC with a limit of 58 000 once the price falls to 59 000. The form
  // says what the trigger price means against the last price.
  await choose(page, 'Sell');
  await choose(page, 'Limit');
  await page.locator('#price').fill('58000.0');
  await page.getByLabel(/Trigger price/).fill('59000.0');
  await page.locator('#quantity').fill('0.01');
  await page.locator('#trigger-hint', { hasText: 'Stop sell (below the last price' }).waitFor({ timeout: WAIT_MS });
  const first = await submitAndRead(page);
  // Sent as Backpack clients send it: triggerPrice with triggerQuantity (no quantity).
  assert.deepEqual(first.sent, { symbol: 'BTC_USDC', side: 'Ask', orderType: 'Limit', price: '58000.0', triggerQuantity: '0.01', triggerPrice: '59000.0' });
  assert.equal(first.placed.status, 'TriggerPending', JSON.stringify(first.placed));
  const stop = String(first.placed.id);
  await toast(page, `order ${stop} on BTC/USDC: Trigger pending`).waitFor({ timeout: WAIT_MS });
  const stopRow = page.locator(`#open-orders tr[data-order-id="${stop}"]`);
  await stopRow.filter({ hasText: 'Trigger pending' }).waitFor({ timeout: WAIT_MS });
  assert.match((await stopRow.locator('td:nth-child(5)').textContent()) ?? '', /^59\s?000\.0 USDC$/, 'trigger price column');
  // Nothing is reserved while it waits.
  assert.equal(await balance(page, 'BTC', 'locked'), 0n);

  // A take-profit (a market sell above the last price), cancelled from the open-orders table.
  await choose(page, 'Market');
  await page.getByLabel(/Trigger price/).fill('62000.0');
  await page.locator('#quantity').fill('0.01');
  await page.locator('#trigger-hint', { hasText: 'Take-profit sell (above the last price' }).waitFor({ timeout: WAIT_MS });
  const second = await submitAndRead(page);
  assert.deepEqual(second.sent, { symbol: 'BTC_USDC', side: 'Ask', orderType: 'Market', triggerQuantity: '0.01', triggerPrice: '62000.0' });
  assert.equal(second.placed.status, 'TriggerPending', JSON.stringify(second.placed));
  const takeProfit = String(second.placed.id);
  await page.locator(`#open-orders tr[data-order-id="${takeProfit}"]`, { hasText: 'Trigger pending' }).waitFor({ timeout: WAIT_MS });
  await screenshot(page, '12-pending-triggers');
  await page.getByRole('button', { name: `Cancel order ${takeProfit}` }).click();
  await toast(page, `Order ${takeProfit} on BTC/USDC cancelled`).waitFor({ timeout: WAIT_MS });
  await page.locator(`#open-orders tr[data-order-id="${takeProfit}"]`).waitFor({ state: 'detached', timeout: WAIT_MS });

  // The maker bids 0.02 at 59 000; the trader sells 0.01 into it: the trade at 59 000 fires the
  // stop, whose sell fills against the rest of the bid.
  await placeLimit(maker.page, { side: 'Buy', price: '59000.0', quantity: '0.02' });
  await maker.page.locator('#bids button[data-price="59000.0"]').waitFor({ timeout: WAIT_MS });
  await page.getByLabel(/Trigger price/).fill('');
  await placeLimit(page, { side: 'Sell', price: '59000.0', quantity: '0.01' });
  await stopRow.waitFor({ state: 'detached', timeout: WAIT_MS });
  await page.locator('#open-orders', { hasText: 'No open orders' }).waitFor({ timeout: WAIT_MS });
  await eventually(async () => (await balance(page, 'BTC', 'available')) === 99_990_000_000n, 'the stop sold 0.01 BTC');
  await page.getByRole('tab', { name: 'Order history' }).click();
  await page.locator(`#order-history tr[data-order-id="${stop}"]`, { hasText: 'Filled' }).waitFor({ timeout: WAIT_MS });
  await maker.page.locator('#bids', { hasText: 'No bids' }).waitFor({ timeout: WAIT_MS });
  assert.deepEqual([...maker.problems, ...trader.problems], []);
  await maker.context.close();
  await trader.context.close();
});

test('phone 390x844: no horizontal overflow, every panel reachable, an order placed by tapping', async () => {
  const user = await fundedUser('phone', { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  const page = user.page;
  const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok((await overflow()) <= 0, `document wider than the screen by ${await overflow()} px`);
  for (const [name, panel] of [['Book', '#book-panel'], ['Chart', '#chart-panel'], ['Trades', '#trades-panel'], ['Orders', '#tables-panel'], ['Pool', '#pool-panel'], ['Trade', '#order-form-panel']]) {
    await page.locator('#panel-nav').getByRole('button', { name: name, exact: true }).tap();
    const box = await page.locator(panel).boundingBox();
    assert.ok(box && box.width >= 360 && box.height > 100, `${name} panel shown full width: ${JSON.stringify(box)}`);
    assert.ok((await overflow()) <= 0, `${name}: document wider than the screen by ${await overflow()} px`);
    await screenshot(page, `20-phone-${name.toLowerCase()}`);
  }
  const header = await page.locator('header.top').boundingBox();
  assert.ok(header && header.x + header.width <= 390, 'header within the screen');
  // An order by tapping: sell 1 SOL at 160.
  await page.locator('label[for="side-sell"]').tap();
  await page.locator('#price').tap();
  await page.locator('#price').fill('160.000');
  await page.locator('#quantity').tap();
  await page.locator('#quantity').fill('1');
  await page.locator('#order-submit').tap();
  await toast(page, 'New').waitFor({ timeout: WAIT_MS });
  await page.locator('#panel-nav').getByRole('button', { name: 'Orders', exact: true }).tap();
  await page.locator('#open-orders tr[data-order-id]', { hasText: '160.000' }).waitFor({ timeout: WAIT_MS });
  assert.ok((await overflow()) <= 0, 'no overflow with an order row');
  await screenshot(page, '21-phone-orders');
  // The dark theme follows the system setting.
  const background = () => page.evaluate(() => getComputedStyle(document.documentElement).backgroundColor);
  assert.equal(await background(), 'rgb(246, 247, 249)');
  await page.emulateMedia({ colorScheme: 'dark' });
  assert.equal(await background(), 'rgb(15, 18, 22)');
  await screenshot(page, '22-phone-dark');
  assert.deepEqual(user.problems, []);
  await user.context.close();
});

test('session: renewed before the token expires; one clear message when it ends', async () => {
  const user = await openPage('session');
  const page = user.page;
  await logIn(page, 0, `session-${Date.now().toString(36)}`);
  const token = () => page.evaluate(() => JSON.parse(sessionStorage.getItem('jwt') ?? 'null')?.token ?? null);
  const first = await token();
  // Twice the token lifetime later the page is still logged in with a renewed token that works.
  await page.waitForTimeout(2 * JWT_TTL_SECONDS * 1000);
  assert.equal(await page.getByRole('button', { name: 'Log out' }).isVisible(), true, 'still logged in');
  const renewed = await token();
  assert.ok(renewed && renewed !== first, 'the token was renewed');
  const capital = await fetch(`${base}/api/v1/capital`, { headers: { Authorization: `Bearer ${renewed}` } });
  assert.equal(capital.status, 200);
  // The server refuses renewal (as it does past the 24 h bound): when the token expires the page
  // says so once, and nowhere else.
  await page.route('**/api/v1/auth/refresh', (route) =>
    route.fulfill({ status: 401, contentType: 'application/json', body: '{"code":"UNAUTHORIZED","message":"Session too old to renew, log in again"}' }),
  );
  await page.locator('#login-form').waitFor({ timeout: (JWT_TTL_SECONDS + 5) * 1000 });
  assert.equal(await page.locator('#login-message').textContent(), SESSION_ENDED);
  assert.equal(await page.getByText(/session/i).count(), 1, 'one message about the session');
  await screenshot(page, '30-session-ended');
  assert.deepEqual(user.problems, []);
  await user.context.close();
});
