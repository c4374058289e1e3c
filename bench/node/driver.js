// Load driver for `make bench`: the same phases against the app and against the Node
// socket.io reference (../shared/bench/node-peer/server.js), so ratios come from one run.
//
// One process, one monotonic clock (performance.now()). Each visit is a provider socket and
// a patient socket; "told" means the provider's socket received the patient's new presence.
// Targets:
//   app  - providers: signed session cookie of a launch session + auth {visit: <id>};
//          patients: GET /j/<token> (the texted link) for the session cookie, then the socket
//          with auth {patient: true}. Presence arrives as `presence` deltas or in `visit_state`.
//   node - the reference protocol: auth {role, visit}; `presence` {ev: join|leave}.
//
// Phases (each bounded in count and time; a hard deadline ends the process):
//   fill     N providers, then N patients, closed loop: connects/s at saturation, CPU per
//            connect, connect -> provider told
//   drain    app: waits for the write-back backlog of the fill to drain (write-backs/s)
//   idle     RSS per socket and server CPU with everyone connected and nothing happening
//   probe    M spare visits: patients connect and leave one by one at a steady pace while
//            every other visit stays occupied: connect -> told, drop -> told "connection lost",
//            and (app) "left" after the grace period
//   churn    patients leave and come back after the grace period at a steady rate, so the
//            EHR stand-in receives a steady stream of write-backs
//   storm    the server process is restarted with every pair connected: time until every
//            socket is back, and (app) whether presence and lobby places are right again
//   join     GET /join with a patient's session, closed loop: requests/s and CPU per request
//   empty    everyone disconnects; server CPU with nothing connected
//
// Usage: node driver.js --config run.json   (written by bench/run.py; see there)
'use strict';
const fs = require('fs');
const http = require('http');
const { performance, monitorEventLoopDelay, PerformanceObserver } = require('perf_hooks');
const { io } = require('socket.io-client');

const cfg = JSON.parse(fs.readFileSync(process.argv[process.argv.indexOf('--config') + 1], 'utf8'));
const TARGET = cfg.target;                       // 'app' | 'node'
const URL_ = cfg.url;
const PROVIDER_URL = cfg.provider_url || URL_;   // providers on another process (Redis runs)
const VISITS = cfg.visits.slice(0, 10000);       // [{appointment_id, patient_id, provider_cookie, patient_token}]
const PROBES = (cfg.probes || []).slice(0, 2000);
const PHASES = new Set(cfg.phases);
const CONC = Math.min(cfg.concurrency || 100, 1000);
const GRACE_MS = (cfg.grace_seconds || 0) * 1000;
const DEADLINE_S = Math.min(cfg.deadline_seconds || 600, 1800);
let serverPids = (cfg.server_pids || []).map(String);

setTimeout(() => {
  console.error(`[driver] hard deadline ${DEADLINE_S}s reached, exiting`);
  process.exit(3);
}, DEADLINE_S * 1000).unref();

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const now = () => performance.now();
const log = (...args) => console.error(`[driver ${cfg.label}]`, ...args);

// ---------- /proc sampling of the server processes ----------
const CLK_TCK = 100;
function procTree(pid) {
  const out = [String(pid)];
  try {
    const kids = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
    for (const kid of kids) out.push(...procTree(kid));
  } catch (e) { /* gone */ }
  return out;
}
function sample() {
  let cpuTicks = 0, rssKb = 0;
  for (const root of serverPids) {
    for (const pid of procTree(root)) {
      try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        cpuTicks += parseInt(f[11], 10) + parseInt(f[12], 10);
        const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/);
        if (m) rssKb += parseInt(m[1], 10);
      } catch (e) { /* gone */ }
    }
  }
  const l = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const busy = l.slice(0, 8).reduce((a, b) => a + b, 0) - l[3] - (l[4] || 0);
  return { t: now(), cpuS: cpuTicks / CLK_TCK, rssMiB: rssKb / 1024, machineBusyS: busy / CLK_TCK };
}
const cpuMs = (a, b) => (b.cpuS - a.cpuS) * 1000;
const cpuPct = (a, b) => (100 * (b.cpuS - a.cpuS)) / ((b.t - a.t) / 1000);
const machinePct = (a, b) => (100 * (b.machineBusyS - a.machineBusyS)) / ((b.t - a.t) / 1000);

