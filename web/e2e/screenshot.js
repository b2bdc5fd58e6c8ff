// Takes the screenshot of docs/web.md from a running demo server (not a test):
//   cargo run --release -p exchange -- --demo      # let it trade a few minutes for candles
//   node web/e2e/screenshot.js http://127.0.0.1:8080/ docs/web.png
// Logs in as demo user 4 with its API key and rests a bid far below the market, so the open
// orders table has a row (use a fresh server: demo traders' market orders may reach old bids).
import { chromium } from 'playwright-core';

const [url = 'http://127.0.0.1:8080/', output = 'docs/web.png'] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await page.goto(url);
  await page.waitForSelector('#market option', { state: 'attached' });
  await page.selectOption('#market', 'SOL_USDC');
  await page.locator('summary', { hasText: 'API key' }).click();
  await page.getByLabel(/Ed25519 secret/).fill(Buffer.alloc(32, 4).toString('base64'));
  await page.getByRole('button', { name: 'Use key' }).click();
  await page.getByRole('button', { name: 'Log out' }).waitFor();
  await page.locator('#price').fill('120.000');
  await page.locator('#quantity').fill('1.50');
  await page.locator('#order-submit').click();
  await page.locator('#open-orders tr[data-order-id]').first().waitFor();
  await page.locator('#quantity').fill('');
  await page.waitForTimeout(1500);
  await page.screenshot({ path: output });
} finally {
  await browser.close();
}
