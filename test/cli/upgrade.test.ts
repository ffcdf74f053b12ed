// Hot upgrade: another build takes over the running load balancer on its XDP link while traffic flows through
// it; every frame is forwarded, none passed or lost for lack of a program or table, and every map is kept.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { CliLab } from '../lib/cli';
import { nsPath, ipJson } from '../lib/netns';
import { ensureObject } from '../../loader/src/dataplane/build';

const lab = new CliLab('u');
const SVC = '10.77.0.200:9/udp';

// A stuck step fails its test instead of holding up the whole run.
const BOUND = { timeout: 90_000 };

before(() => {
  lab.setup();
  lab.ok('attach', 'lb0');
  lab.ok('service', 'add', SVC);
  lab.ok('backend', 'add', SVC, '10.77.0.11');
  lab.ok('service', 'add', '10.77.0.100:80/tcp');
  lab.ok('backend', 'add', '10.77.0.100:80/tcp', '10.77.0.12', '--mac', '02:00:00:00:00:12');
  execFileSync('ip', ['-n', lab.rs, 'route', 'replace', '10.77.0.200/32', 'via', '10.77.0.1', 'dev', 'rs0']);
  // A veth hands XDP_TX frames only to a peer running XDP: with this one, what the LB sends back arrives.
  execFileSync('ip', ['-n', lab.rs, 'link', 'set', 'dev', 'rs0', 'xdpdrv', 'obj', ensureObject('xdp_pass'), 'sec', 'xdp']);
});
after(() => lab.cleanup());

const rxPackets = () => ipJson<{ stats64: { rx: { packets: number } } }[]>(lab.rs, '-s', 'link', 'show', 'dev', 'rs0')[0].stats64.rx.packets;
const counters = () => JSON.parse(lab.ok('list', '--json')).load_balancers[0].counters as Record<string, { packets: number }>;
/** The digest without lb_info, which names the build and so changes with it. */
const maps = () => {
  const d = lab.digest() as Record<string, unknown>;
  delete d.lb_info;
  delete d.xdp;
  return d;
};

test('upgrades under traffic forward every frame and keep every map', BOUND, async () => {
  const mapsBefore = maps();
  const progBefore = lab.xdpProg();
  const c0 = counters();
  const rx0 = rxPackets();
  // The real server's namespace sends UDP to the VIP through the load balancer, which bounces each frame back.
  const script =
    "const s=require('node:dgram').createSocket('udp4');let n=0;const end=Date.now()+4000;" +
    "(function f(){if(Date.now()>end){s.close(()=>process.stdout.write(String(n)));return;}" +
    "let k=0;for(let i=0;i<40;i++)s.send(Buffer.alloc(64),9,'10.77.0.200',(e)=>{if(!e)n++;});setTimeout(f,2);})();";
  const sender = spawn('nsenter', [`--net=${nsPath(lab.rs)}`, '--', process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let sentText = '';
  sender.stdout.on('data', (d) => (sentText += d));
  const done = new Promise((r) => sender.once('exit', r));
  await new Promise((r) => setTimeout(r, 500));
  const outputs = [];
  for (const define of [['-D', 'CONN_IDLE_TIMEOUT_S=899'], [], ['-D', 'CONN_IDLE_TIMEOUT_S=899'], []])
    outputs.push(lab.ok('upgrade', ...define));
  await done;
  await new Promise((r) => setTimeout(r, 200));
  const sent = Number(sentText);
  const c1 = counters();
  const moved = (k: string) => (c1[k]?.packets ?? 0) - (c0[k]?.packets ?? 0);
  for (const o of outputs) assert.match(o, /lb0: build [0-9a-f]{12} replaced by [0-9a-f]{12}, maps kept/);
  assert.ok(sent > 2000, `sent ${sent} datagrams`);
  assert.equal(moved('TX'), sent, 'every datagram was forwarded, by the old program or the new one');
  for (const k of ['PASS_NO_SERVICE', 'PASS_NO_TABLE', 'PASS_NO_BACKEND', 'PASS_MALFORMED']) assert.equal(moved(k), 0, k);
  assert.ok(rxPackets() - rx0 >= sent, 'and came back out of the load balancer');
  assert.notEqual(lab.xdpProg(), progBefore, 'another program runs now');
  assert.deepEqual(maps(), mapsBefore, 'services, tables and backends are as they were');
  assert.match(lab.ok('upgrade'), /lb0 already runs build [0-9a-f]{12}: nothing to do/);
});

test('a build whose maps differ is refused with the migration path, and the running one is untouched', BOUND, () => {
  const before = lab.digest();
  const r = lab.run('upgrade', '-D', 'MAX_SERVICES=8');
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /the new build's maps do not match the running ones/);
  assert.match(r.stderr, /Migrate with 'xdp-dr detach lb0', 'xdp-dr attach lb0' and 'xdp-dr apply -c <config>'/);
  assert.deepEqual(lab.digest(), before, 'maps, pins and the program on lb0 are as they were');
  const bad = lab.run('upgrade', '-D', 'NOPE');
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--define 'NOPE' must be NAME=NUMBER/);
  // Its maps match, so only this refusal keeps a program that cuts the data path short off the interface.
  const bench = lab.run('upgrade', '-D', 'BENCH_STAGE=2');
  assert.equal(bench.code, 2);
  assert.match(bench.stderr, /BENCH_STAGE builds a program for benchmarks .* cannot run on an interface/);
  assert.deepEqual(lab.digest(), before, 'maps, pins and the program on lb0 are as they were');
});
