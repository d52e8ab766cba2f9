// shoplake dashboard: plain JavaScript and SVG, served from inside the binary.
// Every number comes from /api/v1/dashboard/{panel}, run under the signed-in user's role.
'use strict';

const TOKEN_KEY = 'shoplake.token';
const PAGE_TITLES = {
  sales: 'Sales', customers: 'Customers', team: 'Sales team', campaigns: 'Campaigns', pipeline: 'Pipeline',
};
const NS = 'http://www.w3.org/2000/svg';
const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];

const state = {
  me: null,
  /** Width of the card being drawn, so charts draw at 1:1 scale (text stays readable). */
  width: 520,
  page: 'sales',
  filters: {},
  timer: null,
  loading: 0,
  generation: 0,
};

// ------------------------------------------------------------------ helpers

const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function svg(tag, attrs = {}) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

/** Thousands separators on an exact decimal string; no float rounding. */
function groupDigits(text) {
  const neg = text.startsWith('-');
  const [int, frac] = (neg ? text.slice(1) : text).split('.');
  const grouped = int.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return (neg ? '-' : '') + grouped + (frac !== undefined ? '.' + frac : '');
}

/** Money from an exact decimal string: "$1,234.50". */
function money(v) {
  if (v === null || v === undefined) return '–';
  const s = String(v);
  if (!/^-?\d+(\.\d+)?$/.test(s)) return s;
  let [int, frac = ''] = s.replace('-', '').split('.');
  frac = (frac + '00').slice(0, Math.max(2, frac.length));
  return (s.startsWith('-') ? '-$' : '$') + groupDigits(int) + '.' + frac;
}

/** Short money for axis labels: $1.2M. */
function shortMoney(n) {
  const a = Math.abs(n);
  if (a >= 1e9) return '$' + (n / 1e9).toFixed(1) + 'B';
  if (a >= 1e6) return '$' + (n / 1e6).toFixed(1) + 'M';
  if (a >= 1e3) return '$' + (n / 1e3).toFixed(1) + 'k';
  return '$' + n.toFixed(0);
}

function count(v) {
  if (v === null || v === undefined) return '–';
  return groupDigits(String(v));
}

function pct(n) {
  return Number.isFinite(n) ? n.toFixed(2) + '%' : '–';
}

/** Exact division of two decimal strings to cents (half away from zero), as a string. */
function divideToCents(num, den) {
  if (!den || Number(den) === 0) return null;
  const scale = (s) => {
    const [i, f = ''] = String(s).replace('-', '').split('.');
    return { v: BigInt(i + f), d: f.length, neg: String(s).startsWith('-') };
  };
  const a = scale(num), b = scale(den);
  // (a.v / 10^a.d) / (b.v / 10^b.d) * 100, rounded
  let n = a.v * 100n * 10n ** BigInt(b.d);
  let d = b.v * 10n ** BigInt(a.d);
  let q = n / d, r = n % d;
  if (2n * r >= d) q += 1n;
  const neg = a.neg !== b.neg && q !== 0n;
  const s = q.toString().padStart(3, '0');
  return (neg ? '-' : '') + s.slice(0, -2) + '.' + s.slice(-2);
}

function rowsAsObjects(data) {
  const names = data.columns.map((c) => c.name);
  return data.rows.map((r) => Object.fromEntries(names.map((n, i) => [n, r[i]])));
}

function toNumber(v) {
  return v === null || v === undefined ? 0 : Number(v);
}

// ------------------------------------------------------------------ API

class AuthError extends Error {}

async function api(path) {
  const token = localStorage.getItem(TOKEN_KEY);
  const r = await fetch(path, { headers: { Authorization: 'Bearer ' + token } });
  if (r.status === 401) throw new AuthError((await r.json()).error);
  if (!r.ok) {
    let msg = r.statusText;
    try { msg = (await r.json()).error; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return r;
}

function query(extra = {}) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries({ ...state.filters, ...extra })) {
    if (v !== '' && v !== null && v !== undefined) p.set(k, v);
  }
  const s = p.toString();
  return s ? '?' + s : '';
}

async function panelData(name, extra = {}) {
  const r = await api('/api/v1/dashboard/' + name + query(extra));
  return r.json();
}

