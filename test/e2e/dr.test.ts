// Direct routing end to end, with real TCP: a client, the load balancer (xdp-dr attached in native mode) and
// three real servers running HTTP servers, on one bridged segment in network namespaces. Requests cross the
// load balancer; replies go from the real server straight to the client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { BPFFS } from '../../loader/src/dataplane/dataplane';
import { Topology, VIP4, VIP6, Host } from '../../loader/src/lab/topology';

const CLI = path.resolve(__dirname, '../../loader/src/cli/main.js');
const CLIENT = path.resolve(__dirname, '../../loader/src/lab/client.js');
const HOLD = path.resolve(__dirname, '../../loader/src/lab/hold.js');
const PIN_BASE = path.join(BPFFS, `xdp-dr-e2e-${process.pid}`);
const topo = new Topology(`e${process.pid}`);
const SVC4 = `${VIP4}:80/tcp`;
const SVC6 = `[${VIP6}]:80/tcp`;
let clientPort = 20000;

function cli(h: Host, ...args: string[]): string {
  process.env.XDP_DR_PIN_BASE = PIN_BASE;
  return topo.exec(h.ns, process.execPath, [CLI, ...args]);
}

/** n new connections from the client, each from a port of its own; which real server answered each. */
function connect(vip: string, n: number): Record<string, number> {
  const out = JSON.parse(topo.exec(topo.client.ns, process.execPath, [CLIENT, vip, String(n), String(clientPort), '16'])) as {
    counts: Record<string, number>;
    errors: string[];
  };
  clientPort += n;
  assert.deepEqual(out.errors, [], 'every connection was answered');
  return out.counts;
}

function counters(): Record<string, { packets: number }> {
  return JSON.parse(cli(topo.lb, 'list', '--json')).load_balancers[0].counters;
}

function assertSpread(counts: Record<string, number>, names: string[], total: number): void {
  const fair = total / names.length;
  for (const n of names) {
    const got = counts[n] ?? 0;
    assert.ok(Math.abs(got - fair) <= 0.2 * fair, `${n} got ${got} of ${total} connections, fair share ${fair.toFixed(0)} ±20%: ${JSON.stringify(counts)}`);
  }
  assert.equal(Object.values(counts).reduce((a, b) => a + b, 0), total);
}

// A stuck step fails its test instead of holding up the whole run.
const BOUND = { timeout: 90_000 };

before(async () => {
  topo.create();
  for (const rs of topo.realServers) cli(rs, 'realserver', 'setup', '--vip', VIP4, '--vip', VIP6);
  await topo.startHttpServers();
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'xdp-dr-e2e-')), 'lb.yaml');
  const backends = (fam: 'ip4' | 'ip6') => topo.realServers.map((r) => `      - address: ${r[fam]}\n`).join('');
  fs.writeFileSync(
    file,
    `interfaces:\n  - name: eth0\n    mode: native\nservices:\n` +
      `  - vip: ${VIP4}\n    port: 80\n    protocol: tcp\n    backends:\n${backends('ip4')}` +
      `  - vip: ${VIP6}\n    port: 80\n    protocol: tcp\n    backends:\n${backends('ip6')}`,
  );
  cli(topo.lb, 'attach', 'eth0', '-c', file);
});

after(() => {
  topo.destroy();
  fs.rmSync(PIN_BASE, { recursive: true, force: true });
});

test('each real server is set up for direct routing (VIP on lo, no ARP for it)', BOUND, () => {
  for (const rs of topo.realServers) assert.doesNotThrow(() => cli(rs, 'realserver', 'check', '--vip', VIP4, '--vip', VIP6, '--lb', topo.lb.ip4));
  const link = JSON.parse(topo.exec(topo.lb.ns, 'ip', ['-j', '-d', 'link', 'show', 'dev', 'eth0']))[0];
  assert.equal(link.xdp?.mode, 1, 'the load balancer runs in native (driver) mode');
});

test('600 new IPv4 connections spread over the three real servers within ±20% of equal', BOUND, () => {
  assertSpread(connect(VIP4, 600), ['rs1', 'rs2', 'rs3'], 600);
});

