// xdp-dr run in the namespace lab: health checks take a stopped real server out and bring it back, reloads
// apply valid configs and reject broken ones, metrics match the maps, and the load balancer keeps forwarding
// across a kill -9 of the daemon, which a new daemon then adopts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BPFFS } from '../../loader/src/dataplane/dataplane';
import { Topology, VIP4, VIP6, Host } from '../../loader/src/lab/topology';
import { DaemonLab, Daemon, BOUND, CHECK, CHECK_YAML, logged as loggedIn, metric, until } from '../lib/daemonlab';

const PIN_BASE = path.join(BPFFS, `xdp-dr-daemon-${process.pid}`);
const topo = new Topology(`d${process.pid}`);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xdp-dr-daemon-'));
const CONFIG = path.join(dir, 'lb.yaml');
const lab = new DaemonLab(topo, PIN_BASE, CONFIG);
let daemon: Daemon | undefined;

const timing = CHECK_YAML;
const config = (weights: number[] = [1, 1, 1]) =>
  `interfaces:\n  - name: eth0\nservices:\n  - vip: ${VIP4}\n    port: 80\n    protocol: tcp\n` +
  `    health_check:\n      type: http\n      path: /\n${timing}    backends:\n` +
  topo.realServers.map((r, i) => `      - address: ${r.ip4}\n        weight: ${weights[i]}\n`).join('') +
  // The IPv6 service checks the VIP itself on each real server (a SYN to its MAC), not its own address.
  `  - vip: ${VIP6}\n    port: 80\n    protocol: tcp\n    health_check:\n      type: tcp\n      target: vip\n${timing}    backends:\n` +
  topo.realServers.map((r) => `      - address: ${r.ip6}\n`).join('');

const cli = (h: Host, ...args: string[]) => lab.cli(h, ...args);
const connect = (n: number) => lab.connect(VIP4, n);
const SURVEY_MS = 300;
const startDaemon = (...extra: string[]) => lab.startDaemon(SURVEY_MS, ...extra);
const scrape = () => lab.scrape();
const logged = (msg: RegExp) => loggedIn(daemon!, msg);

before(async () => {
  daemon = await lab.setUp(config(), SURVEY_MS);
});

after(() => lab.tearDown());

test('every log line is JSON with time, level and msg', BOUND, () => {
  for (const l of daemon!.log) {
    const j = JSON.parse(l);
    assert.ok(j.time && j.level && j.msg, l);
  }
  assert.ok(logged(/^attached to eth0$/));
});

test('a real server whose HTTP server stops is taken out within fall x interval + timeout + 1 s, and comes back after rise checks', BOUND, async () => {
  const rs2 = topo.realServers[1];
  await topo.stopHttpServer(rs2);
  const stopped = Date.now();
  const bound = CHECK.fall * CHECK.intervalMs + CHECK.timeoutMs + 1000;
  // Until it is out, some connections meet the closed port.
  await until(() => {
    const r = connect(20);
    return r.errors.length === 0 && !r.counts.rs2;
  }, bound + 2000, () => 'rs2 was never taken out');
  const took = Date.now() - stopped;
  assert.ok(took <= bound, `taken out after ${took} ms, bound ${bound} ms`);
  await until(() => !!logged(/^backend 10\.100\.0\.12 of 10\.100\.0\.100:80\/tcp is down: 2 failed checks in a row/), 2000,
    () => 'the down event is logged with its reason');
  const r = connect(300);
  assert.deepEqual(r.errors, []);
  assert.equal(r.counts.rs2 ?? 0, 0);
  for (const n of ['rs1', 'rs3']) assert.ok(Math.abs((r.counts[n] ?? 0) - 150) <= 30, `${n}: ${JSON.stringify(r.counts)}`);
  assert.equal(metric(scrape(), 'xdp_dr_backend_up', { backend: rs2.ip4 }), 0);

  await topo.startHttpServer(rs2);
  const started = Date.now();
  const back = CHECK.rise * CHECK.intervalMs + CHECK.timeoutMs + 1000;
  await until(() => (connect(30).counts.rs2 ?? 0) > 0, back + 2000, () => 'rs2 never came back');
  assert.ok(Date.now() - started <= back, `back after ${Date.now() - started} ms, bound ${back} ms`);
  await until(() => !!logged(/is up: 2 good checks in a row/), 2000, () => 'the up event is logged');
  assert.equal(metric(scrape(), 'xdp_dr_backend_up', { backend: rs2.ip4 }), 1);
});