// ---------- statistics ----------
function pct(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}
function summarize(values, expected) {
  const s = Float64Array.from(values).sort();
  const r = (x) => (x == null ? null : Math.round(x * 100) / 100);
  return {
    n: s.length, expected, lost: expected - s.length,
    p50: r(pct(s, 50)), p95: r(pct(s, 95)), p99: r(pct(s, 99)), max: r(s[s.length - 1] ?? null),
  };
}
async function waitFor(predicate, timeoutMs, stepMs = 20) {
  const end = now() + timeoutMs;
  while (!predicate() && now() < end) await sleep(stepMs);
  return predicate();
}

// ---------- HTTP helpers ----------
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
function request(url, { method = 'GET', headers = {}, body = null, timeoutMs = 60000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}
async function control(path, body) {
  if (!cfg.control_url) return null;
  const res = await request(cfg.control_url + path, {
    method: body ? 'POST' : 'GET', headers: { 'Content-Type': 'application/json' },
    body: body ? JSON.stringify(body) : null, timeoutMs: 180000,
  });
  return JSON.parse(res.body);
}
async function fhirStats(sinceEpochS) {
  if (!cfg.fhir_stats_url) return null;
  const query = sinceEpochS ? `?since=${sinceEpochS}` : '';
  return JSON.parse((await request(cfg.fhir_stats_url + query)).body);
}

// ---------- visits and their sockets ----------
// Per visit: what the provider has been told about the patient, and what is being timed.
function makeVisit(spec, index) {
  return { ...spec, index, told: 'never', since: null, lobbyEnteredAt: null,
           pending: {}, provider: null, patient: null, patientCookie: null, sinks: {} };
}
const visits = VISITS.map(makeVisit);
const probes = PROBES.map((spec, i) => makeVisit(spec, VISITS.length + i));
const sinks = {};
const sink = (name) => (sinks[name] = sinks[name] || []);

// The provider learnt the patient's presence is now `presence`; settle whatever was timed.
function told(v, presence, lobbyEnteredAt) {
  if (lobbyEnteredAt !== undefined) v.lobbyEnteredAt = lobbyEnteredAt;
  if (presence === v.told) return;
  v.told = presence;
  const t = now();
  const p = v.pending;
  if (presence === 'connected' && p.connect) { sink(p.connect.sink).push(t - p.connect.t0); p.connect = null; }
  if ((presence === 'reconnecting' || presence === 'disconnected') && p.drop) {
    sink(p.drop.sink).push(t - p.drop.t0); p.drop = null;
  }
  if (presence === 'disconnected' && p.left) { sink(p.left.sink).push(t - p.left.t0 - GRACE_MS); p.left = null; }
}

function onProviderEvents(v, socket) {
  if (TARGET === 'node') {
    socket.on('presence', (d) => {
      if (d && d.ev === 'join') told(v, 'connected');
      else if (d && d.ev === 'leave') told(v, 'disconnected');
    });
    return;
  }
  socket.on('presence', (d) => {
    if (d && d.participant_id === v.patient_id) told(v, d.presence, d.lobby_entered_at);
  });
  socket.on('visit_state', (s) => {
    const me = s && s.participants && s.participants.find((p) => p.id === v.patient_id);
    if (!me) return;
    const entry = (s.lobby || []).find((e) => e.participant_id === v.patient_id);
    told(v, me.presence, entry ? entry.entered_at : null);
    v.snapshots = (v.snapshots || 0) + 1;
  });
}

function socketFor(url, auth, cookie) {
  const options = {
    transports: ['websocket'], auth, forceNew: true, timeout: 20000,
    // What a browser page does (static/js/socket.js): reconnect on its own, at most 5 s apart.
    reconnection: true, reconnectionDelay: 1000, reconnectionDelayMax: 5000,
  };
  if (cookie) options.extraHeaders = { Cookie: cookie };
  return io(url, options);
}

function openProvider(v) {
  const auth = TARGET === 'node' ? { role: 'provider', visit: String(v.index) } : { visit: v.appointment_id };
  const socket = socketFor(PROVIDER_URL, auth, v.provider_cookie);
  onProviderEvents(v, socket);
  v.provider = socket;
  return socket;
}

function openPatient(v, sinkName) {
  if (sinkName) v.pending.connect = { sink: sinkName, t0: now() };
  const auth = TARGET === 'node' ? { role: 'patient', visit: String(v.index), t: 0 } : { patient: true };
  const socket = socketFor(URL_, auth, v.patientCookie);
  v.patient = socket;
  return socket;
}

function leave(v, { drop, left }) {
  const t0 = now();
  if (drop) v.pending.drop = { sink: drop, t0 };
  if (left && TARGET === 'app') v.pending.left = { sink: left, t0 };
  v.patient.disconnect();
  v.patient = null;
}

// The texted link: GET /j/<token> gives the session cookie the join page and socket use.
async function openLink(v) {
  if (TARGET !== 'app') return true;
  const res = await request(`${URL_}/j/${v.patient_token}`);
  const cookie = (res.headers['set-cookie'] || []).map((c) => c.split(';')[0]).join('; ');
  if (res.status < 300 || res.status >= 400 || !cookie) return false;
  v.patientCookie = cookie;
  return true;
}

// Run `start(item)` (returns a promise, or a socket whose connect settles it) for every
// item with at most `conc` in flight.
async function closedLoop(items, conc, start) {
  let next = 0, failed = 0;
  const errors = {};
  async function worker() {
    while (next < items.length) {
      const item = items[next++];
      const ok = await start(item).catch((e) => { errors[e.message] = (errors[e.message] || 0) + 1; return false; });
      if (!ok) failed++;
    }
  }
  await Promise.all(Array.from({ length: Math.min(conc, items.length) }, worker));
  return { failed, errors };
}
function connected(socket) {
  return new Promise((resolve) => {
    if (socket.connected) { resolve(true); return; }
    const timer = setTimeout(() => resolve(false), 30000);
    socket.once('connect', () => { clearTimeout(timer); resolve(true); });
    socket.once('connect_error', (e) => {
      if (!socket.active) { clearTimeout(timer); resolve(false); log('connect refused:', e.message); }
    });
  });
}

// ---------- phases ----------
const result = { label: cfg.label, target: TARGET, pairs: visits.length, probes: probes.length, phases: {} };

async function fill() {
  const all = visits.concat(probes);
  const s0 = sample();
  result.server_rss_start_mib = +s0.rssMiB.toFixed(1);
  let t0 = now();
  const prov = await closedLoop(all, CONC, (v) => connected(openProvider(v)));
  const s1 = sample();
  const provSecs = (now() - t0) / 1000;
  log(`${all.length} providers in ${provSecs.toFixed(1)}s (${prov.failed} failed)`);

  let links = { failed: 0 };
  let linkSecs = 0;
  if (TARGET === 'app') {
    t0 = now();
    links = await closedLoop(all, 32, openLink);
    linkSecs = (now() - t0) / 1000;
    log(`${all.length} join links opened in ${linkSecs.toFixed(1)}s (${links.failed} failed)`, links.errors);
  }
  const s2 = sample();
  t0 = now();
  const pat = await closedLoop(visits, CONC, (v) => connected(openPatient(v, 'fill')));
  await waitFor(() => sink('fill').length >= visits.length, 30000);
  const s3 = sample();
  const patSecs = (now() - t0) / 1000;
  log(`${visits.length} patients in ${patSecs.toFixed(1)}s (${pat.failed} failed)`);
  result.phases.fill = {
    connect_told: summarize(sink('fill'), visits.length),
    provider_connects_per_s: +(all.length / provSecs).toFixed(1),
    provider_cpu_ms_per_connect: +(cpuMs(s0, s1) / all.length).toFixed(2),
    link_opens_per_s: TARGET === 'app' ? +(all.length / linkSecs).toFixed(1) : null,
    link_cpu_ms_per_open: TARGET === 'app' ? +(cpuMs(s1, s2) / all.length).toFixed(2) : null,
    patient_connects_per_s: +(visits.length / patSecs).toFixed(1),
    patient_cpu_ms_per_connect: +(cpuMs(s2, s3) / visits.length).toFixed(2),
    server_cpu_pct: +cpuPct(s2, s3).toFixed(1),
    machine_busy_pct: +machinePct(s2, s3).toFixed(1),
    failed: prov.failed + links.failed + pat.failed,
  };
}

async function drain() {
  let first = await control('/backlog');
  if (!first) return;
  // The fill's AuditEvents are queued when presence is written (behind the connects, in
  // batches), and on a slow server well after the fill ends: waiting for the first
  // non-empty backlog once measured 337 of 6,000 and left the rest to spill into the
  // next phases. So the drain ends only when nothing is pending and nothing new has been
  // queued for QUIET_MS (bounded), and reports how many were queued in all.
  const QUIET_MS = 3000;
  const shows = now() + 15000;
  while (first.pending === 0 && now() < shows) {
    await sleep(100);
    first = await control('/backlog');
  }
  const f0 = await fhirStats();
  const t0 = now();
  const s0 = sample();
  let last = first;
  let lastGrowth = now();
  const deadline = t0 + (cfg.drain_timeout_seconds || 120) * 1000;
  while ((last.pending > 0 || now() - lastGrowth < QUIET_MS) && now() < deadline) {
    await sleep(250);
    const next = await control('/backlog');
    if (next.queued !== last.queued) lastGrowth = now();
    last = next;
  }
  // Delivery ended at most QUIET_MS before the loop saw it settle: time to the last
  // delivery, as the stand-in saw it, not to the end of the wait.
  const s1 = sample();
  const f1 = await fhirStats();
  const secs = f1.last_at && f1.created > f0.created
    ? Math.max(f1.last_at * 1000 - (Date.now() - (now() - t0)), 1) / 1000
    : (now() - t0) / 1000;
  const delivered = f1.created - f0.created;
  result.phases.drain = {
    backlog_at_start: first.pending, backlog_max_seen: last.max_seen, backlog_left: last.pending,
    queued_in_all: last.queued, drained_in_s: +secs.toFixed(1), delivered,
    writebacks_per_s: +(delivered / Math.max(secs, 0.001)).toFixed(1),
    server_cpu_ms_per_writeback: delivered ? +(cpuMs(s0, s1) / delivered).toFixed(2) : null,
  };
  log('drain', result.phases.drain);
}

async function idle(name) {
  await sleep(1500);
  const a = sample();
  await sleep((cfg.idle_seconds || 5) * 1000);
  const b = sample();
  const phase = { server_cpu_pct: +cpuPct(a, b).toFixed(2), server_rss_mib: +b.rssMiB.toFixed(1),
                  machine_busy_pct: +machinePct(a, b).toFixed(1) };
  if (name === 'idle') {
    const sockets = 2 * (visits.length + probes.length);
    phase.kib_per_socket = +(((b.rssMiB - result.server_rss_start_mib) * 1024) / sockets).toFixed(1);
  }
  result.phases[name] = phase;
  log(name, phase);
}

// The driver's own stalls (its event loop held by its garbage collector or by the OS) delay
// whatever it is timing, whichever server it drives. They are recorded next to the
// latencies they inflate, and the driver's heap is collected before a timed phase starts,
// so a collection the fill made due does not land in it.
function watchDriver() {
  const lag = monitorEventLoopDelay({ resolution: 1 });
  lag.enable();
  const pauses = [];
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) pauses.push(entry.duration);
  });
  observer.observe({ entryTypes: ['gc'] });
  return () => {
    lag.disable();
    observer.disconnect();
    const ms = (ns) => +(ns / 1e6).toFixed(2);
    return {
      loop_lag_ms: { p99: ms(lag.percentile(99)), max: ms(lag.max) },
      gc: { pauses: pauses.length, total_ms: +pauses.reduce((a, b) => a + b, 0).toFixed(1),
            max_ms: +Math.max(0, ...pauses).toFixed(1) },
    };
  };
}
function settleDriver() {
  if (global.gc) global.gc();  // node --expose-gc (bench/run.py); synchronous
}

