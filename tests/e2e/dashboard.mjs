// End-to-end test of the dashboard in a real headless Chromium, driven by playwright-core.
// Started by crates/cli/tests/it/dashboard.rs against a `shoplake serve` on loopback:
//
//   SHOPLAKE_URL=http://localhost:PORT ADMIN_TOKEN=... ANALYST_TOKEN=... ANALYST_REGION=North \
//   VIEWER_TOKEN=... SCREENSHOT_DIR=... node tests/e2e/dashboard.mjs
//
// Every figure the page shows is checked against SQL written here, independently of the
// dashboard's own queries, through /api/v1/sql with the admin's token.
import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const BASE = env('SHOPLAKE_URL');
const ADMIN = env('ADMIN_TOKEN');
const ANALYST = env('ANALYST_TOKEN');
const REGION = env('ANALYST_REGION');
const VIEWER = env('VIEWER_TOKEN');
const SHOTS = env('SCREENSHOT_DIR');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
mkdirSync(SHOTS, { recursive: true });

const SALE = "status = 'COMPLETED' AND NOT is_outlier";
let failures = 0;
function check(ok, what) {
  if (ok) {
    console.log(`ok   ${what}`);
  } else {
    failures++;
    console.log(`FAIL ${what}`);
  }
}

async function sql(token, text) {
  const r = await fetch(`${BASE}/api/v1/sql`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ sql: text }),
  });
  const body = await r.json();
  if (r.status !== 200) throw new Error(`SQL ${text}: ${r.status} ${JSON.stringify(body)}`);
  return body.rows;
}

/** Revenue, orders, refunded of fact_sales under `where`, as exact strings. */
async function headline(token, where = 'TRUE') {
  const [row] = await sql(token, `SELECT
      CAST(COALESCE(SUM(CASE WHEN ${SALE} THEN amount_usd END), 0) AS VARCHAR) AS revenue,
      CAST(COUNT(DISTINCT CASE WHEN ${SALE} THEN COALESCE(transaction_id, concat('line:', CAST(file_id AS VARCHAR), ':', CAST(source_line AS VARCHAR))) END) AS VARCHAR) AS orders,
      CAST(COALESCE(SUM(CASE WHEN status = 'REFUNDED' THEN amount_usd END), 0) AS VARCHAR) AS refunded
    FROM fact_sales WHERE ${where}`);
  return row;
}

/** "12345.6" and "12345.60" are the same amount. */
const sameAmount = (a, b) => Math.round(Number(a) * 100) === Math.round(Number(b) * 100) && /^-?\d+(\.\d+)?$/.test(String(a));
const exactCents = (s) => {
  const [i, f = ''] = String(s).split('.');
  return `${i}.${(f + '00').slice(0, 2)}`;
};

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

/** A fresh browser context signed in with `token`, with console errors collected. */
async function signIn(token, { viewport = { width: 1366, height: 900 }, label }) {
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on('request', (r) => {
    if (!r.url().startsWith(BASE) && !r.url().startsWith('blob:') && !r.url().startsWith('data:')) {
      problems.push(`request outside the server: ${r.url()}`);
    }
  });
  await page.goto(BASE + '/');
  await page.waitForSelector('#login:not([hidden])');
  await page.fill('#token', token);
  await page.click('#login button[type=submit]');
  await page.waitForSelector('#main:not([hidden])');
  return { context, page, problems, label };
}

/** Wait until every card of the current page has loaded (or failed). */
async function settled(page) {
  await page.waitForFunction(() => {
    const cards = [...document.querySelectorAll('#page .card')];
    return cards.length > 0 && cards.every((c) => c.dataset.loaded);
  }, null, { timeout: 30000 });
  return page.$$eval('#page .card[data-loaded=error]', (cs) => cs.map((c) => `${c.dataset.panel}: ${c.textContent}`));
}

async function kpi(page, key) {
  return page.$eval(`[data-kpi=${key}]`, (e) => ({ value: e.dataset.value, text: e.querySelector('strong').textContent }));
}

async function openPage(session, name) {
  const { page } = session;
  await page.click(`#nav a[data-page=${name}]`);
  await page.waitForFunction((n) => document.body.dataset.page === n, name);
  const errors = await settled(page);
  check(errors.length === 0, `${session.label}: page ${name} loads every panel ${errors.join('; ')}`);
  await page.screenshot({ path: join(SHOTS, `${session.label}-${name}.png`), fullPage: true });
}

