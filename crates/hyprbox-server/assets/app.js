// HyprBox dashboard behaviour. Pages are rendered by the server; this file only sends what the
// user does to the JSON API and patches live data in from the SSE streams. It never builds HTML
// from strings: every text from the server goes through textContent, so nothing can inject markup.
'use strict';

(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  // ---- Talking to the API -------------------------------------------------------------------

  async function api(method, url, body) {
    const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (err) {
      return { ok: false, status: 0, data: { message: 'The server cannot be reached. Check your connection.' } };
    }
    let data = null;
    const type = response.headers.get('Content-Type') || '';
    if (type.includes('application/json')) {
      try { data = await response.json(); } catch (err) { data = null; }
    }
    return { ok: response.ok, status: response.status, data: data || {} };
  }

  function toast(text, bad) {
    const el = $('#toast');
    if (!el) return;
    el.textContent = text;
    el.className = bad ? 'bad' : '';
    el.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { el.hidden = true; }, 4000);
  }

  // Reads `a.b` out of an answer, for `go:/dashboard/jobs/{job.id}`.
  function pick(data, path) {
    return path.split('.').reduce((v, k) => (v == null ? undefined : v[k]), data);
  }

  function afterSuccess(then, data, form) {
    if (!then || then === 'reload') { location.reload(); return; }
    if (then.startsWith('go:')) {
      const url = then.slice(3).replace(/\{([\w.]+)\}/g, (_, p) => encodeURIComponent(pick(data, p) ?? ''));
      location.assign(url);
      return;
    }
    if (then.startsWith('message:')) { toast(then.slice(8)); if (form) form.reset(); return; }
    if (then.startsWith('token:')) {
      const box = $(then.slice(6));
      $('[data-f=token]', box).textContent = data.token || '';
      box.hidden = false;
      if (form) form.reset();
    }
  }

  // A refusal: its message next to the field it names (`ssh_port must be <= 65535`), else on the
  // form. A lapsed session goes to the sign-in page.
  async function showError(form, result) {
    // A 401 is a lapsed session only if the session itself is refused (a wrong current password
    // is a 401 too, and must be shown on its form).
    if (result.status === 401 && !location.pathname.match(/^\/(login|register|reset-password|forgot-password)/)) {
      const me = await api('GET', '/api/auth/me');
      if (me.status === 401) {
        location.assign('/login?next=' + encodeURIComponent(location.pathname + location.search));
        return;
      }
    }
    const message = result.data.message || ('The server answered ' + result.status + '.');
    if (!form) { toast(message, true); return; }
    $$('.field-error', form).forEach((e) => { e.hidden = true; });
    $$('[aria-invalid]', form).forEach((e) => e.removeAttribute('aria-invalid'));
    const field = $$('[name]', form).find((el) => {
      const short = el.name.split('.').pop();
      return message.startsWith(short + ' ') || message.startsWith('variables.' + short + ' ');
    });
    if (field) {
      field.setAttribute('aria-invalid', 'true');
      const slot = field.closest('.field') && $('.field-error', field.closest('.field'));
      if (slot) { slot.textContent = message; slot.hidden = false; field.focus(); return; }
    }
    const slot = $('.form-error', form);
    if (slot) { slot.textContent = message; slot.hidden = false; } else { toast(message, true); }
  }

  // The form's fields as a JSON object: `data-type` says number, bool or list (one item a line);
  // `data-empty` says what an empty field sends (`omit`, `null`, or the empty string).
  function collect(form) {
    const out = {};
    for (const el of form.elements) {
      if (!el.name || el.disabled || el.type === 'submit' || el.type === 'button') continue;
      let value;
      const type = el.dataset.type;
      if (type === 'bool' || el.type === 'checkbox') {
        value = el.checked;
      } else if (type === 'list') {
        value = el.value.split('\n').map((s) => s.trim()).filter((s) => s !== '');
        if (value.length === 0 && el.dataset.empty) value = el.dataset.empty === 'null' ? null : undefined;
      } else {
        value = el.value;
        if (value === '' && el.dataset.empty === 'omit') continue;
        if (value === '' && el.dataset.empty === 'null') value = null;
        else if (type === 'number' && value !== '') value = Number(value);
      }
      if (value === undefined) continue;
      const path = el.name.split('.');
      let target = out;
      for (const key of path.slice(0, -1)) target = target[key] = target[key] || {};
      target[path[path.length - 1]] = value;
    }
    return out;
  }

  document.addEventListener('submit', async (event) => {
    const form = event.target.closest('form[data-api]');
    if (!form) return;
    event.preventDefault();
    const button = $('[type=submit]', form);
    if (button) button.disabled = true;
    const result = await api(form.dataset.method || 'POST', form.dataset.api, collect(form));
    if (button) button.disabled = false;
    if (result.ok) afterSuccess(form.dataset.then, result.data, form); else showError(form, result);
  });

  document.addEventListener('click', async (event) => {
    const copy = event.target.closest('[data-copy]');
    if (copy) {
      const text = $(copy.dataset.copy).textContent;
      try { await navigator.clipboard.writeText(text); toast('Copied.'); } catch (err) { toast('Select the token and copy it by hand.', true); }
      return;
    }
    const preview = event.target.closest('[data-preview]');
    if (preview) { showPreview(preview); return; }
    const button = event.target.closest('button[data-api]');
    if (!button) return;
    if (button.dataset.confirm && !confirm(button.dataset.confirm)) return;
    button.disabled = true;
    const body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
    const result = await api(button.dataset.method || 'POST', button.dataset.api, body);
    button.disabled = false;
    if (result.ok) afterSuccess(button.dataset.then, result.data, null); else showError(null, result);
  });

  document.addEventListener('change', (event) => {
    const el = event.target;
    if (el.matches('[data-autosubmit]')) el.form.requestSubmit();
  });

  // `/` jumps to the page's search field, as in most consoles.
  document.addEventListener('keydown', (event) => {
    if (event.key !== '/' || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest('input, textarea, select, [contenteditable]')) return;
    const field = $('[data-hotkey="/"]');
    if (field) { event.preventDefault(); field.focus(); field.select(); }
  });

  // ---- The run form: preview of the rendered script ------------------------------------------

  async function showPreview(button) {
    const form = $('#run-form');
    const target = $(button.dataset.target);
    const { variables } = collect(form);
    const result = await api('POST', button.dataset.preview, { variables: variables || {} });
    if (!result.ok) { showError(form, result); return; }
    $$('.field-error', form).forEach((e) => { e.hidden = true; });
    const warnings = (result.data.warnings || []).map((w) => '# warning: ' + w + '\n').join('');
    target.textContent = warnings + result.data.script;
    target.hidden = false;
  }

  // ---- The backup form: the next runs of the schedule ----------------------------------------

  $$('[data-cron-preview]').forEach((input) => {
    const list = $(input.dataset.cronPreview);
    let timer;
    input.addEventListener('input', () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        list.replaceChildren();
        if (input.value.trim() === '') { list.append(item('manual runs only')); return; }
        const result = await api('GET', '/dashboard/cron?expr=' + encodeURIComponent(input.value));
        if (!result.ok) { list.append(item(result.data.message || 'invalid schedule')); return; }
        for (const at of result.data.nextRuns) list.append(item(new Date(at).toLocaleString() + ' (' + at + ')'));
      }, 250);
    });
  });

  function item(text, className) {
    const li = document.createElement('li');
    li.textContent = text;
    if (className) li.className = className;
    return li;
  }

  // ---- Times: "12 s ago", kept fresh ----------------------------------------------------------

  function ago(iso) {
    const ms = Date.now() - Date.parse(iso);
    if (Number.isNaN(ms)) return iso;
    const s = Math.round(ms / 1000);
    if (s < 0) return 'in ' + (-s) + ' s';
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return new Date(iso).toLocaleDateString();
  }

  // Only what changed is written: an unchanged write still costs the page a style and layout pass.
  function put(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  function tickTime(t) {
    const iso = t.getAttribute('datetime');
    if (!iso) return;
    put(t, ago(iso));
    if (t.title !== iso) t.title = iso;
  }
  // Only the times on screen tick: each one that changes costs its row a layout and a repaint, and
  // a page of a hundred rows shows a fifth of them. One scrolled into view is brought up to date.
  const offscreen = new WeakSet();
  const watch = typeof IntersectionObserver === 'function'
    ? new IntersectionObserver((entries) => {
      for (const e of entries) {
        if (e.isIntersecting) { offscreen.delete(e.target); tickTime(e.target); } else offscreen.add(e.target);
      }
    })
    : null;
  function refreshTimes() {
    for (const t of $$('time[datetime]')) {
      if (watch) watch.observe(t);
      if (!offscreen.has(t)) tickTime(t);
    }
  }
  // No event says a node went quiet: a node silent past the server's offline threshold is marked
  // OFFLINE here, as the server would answer it, until its next heartbeat.
  function markSilent() {
    for (const live of $$('[data-offline-after]')) {
      const after = Number(live.dataset.offlineAfter);
      const rows = live.dataset.live === 'node' ? [document] : $$('tr[data-node]', live);
      for (const row of rows) {
        const seen = $('[data-f=seen]', row);
        const badge = live.dataset.live === 'node' ? $('#node-status') : $('[data-f=status]', row);
        if (!seen || !badge) continue;
        if (Date.now() - Date.parse(seen.getAttribute('datetime')) > after && badge.textContent !== 'OFFLINE') {
          badge.textContent = 'OFFLINE';
          badge.className = 'badge s-OFFLINE';
        }
      }
    }
  }

  // What the page changes by itself (live heartbeats, "12 s ago", nodes gone silent) is changed
  // together, in one rendering a second: each rendering repaints the whole table, and under a
  // heartbeat flood several a second kept the tab's main thread busy (see PERFORMANCE.md).
  const ticks = [];
  function everySecond(fn) { ticks.push(fn); }
  refreshTimes();
  markSilent();
  setInterval(() => requestAnimationFrame(() => {
    for (const tick of ticks) tick();
    refreshTimes();
    markSilent();
  }), 1000);

  // ---- Live streams -------------------------------------------------------------------------

  // One EventSource per page. A stream refused for a lapsed session closes; then we check the
  // session and send the browser to sign in.
  // The browser reconnects by itself after a dropped connection, but gives up on an error answer
  // (a proxy's 502 during a restart): then the page opens the stream again a few seconds later.
  function stream(url, handlers, onState) {
    let source = null;
    let closed = false;
    const open = () => {
      source = new EventSource(url);
      for (const [name, fn] of Object.entries(handlers)) {
        source.addEventListener(name, (e) => fn(e.data, e));
      }
      source.onopen = () => onState && onState('live');
      source.onerror = async () => {
        onState && onState('reconnecting…');
        if (source.readyState !== EventSource.CLOSED || closed) return;
        const me = await api('GET', '/api/auth/me');
        if (me.status === 401) {
          location.assign('/login?next=' + encodeURIComponent(location.pathname + location.search));
          return;
        }
        setTimeout(() => { if (!closed) open(); }, 3000);
      };
    };
    open();
    return { close() { closed = true; source.close(); } };
  }

  const fmt = (v) => (v == null ? '–' : Math.round(v).toString());

  // Heartbeats are coalesced: the latest per node is kept and the page is patched once a second,
  // in the page's one rendering a second, so a busy fleet costs one DOM pass a second, not one per
  // heartbeat.
  function coalesce(apply) {
    let pending = new Map();
    everySecond(() => {
      if (pending.size === 0) return;
      const batch = pending;
      pending = new Map();
      apply(batch);
    });
    return (key, value) => { pending.set(key, value); };
  }
  // A meter or an attribute written only when it changes (see `put`).
  function setValue(meter, value) {
    if (meter.value !== value) meter.value = value;
  }
  function setAttr(el, name, value) {
    if (el.getAttribute(name) !== value) el.setAttribute(name, value);
  }

  const SPARK = 30;
  function sparkPoints(values, width, height) {
    if (values.length === 0) return '';
    const step = values.length > 1 ? width / (values.length - 1) : 0;
    return values.map((v, i) => (i * step).toFixed(1) + ',' + (height - (Math.min(Math.max(v, 0), 100) / 100) * height).toFixed(1)).join(' ');
  }
  function readPoints(polyline, height) {
    const raw = (polyline.getAttribute('points') || '').trim();
    if (!raw) return [];
    return raw.split(/\s+/).map((p) => ((height - parseFloat(p.split(',')[1])) / height) * 100);
  }

  const fleet = $('[data-live=fleet]');
  if (fleet) {
    const rows = new Map();
    for (const tr of $$('tr[data-node]', fleet)) {
      const spark = $('[data-f=spark]', tr);
      rows.set(tr.dataset.node, { tr, spark, values: readPoints(spark, 20), cells: Object.fromEntries($$('[data-f]', tr).map((c) => [c.dataset.f, c])) });
    }
    // New nodes would show on the last page of the unfiltered fleet; with a filter they may not match.
    const lastPage = !$('[rel=next]') && !/[?&](q|status|region)=[^&]/.test(location.search);
    const notice = $('#fleet-new');
    function show(row, hb) {
      const c = row.cells;
      if (c.status.textContent !== hb.status) {
        c.status.textContent = hb.status;
        c.status.className = 'badge s-' + hb.status;
      }
      put(c.cpu, fmt(hb.cpuPercent));
      put(c.ram, fmt(hb.ramPercent));
      put(c.disk, fmt(hb.diskPercent));
      setValue(c['cpu-m'], hb.cpuPercent || 0);
      setValue(c['ram-m'], hb.ramPercent || 0);
      setValue(c['disk-m'], hb.diskPercent || 0);
      put(c.seen, ago(hb.at));
      setAttr(row.spark, 'points', sparkPoints(row.values, 80, 20));
    }
    // Rows off screen are patched when they scroll into view: under a busy fleet every row changes
    // each second, and a rendering that repaints only the rows a reader sees is a fifth of one that
    // repaints the page (see PERFORMANCE.md). Their data is kept current meanwhile: the sparkline's
    // values, and the last-seen time the silent-node check reads.
    const unseen = new Map();
    const rowsWatch = typeof IntersectionObserver === 'function'
      ? new IntersectionObserver((entries) => {
        for (const e of entries) {
          const row = rows.get(e.target.dataset.node);
          row.offscreen = !e.isIntersecting;
          const hb = unseen.get(row);
          if (e.isIntersecting && hb) { unseen.delete(row); show(row, hb); }
        }
      })
      : null;
    if (rowsWatch) for (const row of rows.values()) rowsWatch.observe(row.tr);
    const patch = coalesce((batch) => {
      for (const [id, hb] of batch) {
        const row = rows.get(id);
        if (hb.cpuPercent != null) {
          row.values.push(hb.cpuPercent);
          if (row.values.length > SPARK) row.values.shift();
        }
        setAttr(row.cells.seen, 'datetime', hb.at);
        if (row.offscreen) unseen.set(row, hb); else show(row, hb);
      }
    });
    // A page that is not the fleet's last follows only its own rows' nodes: the server leaves the
    // rest of the fleet's events out, which a busy fleet's tab would otherwise receive and drop by
    // the hundred each second. The last page follows every node, to notice new ones.
    // The node id is read from the raw text (ids need no escaping) and only this page's are parsed.
    const idOf = /"nodeId":"([^"]*)"/;
    const followed = lastPage ? '' : '?nodes=' + [...rows.keys()].map(encodeURIComponent).join(',');
    stream('/api/stream/nodes' + followed, {
      heartbeat: (data) => {
        const id = idOf.exec(data);
        if (!id) return;
        if (!rows.has(id[1])) { if (lastPage && notice && notice.hidden) notice.hidden = false; return; }
        patch(id[1], JSON.parse(data));
      },
    });
  }

  const node = $('[data-live=node]');
  if (node) {
    const id = node.dataset.nodeId;
    const cells = Object.fromEntries($$('[data-f]', document).map((c) => [c.dataset.f, c]));
    const series = ['cpu', 'ram', 'disk'].map((k) => ({ key: k, line: cells[k + '-line'], values: readPoints(cells[k + '-line'], 120) }));
    const feed = cells.activity;
    const patch = coalesce((batch) => {
      const hb = batch.get(id);
      if (!hb) return;
      cells.cpu.textContent = fmt(hb.cpuPercent);
      cells.ram.textContent = fmt(hb.ramPercent);
      cells.disk.textContent = fmt(hb.diskPercent);
      cells.seen.setAttribute('datetime', hb.at);
      cells.seen.textContent = ago(hb.at);
      const badge = $('#node-status');
      badge.textContent = hb.status;
      badge.className = 'badge s-' + hb.status;
      for (const s of series) {
        s.values.push(hb[s.key + 'Percent'] || 0);
        if (s.values.length > 200) s.values.shift();
        s.line.setAttribute('points', sparkPoints(s.values, 600, 120));
      }
    });
    const mine = '"nodeId":' + JSON.stringify(id);
    stream('/api/stream/nodes?nodes=' + encodeURIComponent(id), {
      heartbeat: (data) => { if (data.includes(mine)) patch(id, JSON.parse(data)); },
      activity: (data) => {
        const ev = JSON.parse(data);
        if (ev.nodeId !== id || !feed) return;
        feed.prepend(eventItem(ev));
        while (feed.children.length > 50) feed.lastChild.remove();
      },
    });
  }

  function eventItem(ev) {
    const li = document.createElement('li');
    li.className = 'sev-' + (ev.severity || 'INFO');
    const time = document.createElement('time');
    time.setAttribute('datetime', ev.at);
    time.textContent = ago(ev.at);
    time.title = ev.at;
    const tag = document.createElement('span');
    tag.className = 'tag';
    tag.textContent = ev.type;
    li.append(time, ' ', tag, ' ');
    if (ev.nodeId) {
      const a = document.createElement('a');
      a.href = '/dashboard/nodes/' + encodeURIComponent(ev.nodeId);
      a.textContent = ev.nodeId;
      li.append(a, ' ');
    }
    li.append(ev.message);
    return li;
  }

  const logs = $('[data-live=logs]');
  if (logs) {
    const pause = $('#pause');
    const state = $('#stream-state');
    const add = (ev) => {
      if (pause && pause.checked) return;
      $('#logs-empty').hidden = true;
      logs.prepend(eventItem(ev));
      while (logs.children.length > 500) logs.lastChild.remove();
    };
    stream('/api/stream/nodes', {
      activity: (data) => add(JSON.parse(data)),
      job: (data) => {
        const job = JSON.parse(data);
        add({ type: 'job.' + job.status.toLowerCase(), severity: job.status === 'FAILED' ? 'WARN' : 'INFO', nodeId: job.nodeId, at: new Date().toISOString(), message: 'job ' + job.id + ' is ' + job.status });
      },
    }, (s) => { state.textContent = s; });
  }

  const jobsTable = $('[data-live=jobs]');
  if (jobsTable) {
    stream('/api/stream/nodes', {
      job: (data) => {
        const job = JSON.parse(data);
        const badge = $('tr[data-job="' + CSS.escape(job.id) + '"] [data-f=status]', jobsTable);
        if (badge) { badge.textContent = job.status; badge.className = 'badge j-' + job.status; }
      },
    });
  }

  const output = $('[data-live=job]');
  if (output) {
    const follow = $('#follow');
    const status = $('#job-status');
    const append = (text, className) => {
      const span = document.createElement('span');
      if (className) span.className = className;
      span.textContent = text;
      output.append(span);
      if (follow.checked) output.scrollTop = output.scrollHeight;
    };
    const setStatus = (s) => {
      status.textContent = s;
      status.className = 'badge j-' + s;
      const started = $('#job-started');
      if (s === 'RUNNING' && started && !started.textContent.trim()) started.textContent = new Date().toISOString();
    };
    const source = stream('/api/jobs/' + encodeURIComponent(output.dataset.jobId) + '/stream', {
      stdout: (data) => append(data),
      stderr: (data) => append(data, 'err'),
      status: (data) => setStatus(JSON.parse(data).status),
      done: (data) => {
        const done = JSON.parse(data);
        setStatus(done.status);
        $('#job-exit').textContent = done.exitCode == null ? '' : String(done.exitCode);
        const finished = $('#job-finished');
        if (!finished.textContent.trim()) finished.textContent = new Date().toISOString();
        if (done.error) { const e = $('#job-error'); e.textContent = done.error; e.hidden = false; }
        const cancel = $('#cancel');
        if (cancel) cancel.remove();
        // The server ends the stream after `done`; without this the browser would reconnect.
        source.close();
      },
    });
    // Scrolling up to read stops following; scrolling back to the end resumes.
    output.addEventListener('scroll', () => {
      follow.checked = output.scrollTop + output.clientHeight >= output.scrollHeight - 4;
    });
  }

  // ---- Hyperion panels, refreshed every five seconds ----------------------------------------

  const hyperion = $('[data-live=hyperion]');
  if (hyperion) {
    const f = (name) => $('[data-f="' + name + '"]', hyperion);
    const bars = (list, values, unit) => {
      list.replaceChildren(...values.map((v) => {
        const li = item(Math.round(v) + unit);
        const bar = document.createElement('meter');
        bar.min = 0; bar.max = 100; bar.value = Math.min(100, v);
        li.prepend(bar);
        return li;
      }));
    };
    const refresh = async () => {
      const [ai, health, ux] = await Promise.all([
        api('GET', '/api/dashboard/ai-workers'),
        api('GET', '/api/dashboard/system-health'),
        api('GET', '/api/dashboard/user-experience'),
      ]);
      if (ai.status === 401) { location.assign('/login?next=/dashboard/hyperion'); return; }
      if (ai.ok) {
        f('cluster').textContent = ai.data.cluster_status;
        f('active').textContent = ai.data.total_active_fleet;
        f('queue').textContent = ai.data.queue_depth;
        f('workers').replaceChildren(...ai.data.nodes.map((w) => {
          const tr = document.createElement('tr');
          for (const v of [w.name, w.status, w.tasks_processed_today, w.current_action || '–']) {
            const td = document.createElement('td');
            td.textContent = v;
            tr.append(td);
          }
          return tr;
        }));
      }
      if (health.ok) {
        const h = health.data;
        f('health').textContent = h.status;
        f('cpu').textContent = fmt(h.cpu_percent);
        f('mem').textContent = fmt(h.memory_percent);
        f('uptime').textContent = Number(h.uptime).toFixed(1);
        f('env').textContent = h.environment;
        f('container').textContent = h.container ? 'yes' : 'no';
        bars(f('load'), h.server_load || [], ' %');
      }
      if (ux.ok) {
        const u = ux.data;
        f('active-now').textContent = u.active_now;
        f('avg').textContent = fmt(u.avg_response_time);
        f('p95').textContent = fmt(u.p95_response_time);
        const peak = Math.max(1, ...(u.daily_activity || []));
        f('daily').replaceChildren(...(u.daily_activity || []).map((n) => {
          const li = item(n + ' users');
          const bar = document.createElement('meter');
          bar.min = 0; bar.max = peak; bar.value = n;
          li.prepend(bar);
          return li;
        }));
      }
    };
    refresh();
    setInterval(refresh, 5000);
  }

  // Secrets that arrive in the URL fragment (the password-reset link): the browser never sends a
  // fragment to a server, so the token stays out of logs; it is moved into the form, then dropped
  // from the address bar and history.
  const fragment = new URLSearchParams(location.hash.slice(1));
  for (const input of $$('input[data-fragment]')) {
    const value = fragment.get(input.dataset.fragment);
    if (value) input.value = value;
  }
  if (location.hash && $('input[data-fragment]')) {
    history.replaceState(null, '', location.pathname + location.search);
  }

  // Tests (and curious operators) can tell the script ran under the page's policy.
  document.documentElement.dataset.js = 'ready';
})();