// Each probe visit is used once per round; a round starts when the last one's patients were
// told "left", so every connect meets a visit with nobody in it. Rounds give the tail
// percentiles enough samples (3 rounds of 300: the p99 is the 9th slowest, not the 3rd).
async function probe() {
  const rate = cfg.probe_rate || 20;
  const holdMs = cfg.probe_hold_ms || 1000;
  const rounds = Math.max(1, Math.min(cfg.probe_rounds || 1, 10));
  settleDriver();
  const stalls = watchDriver();
  let cpuS = 0, seconds = 0;  // the server's CPU while patients were connecting
  for (let round = 0; round < rounds; round++) {
    const t0 = now();
    const s0 = sample();
    const done = [];
    for (let i = 0; i < probes.length; i++) {
      const due = t0 + (i * 1000) / rate;
      while (now() < due) await sleep(Math.max(1, Math.min(5, due - now())));
      const v = probes[i];
      const socket = openPatient(v, 'probe_connect');
      const started = v.pending.connect.t0;
      // Where the time goes: the engine's handshake, then the Socket.IO connect's ack.
      socket.io.once('open', () => sink('probe_engine_open').push(now() - started));
      socket.once('connect', () => sink('probe_ack').push(now() - started));
      done.push(connected(socket).then(async (ok) => {
        if (!ok) return;
        await waitFor(() => v.told === 'connected', 10000);
        await sleep(holdMs);
        leave(v, { drop: 'probe_drop', left: 'probe_left' });
      }));
    }
    await Promise.all(done);
    const s1 = sample();
    cpuS += s1.cpuS - s0.cpuS;
    seconds += (s1.t - s0.t) / 1000;
    await waitFor(() => probes.every((v) => !v.pending.drop && !v.pending.left), GRACE_MS + 15000);
  }
  const expected = probes.length * rounds;
  result.phases.probe = {
    rate_per_s: rate,
    rounds,
    connect_told: summarize(sink('probe_connect'), expected),
    engine_open: summarize(sink('probe_engine_open'), expected),
    connect_ack: summarize(sink('probe_ack'), expected),
    drop_told: summarize(sink('probe_drop'), expected),
    left_after_grace: TARGET === 'app' ? summarize(sink('probe_left'), expected) : null,
    server_cpu_pct: +((100 * cpuS) / seconds).toFixed(1),
    driver: stalls(),
  };
  log('probe', JSON.stringify(result.phases.probe));
}