try {
  // ---------------------------------------------------------------- admin
  const admin = await signIn(ADMIN, { label: 'admin' });
  const started = Date.now();
  let errors = await settled(admin.page);
  console.log(`sales page with every chart loaded in ${Date.now() - started} ms`);
  check(errors.length === 0, `admin: sales page loads every panel ${errors.join('; ')}`);
  await admin.page.screenshot({ path: join(SHOTS, 'admin-sales.png'), fullPage: true });

  const all = await headline(ADMIN);
  const rev = await kpi(admin.page, 'revenue_usd');
  check(sameAmount(rev.value, all.revenue), `headline revenue ${rev.value} equals SQL ${all.revenue}`);
  check(rev.text.replace(/[$,]/g, '') === exactCents(all.revenue), `revenue shown as ${rev.text}`);
  const orders = await kpi(admin.page, 'orders');
  check(orders.value === all.orders, `headline orders ${orders.value} equals SQL ${all.orders}`);
  check(orders.text.replace(/,/g, '') === all.orders, `orders shown as ${orders.text}`);
  const refunded = await kpi(admin.page, 'refunded_usd');
  check(sameAmount(refunded.value, all.refunded), `refunded ${refunded.value} equals SQL ${all.refunded}`);
  const basket = await kpi(admin.page, 'avg_basket_usd');
  const expectBasket = (Number(all.revenue) / Number(all.orders)).toFixed(2);
  check(basket.value === expectBasket, `average basket ${basket.value} equals ${expectBasket}`);

  // A bar's tooltip says what it is.
  await admin.page.hover('#card-by_region rect.bar');
  const tipText = await admin.page.textContent('#tip');
  check(/\$/.test(tipText) && !(await admin.page.isHidden('#tip')), `tooltip on a region bar: ${tipText}`);

  // The CSV behind the region chart equals SQL, region by region.
  const [download] = await Promise.all([
    admin.page.waitForEvent('download'),
    admin.page.click('#card-by_region button.csv'),
  ]);
  const csvPath = join(SHOTS, 'by_region.csv');
  await download.saveAs(csvPath);
  const csv = readFileSync(csvPath, 'utf8').trim().split('\n');
  const header = csv[0].split(',');
  const byRegion = Object.fromEntries(csv.slice(1).map((l) => {
    const f = l.split(',');
    return [f[header.indexOf('region')], f[header.indexOf('revenue_usd')]];
  }));
  const sqlRegions = await sql(ADMIN, `SELECT region, CAST(SUM(amount_usd) AS VARCHAR) AS revenue
    FROM fact_sales WHERE ${SALE} GROUP BY region ORDER BY region`);
  check(sqlRegions.length === Object.keys(byRegion).length && sqlRegions.every((r) => sameAmount(byRegion[r.region], r.revenue)),
    `CSV download by region equals SQL (${JSON.stringify(byRegion)})`);

  // A filter changes every chart: one region only.
  await admin.page.selectOption('#filters [name=region]', REGION);
  errors = await settled(admin.page);
  check(errors.length === 0, `admin: sales page with region=${REGION} ${errors.join('; ')}`);
  const north = await headline(ADMIN, `region = '${REGION}'`);
  const revNorth = await kpi(admin.page, 'revenue_usd');
  check(sameAmount(revNorth.value, north.revenue) && !sameAmount(revNorth.value, all.revenue),
    `region filter: revenue ${revNorth.value} equals SQL for ${REGION} ${north.revenue}`);
  const regionBars = await admin.page.$$eval('#card-by_region rect.bar', (r) => r.length);
  check(regionBars === 1, `region filter: the region chart has one bar (${regionBars})`);
  // A date range too.
  const [range] = await sql(ADMIN, `SELECT CAST(MIN(sales_date) AS VARCHAR) AS lo, CAST(MAX(sales_date) AS VARCHAR) AS hi FROM fact_sales`);
  const mid = new Date((Date.parse(range.lo) + Date.parse(range.hi)) / 2).toISOString().slice(0, 10);
  await admin.page.fill('#filters [name=from]', mid);
  await admin.page.dispatchEvent('#filters [name=from]', 'change');
  await settled(admin.page);
  const late = await headline(ADMIN, `region = '${REGION}' AND sales_date >= DATE '${mid}'`);
  const revLate = await kpi(admin.page, 'revenue_usd');
  check(sameAmount(revLate.value, late.revenue), `date filter from ${mid}: revenue ${revLate.value} equals SQL ${late.revenue}`);
  await admin.page.screenshot({ path: join(SHOTS, 'admin-sales-filtered.png'), fullPage: true });
  await admin.page.click('#reset-filters');
  await settled(admin.page);
  check(sameAmount((await kpi(admin.page, 'revenue_usd')).value, all.revenue), 'reset brings back every region');

  for (const name of ['customers', 'team', 'campaigns', 'pipeline']) await openPage(admin, name);
  const names = await admin.page.evaluate(() => location.hash);
  check(names === '#pipeline', 'pages are addressable by URL');
  const runsShown = await admin.page.$$eval('#card-runs tbody tr', (r) => r.length);
  check(runsShown >= 1, `pipeline: recent runs listed (${runsShown})`);
  const reasons = await admin.page.$$eval('#card-quarantine_reasons rect.bar', (r) => r.length);
  const [q] = await sql(ADMIN, 'SELECT COUNT(DISTINCT reason) AS n FROM quarantine');
  check(reasons >= q.n, `pipeline: quarantine reasons charted (${reasons} bars for ${q.n} reasons)`);
  if (reasons > 0) {
    await admin.page.click('#card-quarantine_reasons rect.bar');
    await admin.page.waitForFunction(() => /·/.test(document.querySelector('#card-quarantine_rows h2').textContent));
    await settled(admin.page);
    const qrows = await admin.page.$$eval('#card-quarantine_rows tbody tr', (r) => r.length);
    check(qrows > 0, `pipeline: quarantine browser shows the rows of a reason (${qrows})`);
  }
  // The admin sees customer names in clear.
  await admin.page.click('#nav a[data-page=customers]');
  await settled(admin.page);
  const adminNames = await admin.page.$$eval('#card-top_customers tbody tr td:nth-child(2)', (t) => t.map((x) => x.textContent));
  check(adminNames.some((n) => n && n !== '***'), `admin sees customer names (${adminNames.slice(0, 2)})`);
  check(admin.problems.length === 0, `admin: no console errors or outside requests ${admin.problems.join('; ')}`);

  // On a phone.
  const phone = await signIn(ADMIN, { viewport: { width: 390, height: 844 }, label: 'phone' });
  errors = await settled(phone.page);
  check(errors.length === 0, 'phone: sales page loads');
  const overflow = await phone.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `phone: no sideways scrolling (${overflow}px)`);
  await phone.page.screenshot({ path: join(SHOTS, 'phone-sales.png'), fullPage: true });
  check(phone.problems.length === 0, `phone: no console errors ${phone.problems.join('; ')}`);

  // ---------------------------------------------------------------- analyst with a row filter
  const analyst = await signIn(ANALYST, { label: 'analyst' });
  errors = await settled(analyst.page);
  check(errors.length === 0, `analyst: sales page loads ${errors.join('; ')}`);
  const revAnalyst = await kpi(analyst.page, 'revenue_usd');
  check(sameAmount(revAnalyst.value, north.revenue), `analyst (${REGION} only) revenue ${revAnalyst.value} equals SQL for ${REGION} ${north.revenue}`);
  const analystRegions = await analyst.page.$$eval('#card-by_region text.label', (t) => t.map((x) => x.textContent));
  check(analystRegions.length === 1 && analystRegions[0] === REGION, `analyst sees only ${REGION} (${analystRegions})`);
  const navA = await analyst.page.$$eval('#nav a', (a) => a.map((x) => x.dataset.page));
  check(!navA.includes('pipeline'), `analyst has no pipeline page (${navA})`);
  await openPage(analyst, 'customers');
  const masked = await analyst.page.$$eval('#card-top_customers tbody tr td:nth-child(2)', (t) => t.map((x) => x.textContent));
  check(masked.length > 0 && masked.every((n) => n === '***' || n === ''), `analyst sees customer names masked (${masked.slice(0, 3)})`);
  const tiers = await analyst.page.textContent('#card-coupon_tiers');
  check(/hidden under a row filter/.test(tiers), 'analyst: the customer mart is hidden under the row filter, and the page says why');
  const denied = (await fetch(`${BASE}/api/v1/dashboard/runs`, { headers: { Authorization: `Bearer ${ANALYST}` } })).status;
  check(denied === 403, `analyst: pipeline panel refused (${denied})`);
  check(analyst.problems.length === 0, `analyst: no console errors ${analyst.problems.join('; ')}`);

  // ---------------------------------------------------------------- viewer
  const viewer = await signIn(VIEWER, { label: 'viewer' });
  errors = await settled(viewer.page);
  check(errors.length === 0, `viewer: sales page loads ${errors.join('; ')}`);
  check(sameAmount((await kpi(viewer.page, 'revenue_usd')).value, all.revenue), 'viewer: revenue equals SQL');
  await openPage(viewer, 'customers');
  const vMasked = await viewer.page.$$eval('#card-top_customers tbody tr td:nth-child(2)', (t) => t.map((x) => x.textContent));
  check(vMasked.length > 0 && vMasked.every((n) => n === '***' || n === ''), 'viewer sees customer names masked');
  const vSql = (await fetch(`${BASE}/api/v1/sql`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${VIEWER}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ sql: 'SELECT 1' }),
  })).status;
  check(vSql === 403, `viewer: no SQL (${vSql})`);
  check(viewer.problems.length === 0, `viewer: no console errors ${viewer.problems.join('; ')}`);

  // ---------------------------------------------------------------- a bad token
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(BASE + '/');
  await page.fill('#token', 'slk_not-a-token');
  await page.click('#login button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#login-error').textContent.length > 0);
  const msg = await page.textContent('#login-error');
  check(/invalid token/.test(msg) && await page.isHidden('#main'), `bad token: the login form says so (${msg})`);
} catch (e) {
  failures++;
  console.log(`FAIL ${e.stack || e}`);
} finally {
  await browser.close();
}
console.log(failures === 0 ? 'dashboard e2e: all checks passed' : `dashboard e2e: ${failures} checks failed`);
process.exit(failures === 0 ? 0 : 1);