async function downloadCsv(name, extra = {}) {
  const r = await api('/api/v1/dashboard/' + name + query({ ...extra, format: 'csv' }));
  const blob = await r.blob();
  const url = URL.createObjectURL(blob);
  const a = el('a', { href: url, download: 'shoplake-' + name + '.csv' });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// ------------------------------------------------------------------ tooltip

const tip = () => $('#tip');

function bindTip(node, text) {
  node.setAttribute('data-tip', text);
  node.setAttribute('tabindex', '0');
}

document.addEventListener('mousemove', (e) => {
  const t = e.target.closest && e.target.closest('[data-tip]');
  const box = tip();
  if (!t) { box.hidden = true; return; }
  box.textContent = t.getAttribute('data-tip');
  box.hidden = false;
  const x = Math.min(e.clientX + 12, window.innerWidth - box.offsetWidth - 8);
  box.style.left = x + 'px';
  box.style.top = (e.clientY + 14) + 'px';
});
document.addEventListener('focusin', (e) => {
  const t = e.target.closest && e.target.closest('[data-tip]');
  const box = tip();
  if (!t) { box.hidden = true; return; }
  const r = t.getBoundingClientRect();
  box.textContent = t.getAttribute('data-tip');
  box.hidden = false;
  box.style.left = Math.max(8, r.left) + 'px';
  box.style.top = (r.bottom + 6) + 'px';
});

// ------------------------------------------------------------------ charts

/** Horizontal bars: one per item, labelled, value at the end. */
function hbars(items, { value, label, fmt = shortMoney, tipText, color = PALETTE[0] }) {
  const width = state.width, rowH = 22, labelW = width < 420 ? 100 : 150, valueW = 64;
  const maxChars = Math.floor((labelW - 10) / 7);
  const h = Math.max(rowH * items.length + 8, 30);
  const s = svg('svg', { viewBox: `0 0 ${width} ${h}`, class: 'chart', role: 'img' });
  const max = Math.max(...items.map((d) => Math.abs(value(d))), 1);
  items.forEach((d, i) => {
    const y = 4 + i * rowH;
    const w = Math.max(1, (Math.abs(value(d)) / max) * (width - labelW - valueW - 10));
    const name = svg('text', { x: labelW - 6, y: y + 14, 'text-anchor': 'end', class: 'label' });
    const full = String(label(d));
    name.textContent = full.length > maxChars ? full.slice(0, maxChars - 1) + '…' : full;
    s.append(name);
    const bar = svg('rect', { x: labelW, y: y + 2, width: w, height: rowH - 6, rx: 2, fill: typeof color === 'function' ? color(d, i) : color, class: 'bar' });
    bindTip(bar, tipText ? tipText(d) : `${full}: ${fmt(value(d))}`);
    s.append(bar);
    const v = svg('text', { x: labelW + w + 4, y: y + 14, class: 'value' });
    v.textContent = fmt(value(d));
    s.append(v);
  });
  return s;
}

/** Vertical bars over time, optionally stacked series, with a y axis. */
function columns(labels, series, { fmt = shortMoney, stacked = false } = {}) {
  const width = state.width, height = 240, left = 56, bottom = 30, top = 10;
  const s = svg('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img' });
  const n = labels.length;
  if (n === 0) return s;
  const totals = labels.map((_, i) => stacked
    ? series.reduce((a, se) => a + Math.max(0, se.values[i]), 0)
    : Math.max(...series.map((se) => se.values[i])));
  const max = Math.max(...totals, 1);
  const plotH = height - bottom - top, plotW = width - left - 8;
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4, y = top + plotH - (plotH * k) / 4;
    s.append(svg('line', { x1: left, x2: width - 8, y1: y, y2: y, class: 'grid' }));
    const t = svg('text', { x: left - 4, y: y + 4, 'text-anchor': 'end', class: 'axis' });
    t.textContent = fmt(v);
    s.append(t);
  }
  const slot = plotW / n;
  const groupW = Math.max(1, slot * 0.8);
  const each = stacked ? groupW : groupW / series.length;
  const every = Math.ceil(n / Math.max(2, Math.floor(plotW / 64)));
  labels.forEach((lab, i) => {
    let base = 0;
    series.forEach((se, j) => {
      const v = Math.max(0, se.values[i]);
      const hgt = (v / max) * plotH;
      const x = left + i * slot + (slot - groupW) / 2 + (stacked ? 0 : j * each);
      const y = top + plotH - hgt - (stacked ? (base / max) * plotH : 0);
      const r = svg('rect', { x, y, width: Math.max(1, each - 1), height: Math.max(0, hgt), fill: se.color || PALETTE[j], class: 'bar' });
      bindTip(r, `${lab} · ${se.name}: ${se.tip ? se.tip(i) : fmt(se.values[i])}`);
      s.append(r);
      base += v;
    });
    if (i % every === 0) {
      const t = svg('text', { x: left + i * slot + slot / 2, y: height - bottom + 14, 'text-anchor': 'middle', class: 'axis' });
      t.textContent = lab;
      s.append(t);
    }
  });
  return s;
}

