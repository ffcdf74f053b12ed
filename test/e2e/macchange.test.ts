// A real server's MAC changes under a running `xdp-dr run` (a NIC swapped, a VM moved): the daemon follows it
// from the neighbour table within a stated bound, for the IPv4 and the IPv6 service, without the real server
// announcing itself (no gratuitous ARP, no unsolicited NA). A MAC given in the config is never overwritten.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BPFFS } from '../../loader/src/dataplane/dataplane';
import { Topology, VIP4, VIP6, Host } from '../../loader/src/lab/topology';
import { DaemonLab, Daemon, BOUND, CHECK, CHECK_YAML, logged as loggedIn, metric as metricIn, until } from '../lib/daemonlab';

const PIN_BASE = path.join(BPFFS, `xdp-dr-mac-${process.pid}`);
const topo = new Topology(`m${process.pid}`);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xdp-dr-mac-'));
const CONFIG = path.join(dir, 'lb.yaml');
const lab = new DaemonLab(topo, PIN_BASE, CONFIG);
const SURVEY_MS = 300;
let daemon: Daemon | undefined;

const timing = CHECK_YAML;
/** givenMac4: MACs the operator gives for IPv4 backends (index -> MAC); check6: whether the IPv6 service is checked. */
const config = (givenMac4: Record<number, string> = {}, check6 = true) =>
  `interfaces:\n  - name: eth0\nservices:\n  - vip: ${VIP4}\n    port: 80\n    protocol: tcp\n` +
  `    health_check:\n      type: http\n      path: /\n${timing}    backends:\n` +
  topo.realServers.map((r, i) => `      - address: ${r.ip4}\n` + (givenMac4[i] ? `        mac: ${givenMac4[i]}\n` : '')).join('') +
  // Checks of the VIP on each real server send a SYN to the MAC the daemon knows, not through the neighbour table.
  `  - vip: ${VIP6}\n    port: 80\n    protocol: tcp\n` +
  (check6 ? `    health_check:\n      type: tcp\n      target: vip\n${timing}` : '') + '    backends:\n' +
  topo.realServers.map((r) => `      - address: ${r.ip6}\n`).join('');

const cli = (h: Host, ...args: string[]) => lab.cli(h, ...args);
const connect = (vip: string, n: number) => lab.connect(vip, n);
const logged = (msg: RegExp) => loggedIn(daemon!, msg);
const metric = (name: string, labels: Record<string, string>) => metricIn(lab.scrape(), name, labels);

/** The backend records in the maps, by address: their MAC and where it came from. */
function records(): Map<string, { mac: string; source: string }> {
  const lb = JSON.parse(cli(topo.lb, 'list', '--json')).load_balancers[0];
  const out = new Map<string, { mac: string; source: string }>();
  for (const s of lb.services) for (const b of s.backends) out.set(b.address, { mac: b.mac, source: b.mac_source });
  return out;
}

/** The kernel's unicast re-confirmation of a neighbour: ucast_solicit probes, retrans_time apart. */
function unicastProbeMs(family: 'ipv4' | 'ipv6'): number {
  const get = (k: string) => Number(topo.exec(topo.lb.ns, 'sysctl', ['-n', `net.${family}.neigh.eth0.${k}`]).trim());
  return get('ucast_solicit') * get('retrans_time_ms');
}

/** The promise in README.md: 2 survey intervals + the kernel's unicast probing of the old MAC + 2 s. */
const followBound = () => 2 * SURVEY_MS + Math.max(unicastProbeMs('ipv4'), unicastProbeMs('ipv6')) + 2000;

/** Swaps a real server's NIC address as a replacement would: down, new MAC, up, its addresses configured again. */
function changeMac(h: Host, mac: string): void {
  topo.exec(h.ns, 'ip', ['link', 'set', 'eth0', 'down']);
  topo.exec(h.ns, 'ip', ['link', 'set', 'eth0', 'address', mac]);
  topo.exec(h.ns, 'ip', ['link', 'set', 'eth0', 'up']);
  // A link going down takes its global IPv6 addresses along (keep_addr_on_down=0); IPv4 ones stay.
  topo.exec(h.ns, 'ip', ['addr', 'replace', `${h.ip6}/64`, 'dev', 'eth0', 'nodad']);
}


/**
 * Polls the backend records until every address holds newMac or the deadline passes. goneBy: the first poll
 * after the last one that saw oldMac (the old MAC left the maps no later than that); firstNew: the first that
 * saw newMac. Both in ms after `since`.
 */