test('replies go from the real server straight to the client: the load balancer sees none of them', BOUND, () => {
  const before = counters();
  const counts = connect(VIP4, 200);
  const after = counters();
  const moved = (k: string) => (after[k]?.packets ?? 0) - (before[k]?.packets ?? 0);
  assert.equal(Object.values(counts).reduce((a, b) => a + b, 0), 200, 'the client got 200 answers');
  // At least SYN, request, ACK and FIN of every connection crossed the load balancer ...
  assert.ok(moved('TX') >= 200 * 4, `forwarded ${moved('TX')} packets for 200 connections`);
  // ... while a reply reaching it would be a TCP packet for a non-VIP address (the client's): none arrived.
  assert.equal(moved('PASS_NO_SERVICE'), 0, 'no reply packet reached the load balancer');
  assert.equal(moved('PASS_MALFORMED') + moved('PASS_NO_BACKEND') + moved('PASS_NO_TABLE'), 0);
  // The counter does see TCP for other addresses when it reaches the load balancer: a connection to its own address.
  const control = JSON.parse(topo.exec(topo.client.ns, process.execPath, [CLIENT, topo.lb.ip4, '1', String(clientPort++), '1']));
  assert.equal(control.errors.length, 1, 'nothing listens on the load balancer itself');
  assert.ok((counters().PASS_NO_SERVICE?.packets ?? 0) > (after.PASS_NO_SERVICE?.packets ?? 0));
});

test('only the load balancer answers ARP for the VIP: one reply, with its MAC', BOUND, () => {
  const out = topo.exec(topo.client.ns, 'arping', ['-c', '1', '-w', '2', '-I', 'eth0', VIP4]);
  const replies = [...out.matchAll(/reply from \S+ \[([0-9A-Fa-f:]+)\]/g)].map((m) => m[1].toLowerCase());
  assert.deepEqual(replies, [topo.mac(topo.lb)], out);
  assert.match(out, /Received 1 response\(s\)/);
  // IPv6: the client learned the VIP's address from the load balancer too.
  connect(VIP6, 3);
  const neigh = JSON.parse(topo.exec(topo.client.ns, 'ip', ['-j', '-6', 'neigh', 'show', VIP6]));
  assert.equal(neigh[0]?.lladdr, topo.mac(topo.lb));
});

test('a backend removed live gets no new connections; added back, it gets its share again', BOUND, () => {
  cli(topo.lb, 'backend', 'del', SVC4, topo.realServers[1].ip4);
  const without = connect(VIP4, 300);
  assert.equal(without.rs2 ?? 0, 0, `rs2 was removed: ${JSON.stringify(without)}`);
  assertSpread(without, ['rs1', 'rs3'], 300);
  cli(topo.lb, 'backend', 'add', SVC4, topo.realServers[1].ip4);
  assertSpread(connect(VIP4, 600), ['rs1', 'rs2', 'rs3'], 600);
});

/** An open connection to the VIP: its first answer, and a way to ask again on the same connection. */
async function hold(vip: string, localPort: number): Promise<{ first: Answer; again: () => Promise<Answer> }> {
  const child = topo.spawn(topo.client.ns, process.execPath, [HOLD, vip, String(localPort)]);
  const lines = readline.createInterface({ input: child.stdout! });
  const queue: Answer[] = [];
  const waiters: ((a: Answer) => void)[] = [];
  lines.on('line', (l) => {
    const a = JSON.parse(l) as Answer;
    const w = waiters.shift();
    if (w) w(a);
    else queue.push(a);
  });
  const next = (): Promise<Answer> =>
    new Promise((resolve, reject) => {
      const q = queue.shift();
      if (q) return resolve(q);
      const timer = setTimeout(() => reject(new Error('no answer within 5 s')), 5000);
      waiters.push((a) => {
        clearTimeout(timer);
        resolve(a);
      });
    });
  const first = await next();
  return {
    first,
    again: () => {
      child.stdin!.write('again\n');
      return next();
    },
  };
}

interface Answer {
  server?: string;
  localPort?: number;
  error?: string;
}