function legend(series) {
  return el('div', { class: 'legend' }, ...series.map((se, j) =>
    el('span', {}, el('i', { class: 'swatch swatch-' + (se.swatch ?? j) }), se.name)));
}

function table(data, { formats = {}, limit = 200, onRow = null } = {}) {
  const cols = data.columns;
  const t = el('table', { class: 'data' });
  t.append(el('thead', {}, el('tr', {}, ...cols.map((c) => el('th', { text: c.name.replace(/_/g, ' ') })))));
  const body = el('tbody');
  data.rows.slice(0, limit).forEach((r) => {
    const tr = el('tr', onRow ? { class: 'clickable', onclick: () => onRow(r) } : {});
    r.forEach((v, i) => {
      const c = cols[i];
      const f = formats[c.name];
      let text;
      if (f) text = f(v);
      else if (v === null) text = '';
      else if (c.type === 'decimal' && /usd$/.test(c.name)) text = money(v);
      else if (c.type === 'integer' || c.type === 'decimal') text = count(v);
      else if (c.type === 'float') text = Math.abs(v) >= 1000 ? count(Math.round(v)) : String(Number(Number(v).toPrecision(4)));
      else if (c.type === 'timestamp') text = String(v).replace('T', ' ').replace(/\.\d+/, '').replace('Z', '');
      else text = String(v);
      const td = el('td', { class: c.type === 'integer' || c.type === 'decimal' || c.type === 'float' ? 'num' : '' , text });
      if (text.length > 80) { td.textContent = text.slice(0, 79) + '…'; td.title = text; }
      tr.append(td);
    });
    body.append(tr);
  });
  t.append(body);
  return el('div', { class: 'scroll' }, t);
}

// ------------------------------------------------------------------ cards

/** A card for one panel: title, body, CSV download, note. Returns the body element. */
function card(id, title, { wide = false, csv = id, extra = {}, note = null } = {}) {
  const body = el('div', { class: 'body', 'aria-busy': 'true' }, el('p', { class: 'muted', text: 'Loading…' }));
  const actions = el('div', { class: 'actions' });
  if (csv) {
    actions.append(el('button', {
      type: 'button', class: 'csv', 'data-csv': csv, title: 'Download the numbers behind this chart',
      onclick: () => downloadCsv(csv, extra).catch(showError),
    }, 'CSV'));
  }
  const c = el('section', { class: 'card' + (wide ? ' wide' : ''), id: 'card-' + id, 'data-panel': id },
    el('header', {}, el('h2', { text: title }), actions), body,
    note ? el('p', { class: 'note', text: note }) : null);
  $('#page').append(c);
  return body;
}

async function fill(body, name, render, extra = {}) {
  const gen = state.generation;
  try {
    const data = await panelData(name, extra);
    if (gen !== state.generation) return;
    body.replaceChildren();
    if (data.unavailable) {
      body.append(el('p', { class: 'muted unavailable', text: data.unavailable }));
    } else if (data.rows.length === 0) {
      body.append(el('p', { class: 'muted empty', text: 'Nothing to show' + (state.page === 'pipeline' ? '.' : ' for these filters.') }));
    } else {
      state.width = Math.max(260, Math.floor(body.clientWidth) || 520);
      render(body, data);
    }
    body.setAttribute('aria-busy', 'false');
    body.closest('.card').setAttribute('data-loaded', 'true');
  } catch (e) {
    if (e instanceof AuthError) return signOut(e.message);
    body.replaceChildren(el('p', { class: 'error', role: 'alert', text: e.message }));
    body.setAttribute('aria-busy', 'false');
    body.closest('.card').setAttribute('data-loaded', 'error');
  }
}