async function churn() {
  const rate = cfg.churn_rate || 50;
  const secs = cfg.churn_seconds || 20;
  const awayMs = GRACE_MS + 1000;
  const f0 = await fhirStats();
  const s0 = sample();
  const t0 = now();
  let sent = 0, maxBacklog = 0, i = 0;
  const returns = [];
  const backlogTimer = setInterval(async () => {
    const b = await control('/backlog').catch(() => null);
    if (b) maxBacklog = Math.max(maxBacklog, b.pending);
  }, 500);
  while (now() - t0 < secs * 1000) {
    const due = Math.floor(((now() - t0) / 1000) * rate);
    while (sent < due) {
      const v = visits[i++ % visits.length];
      sent++;
      if (!v.patient || !v.patient.connected) continue;
      leave(v, { drop: 'churn_drop' });
      returns.push(sleep(awayMs).then(() => connected(openPatient(v, 'churn_connect'))));
    }
    await sleep(5);
  }
  await Promise.all(returns);
  await waitFor(() => visits.every((v) => v.told === 'connected'), 15000);
  clearInterval(backlogTimer);
  const s1 = sample();
  const f1 = await fhirStats();
  const elapsed = (now() - t0) / 1000;
  result.phases.churn = {
    rate_per_s: rate, seconds: +elapsed.toFixed(1),
    connect_told: summarize(sink('churn_connect'), sink('churn_connect').length),
    drop_told: summarize(sink('churn_drop'), sink('churn_drop').length),
    writebacks_delivered: f1 && f0 ? f1.created - f0.created : null,
    writebacks_per_s: f1 && f0 ? +((f1.created - f0.created) / elapsed).toFixed(1) : null,
    backlog_max: TARGET === 'app' ? maxBacklog : null,
    server_cpu_pct: +cpuPct(s0, s1).toFixed(1),
  };
  log('churn', JSON.stringify(result.phases.churn));
}

