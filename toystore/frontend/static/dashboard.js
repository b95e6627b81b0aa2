/*
 * toystore — live dashboard: the behaviour.
 *
 * The page listens to one Server-Sent Events feed, /dashboard/events:
 *
 *   event "snapshot"  the whole state; sent on every (re)connect: replace everything.
 *   event "change"    only the top-level sections that changed, each complete,
 *                     except "events" and "elections", which carry only NEW entries.
 *
 * We keep the last state in `state`, merge each message into it, and redraw
 * the sections it touched.  The only other requests are the Buy button's
 * POST /orders.  Nothing polls.
 *
 * Safety: every text that comes from the store reaches the page through
 * textContent, Text nodes (Element.append with a string) or setAttribute.
 * Nothing is ever parsed as HTML, so a toy called "<img onerror=...>" is
 * only a strange name.
 */
'use strict';

(() => {
  // -- settings ---------------------------------------------------------------

  const FEED_URL = '/dashboard/events';
  const ORDER_URL = '/orders';
  const MAX_EVENTS = 100;       // timeline entries kept
  const MAX_ELECTIONS = 50;     // leader changes kept
  const MAX_MY_ORDERS = 5;      // "My last orders"
  const RETRIES = 3;            // extra tries of one order, with the same key
  const RETRY_DELAY_MS = 500;
  const SPARK_SECONDS = 60;     // the sparkline's time span
  const GONE_MS = 4000;         // how long a name that left the cache stays in "Just left"
  const KINDS = ['product', 'order', 'order_query'];  // request kinds, in display order
  const DASH = '—';
  const SECTIONS = ['at', 'frontend', 'processes', 'leader', 'elections', 'cache', 'catalog', 'requests', 'events'];

  // -- small helpers ----------------------------------------------------------

  const $ = (selector, root = document) => root.querySelector(selector);

  /**
   * Make an element.  `attrs` go through setAttribute (null/undefined/false
   * are skipped); `children` are nodes or strings, and append() turns a string
   * into a Text node, never into markup.
   */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
  const asArray = (v) => (Array.isArray(v) ? v : []);
  const asObject = (v) => (v && typeof v === 'object' && !Array.isArray(v) ? v : {});
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  const fmtInt = (v) => (isNum(v) ? Math.round(v).toLocaleString('en-US') : DASH);
  const fmtFixed = (v, digits) => (isNum(v) ? v.toFixed(digits) : DASH);

  /** Seconds as milliseconds, with as many decimals as make sense. */
  function fmtMs(seconds) {
    if (!isNum(seconds)) return DASH;
    const ms = seconds * 1000;
    return `${ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0)} ms`;
  }

  /** A share (0..1) as a percentage. */
  function fmtPercent(share) {
    if (!isNum(share)) return DASH;
    const pct = share * 100;
    return `${pct > 0 && pct < 0.1 ? pct.toFixed(2) : pct.toFixed(1)} %`;
  }

  /** Unix seconds as local HH:MM:SS (24 h, the same everywhere). */
  function fmtClock(at) {
    if (!isNum(at)) return '--:--:--';
    const d = new Date(at * 1000);
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
  }

  /** Restart a CSS animation on `node`: drop the class, force a layout, add it back. */
  function flash(node, ...classes) {
    node.classList.remove('up', 'down', 'ordered', 'refused', ...classes);
    void node.offsetWidth;  // reading a layout value makes the browser notice the removal
    node.classList.add(...classes);
  }

  // -- the state --------------------------------------------------------------

  /** The last state the feed gave, with "events" and "elections" accumulated. */
  let state = { events: [], elections: [] };

  /** Name of replica `id` as the process list spells it ("order-3"). */
  function replicaName(id) {
    if (id === null || id === undefined) return null;
    const proc = asArray(state.processes).find((p) => p && p.kind === 'order' && p.id === id);
    return proc && proc.name ? String(proc.name) : `order-${id}`;
  }

  function onSnapshot(data) {
    state = { ...data };
    state.events = asArray(data.events).slice(-MAX_EVENTS);
    state.elections = asArray(data.elections).slice(-MAX_ELECTIONS);
    // Redraw every panel (a section the snapshot lacks is drawn as unknown).
    // Its evicted/invalidated lists are old news: those are not flashed.
    render(new Set(SECTIONS), { snapshot: true });
  }

  function onChange(data) {
    for (const [key, value] of Object.entries(data)) {
      if (key !== 'events' && key !== 'elections') state[key] = value;  // a whole section: replace it
    }
    const newEvents = asArray(data.events);
    const newElections = asArray(data.elections);
    state.events = state.events.concat(newEvents).slice(-MAX_EVENTS);
    state.elections = state.elections.concat(newElections).slice(-MAX_ELECTIONS);
    render(new Set(Object.keys(data)), { newEvents, newElections });
  }

  /** Redraw what depends on the `changed` sections. */
  function render(changed, how) {
    const any = (...names) => names.some((name) => changed.has(name));
    if (any('at')) renderAsOf();
    if (any('leader', 'processes')) renderLeader();
    if (any('processes', 'frontend', 'catalog', 'leader')) renderProcesses();
    if (any('cache')) renderCache(!how.snapshot);
    if (any('catalog')) renderShop();
    if (any('requests')) renderRequests();
    // The two logs: redrawn whole on a snapshot, else only their new entries put on top.
    const elections = how.snapshot ? null : how.newElections;
    const events = how.snapshot ? null : how.newEvents;
    if (!elections || elections.length) {
      renderLog($('#elections .elections-list'), state.elections, elections, electionItem, MAX_ELECTIONS);
    }
    if (!events || events.length) renderLog($('#events .timeline'), state.events, events, eventItem, MAX_EVENTS);
  }

  // -- header -----------------------------------------------------------------

  function renderAsOf() {
    $('#as-of').textContent = isNum(state.at) ? `as of ${fmtClock(state.at)}` : '';
  }

  let shownLeader = null;  // "id/epoch" last drawn, to flash a change

  function renderLeader() {
    const leader = asObject(state.leader);
    const node = $('#leader');
    const since = $('#leader-since');
    const known = leader.id !== null && leader.id !== undefined;
    if (known) {
      const epoch = isNum(leader.epoch) ? ` epoch ${leader.epoch}` : '';
      node.textContent = `${replicaName(leader.id)} leads${epoch}`;
      node.setAttribute('data-leader', String(leader.id));
      since.textContent = isNum(leader.since) ? `since ${fmtClock(leader.since)}` : '';
    } else {
      node.textContent = 'no leader';
      node.setAttribute('data-leader', '');
      since.textContent = 'orders cannot be placed until one is elected';
    }
    const key = known ? `${leader.id}/${leader.epoch}` : '';
    if (shownLeader !== null && key !== shownLeader) flash(node, 'flash');
    shownLeader = key;
  }

  // -- processes --------------------------------------------------------------

  const cards = new Map();  // process name -> its <li class="card">

  /** One "label / value" pair of a card; `cls` marks the value (e.g. "behind"). */
  const fact = (label, value, cls) => el('div', {}, el('dt', {}, label), el('dd', { class: cls }, value));

  function renderProcesses() {
    const list = $('#processes .cards');
    const seen = new Set();
    asArray(state.processes).forEach((proc, i) => {
      if (!proc || proc.name === null || proc.name === undefined) return;
      const name = String(proc.name);
      seen.add(name);
      let card = cards.get(name);
      if (!card) {
        card = el('li', { class: 'card', 'data-process': name });
        cards.set(name, card);
      }
      if (list.children[i] !== card) list.insertBefore(card, list.children[i] || null);
      drawCard(card, proc);
    });
    for (const [name, card] of cards) {
      if (!seen.has(name)) { card.remove(); cards.delete(name); }
    }
  }

  function drawCard(card, proc) {
    const up = proc.up === true;
    const role = proc.role ? String(proc.role) : up ? 'unknown' : 'down';
    card.setAttribute('data-role', role);
    card.setAttribute('data-up', String(up));
    card.setAttribute('data-kind', String(proc.kind || ''));

    const head = el('div', { class: 'card-head' },
      el('span', { class: 'name' }, String(proc.name)),
      el('span', { class: 'role' }, up ? role : 'down'));
    const facts = el('dl', { class: 'facts' });
    const parts = [head, facts];

    if (proc.kind === 'order') {
      const lag = proc.lag;
      facts.append(
        fact('epoch', fmtInt(proc.epoch)),
        fact('last order', fmtInt(proc.last_order)),
        fact('committed order', fmtInt(proc.committed_order)),
        fact('log', fmtInt(proc.length)),
        fact('lag', isNum(lag) ? fmtInt(lag) : DASH, isNum(lag) && lag > 0 ? 'behind' : null));
      if (!up) {
        parts.push(el('p', { class: 'serving' }, 'does not answer'));
      } else if (role === 'leader') {
        parts.push(proc.serving
          ? el('p', { class: 'serving yes' }, 'serving orders')
          : el('p', { class: 'serving' }, 'not serving yet'));
      }
      const catching = asObject(proc.catching_up);
      if (isNum(catching.have) && isNum(catching.of) && catching.have < catching.of) {
        const bar = el('progress', { max: Math.max(catching.of, 1), value: Math.min(catching.have, catching.of) });
        parts.push(el('div', { class: 'catchup' },
          `catching up: ${fmtInt(catching.have)} / ${fmtInt(catching.of)} records`, bar));
      }
    } else if (proc.kind === 'frontend') {
      // What this front-end believes: who leads, and where its order calls go.
      const fe = asObject(state.frontend);
      facts.append(
        fact('leader', replicaName(fe.leader) || DASH),
        fact('calls go to', replicaName(fe.via) || DASH),
        fact('epoch', fmtInt(fe.epoch)));
    } else if (proc.kind === 'catalog') {
      const cat = asObject(state.catalog);
      const toys = asArray(cat.toys);
      const stock = toys.reduce((sum, t) => sum + (t && isNum(t.quantity) ? t.quantity : 0), 0);
      facts.append(
        fact('toys', toys.length ? fmtInt(toys.length) : DASH),
        fact('in stock', toys.length ? fmtInt(stock) : DASH),
        fact('restocks', fmtInt(cat.restocks)));
    }
    card.replaceChildren(...parts);
  }

  // -- leader changes and timeline --------------------------------------------

  /** A leader change: "epoch 7: order-2 → order-3, orders unavailable 0.41 s". */
  function electionItem(e) {
    const epoch = isNum(e.epoch) ? e.epoch : '?';
    const before = replicaName(e.previous) || 'none';
    const after = replicaName(e.leader) || 'no leader';
    const gap = isNum(e.unavailable) ? `${e.unavailable.toFixed(2)} s` : 'unknown';
    return el('li', { 'data-epoch': isNum(e.epoch) ? e.epoch : null },
      el('time', {}, fmtClock(e.at)),
      el('span', { class: 'text' }, `epoch ${epoch}: ${before} → ${after}, orders unavailable ${gap}`));
  }

  /** A timeline entry: time, kind as a coloured tag (CSS picks the colour by data-kind), text. */
  function eventItem(e) {
    const kind = e.kind ? String(e.kind) : 'note';
    return el('li', {},
      el('time', {}, fmtClock(e.at)),
      el('span', { class: 'tag', 'data-kind': kind }, kind),
      el('span', { class: 'text' }, e.text === null || e.text === undefined ? '' : String(e.text)));
  }

  /**
   * Draw a log newest first.  `added` null: redraw it all from `entries`
   * (oldest first, as the feed sends them); else put the `added` entries on
   * top, marked "new" for a brief highlight, and drop the oldest beyond `max`.
   */
  function renderLog(list, entries, added, makeItem, max) {
    if (!added) {
      list.replaceChildren(...entries.slice().reverse().map((e) => makeItem(asObject(e))));
      return;
    }
    for (const e of added) {
      const item = makeItem(asObject(e));
      item.classList.add('new');
      list.prepend(item);
    }
    while (list.children.length > max) list.lastElementChild.remove();
  }

  // -- cache ------------------------------------------------------------------

  const chips = new Map();  // cached name -> its <li class="entry">, reused while it stays cached
  let cachedBefore = null;  // the keys last drawn, to mark the new ones

  function renderCache(flashDepartures) {
    const cache = asObject(state.cache);
    const panel = $('#cache');
    const keys = asArray(cache.keys).map(String);  // least recently used first
    const capacity = isNum(cache.capacity) ? cache.capacity : null;
    $('.capacity', panel).textContent = capacity === null ? DASH : fmtInt(capacity);
    $('.used', panel).textContent = fmtInt(keys.length);

    // Chips, most recently used first; the last one is the LRU, the next to go.
    // A chip's rank number comes from a CSS counter, so reordering is enough.
    const list = $('.entries', panel);
    const recent = [...new Set(keys)].reverse();
    const previous = new Set(cachedBefore || []);
    recent.forEach((name, i) => {
      let chip = chips.get(name);
      if (!chip) {
        chip = el('li', { class: 'entry', 'data-name': name }, name);
        chips.set(name, chip);
      }
      if (list.children[i] !== chip) list.insertBefore(chip, list.children[i] || null);
      const lru = i === recent.length - 1;
      chip.classList.toggle('lru', lru);
      chip.setAttribute('title', lru ? `${name}: least recently used, next to be evicted` : name);
      if (cachedBefore && !previous.has(name)) flash(chip, 'fresh');
    });
    for (const [name, chip] of chips) {
      if (!recent.includes(name)) { chip.remove(); chips.delete(name); }
    }
    // Dashed empty slots after the chips show how much room is left.
    list.querySelectorAll('.slot').forEach((slot) => slot.remove());
    const free = capacity === null ? 0 : Math.min(Math.max(capacity - recent.length, 0), 50);
    for (let i = 0; i < free; i++) list.append(el('li', { class: 'slot', 'aria-hidden': 'true' }));
    cachedBefore = keys;

    // Counters.
    const hits = cache.hits;
    const misses = cache.misses;
    const counter = (name, text) => { $(`[data-counter="${name}"]`, panel).textContent = text; };
    counter('hits', fmtInt(hits));
    counter('misses', fmtInt(misses));
    counter('ratio', isNum(hits) && isNum(misses) && hits + misses > 0 ? fmtPercent(hits / (hits + misses)) : DASH);
    counter('evictions', fmtInt(cache.evictions));
    counter('invalidations', fmtInt(cache.invalidations));
    counter('clears', fmtInt(cache.clears));

    // Names that left since the previous change flash for a few seconds in "Just left".
    if (!flashDepartures) return;
    const strip = $('.departed', panel);
    const departed = [
      ...asArray(cache.evicted).map((name) => [String(name), 'evicted']),
      ...asArray(cache.invalidated).map((name) => [String(name), 'invalidated']),
    ];
    for (const [name, why] of departed) {
      const chip = el('li', { class: `gone ${why}`, 'data-name': name, title: `${name} was ${why}` }, name);
      strip.append(chip);
      setTimeout(() => chip.remove(), GONE_MS);  // a local timer: no request
    }
    while (strip.children.length > 12) strip.firstElementChild.remove();
  }

  // -- catalog & shop ---------------------------------------------------------

  const rows = new Map();  // toy name -> { row, price, stock, last }

  function makeRow(name) {
    const input = el('input', {
      class: 'quantity', type: 'number', min: 1, max: 1000000, step: 1, value: 1,
      inputmode: 'numeric', 'aria-label': `Quantity of ${name}`,
    });
    const button = el('button', { class: 'buy', type: 'button', 'aria-label': `Buy ${name}` }, 'Buy');
    const price = el('td', { class: 'price num' });
    const stock = el('td', { class: 'stock num' });
    const row = el('tr', { 'data-toy': name },
      el('th', { class: 'toy', scope: 'row' }, name), price, stock, el('td', {}, input), el('td', {}, button));
    return { row, price, stock, last: null };
  }

  function renderShop() {
    const catalog = asObject(state.catalog);
    const status = $('#catalog-state');
    if (catalog.up === false) {
      status.textContent = 'catalog unreachable: stock may be out of date';
    } else {
      status.textContent = isNum(catalog.restocks) ? `${fmtInt(catalog.restocks)} restocks so far` : '';
    }

    const body = $('#shop tbody');
    const seen = new Set();
    let position = 0;
    for (const toy of asArray(catalog.toys)) {
      if (!toy || toy.name === null || toy.name === undefined) continue;
      const name = String(toy.name);
      if (seen.has(name)) continue;
      seen.add(name);
      let entry = rows.get(name);
      if (!entry) { entry = makeRow(name); rows.set(name, entry); }
      // Move a row only when it is out of place: moving it would blur a focused input.
      if (body.children[position] !== entry.row) body.insertBefore(entry.row, body.children[position] || null);
      position++;

      entry.price.textContent = fmtFixed(toy.price, 2);
      const quantity = isNum(toy.quantity) ? toy.quantity : null;
      entry.stock.textContent = quantity === null ? DASH : fmtInt(quantity);
      entry.row.classList.toggle('soldout', quantity === 0);
      if (entry.last !== null && quantity !== null && quantity !== entry.last) {
        const delta = quantity - entry.last;
        entry.stock.setAttribute('data-delta', delta > 0 ? `+${delta}` : `−${-delta}`);
        flash(entry.stock, delta > 0 ? 'up' : 'down');
      }
      if (quantity !== null) entry.last = quantity;
    }
    for (const [name, entry] of rows) {
      if (!seen.has(name)) { entry.row.remove(); rows.delete(name); }
    }
  }

  // -- placing an order -------------------------------------------------------

  /**
   * A fresh idempotency key: 128 random bits as hex.  crypto.getRandomValues
   * exists on every page; the UUID helper of crypto only in a "secure
   * context" (https or localhost), and this page may be plain http on a LAN.
   */
  function newKey() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  /** Show progress in #last-order (no outcome yet, so neither data-order-number nor data-error). */
  function showPending(text, phase) {
    const node = $('#last-order');
    node.removeAttribute('data-order-number');
    node.removeAttribute('data-error');
    node.setAttribute('data-state', phase);
    node.textContent = text;
  }

  /** Show an outcome in #last-order and on top of #my-orders. */
  function showOutcome(outcome, retries) {
    const node = $('#last-order');
    const text = outcome.ok ? `order ${outcome.number}: ${outcome.what}` : `${outcome.code}: ${outcome.message}`;
    node.textContent = text;
    if (outcome.ok) {
      node.setAttribute('data-order-number', String(outcome.number));
      node.removeAttribute('data-error');
    } else {
      node.setAttribute('data-error', String(outcome.code));
      node.removeAttribute('data-order-number');
    }
    node.setAttribute('data-state', outcome.ok ? 'done' : 'failed');

    const tries = `${retries} ${retries === 1 ? 'retry' : 'retries'}`;
    $('#last-order-note').textContent = !retries ? ''
      : `after ${tries} with the same idempotency key${outcome.ok ? ': placed exactly once' : ''}`;

    const mine = $('#my-orders');
    mine.prepend(el('li', {
      'data-order-number': outcome.ok ? outcome.number : null,
      'data-error': outcome.ok ? null : outcome.code,
    },
    el('time', {}, fmtClock(Date.now() / 1000)),
    el('span', { class: 'what' }, outcome.ok ? text : `${outcome.what}: ${text}`),
    retries ? el('span', { class: 'note' }, `(${tries})`) : null));
    while (mine.children.length > MAX_MY_ORDERS) mine.lastElementChild.remove();
  }

  /**
   * One POST.  Resolves to { ok, number } or { code, message }, with
   * retry: true when the request may be tried again with the same key
   * (no answer at all, or 503: no leader right now).
   */
  async function postOnce(name, quantity, key) {
    let response;
    try {
      response = await fetch(ORDER_URL, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'Idempotency-Key': key },
        body: JSON.stringify({ name, quantity }),
        cache: 'no-store',
      });
    } catch (err) {
      return { retry: true, code: 'network', message: 'no answer from the front-end' };
    }
    let body = null;
    try { body = await response.json(); } catch (err) { body = null; }
    const error = asObject(asObject(body).error);
    const data = asObject(asObject(body).data);
    if (response.ok && data.order_number !== null && data.order_number !== undefined) {
      return { ok: true, number: data.order_number };
    }
    return {
      retry: response.status === 503,
      code: error.code !== null && error.code !== undefined ? error.code : response.status,
      message: error.message ? String(error.message) : response.statusText || 'unexpected reply',
    };
  }

  /** A Buy click: one key, up to 1 + RETRIES tries, the button disabled meanwhile. */
  async function buy(name, input, button) {
    const quantity = Number(input.value);
    const what = `${input.value} × ${name}`;
    if (!Number.isInteger(quantity) || quantity < 1 || quantity > 1000000) {
      showOutcome({ code: 'input', message: 'the quantity must be a whole number from 1 to 1,000,000', what }, 0);
      input.focus();
      return;
    }
    const key = newKey();  // one key per click: every retry below reuses it
    button.disabled = true;
    showPending(`ordering ${quantity} × ${name}…`, 'pending');
    let outcome;
    let retries = 0;
    try {
      for (;;) {
        outcome = await postOnce(name, quantity, key);
        if (!outcome.retry || retries === RETRIES) break;
        retries++;
        showPending(`retrying (same key)… ${retries} of ${RETRIES}`, 'retrying');
        await sleep(RETRY_DELAY_MS);
      }
    } finally {
      button.disabled = false;
    }
    showOutcome({ ...outcome, what: `${quantity} × ${name}` }, retries);
    const row = button.closest('tr');
    if (row) flash(row, outcome.ok ? 'ordered' : 'refused');
  }

  // One listener for the whole table (rows come and go): a click on a Buy
  // button, or Enter in a quantity box, buys from that row.
  function wireShop() {
    const onRow = (event) => {
      const row = event.target.closest('tr[data-toy]');
      const button = row && $('button.buy', row);
      if (button && !button.disabled) buy(row.getAttribute('data-toy'), $('input.quantity', row), button);
    };
    const body = $('#shop tbody');
    body.addEventListener('click', (event) => { if (event.target.closest('button.buy')) onRow(event); });
    body.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && event.target.matches('input.quantity')) onRow(event);
    });
  }

  // -- requests ---------------------------------------------------------------

  const metricRows = new Map();  // kind -> { row, rate, p50, p99, errors, canvas }
  const history = new Map();     // kind -> [{ at, rate }], the last SPARK_SECONDS

  function metricRow(kind) {
    const cell = (cls) => el('td', { class: cls });
    const entry = {
      rate: cell('rate num'), p50: cell('p50 num'), p99: cell('p99 num'), errors: cell('errors num'),
      canvas: el('canvas', { class: 'spark', 'aria-hidden': 'true' }),
    };
    entry.row = el('tr', { 'data-kind': kind },
      el('th', { class: 'kind', scope: 'row' }, kind),
      entry.rate, entry.p50, entry.p99, entry.errors, el('td', { class: 'spark' }, entry.canvas));
    return entry;
  }

  function renderRequests() {
    const requests = asObject(state.requests);
    const kinds = asObject(requests.kinds);
    $('#requests .window').textContent = isNum(requests.window) && requests.window > 0
      ? `over the last ${requests.window.toFixed(requests.window < 10 ? 1 : 0)} s` : '';
    const now = isNum(state.at) ? state.at : Date.now() / 1000;
    const names = KINDS.concat(Object.keys(kinds).filter((k) => !KINDS.includes(k)));
    const body = $('#requests tbody');
    names.forEach((kind, i) => {
      const m = asObject(kinds[kind]);
      let entry = metricRows.get(kind);
      if (!entry) { entry = metricRow(kind); metricRows.set(kind, entry); }
      if (body.children[i] !== entry.row) body.insertBefore(entry.row, body.children[i] || null);
      entry.rate.textContent = fmtFixed(m.rate, 1);
      entry.p50.textContent = fmtMs(m.p50);
      entry.p99.textContent = fmtMs(m.p99);
      entry.errors.textContent = fmtPercent(m.errors);
      entry.errors.classList.toggle('bad', isNum(m.errors) && m.errors > 0);

      // Keep a minute of rates (a clock that went back means a new server: start again).
      let points = history.get(kind) || [];
      if (points.length && now < points[points.length - 1].at) points = [];
      points.push({ at: now, rate: isNum(m.rate) ? m.rate : null });
      points = points.filter((p) => p.at >= now - SPARK_SECONDS);
      history.set(kind, points);
      drawSparkline(entry.canvas, points, now);
    });
  }

  /** The rate over the last minute: a line and a faint area, in the canvas's CSS colour. */
  function drawSparkline(canvas, points, now) {
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;  // hidden (a narrow phone): nothing to draw
    const ratio = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);

    // A faint baseline, so an idle minute still shows as a (flat) chart.
    const colour = getComputedStyle(canvas).color;
    ctx.fillStyle = colour;
    ctx.globalAlpha = 0.3;
    ctx.fillRect(0, height - 1, width, 1);
    ctx.globalAlpha = 1;

    const known = points.filter((p) => p.rate !== null);
    if (known.length < 2) return;
    const top = Math.max(1, ...known.map((p) => p.rate));
    const x = (at) => ((at - (now - SPARK_SECONDS)) / SPARK_SECONDS) * (width - 2) + 1;
    const y = (rate) => height - 1.5 - (rate / top) * (height - 3);

    ctx.beginPath();
    known.forEach((p, i) => (i ? ctx.lineTo(x(p.at), y(p.rate)) : ctx.moveTo(x(p.at), y(p.rate))));
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1.5;
    ctx.lineJoin = 'round';
    ctx.stroke();
    ctx.lineTo(x(known[known.length - 1].at), height);
    ctx.lineTo(x(known[0].at), height);
    ctx.closePath();
    ctx.fillStyle = colour;
    ctx.globalAlpha = 0.15;
    ctx.fill();
    ctx.globalAlpha = 1;
  }

  // -- the feed ---------------------------------------------------------------

  let everOpen = false;
  let reopenDelay = 1000;

  function setConnection(phase, text) {
    const node = $('#connection');
    node.setAttribute('data-state', phase);
    node.textContent = text;
    document.body.classList.toggle('stale', phase !== 'open');
  }

  /** Parse one message and hand it on; a malformed one is skipped, not fatal. */
  function handler(apply) {
    return (message) => {
      let data;
      try { data = JSON.parse(message.data); } catch (err) {
        console.warn('dashboard: skipped a message that is not JSON', err);
        return;
      }
      if (data && typeof data === 'object' && !Array.isArray(data)) apply(data);
    };
  }

  function connect() {
    setConnection('connecting', everOpen ? 'reconnecting…' : 'connecting…');
    const source = new EventSource(FEED_URL);
    source.addEventListener('open', () => {
      everOpen = true;
      reopenDelay = 1000;
      setConnection('open', 'live');
    });
    source.addEventListener('error', () => {
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (e.g. the server answered with an error, not a
        // stream): open a new feed ourselves, waiting longer each time.
        source.close();
        setConnection('closed', 'disconnected: retrying');
        setTimeout(connect, reopenDelay);
        reopenDelay = Math.min(reopenDelay * 2, 30000);
      } else {
        // EventSource retries by itself; say so.
        setConnection('connecting', everOpen ? 'reconnecting…' : 'connecting…');
      }
    });
    source.addEventListener('snapshot', handler(onSnapshot));
    source.addEventListener('change', handler(onChange));
  }

  // -- start ------------------------------------------------------------------

  wireShop();
  connect();
})();
