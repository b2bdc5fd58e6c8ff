// Takes the screenshots of docs/web.md from a running demo server (not a test):
//   cargo run --release -p exchange -- --demo      # let it trade a few minutes for candles
//   node web/e2e/screenshot.js http://127.0.0.1:8080/ docs/img
// Writes web-desktop.png (1400x900) and web-phone.png (390x844, the order form). Logs in as demo
// user 4 with its API key and rests a bid far below the market, so the open orders table has a
// row (use a fresh server: demo traders' market orders may reach old bids).
import { chromium } from 'playwright-core';

const [url = 'http://127.0.0.1:8080/', output = 'docs/img'] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

/**
 * Opens the page at a size, logged in as demo user 4 on SOL_USDC.
 * @param {import('playwright-core').BrowserContextOptions} options
 */
async function open(options) {
  const page = await (await browser.newContext(options)).newPage();
  await page.goto(url);
  await page.waitForSelector('#market option', { state: 'attached' });
  await page.selectOption('#market', 'SOL_USDC');
  if (options.isMobile) await page.locator('#panel-nav').getByRole('button', { name: 'Trade', exact: true }).tap();
  await page.locator('summary', { hasText: 'API key' }).click();
  await page.getByLabel(/Ed25519 secret/).fill(Buffer.alloc(32, 4).toString('base64'));
  await page.getByRole('button', { name: 'Use key' }).click();
  await page.getByRole('button', { name: 'Log out' }).waitFor();
  return page;
}

try {
  const desktop = await open({ viewport: { width: 1400, height: 900 } });
  await desktop.locator('#price').fill('120.000');
  await desktop.locator('#quantity').fill('1.50');
  await desktop.locator('#order-submit').click();
  await desktop.locator('#open-orders tr[data-order-id]').first().waitFor();
  await desktop.locator('#quantity').fill('');
  await desktop.waitForTimeout(6000); // the notice dismisses itself
  await desktop.mouse.move(900, 300); // over the chart: the crosshair and its tooltip
  await desktop.waitForTimeout(300);
  await desktop.screenshot({ path: `${output}/web-desktop.png` });

  const phone = await open({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  await phone.locator('#price').fill('120.000');
  await phone.locator('#quantity').fill('1.50');
  await phone.waitForTimeout(1000);
  await phone.screenshot({ path: `${output}/web-phone.png` });
  await phone.locator('#panel-nav button', { hasText: 'Book' }).tap();
  await phone.waitForTimeout(500);
  await phone.screenshot({ path: `${output}/web-phone-book.png` });
} finally {
  await browser.close();
}