async function storm() {
  const sockets = [];
  for (const v of visits) sockets.push(v.provider, v.patient);
  const before = new Map(visits.map((v) => [v.index, v.lobbyEnteredAt]));
  const stormStartedS = Date.now() / 1000;
  let back = 0;
  let lastBack = 0;
  const onBack = () => { back++; lastBack = now(); };
  // Only reconnections count: wait for every socket's 'disconnect' before arming.
  for (const s of sockets) s.once('disconnect', () => s.once('connect', onBack));
  for (const v of visits) { v.told = 'unknown'; v.snapshots = 0; }
  const restart = await control('/restart', { target: TARGET });
  const tReturn = now();
  serverPids = restart.pids.map(String);
  log(`server back after ${restart.down_ms} ms down; waiting for ${sockets.length} sockets`);
  await waitFor(() => back >= sockets.length, (cfg.storm_timeout_seconds || 60) * 1000, 50);
  const allBackMs = back >= sockets.length ? lastBack - tReturn : null;
  const phase = {
    down_ms: restart.down_ms, stop_ms: restart.stop_ms, sockets: sockets.length, back,
    all_back_ms: allBackMs && +allBackMs.toFixed(0),
  };
  if (TARGET === 'app') {
    const right = (v) => v.told === 'connected' && v.lobbyEnteredAt === before.get(v.index);
    await waitFor(() => visits.every(right), 15000, 50);
    phase.views_right_ms = visits.every(right) ? +(now() - tReturn).toFixed(0) : null;
    phase.presence_wrong = visits.filter((v) => v.told !== 'connected').length;
    phase.lobby_place_changed = visits.filter((v) => v.lobbyEnteredAt !== before.get(v.index)).length;
    // A restart shorter than the grace period: no "disconnected" may reach the EHR.
    // Counted by when they happened (the EHR's AuditEvent period), not when delivered.
    await sleep(Math.max(GRACE_MS, (cfg.restart_grace_seconds || 0) * 1000) + 3000);
    const backlogLeft = async () => ((await control('/backlog')) || { pending: 0 }).pending;
    const drainEnd = now() + 30000;
    while (await backlogLeft() > 0 && now() < drainEnd) await sleep(250);
    const f1 = await fhirStats(stormStartedS);
    phase.false_disconnects_sent = f1.by_action['participant-disconnected'];
  }
  result.phases.storm = phase;
  log('storm', JSON.stringify(phase));
}