function showError(e) {
  if (e instanceof AuthError) return signOut(e.message);
  $('#updated').textContent = 'Error: ' + e.message;
}

// ------------------------------------------------------------------ pages

const PAGES = {
  sales() {
    const kpis = card('kpis', 'Headline', { wide: true });
    fill(kpis, 'kpis', (b, d) => {
      const k = rowsAsObjects(d)[0];
      const basket = divideToCents(k.revenue_usd, k.orders);
      const gross = Number(k.revenue_usd) + Number(k.refunded_usd);
      const rate = gross > 0 ? (Number(k.refunded_usd) / gross) * 100 : NaN;
      const tiles = [
        ['revenue_usd', 'Revenue', money(k.revenue_usd), k.revenue_usd],
        ['orders', 'Orders', count(k.orders), k.orders],
        ['avg_basket_usd', 'Average basket', money(basket), basket],
        ['units', 'Units sold', count(k.units), k.units],
        ['customers', 'Customers', count(k.customers), k.customers],
        ['refunded_usd', 'Refunded', money(k.refunded_usd), k.refunded_usd],
        ['refund_rate', 'Refund rate', pct(rate), Number.isFinite(rate) ? rate.toFixed(2) : ''],
      ];
      b.append(el('div', { class: 'kpis' }, ...tiles.map(([key, label, text, raw]) =>
        el('div', { class: 'kpi', 'data-kpi': key, 'data-value': raw ?? '' },
          el('span', { class: 'kpi-label', text: label }), el('strong', { text })))));
    });

    const grain = state.filters.grain || 'month';
    const over = card('revenue_over_time', `Revenue by ${grain}`, { wide: true });
    fill(over, 'revenue_over_time', (b, d) => {
      const rows = rowsAsObjects(d);
      const labels = rows.map((r) => grain === 'month' ? r.period.slice(0, 7) : r.period);
      const series = [
        { name: 'Revenue', values: rows.map((r) => toNumber(r.revenue_usd)), tip: (i) => money(rows[i].revenue_usd) },
        { name: 'Refunded', values: rows.map((r) => toNumber(r.refunded_usd)), tip: (i) => money(rows[i].refunded_usd), color: PALETTE[3], swatch: 3 },
      ];
      b.append(columns(labels, series), legend(series));
    });

    const region = card('by_region', 'Revenue by region');
    fill(region, 'by_region', (b, d) => b.append(hbars(rowsAsObjects(d), {
      value: (r) => toNumber(r.revenue_usd), label: (r) => r.region,
      tipText: (r) => `${r.region}: ${money(r.revenue_usd)} revenue, ${money(r.refunded_usd)} refunded`,
    })));

    const channel = card('by_channel', 'Store vs e-commerce');
    fill(channel, 'by_channel', (b, d) => b.append(hbars(rowsAsObjects(d), {
      value: (r) => toNumber(r.revenue_usd), label: (r) => r.channel, color: (_, i) => PALETTE[i + 1],
      tipText: (r) => `${r.channel}: ${money(r.revenue_usd)} revenue, ${count(r.sale_lines)} sale lines`,
    })));

    const cat = card('by_category', 'Revenue by category');
    fill(cat, 'by_category', (b, d) => b.append(hbars(rowsAsObjects(d), {
      value: (r) => toNumber(r.revenue_usd), label: (r) => r.category, color: PALETTE[2],
      tipText: (r) => `${r.category}: ${money(r.revenue_usd)}, ${count(r.units)} units`,
    })));

    const top = card('top_products', 'Top products');
    fill(top, 'top_products', (b, d) => b.append(hbars(rowsAsObjects(d), {
      value: (r) => toNumber(r.revenue_usd), label: (r) => r.product_name || r.product_id, color: PALETTE[4],
      tipText: (r) => `${r.product_name || r.product_id} (${r.product_id}, ${r.category || 'no category'}): ${money(r.revenue_usd)}, ${count(r.units)} units`,
    })));

    const wk = card('weekday', 'Weekday vs weekend', { wide: true });
    fill(wk, 'weekday', (b, d) => {
      const rows = rowsAsObjects(d);
      const avg = (r) => (r.days > 0 ? toNumber(r.revenue_usd) / r.days : 0);
      const sum = (pred) => rows.filter(pred).reduce((a, r) => [a[0] + toNumber(r.revenue_usd), a[1] + r.days], [0, 0]);
      const [wdRev, wdDays] = sum((r) => !r.is_weekend);
      const [weRev, weDays] = sum((r) => r.is_weekend);
      const series = [{ name: 'Average revenue per day', values: rows.map(avg), tip: (i) => `${shortMoney(avg(rows[i]))} per day over ${rows[i].days} days; ${money(rows[i].revenue_usd)} in all` }];
      b.append(columns(rows.map((r) => r.day_of_week.slice(0, 3)), series));
      b.append(el('p', { class: 'summary' },
        `Weekdays: ${shortMoney(wdDays ? wdRev / wdDays : 0)} per day · Weekend: ${shortMoney(weDays ? weRev / weDays : 0)} per day`));
    });
  },

  customers() {
    const top = card('top_customers', 'Top customers', { wide: true });
    fill(top, 'top_customers', (b, d) => {
      const rows = rowsAsObjects(d);
      b.append(hbars(rows, {
        value: (r) => toNumber(r.revenue_usd), label: (r) => (r.full_name && r.full_name !== '***' ? r.full_name : r.customer_id),
        tipText: (r) => `${r.full_name || '(no name)'} · ${r.customer_id}${r.city ? ' · ' + r.city : ''}: ${money(r.revenue_usd)}`,
      }), table(d));
    });
    const nr = card('new_returning', 'New and returning customers per month', { wide: true });
    fill(nr, 'new_returning', (b, d) => {
      const rows = rowsAsObjects(d);
      const series = [
        { name: 'New', values: rows.map((r) => r.new_customers), tip: (i) => count(rows[i].new_customers) },
        { name: 'Returning', values: rows.map((r) => r.returning_customers), tip: (i) => count(rows[i].returning_customers) },
      ];
      b.append(columns(rows.map((r) => r.month.slice(0, 7)), series, { fmt: (v) => count(Math.round(v)), stacked: true }), legend(series));
    });
    const tiers = card('coupon_tiers', 'Coupon tiers (latest month)', { note: 'From mart_customer_monthly: dates select the month; region, store and channel do not apply.' });
    fill(tiers, 'coupon_tiers', (b, d) => {
      const rows = rowsAsObjects(d);
      b.append(el('p', { class: 'summary', text: 'Month ' + rows[0].month }));
      b.append(hbars(rows, {
        value: (r) => r.customers, label: (r) => r.coupon_tier, fmt: count, color: PALETTE[1],
        tipText: (r) => `${r.coupon_tier}${r.discount_percent ? ' (' + r.discount_percent + '% off)' : ''}: ${count(r.customers)} customers, ${money(r.total_sales_usd)}`,
      }));
    });
  },

  team() {
    const inc = card('incentives', 'Incentives per month', { wide: true, note: 'Incentive: a share of the month’s sales for the top seller of each store (marts.incentive_share).' });
    fill(inc, 'incentives', (b, d) => {
      const rows = rowsAsObjects(d);
      const series = [{ name: 'Incentives', values: rows.map((r) => toNumber(r.incentive_usd)), tip: (i) => `${money(rows[i].incentive_usd)} to ${rows[i].top_sellers} top sellers, on ${money(rows[i].total_sales_usd)} of sales` }];
      b.append(columns(rows.map((r) => r.month), series));
    });
    const rank = card('sales_team', 'Monthly ranking per store (latest month)', { wide: true });
    fill(rank, 'sales_team', (b, d) => {
      b.append(el('p', { class: 'summary', text: 'Month ' + d.rows[0][0] }), table(d, { limit: 1000 }));
    });
  },

  campaigns() {
    const c = card('campaigns', 'Campaigns: sales during each campaign against the same number of days before it', { wide: true });
    fill(c, 'campaigns', (b, d) => {
      const rows = rowsAsObjects(d);
      const series = [
        { name: 'Before', values: rows.map((r) => toNumber(r.before_usd)), tip: (i) => money(rows[i].before_usd), color: PALETTE[7], swatch: 7 },
        { name: 'During', values: rows.map((r) => toNumber(r.during_usd)), tip: (i) => money(rows[i].during_usd) },
      ];
      b.append(columns(rows.map((r) => r.campaign_id), series), legend(series));
      const uplift = (r) => {
        const before = toNumber(r.before_usd);
        return before > 0 ? (((toNumber(r.during_usd) - before) / before) * 100).toFixed(1) + '%' : '–';
      };
      const withUplift = {
        columns: [...d.columns, { name: 'uplift', type: 'text' }],
        rows: d.rows.map((r, i) => [...r, uplift(rows[i])]),
      };
      b.append(table(withUplift));
    });
  },

  pipeline() {
    const runs = card('runs', 'Recent runs', { wide: true, note: 'Click a run to see its tasks.' });
    const tasks = card('tasks', 'Tasks of the latest run', { wide: true });
    const showTasks = (runId) => {
      $('#card-tasks h2').textContent = runId ? `Tasks of run ${runId}` : 'Tasks of the latest run';
      $('#card-tasks .csv').onclick = () => downloadCsv('tasks', runId ? { run_id: runId } : {}).catch(showError);
      fill(tasks, 'tasks', (b, d) => b.append(table(d)), runId ? { run_id: runId } : {});
    };
    fill(runs, 'runs', (b, d) => b.append(table(d, { onRow: (r) => showTasks(r[0]) })));
    showTasks(null);
    const fs = card('files_by_status', 'Files by status');
    fill(fs, 'files_by_status', (b, d) => b.append(hbars(rowsAsObjects(d), {
      value: (r) => r.files, label: (r) => r.status, fmt: count, color: (r) => (r.status === 'failed' ? PALETTE[3] : PALETTE[2]),
    })));
    const qr = card('quarantine_reasons', 'Quarantine by reason', { note: 'Click a bar to browse its rows.' });
    const rows = card('quarantine_rows', 'Quarantined rows', { wide: true });
    let offset = 0, reason = '';
    const browse = () => {
      const extra = { offset, ...(reason ? { reason } : {}) };
      $('#card-quarantine_rows h2').textContent = `Quarantined rows${reason ? ' · ' + reason : ''} · from ${offset + 1}`;
      $('#card-quarantine_rows .csv').onclick = () => downloadCsv('quarantine_rows', extra).catch(showError);
      fill(rows, 'quarantine_rows', (b, d) => {
        b.append(table(d));
        b.append(el('div', { class: 'pager' },
          el('button', { type: 'button', disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - 50); browse(); } }, 'Previous'),
          el('button', { type: 'button', disabled: d.rows.length < 50, onclick: () => { offset += 50; browse(); } }, 'Next')));
      }, extra);
    };
    fill(qr, 'quarantine_reasons', (b, d) => {
      const svgEl = hbars(rowsAsObjects(d), {
        value: (r) => r.quarantined_rows, label: (r) => `${r.reason} (${r.source})`, fmt: count, color: PALETTE[3],
      });
      rowsAsObjects(d).forEach((r, i) => {
        const bar = svgEl.querySelectorAll('rect')[i];
        bar.classList.add('clickable');
        bar.addEventListener('click', () => { reason = r.reason; offset = 0; browse(); });
      });
      b.append(svgEl);
    });
    browse();
    const q = card('quality', 'Data-quality results', { wide: true });
    fill(q, 'quality', (b, d) => b.append(table(d)));
    const drift = card('schema_drift', 'Schema drift', { wide: true });
    fill(drift, 'schema_drift', (b, d) => b.append(table(d)));
    const rf = card('recent_files', 'Recent files', { wide: true });
    fill(rf, 'recent_files', (b, d) => b.append(table(d)));
    const tv = card('table_versions', 'Table versions');
    fill(tv, 'table_versions', (b, d) => b.append(table(d)));
  },
};

