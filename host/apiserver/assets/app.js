// Hot-Plug Heaven dashboard: a table of every VM and, per VM, a chart of
// utilisation, run-queue latency, response time vs SLA and online vCPUs
// (a step line), with a marker for each scaling event. Live over
// /v1/stream (read with fetch, so a bearer token can be sent); all data
// goes into the page with textContent, never as HTML.
'use strict';

(() => {
  const MAX_POINTS = 720;      // per VM, as the server's history
  const EVENT_WINDOW_MS = 3600e3;

  // A link may carry the token in its fragment (#token=…), as the demo
  // prints it: browsers never send a fragment to the server, so the token
  // is in no access log, and it leaves the address bar and the history
  // before anything else runs.
  const linked = new URLSearchParams(location.hash.slice(1)).get('token');
  if (linked) {
    sessionStorage.setItem('hotplug-token', linked);
    history.replaceState(null, '', location.pathname + location.search);
  }

  const state = {
    token: sessionStorage.getItem('hotplug-token') || '',
    vms: new Map(),     // name → VM view (GET /v1/vms/{id})
    charts: new Map(),  // name → {u, data, events, apps, el, mem}
    // mem, per chart, is the VM's memory chart once it has a memory
    // device: {u, data, events, el}; series 0 time, 1 VM memory (MiB,
    // the hypervisor's), 2 guest MemTotal, 3 guest used.
    live: false,
    missed: 0,
  };
  window.hotplug = state; // for the browser test and for curious operators

  const $ = (sel, root = document) => root.querySelector(sel);
  const el = (tag, attrs = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k);
    return e;
  };
  const pct = (x) => (x == null ? '—' : (100 * x).toFixed(0) + ' %');
  const msec = (s) => (s ? (1000 * s).toFixed(s < 0.01 ? 2 : 1) + ' ms' : '—');
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function headers(json) {
    const h = {};
    if (state.token) h.Authorization = 'Bearer ' + state.token;
    if (json) h['Content-Type'] = 'application/json';
    return h;
  }

  class Unauthorised extends Error {}

  async function api(method, path, body) {
    const r = await fetch(path, {
      method, cache: 'no-store', headers: headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (r.status === 401) { showLogin(); throw new Unauthorised('token needed'); }
    let data = {};
    try { data = await r.json(); } catch (_) { /* empty or not JSON */ }
    if (!r.ok) throw new Error(data.error || r.status + ' ' + r.statusText);
    return data;
  }

  function notice(msg) {
    const n = $('#notice');
    n.textContent = msg || '';
    n.hidden = !msg;
  }

  function showLogin() {
    $('#login').hidden = false;
    $('#token').focus();
  }

  $('#login').addEventListener('submit', (e) => {
    e.preventDefault();
    state.token = $('#token').value.trim();
    sessionStorage.setItem('hotplug-token', state.token);
    $('#login').hidden = true;
    start();
  });

  function setLive(on) {
    state.live = on;
    const l = $('#live');
    l.className = 'live ' + (on ? 'on' : 'off');
    l.textContent = on ? 'live' : 'reconnecting…';
  }

  // ---- table ---------------------------------------------------------

  function row(name) {
    let tr = $(`#vms tr[data-vm="${CSS.escape(name)}"]`);
    if (tr) return tr;
    tr = el('tr', { 'data-vm': name });
    for (const c of ['name', 'mode', 'vcpus num', 'util num', 'runq num', 'agent', 'state', 'why', 'actions']) {
      tr.append(el('td', { class: c }));
    }
    const btn = el('button', { type: 'button', 'data-vm': name, 'data-action': 'pause' });
    btn.addEventListener('click', () => togglePause(name, btn));
    $('td.actions', tr).append(btn);
    $('#vms tbody').append(tr);
    return tr;
  }

  function renderRow(v) {
    const tr = row(v.name);
    const s = v.signals || {};
    $('td.name', tr).textContent = v.name;
    $('td.mode', tr).textContent = v.mode;
    $('td.vcpus', tr).textContent = `${v.online_vcpus}/${v.current_vcpus} → ${v.target_vcpus || v.current_vcpus}`;
    $('td.vcpus', tr).title = `policy ${v.policy.min_vcpus}–${v.policy.max_vcpus}, ${v.max_slots} hot-plug slots`;
    $('td.util', tr).textContent = s.at ? pct(s.utilisation) : '—';
    $('td.runq', tr).textContent = msec(s.runq_p95_seconds);
    const agent = $('td.agent', tr);
    agent.replaceChildren(el('span', { class: 'tag ' + (v.agent_connected ? 'ok' : 'off'),
      text: v.agent_connected ? 'connected' : 'not connected' }));
    if (!v.hypervisor_reachable) agent.append(el('span', { class: 'tag off', text: 'hypervisor unreachable' }));
    const st = $('td.state', tr);
    st.replaceChildren();
    if (v.paused) st.append(el('span', { class: 'tag paused', text: 'paused' }));
    if (v.hotspot) st.append(el('span', { class: 'tag hotspot', text: 'hotspot' }));
    if (v.degraded) st.append(el('span', { class: 'tag degraded', text: 'degraded', title: v.degraded }));
    if (!st.childElementCount) st.append(el('span', { class: 'tag ok', text: 'scaling' }));
    const d = v.last_decision || {};
    const why = $('td.why', tr);
    why.textContent = d.rule ? `${d.action} (${d.rule}): ${d.reason}` : '—';
    why.title = (v.explanation && v.explanation.text) || '';
    const btn = $('button', tr);
    btn.dataset.action = v.paused ? 'resume' : 'pause';
    btn.textContent = v.paused ? 'Resume' : 'Pause';
  }

  async function togglePause(name, btn) {
    const action = btn.dataset.action;
    btn.disabled = true;
    try {
      const v = await api('POST', `/v1/vms/${encodeURIComponent(name)}/${action}`);
      update(v);
      notice('');
    } catch (e) {
      if (!(e instanceof Unauthorised)) notice(`${name}: ${action} failed: ${e.message}`);
    } finally {
      btn.disabled = false;
    }
  }

  // ---- charts --------------------------------------------------------

  // Series: 0 time (s), 1 utilisation (%), 2 run-queue p95 (ms),
  // 3 online vCPUs, and with applications 4 response p95 (ms), 5 SLA (ms).
  function makeChart(name, apps) {
    const c = state.charts.get(name);
    const section = c ? c.el : el('section', { class: 'vm', 'data-vm': name });
    if (!c) {
      section.append(el('h2', {}, el('span', { text: name }), el('small', { class: 'sub' })),
        el('div', { class: 'chart' }), el('p', { class: 'explain' }));
      $('#charts').append(section);
    }
    const host = $('.chart', section);
    if (c && c.u) c.u.destroy();
    const series = [
      {},
      { label: 'utilisation', scale: '%', stroke: '#2563eb', width: 1.5, value: (u, v) => (v == null ? '—' : v.toFixed(0) + ' %') },
      { label: 'run-queue p95', scale: 'ms', stroke: '#9333ea', width: 1, value: (u, v) => (v == null ? '—' : v.toFixed(2) + ' ms') },
      { label: 'online vCPUs', scale: 'vcpu', stroke: '#111827', width: 2, paths: uPlot.paths.stepped({ align: 1 }),
        value: (u, v) => (v == null ? '—' : String(v)) },
    ];
    if (apps) {
      series.push(
        { label: 'response p95', scale: 'ms', stroke: '#d97706', width: 1.5, value: (u, v) => (v == null ? '—' : v.toFixed(1) + ' ms') },
        { label: 'SLA', scale: 'ms', stroke: '#dc2626', dash: [6, 4], width: 1, value: (u, v) => (v == null ? '—' : v.toFixed(1) + ' ms') },
      );
    }
    const data = c ? c.data : series.map(() => []);
    while (data.length < series.length) data.push(new Array(data[0].length).fill(null));
    data.length = series.length;
    const opts = {
      width: Math.max(320, host.clientWidth || section.clientWidth - 24),
      height: 220,
      series,
      scales: {
        x: { time: true },
        '%': { range: (u, lo, hi) => [0, Math.max(100, Math.ceil((hi || 0) / 25) * 25)] },
        vcpu: { range: (u, lo, hi) => [0, Math.max(2, (hi || 0) + 1)] },
        ms: { range: (u, lo, hi) => [0, Math.max(1, (hi || 0) * 1.1)] },
      },
      axes: [
        {},
        { scale: '%', label: 'utilisation %', size: 50 },
        { scale: 'vcpu', side: 1, label: 'vCPUs', grid: { show: false }, incrs: [1, 2, 4, 8, 16, 32], size: 40 },
        { scale: 'ms', side: 1, label: 'ms', grid: { show: false }, size: 55 },
      ],
      legend: { live: true },
      hooks: { draw: [(u) => drawMarkers(name, u)] },
    };
    const u = new uPlot(opts, data, host);
    const chart = { u, data, events: c ? c.events : [], apps, el: section, mem: c ? c.mem : undefined };
    state.charts.set(name, chart);
    return chart;
  }

  function chartFor(name, apps) {
    const c = state.charts.get(name);
    if (!c || (apps && !c.apps)) return makeChart(name, apps || (c && c.apps));
    return c;
  }

  function addPoint(name, p) {
    const apps = p.response_p95_seconds > 0 || p.sla_seconds > 0;
    const c = chartFor(name, apps);
    const t = Date.parse(p.at) / 1000;
    if (!(t > 0)) return;
    const d = c.data;
    const last = d[0].length ? d[0][d[0].length - 1] : -Infinity;
    if (t <= last) return; // already have it (history and stream overlap)
    addMemPoint(name, t, p);
    const vals = [t, 100 * p.utilisation, p.runq_p95_seconds ? 1000 * p.runq_p95_seconds : null, p.online_vcpus];
    if (c.apps) vals.push(p.response_p95_seconds ? 1000 * p.response_p95_seconds : null, p.sla_seconds ? 1000 * p.sla_seconds : null);
    vals.forEach((v, i) => d[i].push(v));
    if (d[0].length > MAX_POINTS) d.forEach((s) => s.splice(0, s.length - MAX_POINTS));
    c.dirty = true;
  }

  const isMemory = (ev) => ev.kind.startsWith('memory_');

  function addEvent(ev) {
    if (ev.outcome === 'started') return; // an action's first line: its result follows
    const c = chartFor(ev.vm, false);
    const into = isMemory(ev) ? memChartFor(ev.vm) : c;
    if (into.events.some((e) => e.seq === ev.seq)) return;
    into.events.push(ev);
    const cutoff = Date.now() - EVENT_WINDOW_MS;
    into.events = into.events.filter((e) => Date.parse(e.time) >= cutoff);
    into.dirty = true;
  }

  // memChartFor returns the VM's memory chart, made on first use.
  function memChartFor(name) {
    const c = chartFor(name, false);
    if (c.mem) return c.mem;
    const host = el('div', { class: 'chart memchart' });
    $('.chart', c.el).after(host);
    const mibs = (u, v) => (v == null ? '—' : v.toFixed(0) + ' MiB');
    const series = [
      {},
      { label: 'VM memory', scale: 'mib', stroke: '#111827', width: 2, paths: uPlot.paths.stepped({ align: 1 }), value: mibs },
      { label: 'guest MemTotal', scale: 'mib', stroke: '#0891b2', width: 1, dash: [6, 4], value: mibs },
      { label: 'guest used', scale: 'mib', stroke: '#16a34a', width: 1.5, value: mibs },
    ];
    const m = { data: series.map(() => []), events: [], el: host };
    const opts = {
      width: Math.max(320, host.clientWidth || c.el.clientWidth - 24),
      height: 160,
      series,
      scales: { x: { time: true }, mib: { range: (u, lo, hi) => [0, Math.max(256, Math.ceil((hi || 0) * 1.1 / 256) * 256)] } },
      axes: [{}, { scale: 'mib', label: 'memory MiB', size: 60 }],
      legend: { live: true },
      hooks: { draw: [(u) => drawMarkersOn(m, u, (ev) => ev.kind === 'memory_grow' || ev.to > ev.from, 'MiB')] },
    };
    m.u = new uPlot(opts, m.data, host);
    c.mem = m;
    return m;
  }

  function addMemPoint(name, t, p) {
    if (!(p.memory_bytes > 0) && !state.charts.get(name)?.mem) return;
    const m = memChartFor(name);
    const d = m.data;
    const last = d[0].length ? d[0][d[0].length - 1] : -Infinity;
    if (t <= last) return;
    const mib = (b) => (b > 0 ? b / 1048576 : null);
    [t, mib(p.memory_bytes), mib(p.guest_mem_total_bytes), mib(p.guest_mem_used_bytes)].forEach((v, i) => d[i].push(v));
    if (d[0].length > MAX_POINTS) d.forEach((s) => s.splice(0, s.length - MAX_POINTS));
    m.dirty = true;
  }

  function eventText(ev, unit = isMemory(ev) ? 'MiB' : 'vCPUs') {
    const steps = (ev.steps || []).map((s) => `${s.name} ${s.duration_ms.toFixed(0)} ms${s.ok ? '' : ' FAILED: ' + s.error}`);
    return `${new Date(ev.time).toLocaleTimeString()} ${ev.kind} ${ev.from} → ${ev.to} ${unit} (now ${ev.result}, ${ev.outcome}, rule ${ev.rule || '—'})\n` +
      `${ev.reason || ''}${steps.length ? '\nsteps: ' + steps.join(', ') : ''}`;
  }

  // drawMarkers draws a dashed line per scaling event on the canvas and
  // puts a hoverable marker (its title the reason) above the plot.
  function drawMarkers(name, u) {
    const c = state.charts.get(name);
    if (c) drawMarkersOn(c, u, (ev) => ev.kind === 'scale_up' || ev.to > ev.from);
    else for (const m of u.over.querySelectorAll('.marker')) m.remove();
  }

  function drawMarkersOn(c, u, isUp) {
    const over = u.over;
    for (const m of over.querySelectorAll('.marker')) m.remove();
    const ctx = u.ctx;
    const [xmin, xmax] = [u.scales.x.min, u.scales.x.max];
    for (const ev of c.events) {
      const t = Date.parse(ev.time) / 1000;
      if (!(t >= xmin && t <= xmax)) continue;
      const up = isUp(ev);
      const failed = ev.outcome !== 'ok';
      const color = failed ? '#c01c28' : up ? '#12805c' : '#c4570e';
      const x = u.valToPos(t, 'x', true);
      ctx.save();
      ctx.strokeStyle = color;
      ctx.setLineDash([4, 3]);
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(x, u.bbox.top);
      ctx.lineTo(x, u.bbox.top + u.bbox.height);
      ctx.stroke();
      ctx.restore();
      const m = el('div', { class: `marker ${up ? 'up' : 'down'}${failed ? ' failed' : ''}`,
        'data-seq': String(ev.seq), 'data-kind': ev.kind, title: eventText(ev) });
      m.style.left = u.valToPos(t, 'x') + 'px';
      m.addEventListener('mouseenter', () => showTip(m, eventText(ev)));
      m.addEventListener('mouseleave', hideTip);
      over.append(m);
    }
  }

  let tip;
  function showTip(anchor, text) {
    if (!tip) { tip = el('div', { id: 'tip' }); document.body.append(tip); }
    tip.textContent = text;
    tip.style.whiteSpace = 'pre-line';
    const r = anchor.getBoundingClientRect();
    tip.style.left = Math.min(r.left, window.innerWidth - 460) + 'px';
    tip.style.top = r.bottom + 6 + 'px';
    tip.hidden = false;
  }
  function hideTip() { if (tip) tip.hidden = true; }

  function renderCard(v) {
    const c = chartFor(v.name, (v.signals && v.signals.apps || []).length > 0);
    const sub = $('h2 small', c.el);
    sub.textContent = `${v.mode} · ${v.online_vcpus} online / ${v.current_vcpus} plugged, target ${v.target_vcpus || v.current_vcpus}` +
      (v.memory && v.memory.device ? ` · memory ${Math.round(v.memory.total_bytes / 1048576)} MiB (${v.memory.device}, ${v.memory.mode})` : '') +
      (v.paused ? ' · paused' : '');
    $('.explain', c.el).textContent = (v.explanation && v.explanation.text) || '';
  }

  // Redraw at most once a frame, however many messages arrive.
  function frame() {
    for (const c of state.charts.values()) {
      if (c.dirty) { c.dirty = false; c.u.setData(c.data); }
      if (c.mem && c.mem.dirty) { c.mem.dirty = false; c.mem.u.setData(c.mem.data); }
    }
    requestAnimationFrame(frame);
  }

  window.addEventListener('resize', () => {
    for (const c of state.charts.values()) {
      c.u.setSize({ width: Math.max(320, $('.chart', c.el).clientWidth), height: 220 });
      if (c.mem) c.mem.u.setSize({ width: Math.max(320, c.mem.el.clientWidth), height: 160 });
    }
  });

  // ---- data ----------------------------------------------------------

  function update(v) {
    state.vms.set(v.name, v);
    renderRow(v);
    renderCard(v);
  }

  async function loadTable() {
    const list = await api('GET', '/v1/vms');
    const h = list.host;
    $('#host').textContent = h.vcpu_budget ? `host: ${h.vcpus} of ${h.vcpu_budget} vCPUs` : `host: ${h.vcpus} vCPUs`;
    for (const v of list.vms) update(v);
    return list;
  }

  async function loadAll() {
    const list = await loadTable();
    for (const v of list.vms) {
      const hist = await api('GET', `/v1/vms/${encodeURIComponent(v.name)}/history`);
      for (const p of hist.points) addPoint(v.name, p);
    }
    const since = new Date(Date.now() - EVENT_WINDOW_MS).toISOString();
    let cursor = '';
    for (let page = 0; page < 20; page++) {
      const r = await api('GET', `/v1/events?since=${encodeURIComponent(since)}&limit=1000${cursor ? '&cursor=' + cursor : ''}`);
      for (const ev of r.events) if (state.vms.has(ev.vm)) addEvent(ev);
      if (!r.next_cursor) break;
      cursor = r.next_cursor;
    }
  }

  function dispatch(type, data) {
    switch (type) {
      case 'report':
        update(data);
        addPoint(data.name, {
          at: data.signals.at, utilisation: data.signals.utilisation, runq_p95_seconds: data.signals.runq_p95_seconds,
          online_vcpus: data.online_vcpus, current_vcpus: data.current_vcpus,
          response_p95_seconds: data.signals.apps && data.signals.apps[0] ? data.signals.apps[0].response_p95_seconds : 0,
          sla_seconds: data.signals.apps && data.signals.apps[0] ? (data.signals.apps[0].sla_target_seconds || data.signals.apps[0].sla_mean_seconds || 0) : 0,
          memory_bytes: data.memory && data.memory.device ? data.memory.total_bytes : 0,
          guest_mem_total_bytes: data.signals.mem_total_bytes || 0,
          guest_mem_used_bytes: data.signals.mem_total_bytes ? data.signals.mem_total_bytes - (data.signals.mem_available_bytes || 0) : 0,
        });
        break;
      case 'decision': {
        // Reports come before the decision taken on them: this is newer
        // than the decision in the last report's view.
        const v = state.vms.get(data.vm);
        if (v) {
          Object.assign(v, { last_decision: data.decision, last_decision_at: data.at, hotspot: data.hotspot,
            explanation: data.explanation, target_vcpus: data.decision.to });
          renderRow(v);
          renderCard(v);
        }
        break;
      }
      case 'event':
        addEvent(data.event);
        // The size changed: refresh the table and the host's total now
        // rather than at the next report.
        loadTable().catch(() => {});
        break;
      case 'missed':
        state.missed += data.missed;
        notice(`The page fell behind and missed ${state.missed} live update(s); the table was reloaded.`);
        loadAll().catch(() => {});
        break;
    }
  }

  // SSE over fetch: EventSource cannot send an Authorization header.
  async function stream() {
    for (;;) {
      try {
        const r = await fetch('/v1/stream', { headers: headers(false), cache: 'no-store' });
        if (r.status === 401) { setLive(false); showLogin(); return; }
        if (!r.ok) throw new Error(r.status + ' ' + r.statusText);
        setLive(true);
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            let type = 'message';
            const lines = [];
            for (const line of block.split('\n')) {
              if (line.startsWith(':')) continue;
              const c = line.indexOf(':');
              const field = c < 0 ? line : line.slice(0, c);
              let val = c < 0 ? '' : line.slice(c + 1);
              if (val.startsWith(' ')) val = val.slice(1);
              if (field === 'event') type = val;
              else if (field === 'data') lines.push(val);
            }
            if (lines.length) {
              try { dispatch(type, JSON.parse(lines.join('\n'))); } catch (e) { console.error('stream message', type, e); }
            }
          }
        }
      } catch (e) {
        console.warn('stream', e);
      }
      setLive(false);
      await sleep(2000);
      try { await loadAll(); } catch (_) { /* shown by the next attempt */ }
    }
  }

  let started = false;
  async function start() {
    try {
      await loadAll();
    } catch (e) {
      if (!(e instanceof Unauthorised)) notice('Cannot load the VMs: ' + e.message);
      return;
    }
    if (!started) {
      started = true;
      requestAnimationFrame(frame);
      stream();
    }
  }

  start();
})();
