// Page-load timing of the dashboard in headless Chromium, for bench/dashboard_load.sh.
//
//   SHOPLAKE_URL=... TOKEN=... REGION=North RUNS=5 node tests/e2e/page_load.mjs
//
// Prints one JSON line: milliseconds from navigation until every chart of the sales page has
// its data, for the default view (cached) and for a region filter (computed on first use, then
// cached), the median of RUNS fresh page loads each.
import { chromium } from 'playwright-core';

const BASE = process.env.SHOPLAKE_URL;
const TOKEN = process.env.TOKEN;
const REGION = process.env.REGION || 'North';
const RUNS = Number(process.env.RUNS || 5);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

async function loadOnce(region) {
  const context = await browser.newContext({ viewport: { width: 1366, height: 900 } });
  await context.addInitScript((t) => localStorage.setItem('shoplake.token', t), TOKEN);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const t0 = Date.now();
  await page.goto(BASE + '/#sales');
  const done = () => page.waitForFunction(() => {
    const cards = [...document.querySelectorAll('#page .card')];
    return cards.length > 0 && cards.every((c) => c.dataset.loaded === 'true');
  }, null, { timeout: 300000, polling: 10 });
  await done();
  const first = Date.now() - t0;
  let filtered = null;
  if (region) {
    const t1 = Date.now();
    await page.selectOption("#filters [name=region]", region);
    await done();
    filtered = Date.now() - t1;
  }
  await context.close();
  if (errors.length) throw new Error(errors.join('; '));
  return { first, filtered };
}

const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
// The first region change computes the region's panels; later ones read the cache.
const cold = await loadOnce(REGION);
const warm = [];
const warmFiltered = [];
for (let i = 0; i < RUNS; i++) {
  const r = await loadOnce(REGION);
  warm.push(r.first);
  warmFiltered.push(r.filtered);
}
await browser.close();
console.log(JSON.stringify({
  default_view_ms: { first: cold.first, median: median(warm), runs: warm },
  region_filter_ms: { first: cold.filtered, median_cached: median(warmFiltered) },
}));
