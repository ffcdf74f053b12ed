import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import type { HealthCheck } from '../../loader/src/config';
import { httpProbe, tcpProbe, type ProbeResult } from '../../loader/src/health/probes';
import {
  HealthChecker,
  VIP_TARGET_SUPPORTED,
  runCheck,
  type HealthChange,
  type ProbeEvent,
  type ProbeTarget,
} from '../../loader/src/health/checker';

// ---------------------------------------------------------------------------
// helpers

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls until cond() holds; fails after timeoutMs instead of hanging the run. */
async function waitFor(cond: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

async function listen(server: net.Server, host: string): Promise<number> {
  server.listen(0, host);
  await once(server, 'listening');
  return (server.address() as net.AddressInfo).port;
}

interface Seen {
  url?: string;
  headers?: http.IncomingHttpHeaders;
}

/** An HTTP server on loopback that records what the last request looked like. */
async function httpServer(
  handler: (req: http.IncomingMessage, res: http.ServerResponse) => void,
  host = '127.0.0.1',
): Promise<{ port: number; seen: Seen; open: () => number; close: () => Promise<void> }> {
  const seen: Seen = {};
  const sockets = new Set<net.Socket>();
  const server = http.createServer((req, res) => {
    seen.url = req.url;
    seen.headers = req.headers;
    handler(req, res);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  const port = await listen(server, host);
  return {
    port,
    seen,
    open: () => sockets.size,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** A raw TCP server on loopback; onConnection decides what (if anything) it answers. */
async function tcpServer(
  onConnection: (s: net.Socket) => void = () => {},
  host = '127.0.0.1',
): Promise<{ port: number; open: () => number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.resume(); // read (and drop) what comes, so that the peer's FIN is seen
    onConnection(s);
  });
  const port = await listen(server, host);
  return {
    port,
    open: () => sockets.size,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** A port on which nothing listens (bound, then released). */
async function closedPort(host = '127.0.0.1'): Promise<number> {
  const server = net.createServer();
  const port = await listen(server, host);
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

function check(over: Partial<HealthCheck> = {}): HealthCheck {
  return { type: 'tcp', intervalMs: 20, timeoutMs: 10, rise: 2, fall: 3, port: 80, target: 'real', ...over };
}

function target(key: string, over: Partial<HealthCheck> = {}): ProbeTarget {
  return { key, address: '10.0.0.11', check: check(over) };
}

const OK: ProbeResult = { ok: true, durationMs: 0, detail: 'connected' };
const FAIL: ProbeResult = { ok: false, durationMs: 0, detail: 'connection refused' };

/** Records everything a checker reports. */
function watch(hc: HealthChecker): { changes: HealthChange[]; probes: ProbeEvent[] } {
  const log = { changes: [] as HealthChange[], probes: [] as ProbeEvent[] };
  hc.on('change', (c) => log.changes.push(c));
  hc.on('probe', (p) => log.probes.push(p));
  return log;
}

// ---------------------------------------------------------------------------
// tcpProbe

test('tcpProbe: connects to a listening server and closes the connection again', async () => {
  const srv = await tcpServer();
  try {
    const r = await tcpProbe('127.0.0.1', srv.port, 1000);
    assert.deepEqual({ ok: r.ok, detail: r.detail }, { ok: true, detail: 'connected' });
    assert.ok(r.durationMs >= 0 && r.durationMs < 1000, `durationMs ${r.durationMs}`);
    await waitFor(() => srv.open() === 0, 'the server to see the probe connection close');
  } finally {
    await srv.close();
  }
});

test('tcpProbe: a closed port is "connection refused"', async () => {
  const r = await tcpProbe('127.0.0.1', await closedPort(), 1000);
  assert.deepEqual({ ok: r.ok, detail: r.detail }, { ok: false, detail: 'connection refused' });
  assert.ok(r.durationMs < 1000, `durationMs ${r.durationMs}`);
});

test('tcpProbe: IPv6 ::1 and a local address to probe from', async () => {
  const srv = await tcpServer(undefined, '::1');
  try {
    const r = await tcpProbe('::1', srv.port, 1000, { localAddress: '::1' });
    assert.deepEqual({ ok: r.ok, detail: r.detail }, { ok: true, detail: 'connected' });
  } finally {
    await srv.close();
  }
});

test('tcpProbe: bad input fails the probe instead of throwing', async () => {
  const r = await tcpProbe('127.0.0.1', 70000, 100);
  assert.equal(r.ok, false);
  assert.match(r.detail, /port/i);
  const r2 = await tcpProbe('127.0.0.1', await closedPort(), 500, { localAddress: '192.0.2.1' });
  assert.equal(r2.ok, false);
  assert.match(r2.detail, /EADDRNOTAVAIL/);
});

test('tcpProbe: a SYN nobody answers times out after timeoutMs', async () => {
  // A listener whose thread never accepts, with an accept queue of two (backlog 1; 0 would mean Node's default): once the queue is full the kernel drops
  // further SYNs, the loopback equivalent of a dead real server.
  const worker = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     const server = require('node:net').createServer();
     server.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
       parentPort.postMessage(server.address().port);
       Atomics.wait(new Int32Array(workerData), 0, 0, 5000);
     });`,
    { eval: true, workerData: new SharedArrayBuffer(4) },
  );
  try {
    const [port] = (await once(worker, 'message')) as [number];
    // Each probe that connects takes a place in the queue (closed, but never accepted); the first that does not
    // is the one under test. Bounded: the queue holds two.
    const results: ProbeResult[] = [];
    for (let i = 0; i < 8 && (results.at(-1)?.ok ?? true); i++) results.push(await tcpProbe('127.0.0.1', port, 200));
    const r = results.at(-1)!;
    assert.ok(results.length >= 2, `the first probe should have connected: ${JSON.stringify(results)}`);
    assert.deepEqual({ ok: r.ok, detail: r.detail }, { ok: false, detail: 'timed out after 200 ms' });
    assert.ok(r.durationMs >= 190 && r.durationMs < 2000, `durationMs ${r.durationMs}`);
  } finally {
    await worker.terminate();
  }
});

// ---------------------------------------------------------------------------
// httpProbe

const HTTP = { path: '/', expectStatus: 200, timeoutMs: 1000 };

test('httpProbe: 200 is ok; the request is a plain HTTP/1.1 GET that closes', async () => {
  const srv = await httpServer((_req, res) => res.end('fine\n'));
  try {
    const r = await httpProbe('127.0.0.1', srv.port, HTTP);
    assert.deepEqual({ ok: r.ok, detail: r.detail }, { ok: true, detail: 'HTTP 200' });
    assert.ok(r.durationMs >= 0 && r.durationMs < 1000, `durationMs ${r.durationMs}`);
    assert.equal(srv.seen.url, '/');
    assert.equal(srv.seen.headers?.host, '127.0.0.1');
    assert.equal(srv.seen.headers?.['user-agent'], 'xdp-dr-health/1');
    assert.equal(srv.seen.headers?.connection, 'close');
    await waitFor(() => srv.open() === 0, 'the server to see the probe connection close');
  } finally {
    await srv.close();
  }
});

test('httpProbe: another status than the expected one fails, naming both', async () => {
  const srv = await httpServer((_req, res) => {
    res.statusCode = 503;
    res.end('maintenance\n');
  });
  try {
    const r = await httpProbe('127.0.0.1', srv.port, HTTP);
    assert.deepEqual({ ok: r.ok, detail: r.detail }, { ok: false, detail: 'HTTP 503, expected 200' });
    // The expected status need not be 200.
    const r2 = await httpProbe('127.0.0.1', srv.port, { ...HTTP, expectStatus: 503 });
    assert.deepEqual({ ok: r2.ok, detail: r2.detail }, { ok: true, detail: 'HTTP 503' });
  } finally {
    await srv.close();
  }
});

test('httpProbe: the path and Host header reach the server', async () => {
  const srv = await httpServer((req, res) => {
    res.statusCode = req.url === '/healthz?full=1' && req.headers.host === 'www.example.com' ? 204 : 404;
    res.end();
  });
  try {
    const r = await httpProbe('127.0.0.1', srv.port, {
      path: '/healthz?full=1',
      host: 'www.example.com',
      expectStatus: 204,
      timeoutMs: 1000,
    });
    assert.deepEqual({ ok: r.ok, detail: r.detail }, { ok: true, detail: 'HTTP 204' });
    assert.equal(srv.seen.url, '/healthz?full=1');
    assert.equal(srv.seen.headers?.host, 'www.example.com');
  } finally {
    await srv.close();
  }
});

test('httpProbe: a server that accepts and never answers times out after timeoutMs, and the socket is closed', async () => {
  const srv = await tcpServer();
  try {
    const r = await httpProbe('127.0.0.1', srv.port, { ...HTTP, timeoutMs: 200 });
    assert.equal(r.ok, false);
    assert.match(r.detail, /^timed out after 200 ms/);
    assert.ok(r.durationMs >= 190 && r.durationMs < 700, `durationMs ${r.durationMs}`);
    await waitFor(() => srv.open() === 0, 'the server to see the probe connection close');
  } finally {
    await srv.close();
  }
});

test('httpProbe: the status line is enough; a body that never ends is not waited for', async () => {
  const srv = await httpServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('streaming forever...');
  });
  try {
    const r = await httpProbe('127.0.0.1', srv.port, { ...HTTP, timeoutMs: 3000 });
    assert.deepEqual({ ok: r.ok, detail: r.detail }, { ok: true, detail: 'HTTP 200' });
    assert.ok(r.durationMs < 1000, `durationMs ${r.durationMs}`);
    await waitFor(() => srv.open() === 0, 'the server to see the probe connection close');
  } finally {
    await srv.close();
  }
});

test('httpProbe: answers that are not HTTP fail, without waiting for the timeout', async () => {
  const cases: Array<[string, RegExp]> = [
    ['hello there\r\n', /^not an HTTP response: "hello there/],
    ['SSH-2.0-OpenSSH_9.2', /^not an HTTP response: "SSH-2.0/], // no newline ever comes
    ['HTTP/1.1 OK\r\n\r\n', /^not an HTTP status line/],
  ];
  for (const [answer, detail] of cases) {
    const srv = await tcpServer((s) => s.write(answer));
    try {
      const r = await httpProbe('127.0.0.1', srv.port, { ...HTTP, timeoutMs: 3000 });
      assert.equal(r.ok, false, answer);
      assert.match(r.detail, detail);
      assert.ok(r.durationMs < 1000, `durationMs ${r.durationMs}`);
    } finally {
      await srv.close();
    }
  }
});

test('httpProbe: a connection closed without an answer fails', async () => {
  const srv = await tcpServer((s) => s.end());
  try {
    const r = await httpProbe('127.0.0.1', srv.port, HTTP);
    assert.equal(r.ok, false);
    assert.match(r.detail, /^connection (closed without a response|reset)$/);
  } finally {
    await srv.close();
  }
  const refused = await httpProbe('127.0.0.1', await closedPort(), HTTP);
  assert.deepEqual({ ok: refused.ok, detail: refused.detail }, { ok: false, detail: 'connection refused' });
});

test('httpProbe: IPv6 ::1, with the address in brackets as the default Host', async () => {
  const srv = await httpServer((_req, res) => res.end(), '::1');
  try {
    const r = await httpProbe('::1', srv.port, HTTP);
    assert.deepEqual({ ok: r.ok, detail: r.detail }, { ok: true, detail: 'HTTP 200' });
    assert.equal(srv.seen.headers?.host, '[::1]');
  } finally {
    await srv.close();
  }
});

test('httpProbe: a path or Host that would inject headers is refused before connecting', async () => {
  const r = await httpProbe('127.0.0.1', 1, { ...HTTP, path: '/x HTTP/1.1\r\nX-Evil: 1' });
  assert.equal(r.ok, false);
  assert.match(r.detail, /^invalid HTTP path/);
  const r2 = await httpProbe('127.0.0.1', 1, { ...HTTP, host: 'a\r\nX-Evil: 1' });
  assert.match(r2.detail, /^invalid Host header/);
});

// ---------------------------------------------------------------------------
// HealthChecker (injected probe: deterministic, no sockets)

test('HealthChecker: new targets start up; down after exactly `fall` failures in a row, up after `rise` successes', async () => {
  // fall 3, rise 2. The success at #3 resets the failures, the failure at #9 resets the successes.
  const script = [false, false, true, false, false, false, false, true, false, true, true, true];
  let calls = 0;
  const hc = new HealthChecker({
    probe: async () => {
      const i = calls++;
      if (i >= script.length) return OK;
      return script[i] ? OK : { ok: false, durationMs: 1, detail: `refused #${i + 1}` };
    },
  });
  const log = watch(hc);
  const at: number[] = [];
  hc.on('change', () => at.push(hc.status('a')!.checks));
  try {
    hc.set([target('a')]);
    assert.deepEqual(hc.status('a'), { health: 'up', streak: 0, checks: 0, failures: 0 });
    await waitFor(() => log.probes.length >= script.length, 'the scripted probes');
    assert.deepEqual(log.changes, [
      { key: 'a', health: 'down', previous: 'up', reason: '3 failed checks in a row: refused #6' },
      { key: 'a', health: 'up', previous: 'down', reason: '2 good checks in a row' },
    ]);
    assert.deepEqual(at, [6, 11]);
    const s = hc.status('a')!;
    assert.equal(s.health, 'up');
    assert.equal(s.failures, 7);
    assert.equal(s.checks, log.probes.length);
    assert.equal(s.streak, s.checks - 9); // successes since #10
    assert.deepEqual(s.last, OK);
    assert.ok(log.probes.every((p) => p.key === 'a' && p.target.address === '10.0.0.11'));
  } finally {
    hc.stop();
  }
});

test('HealthChecker: fall 1 and rise 1 act on the first result; a throwing probe counts as a failure', async () => {
  let mode: 'throw' | 'reject' | 'ok' = 'throw';
  const hc = new HealthChecker({
    probe: (): Promise<ProbeResult> => {
      if (mode === 'throw') throw new Error('boom');
      if (mode === 'reject') return Promise.reject(new Error('bang'));
      return Promise.resolve(OK);
    },
  });
  const log = watch(hc);
  try {
    hc.set([target('a', { fall: 1, rise: 1 })]);
    await waitFor(() => log.changes.length === 1, 'down');
    assert.deepEqual(log.changes[0], { key: 'a', health: 'down', previous: 'up', reason: '1 failed check: probe failed: boom' });
    mode = 'reject';
    await waitFor(() => hc.status('a')!.last?.detail === 'probe failed: bang', 'a rejected probe');
    mode = 'ok';
    await waitFor(() => log.changes.length === 2, 'up');
    assert.deepEqual(log.changes[1], { key: 'a', health: 'up', previous: 'down', reason: '1 good check' });
  } finally {
    hc.stop();
  }
});

test('HealthChecker: set() adds, removes and restarts targets; a changed check keeps its health', async () => {
  const calls = new Map<string, number>();
  const ports = new Map<string, number>();
  const failing = new Set(['b']);
  const hc = new HealthChecker({
    probe: async (t) => {
      calls.set(t.key, (calls.get(t.key) ?? 0) + 1);
      ports.set(t.key, t.check.port);
      return failing.has(t.key) ? FAIL : OK;
    },
  });
  const log = watch(hc);
  const n = (key: string): number => calls.get(key) ?? 0;
  try {
    hc.set([target('a'), target('b', { fall: 2 }), target('d')]);
    await waitFor(() => hc.status('b')?.health === 'down', 'b down');
    await waitFor(() => n('a') >= 2 && n('d') >= 2, 'a and d probed');
    assert.deepEqual(log.changes, [
      { key: 'b', health: 'down', previous: 'up', reason: '2 failed checks in a row: connection refused' },
    ]);

    const dChecks = hc.status('d')!.checks;
    hc.set([target('b', { fall: 2, port: 8080 }), target('c'), target('d')]);
    const aCalls = n('a');
    assert.equal(hc.status('a'), undefined);
    assert.deepEqual([...hc.statuses().keys()].sort(), ['b', 'c', 'd']);
    // b: same key, new check: still down, counting starts again.
    assert.equal(hc.status('b')!.health, 'down');
    assert.equal(hc.status('b')!.streak, 0);
    assert.equal(hc.status('c')!.health, 'up');

    await waitFor(() => n('c') >= 3 && ports.get('b') === 8080, 'c probed and b probed on its new port');
    assert.equal(n('a'), aCalls, 'a removed target is no longer probed');
    assert.ok(hc.status('d')!.checks > dChecks, 'an unchanged target keeps its counters');
    assert.equal(log.changes.length, 1, 'b stayed down through the change');
    assert.ok(!log.probes.slice(-5).some((p) => p.key === 'a'));

    failing.delete('b');
    await waitFor(() => log.changes.length === 2, 'b up');
    assert.deepEqual(log.changes[1], { key: 'b', health: 'up', previous: 'down', reason: '2 good checks in a row' });

    assert.throws(() => hc.set([target('x'), target('x')]), /listed twice/);
    assert.deepEqual([...hc.statuses().keys()].sort(), ['b', 'c', 'd'], 'a refused set() changes nothing');
  } finally {
    hc.stop();
  }
});

test('HealthChecker: type none is never probed and stays up; switching a down target to none brings it up', async () => {
  const calls = new Map<string, number>();
  const hc = new HealthChecker({
    probe: async (t) => {
      calls.set(t.key, (calls.get(t.key) ?? 0) + 1);
      return FAIL;
    },
  });
  const log = watch(hc);
  try {
    hc.set([target('n', { type: 'none' }), target('t', { fall: 1 })]);
    await waitFor(() => hc.status('t')!.health === 'down', 't down');
    await sleep(60); // a few intervals
    assert.equal(calls.get('n'), undefined);
    assert.deepEqual(hc.status('n'), { health: 'up', streak: 0, checks: 0, failures: 0 });

    hc.set([target('n', { type: 'none' }), target('t', { type: 'none' })]);
    assert.equal(hc.status('t')!.health, 'up');
    assert.deepEqual(log.changes.at(-1), { key: 't', health: 'up', previous: 'down', reason: 'health check removed (type none)' });
    const tCalls = calls.get('t');
    await sleep(60);
    assert.equal(calls.get('t'), tCalls, 'no more probes once the check is none');
  } finally {
    hc.stop();
  }
});

test('HealthChecker: a slow probe is never overlapped, not even across a restart; others are not held up', async () => {
  let running = 0;
  let maxRunning = 0;
  const calls = new Map<string, number>();
  const hc = new HealthChecker({
    probe: async (t) => {
      calls.set(t.key, (calls.get(t.key) ?? 0) + 1);
      if (t.key !== 'slow') return OK;
      running++;
      maxRunning = Math.max(maxRunning, running);
      await sleep(90); // 4-5 intervals
      running--;
      return OK;
    },
  });
  try {
    hc.set([target('slow'), target('fast')]);
    await waitFor(() => running === 1, 'the first slow probe');
    // A changed check restarts the schedule while the old probe still runs: its first tick must wait too.
    hc.set([target('slow', { intervalMs: 15 }), target('fast')]);
    await waitFor(() => (calls.get('slow') ?? 0) >= 3, 'three slow probes');
    assert.equal(maxRunning, 1);
    // ~200 ms at one probe per 20 ms: the fast target kept its pace meanwhile.
    assert.ok((calls.get('fast') ?? 0) >= 5, `fast target probed ${calls.get('fast')} times`);
  } finally {
    hc.stop();
  }
});

test('HealthChecker: stop() silences everything, including a probe still in flight', async () => {
  let calls = 0;
  let inFlight = 0;
  const hc = new HealthChecker({
    probe: async () => {
      calls++;
      inFlight++;
      await sleep(30);
      inFlight--;
      return FAIL;
    },
  });
  const log = watch(hc);
  try {
    hc.set([target('a', { fall: 1 }), target('b', { fall: 1 })]);
    await waitFor(() => log.probes.length >= 2 && inFlight > 0, 'a probe in flight');
    hc.stop();
    const seen = { calls, probes: log.probes.length, changes: log.changes.length };
    const before = hc.statuses();
    await waitFor(() => inFlight === 0, 'the in-flight probes to finish');
    await sleep(80); // several intervals
    assert.deepEqual({ calls, probes: log.probes.length, changes: log.changes.length }, seen);
    assert.deepEqual(hc.statuses(), before, 'statuses stay readable and unchanged');
  } finally {
    hc.stop();
  }
});

test('HealthChecker: the built-in probes against real loopback servers (tcp, http)', async () => {
  const web = await httpServer((req, res) => {
    res.statusCode = req.url === '/healthz' ? 200 : 404;
    res.end();
  });
  const hc = new HealthChecker();
  const log = watch(hc);
  let closed = false;
  try {
    const base = { intervalMs: 30, timeoutMs: 500, rise: 1, fall: 1, port: web.port };
    hc.set([
      { key: 'tcp', address: '127.0.0.1', check: check({ ...base, type: 'tcp' }) },
      { key: 'http', address: '127.0.0.1', check: check({ ...base, type: 'http', path: '/healthz', expectStatus: 200 }) },
    ]);
    await waitFor(() => ['tcp', 'http'].every((k) => (hc.status(k)?.checks ?? 0) >= 1), 'a probe of each');
    assert.equal(hc.status('tcp')!.last?.detail, 'connected');
    assert.equal(hc.status('http')!.last?.detail, 'HTTP 200');
    assert.equal(log.changes.length, 0);

    await web.close();
    closed = true;
    await waitFor(() => log.changes.length === 2, 'both down');
    // A probe in flight when the server went away sees its connection cut; the later ones are refused.
    for (const c of log.changes) assert.match(c.reason, /^1 failed check: connection (refused|reset|closed without a response)$/);
  } finally {
    hc.stop();
    if (!closed) await web.close();
  }
});

test('a vip target with no route to its real server yet fails and says why (the VIP path itself: test/e2e/daemon.test.ts)', async () => {
  assert.equal(VIP_TARGET_SUPPORTED, true);
  const r = await runCheck({ key: 'v', address: '127.0.0.1', check: check({ intervalMs: 100, timeoutMs: 50, rise: 1, fall: 1, port: 1, type: 'tcp', target: 'vip' }) });
  assert.deepEqual([r.ok, r.detail], [false, 'no way to the VIP through this real server yet: its MAC or the interface is not known']);
});