// ------------------------------------------------------------------ shell

function readFilters() {
  const f = new FormData($('#filters'));
  state.filters = {};
  for (const k of ['from', 'to', 'region', 'store', 'channel', 'grain']) state.filters[k] = f.get(k) || '';
  if (state.filters.grain === 'month') delete state.filters.grain;
}

function render() {
  state.generation++;
  readFilters();
  const page = state.me.pages.includes(state.page) ? state.page : 'sales';
  state.page = page;
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.dataset.page === page);
    if (a.dataset.page === page) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  document.body.dataset.page = page;
  $('#page').replaceChildren();
  PAGES[page]();
  $('#updated').textContent = 'Updated ' + new Date().toLocaleTimeString();
}

async function loadOptions() {
  const d = await panelData('options', { from: '', to: '', region: '', store: '', channel: '' });
  if (d.unavailable) return;
  const byKind = {};
  for (const [kind, value, label] of d.rows) (byKind[kind] ||= []).push([value, label]);
  for (const kind of ['region', 'store', 'channel']) {
    const sel = $(`#filters [name=${kind}]`);
    const keep = sel.value;
    sel.replaceChildren(el('option', { value: '' }, 'All'),
      ...(byKind[kind] || []).map(([v, l]) => el('option', { value: v }, l ? `${l} (${v})` : v)));
    sel.value = keep;
  }
  const first = byKind.first_date?.[0]?.[0], last = byKind.last_date?.[0]?.[0];
  for (const name of ['from', 'to']) {
    const input = $(`#filters [name=${name}]`);
    if (first) input.min = first;
    if (last) input.max = last;
  }
  $('#filters').dataset.range = first && last ? `${first} – ${last}` : '';
}