test('a drained backend gets no new connections while its open ones keep working', BOUND, async () => {
  // Open connections until a few of them landed on rs3.
  const held = [];
  for (let i = 0; i < 40 && held.length < 3; i++) {
    const h = await hold(VIP4, clientPort++);
    assert.equal(h.first.error, undefined);
    if (h.first.server === 'rs3') held.push(h);
  }
  assert.ok(held.length >= 1, 'some connection landed on rs3');
  cli(topo.lb, 'backend', 'drain', SVC4, topo.realServers[2].ip4);
  const drained = connect(VIP4, 300);
  assert.equal(drained.rs3 ?? 0, 0, `rs3 is drained: ${JSON.stringify(drained)}`);
  assertSpread(drained, ['rs1', 'rs2'], 300);
  for (const h of held) {
    const a = await h.again();
    assert.deepEqual(a, { server: 'rs3', localPort: h.first.localPort }, 'the open connection still reaches rs3');
  }
  cli(topo.lb, 'backend', 'edit', SVC4, topo.realServers[2].ip4, '--weight', '1');
  assertSpread(connect(VIP4, 600), ['rs1', 'rs2', 'rs3'], 600);
});

test('open connections survive adding a backend and changing weights', BOUND, async () => {
  for (const rs of topo.realServers) cli(topo.lb, 'backend', 'edit', SVC4, rs.ip4, '--weight', '1');
  const held = [];
  for (let i = 0; i < 12; i++) held.push(await hold(VIP4, clientPort++));
  cli(topo.lb, 'service', 'add', '10.100.0.100:8080/tcp'); // an unrelated change on the way
  cli(topo.lb, 'backend', 'edit', SVC4, topo.realServers[0].ip4, '--weight', '5');
  cli(topo.lb, 'backend', 'del', SVC4, topo.realServers[1].ip4);
  for (const h of held) {
    const a = await h.again();
    if (h.first.server === 'rs2') continue; // its backend was removed: that connection may break
    assert.deepEqual(a, { server: h.first.server, localPort: h.first.localPort });
  }
  cli(topo.lb, 'backend', 'add', SVC4, topo.realServers[1].ip4);
  cli(topo.lb, 'backend', 'edit', SVC4, topo.realServers[0].ip4, '--weight', '1');
  cli(topo.lb, 'service', 'del', '10.100.0.100:8080/tcp');
});

test('IPv6: 600 connections spread within ±20%, a removed backend gets none, added back it gets its share', BOUND, () => {
  assertSpread(connect(VIP6, 600), ['rs1', 'rs2', 'rs3'], 600);
  cli(topo.lb, 'backend', 'del', SVC6, topo.realServers[0].ip6);
  const without = connect(VIP6, 300);
  assert.equal(without.rs1 ?? 0, 0);
  assertSpread(without, ['rs2', 'rs3'], 300);
  cli(topo.lb, 'backend', 'add', SVC6, topo.realServers[0].ip6);
  assertSpread(connect(VIP6, 600), ['rs1', 'rs2', 'rs3'], 600);
});

test('a topology removes everything it created, also after a failure part way', BOUND, () => {
  const t = new Topology(`f${process.pid}`);
  t.create();
  assert.ok(fs.existsSync(`/run/netns/${t.lb.ns}`));
  t.destroy();
  for (const ns of [t.sw, ...t.hosts.map((h) => h.ns)]) assert.ok(!fs.existsSync(`/run/netns/${ns}`), `${ns} removed`);
  // A failure in the middle of create() (here: a name clash on the bridge) leaves nothing behind either.
  const broken = new Topology(`g${process.pid}`);
  const orig = broken.exec.bind(broken);
  let calls = 0;
  broken.exec = (ns, cmd, args) => {
    if (++calls === 3) throw new Error('injected failure');
    return orig(ns, cmd, args);
  };
  assert.throws(() => broken.create(), /injected failure/);
  for (const ns of [broken.sw, ...broken.hosts.map((h) => h.ns)]) assert.ok(!fs.existsSync(`/run/netns/${ns}`), `${ns} removed`);
});
