// Takes the screenshots of docs/web.md from a running demo server (not a test):
//   cargo run --release -p exchange -- --demo      # let it trade a few minutes for candles
//   node web/e2e/screenshot.js http://127.0.0.1:8080/ docs/img
// Writes web-desktop.png (1400x900), web-phone.png (390x844, the order form) and
// web-phone-book.png. Registers a new user, takes test funds and rests a bid far below the
// market, so the open orders table has a row (a new user: the demo users trade all the time, and
// their fills would fill the corner with notices).
import { chromium } from 'playwright-core';

const [url = 'http://127.0.0.1:8080/', output = 'docs/img'] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

const username = `screenshot-${Date.now().toString(36)}`;

/**
 * Opens the page at a size, logged in on SOL_USDC (registering the user the first time).
 * @param {import('playwright-core').BrowserContextOptions} options
 * @param {boolean} register
 */
async function open(options, register) {
  const page = await (await browser.newContext(options)).newPage();
  await page.goto(url);
  await page.waitForSelector('#market option', { state: 'attached' });
  await page.selectOption('#market', 'SOL_USDC');
  if (options.isMobile) await page.locator('#panel-nav').getByRole('button', { name: 'Trade', exact: true }).tap();
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill('correct horse battery staple');
  await page.getByRole('button', { name: register ? 'Register' : 'Log in' }).click();
  await page.getByRole('button', { name: 'Log out' }).waitFor();
  if (register) {
    await page.getByRole('button', { name: 'Get test funds' }).click();
    await page.locator('#balances tr[data-asset="USDC"]').waitFor();
  }
  return page;
}

try {
  const desktop = await open({ viewport: { width: 1400, height: 900 } }, true);
  await desktop.locator('#price').fill('100.000');
  await desktop.locator('#quantity').fill('1.50');
  await desktop.locator('#order-submit').click();
  await desktop.locator('#open-orders tr[data-order-id]').first().waitFor();
  await desktop.locator('#quantity').fill('');
  await desktop.waitForTimeout(6000); // the notice dismisses itself
  await desktop.getByRole('tab', { name: 'Open orders' }).click();
  await desktop.mouse.move(900, 300); // over the chart: the crosshair and its tooltip
  await desktop.waitForTimeout(300);
  await desktop.screenshot({ path: `${output}/web-desktop.png` });

  const phone = await open({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true }, false);
  await phone.locator('#price').fill('100.000');
  await phone.locator('#quantity').fill('1.50');
  await phone.waitForTimeout(1000);
  await phone.screenshot({ path: `${output}/web-phone.png` });
  await phone.locator('#panel-nav').getByRole('button', { name: 'Book', exact: true }).tap();
  await phone.waitForTimeout(500);
  await phone.screenshot({ path: `${output}/web-phone-book.png` });
} finally {
  await browser.close();
}