function setTimer() {
  clearInterval(state.timer);
  const secs = Number($('#every').value);
  if (secs > 0) state.timer = setInterval(render, secs * 1000);
}

function signOut(message) {
  localStorage.removeItem(TOKEN_KEY);
  clearInterval(state.timer);
  state.me = null;
  $('#main').hidden = true;
  $('#nav').replaceChildren();
  $('#who').replaceChildren();
  $('#login').hidden = false;
  $('#login-error').textContent = message || '';
}

async function start() {
  let me;
  try {
    me = await (await api('/api/v1/dashboard')).json();
  } catch (e) {
    signOut(e instanceof AuthError ? e.message : 'The server did not answer: ' + e.message);
    return;
  }
  state.me = me;
  $('#login').hidden = true;
  $('#main').hidden = false;
  $('#nav').replaceChildren(...me.pages.map((p) => el('a', { href: '#' + p, 'data-page': p, text: PAGE_TITLES[p] })));
  const filter = Object.entries(me.row_filter || {}).map(([k, v]) => `${k}=${v.join(',')}`).join('; ');
  $('#who').replaceChildren(...[
    el('span', { class: 'user', text: me.user }),
    el('span', { class: 'role', text: me.role }),
    me.masked ? el('span', { class: 'badge', title: 'customer names and addresses are masked', text: 'PII masked' }) : null,
    filter ? el('span', { class: 'badge', title: 'you see only these rows', text: filter }) : null,
    el('button', { type: 'button', class: 'link', onclick: () => signOut('Signed out.') }, 'Sign out'),
  ].filter(Boolean));
  const every = $('#every');
  const choices = [[0, 'Off'], [60, '1 min'], [300, '5 min'], [900, '15 min']];
  if (!choices.some(([s]) => s === me.refresh_secs)) choices.push([me.refresh_secs, `${me.refresh_secs} s`]);
  every.replaceChildren(...choices.map(([s, l]) => el('option', { value: s }, l)));
  every.value = String(me.refresh_secs);
  state.page = (location.hash || '#sales').slice(1);
  try { await loadOptions(); } catch (e) { showError(e); }
  render();
  setTimer();
}

document.addEventListener('DOMContentLoaded', () => {
  $('#login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    localStorage.setItem(TOKEN_KEY, $('#token').value.trim());
    $('#token').value = '';
    start();
  });
  $('#filters').addEventListener('change', render);
  $('#filters').addEventListener('submit', (e) => { e.preventDefault(); render(); });
  $('#reset-filters').addEventListener('click', () => { $('#filters').reset(); render(); });
  $('#refresh').addEventListener('click', render);
  $('#every').addEventListener('change', setTimer);
  window.addEventListener('hashchange', () => { state.page = location.hash.slice(1); if (state.me) render(); });
  if (localStorage.getItem(TOKEN_KEY)) start(); else signOut('');
});