async function watchRecords(addrs: string[], oldMac: string, newMac: string, since: number, deadline: number) {
  const goneBy: Record<string, number> = {};
  const firstNew: Record<string, number> = {};
  const sawOld: Record<string, boolean> = {};
  let pollMs = 0; // the longest poll: how late goneBy can be
  while (Date.now() < deadline && !addrs.every((a) => firstNew[a] !== undefined)) {
    const t = Date.now();
    const recs = records();
    const now = Date.now() - since;
    pollMs = Math.max(pollMs, Date.now() - t);
    for (const a of addrs) {
      const r = recs.get(a);
      if (r?.mac === oldMac) sawOld[a] = true;
      else if (sawOld[a] || goneBy[a] === undefined) {
        goneBy[a] = now;
        sawOld[a] = false;
      }
      if (r?.mac === newMac) firstNew[a] ??= now;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { goneBy, firstNew, pollMs };
}

const allServe = (vip: string) => {
  const r = connect(vip, 30);
  return r.errors.length === 0 && Object.keys(r.counts).length === topo.realServers.length;
};

before(async () => {
  daemon = await lab.setUp(config(), SURVEY_MS);
  await until(() => allServe(VIP4) && allServe(VIP6), 15_000, () => 'not every real server serves both VIPs');
});

after(() => lab.tearDown());

test('a real server\'s new MAC is in the maps within the bound and new connections reach it again, IPv4 and IPv6', BOUND, async () => {
  const rs = topo.realServers[0];
  const oldMac = topo.mac(rs);
  const newMac = '02:5a:00:00:00:11';
  const before = records();
  for (const a of [rs.ip4, rs.ip6]) assert.deepEqual(before.get(a), { mac: oldMac, source: 'neighbour' }, a);

  const bound = followBound();
  // Once the new MAC is known, a backend that its health checks took out comes back after rise good checks.
  const backBound = bound + CHECK.rise * CHECK.intervalMs + CHECK.timeoutMs + 1000;
  const changed = Date.now();
  changeMac(rs, newMac);

  // The data path sends a new flow to the MAC in the backend record: watch how long the old one stays there.
  // Past the bound, to report how late it was rather than hang.
  const { goneBy, firstNew, pollMs } = await watchRecords([rs.ip4, rs.ip6], oldMac, newMac, changed, changed + backBound + 5000);
  for (const a of [rs.ip4, rs.ip6]) {
    console.log(`${a}: old MAC out of the maps by ${goneBy[a]} ms after the change, new MAC in from ${firstNew[a] ?? 'never'} ms; bounds ${bound} / ${backBound} ms (+ ${pollMs} ms poll)`);
    assert.ok(goneBy[a] !== undefined && goneBy[a] <= bound + pollMs, `${a}: the old MAC stayed in the maps until ${goneBy[a] ?? 'the end'} ms, bound ${bound} ms + ${pollMs} ms poll`);
    assert.ok(firstNew[a] !== undefined && firstNew[a] <= backBound, `${a}: new MAC in the maps after ${firstNew[a] ?? 'never'} ms, bound ${backBound} ms`);
    assert.deepEqual(records().get(a), { mac: newMac, source: 'neighbour' }, a);
    assert.ok(logged(new RegExp(`^backend ${a} MAC changed ${oldMac} -> ${newMac}$`)), `${a}: the change is logged`);
    assert.ok((metric('xdp_dr_backend_mac_changes_total', { backend: a }) ?? 0) >= 1, `${a}: the change is counted`);
  }

  // Real connections through both VIPs reach the real server at its new MAC, and nothing fails.
  for (const vip of [VIP4, VIP6]) {
    await until(() => (connect(vip, 30).counts[rs.name] ?? 0) > 0, 5000, () => `${rs.name} gets no connections on ${vip}`);
    const r = connect(vip, 150);
    assert.deepEqual(r.errors, [], vip);
    assert.ok((r.counts[rs.name] ?? 0) >= 25, `${vip}: ${JSON.stringify(r.counts)}`);
  }
});

test('unchecked, a backend keeps its record and only its MAC changes, within the bound; a MAC given in the config is never overwritten', BOUND, async () => {
  // No health check on the IPv6 service: nothing takes rs2 out, so the old MAC stays in its record until the
  // survey follows the change. Its IPv4 backend carries a MAC given by the operator.
  const rs = topo.realServers[1];
  const oldMac = topo.mac(rs);
  fs.writeFileSync(CONFIG, config({ 1: oldMac }, false));
  await until(() => records().get(rs.ip4)?.source === 'given', 5000, () => 'the given MAC was not applied');
  await until(() => allServe(VIP4) && allServe(VIP6), 10_000, () => 'not every real server serves both VIPs');
  const newMac = '02:5a:00:00:00:12';
  const bound = followBound();
  const changed = Date.now();
  changeMac(rs, newMac);
  const given: { mac: string; source: string }[] = [];
  const { goneBy, firstNew, pollMs } = await watchRecords([rs.ip6], oldMac, newMac, changed, changed + bound + 5000);
  console.log(`${rs.ip6}: old MAC out of the maps by ${goneBy[rs.ip6]} ms after the change, new MAC in from ${firstNew[rs.ip6] ?? 'never'} ms; bound ${bound} ms (+ ${pollMs} ms poll)`);
  // Nothing took the backend out: the old MAC left its record when the new one came in.
  assert.ok(firstNew[rs.ip6] !== undefined && firstNew[rs.ip6] <= bound + pollMs, `${rs.ip6}: new MAC after ${firstNew[rs.ip6] ?? 'never'} ms, bound ${bound} ms + ${pollMs} ms poll`);
  assert.equal(goneBy[rs.ip6], firstNew[rs.ip6]);
  assert.ok(logged(new RegExp(`^backend ${rs.ip6} MAC changed ${oldMac} -> ${newMac}$`)), 'the change is logged');
  await until(() => (connect(VIP6, 30).counts[rs.name] ?? 0) > 0, 5000, () => `${rs.name} gets no connections on ${VIP6}`);
  const r = connect(VIP6, 150);
  assert.deepEqual(r.errors, []);
  assert.ok((r.counts[rs.name] ?? 0) >= 25, JSON.stringify(r.counts));

  // Health checks of the IPv4 service (through the kernel's entry, which follows) may have taken rs2 out for a
  // while; whenever it is in the maps, it holds the operator's MAC, also once it is back and more surveys ran.
  const end = Date.now() + bound + CHECK.rise * CHECK.intervalMs + CHECK.timeoutMs + 1000;
  while (Date.now() < end && given.length < 5) {
    const g = records().get(rs.ip4);
    if (g) given.push(g);
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(given.length >= 5, `${rs.ip4} was in the maps ${given.length} times in the last polls`);
  for (const g of given) assert.deepEqual(g, { mac: oldMac, source: 'given' });
  assert.ok(!logged(new RegExp(`^backend ${rs.ip4.replace(/\./g, '\\.')} MAC changed`)), 'no change logged for the given MAC');
});