test('a vip-target check probes the VIP on each real server: a VIP missing from lo takes it out; back, it returns', BOUND, async () => {
  const rs1 = topo.realServers[0];
  const key = (h: Host) => ({ vip: VIP6, backend: h.ip6 });
  await until(() => topo.realServers.every((h) => metric(scrape(), 'xdp_dr_backend_up', key(h)) === 1), 5000, () => 'vip checks not up');
  topo.exec(rs1.ns, 'ip', ['addr', 'del', `${VIP6}/128`, 'dev', 'lo']);
  await until(() => !!logged(new RegExp(`^backend ${rs1.ip6} of \\[${VIP6}\\]:80/tcp is down: 2 failed checks in a row: timed out after \\d+ ms waiting for a SYN-ACK from the VIP`)),
    CHECK.fall * CHECK.intervalMs + CHECK.timeoutMs + 2000, () => 'rs1 not taken out of the IPv6 service');
  // Its own address still answers, which a check of the real address would have called healthy: the IPv4
  // service (checked on the real address) keeps rs1.
  assert.equal(metric(scrape(), 'xdp_dr_backend_up', { vip: VIP4, backend: rs1.ip4 }), 1);
  cli(rs1, 'realserver', 'setup', '--vip', VIP6);
  await until(() => metric(scrape(), 'xdp_dr_backend_up', key(rs1)) === 1, CHECK.rise * CHECK.intervalMs + CHECK.timeoutMs + 2000,
    () => 'rs1 did not come back');
});

test('metrics after real traffic match the maps', BOUND, () => {
  const before = connect(120);
  assert.deepEqual(before.errors, []);
  const text = scrape();
  const listed = JSON.parse(cli(topo.lb, 'list', '--json')).load_balancers[0];
  const svc = listed.services[0];
  assert.equal(metric(text, 'xdp_dr_service_packets_total', { vip: VIP4, port: '80', proto: 'tcp' }), svc.packets);
  assert.equal(metric(text, 'xdp_dr_service_bytes_total', { vip: VIP4 }), svc.bytes);
  for (const b of svc.backends) assert.equal(metric(text, 'xdp_dr_backend_packets_total', { backend: b.address }), b.packets, b.address);
  assert.equal(metric(text, 'xdp_dr_packets_total', { outcome: 'tx' }), listed.counters.TX.packets);
  assert.ok((metric(text, 'xdp_dr_conn_table_events_total', { event: 'new' }) ?? 0) >= 120);
  assert.ok((metric(text, 'xdp_dr_health_check_duration_seconds_count', { backend: topo.realServers[0].ip4 }) ?? 0) > 0);
  assert.equal(metric(text, 'xdp_dr_backend_weight', { backend: topo.realServers[0].ip4 }), 1);
  assert.match(text, /^xdp_dr_build_info\{version="[^"]+",build="[0-9a-f]{12}",kernel="[^"]+"\} 1$/m);
});

test('a broken config on SIGHUP is rejected, logged and counted; the running config keeps serving', BOUND, async () => {
  const rejectedBefore = metric(scrape(), 'xdp_dr_config_reloads_total', { result: 'rejected' }) ?? 0;
  fs.writeFileSync(CONFIG, config().replace('weight: 1', 'weight: -3'));
  daemon!.child.kill('SIGHUP');
  await until(() => (metric(scrape(), 'xdp_dr_config_reloads_total', { result: 'rejected' }) ?? 0) > rejectedBefore, 5000, () => 'no rejection counted');
  await until(() => !!logged(/config reload .* rejected/), 2000, () => 'rejection not logged');
  const err = logged(/config reload .* rejected; still running the previous config/);
  assert.match(String(err?.error), /services\[0\]\.backends\[0\]\.weight: -3 is out of range/);
  const r = connect(150);
  assert.deepEqual(r.errors, []);
  assert.equal(Object.keys(r.counts).length, 3, 'all three real servers still serve');
});

test('a valid config change is applied when the file changes', BOUND, async () => {
  const appliedBefore = metric(scrape(), 'xdp_dr_config_reloads_total', { result: 'applied' }) ?? 0;
  fs.writeFileSync(CONFIG, config([1, 1, 0]));
  await until(() => (metric(scrape(), 'xdp_dr_config_reloads_total', { result: 'applied' }) ?? 0) > appliedBefore, 5000, () => 'no reload applied');
  assert.equal(connect(150).counts.rs3 ?? 0, 0, 'rs3 drained by the new config');
  fs.writeFileSync(CONFIG, config());
  await until(() => (metric(scrape(), 'xdp_dr_config_reloads_total', { result: 'applied' }) ?? 0) > appliedBefore + 1, 5000, () => 'no second reload');
});

