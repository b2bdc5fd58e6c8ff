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
  const args = ['--demo', '--demo-orders', '16', '--data', dataDir, '--http-port', '0', '--sbe-port', '0', '--fix-port', '0'];
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
 * A user's page: a fresh browser context (own storage), 1280x800, failing on page errors.
 * @param {string} name
 */
async function openPage(name) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
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
 * Fills and submits the order form.
 * @param {import('playwright-core').Page} page
 * @param {{side: 'Buy' | 'Sell', price: string, quantity: string}} order
 */
async function placeLimit(page, order) {
  await page.getByLabel(order.side, { exact: true }).check({ force: true });
  await page.getByLabel('Limit', { exact: true }).check({ force: true });
  await page.locator('#price').fill(order.price);
  await page.locator('#quantity').fill(order.quantity);
  await page.locator('#order-submit').click();
}

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
    await page.locator('#account-message', { hasText: 'Credited' }).waitFor({ timeout: WAIT_MS });
    await eventually(async () => (await balance(page, 'SOL', 'available')) === before + 100_000_000_000n, 'faucet SOL');
  }
  await screenshot(buyer.page, '02-funded');

  // A bad order shows the API's own message: a price off the tick (0.001 for SOL_USDC).
  await placeLimit(buyer.page, { side: 'Buy', price: '150.0005', quantity: '1' });
  await buyer.page.locator('#order-message', { hasText: 'tick size' }).waitFor({ timeout: WAIT_MS });
  assert.match(await buyer.page.locator('#order-message').textContent() ?? '', /INVALID_ORDER/);
  // And an unaffordable one: the engine's insufficient-balance rejection.
  await placeLimit(buyer.page, { side: 'Buy', price: '150.000', quantity: '999999' });
  await buyer.page.locator('#order-message', { hasText: 'INSUFFICIENT_FUNDS' }).waitFor({ timeout: WAIT_MS });
  await screenshot(buyer.page, '03-rejected');

  const sellerSol = await balance(seller.page, 'SOL', 'available');
  const sellerUsdc = await balance(seller.page, 'USDC', 'available');
  const buyerSol = await balance(buyer.page, 'SOL', 'available');
  const buyerUsdc = await balance(buyer.page, 'USDC', 'available');

  // The seller rests an ask; both books show it; the seller's SOL is locked.
  await placeLimit(seller.page, { side: 'Sell', price: '150.000', quantity: '2' });
  await seller.page.locator('#order-message', { hasText: 'New' }).waitFor({ timeout: WAIT_MS });
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
  await buyer.page.getByLabel('Buy', { exact: true }).check({ force: true });
  await buyer.page.locator('#quantity').fill('2');
  await buyer.page.locator('#order-submit').click();
  assert.equal(await buyer.page.locator('#order-submit').isDisabled(), true, 'submit disabled while pending');
  await buyer.page.locator('#order-message', { hasText: 'Filled' }).waitFor({ timeout: WAIT_MS });
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
  await buyer.page.locator('#order-message', { hasText: 'cancelled' }).waitFor({ timeout: WAIT_MS });
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
});