async function join() {
  const cookies = visits.map((v) => v.patientCookie).filter(Boolean).slice(0, 100);
  if (!cookies.length) return;
  const secs = cfg.join_seconds || 5;
  const conc = cfg.join_concurrency || 16;
  const lat = [];
  let count = 0, bad = 0, bytes = 0;
  const s0 = sample();
  const t0 = now();
  await Promise.all(Array.from({ length: conc }, async (_, w) => {
    let k = w;
    while (now() - t0 < secs * 1000) {
      const start = now();
      const res = await request(`${URL_}/join`, { headers: { Cookie: cookies[k++ % cookies.length], 'Accept-Encoding': 'identity' } });
      lat.push(now() - start);
      count++;
      bytes = res.body.length;
      if (res.status !== 200) bad++;
    }
  }));
  const s1 = sample();
  const elapsed = (now() - t0) / 1000;
  result.phases.join = {
    requests_per_s: +(count / elapsed).toFixed(0), not_200: bad, page_bytes: bytes,
    server_cpu_ms_per_request: +(cpuMs(s0, s1) / count).toFixed(3),
    latency: summarize(lat, count),
  };
  log('join', JSON.stringify(result.phases.join));
}

// The app's garbage-collector pauses over the whole run, from /metrics (ops/gc_pauses.py).
async function gcPauses() {
  if (TARGET !== 'app') return null;
  const text = (await request(`${URL_}/metrics`)).body;
  const pick = (name) => {
    const out = {};
    for (const m of text.matchAll(new RegExp(`^${name}\\{generation="(\\d)"\\} ([0-9.e+-]+)$`, 'gm'))) {
      out[m[1]] = +m[2];
    }
    return out;
  };
  const ms = (m) => Object.fromEntries(Object.entries(m).map(([g, s]) => [g, +(s * 1000).toFixed(1)]));
  return {
    longest_ms: ms(pick('vv_gc_pause_max_seconds')),
    longest_cpu_ms: ms(pick('vv_gc_pause_cpu_max_seconds')),
    collections: pick('vv_gc_pause_seconds_count'),
  };
}

async function main() {
  log(`target ${TARGET}: ${visits.length} visits + ${probes.length} probes, phases ${[...PHASES].join(',')}`);
  await fill();
  if (PHASES.has('drain')) await drain();
  if (PHASES.has('idle')) await idle('idle');
  if (PHASES.has('probe')) await probe();
  if (PHASES.has('churn')) await churn();
  if (PHASES.has('storm')) await storm();
  if (PHASES.has('join')) await join();
  result.gc = await gcPauses().catch(() => null);
  for (const v of visits.concat(probes)) {
    if (v.patient) v.patient.disconnect();
    if (v.provider) v.provider.disconnect();
  }
  if (PHASES.has('empty')) {
    // Nobody connected and nothing owed: the disconnects made final, their write-backs sent.
    await sleep(GRACE_MS + 1000);
    const end = now() + 120000;
    while (now() < end) {
      const backlog = await control('/backlog').catch(() => null);
      if (!backlog || backlog.pending === 0) break;
      await sleep(500);
    }
    await idle('empty');
  }
  if (process.env.VV_BENCH_RAW) result.raw = sinks;  // every sample, in order, for a closer look
  if (cfg.out) fs.writeFileSync(cfg.out, JSON.stringify(result, null, 1));
  console.log(JSON.stringify(result));
  process.exit(0);
}

main().catch((e) => { console.error(e); process.exit(2); });