test('the interface going down and up keeps the program attached and forwarding', BOUND, async () => {
  topo.exec(topo.lb.ns, 'ip', ['link', 'set', 'eth0', 'down']);
  topo.exec(topo.lb.ns, 'ip', ['link', 'set', 'eth0', 'up']);
  await until(() => connect(20).errors.length === 0, 5000, () => 'no traffic after the link came back');
  const link = JSON.parse(topo.exec(topo.lb.ns, 'ip', ['-j', '-d', 'link', 'show', 'dev', 'eth0']))[0];
  assert.equal(link.xdp?.mode, 1);
});

test('pins removed behind our back are noticed, reported and put back; a removed link pin is re-attached', BOUND, async () => {
  const dir = path.join(PIN_BASE, 'eth0');
  fs.rmSync(path.join(dir, 'services'));
  fs.rmSync(path.join(dir, 'link')); // the only holder of the XDP link: the program leaves eth0 with it
  await until(() => !!logged(/^the XDP link pin of eth0 was removed/), 5000, () => 'link pin removal not noticed');
  await until(() => !!logged(/^pins of eth0 were removed behind our back \(services\)/), 5000, () => 'map pin removal not noticed');
  // The daemon logs before it repairs: wait for the repair itself.
  await until(() => fs.existsSync(path.join(dir, 'services')) && fs.existsSync(path.join(dir, 'link')), 5000, () => 'pins not back');
  await until(() => connect(20).errors.length === 0, 5000, () => 'no traffic after the repair');
  await until(() => (metric(scrape(), 'xdp_dr_pin_repairs_total', { interface: 'eth0' }) ?? 0) >= 2, 5000, () => 'repairs not counted');
});

test('the interface deleted: the daemon says so; created again, it attaches again', BOUND, async () => {
  topo.unplug(topo.lb);
  await until(() => !!logged(/^eth0 is gone/), 5000, () => 'deletion not noticed');
  topo.replug(topo.lb);
  await until(() => !!logged(/^eth0 is back \(ifindex \d+ -> \d+\): attaching again$/), 5000, () => 'return not noticed');
  await until(() => {
    const r = connect(30);
    return r.errors.length === 0 && Object.keys(r.counts).length === 3;
  }, 10_000, () => 'no balanced traffic after the interface returned');
  const link = JSON.parse(topo.exec(topo.lb.ns, 'ip', ['-j', '-d', 'link', 'show', 'dev', 'eth0']))[0];
  assert.equal(link.xdp?.mode, 1, 'attached again in native mode');
});

test('kill -9 of the daemon: connections keep being balanced; a new daemon adopts the state', BOUND, async () => {
  // A new daemon starts with every backend up (as keepalived does): adoption changes nothing only if all are up now.
  const allUp = () => topo.realServers.every((h) =>
    metric(scrape(), 'xdp_dr_backend_up', { vip: VIP4, backend: h.ip4 }) === 1 && metric(scrape(), 'xdp_dr_backend_up', { vip: VIP6, backend: h.ip6 }) === 1);
  await until(allUp, 10_000, () => 'not every backend came back up');
  const idsBefore = cli(topo.lb, 'list', '--json');
  const killed = new Promise((r) => daemon!.child.once('exit', r));
  daemon!.child.kill('SIGKILL');
  await killed;
  const r = connect(300);
  assert.deepEqual(r.errors, []);
  for (const n of ['rs1', 'rs2', 'rs3']) assert.ok(Math.abs((r.counts[n] ?? 0) - 100) <= 20, JSON.stringify(r.counts));
  daemon = await startDaemon();
  await until(() => !!logged(/^adopted the load balancer already running on eth0$/), 2000, () => 'adoption logged');
  assert.ok(!logged(/^eth0: [+~-] /), 'adopting changed nothing');
  const strip = (s: string) => JSON.parse(s).load_balancers[0].services.map((x: { backends: { id: number }[] }) => x.backends.map((b) => b.id));
  assert.deepEqual(strip(cli(topo.lb, 'list', '--json')), strip(idsBefore));
});

test('SIGTERM leaves the load balancer forwarding; --detach-on-exit takes it off', BOUND, async () => {
  let exited = new Promise((r) => daemon!.child.once('exit', r));
  daemon!.child.kill('SIGTERM');
  await exited;
  assert.ok(logged(/eth0 keeps forwarding from its pinned state/));
  assert.deepEqual(connect(30).errors, []);
  daemon = await startDaemon('--detach-on-exit');
  exited = new Promise((r) => daemon!.child.once('exit', r));
  daemon!.child.kill('SIGTERM');
  await exited;
  assert.ok(logged(/^detached from eth0$/));
  const link = JSON.parse(topo.exec(topo.lb.ns, 'ip', ['-j', '-d', 'link', 'show', 'dev', 'eth0']))[0];
  assert.equal(link.xdp, undefined, 'no XDP program left on eth0');
  assert.ok(!fs.existsSync(path.join(PIN_BASE, 'eth0')));
});
