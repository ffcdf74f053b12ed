// The xdp-dr command as an operator runs it, in network namespaces: attach to a veth in native mode, change
// services and backends live, read them back, ask the program where flows go, apply a config, detach.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, execFileSync } from 'node:child_process';
import { CliLab } from '../lib/cli';
import { nsPath } from '../lib/netns';
import { flowHash, maglevSlot } from '../../loader/src/dataplane/flowhash';
import { buildMaglevTable } from '../../loader/src/maglev';

const lab = new CliLab('c');
before(() => lab.setup());
after(() => lab.cleanup());

const VIP = '10.77.0.100:80/tcp';

interface ListJson {
  load_balancers: {
    interface: string;
    mode: string;
    hash_seed: number;
    table_size: number;
    services: {
      service: string; hash: string; packets: number; pps?: number;
      backends: { address: string; id: number; mac: string; mac_source: string; weight: number; state: string; interface: string; packets: number; pps?: number }[];
    }[];
    counters: Record<string, { packets: number }>;
  }[];
}
const listJson = (...extra: string[]): ListJson => JSON.parse(lab.ok('list', '--json', ...extra));

test('attach pins program, maps and link; attaching again is a no-op; another mode is refused', () => {
  assert.match(lab.ok('attach', 'lb0', '--hash-seed', '99'), /attached xdp-dr to lb0 \(native mode, hash seed 99\)/);
  const prog = lab.xdpProg();
  assert.ok(prog, 'lb0 runs an XDP program');
  for (const pin of ['link', 'prog', 'services', 'rings', 'backends', 'backend_meta', 'lb_info'])
    assert.ok(fs.existsSync(path.join(lab.pinDir(), pin)), `${pin} is pinned`);
  const before = lab.digest();
  assert.match(lab.ok('attach', 'lb0', '--hash-seed', '99'), /already runs this build of xdp-dr: nothing to do/);
  assert.deepEqual(lab.digest(), before);
  const generic = lab.run('attach', 'lb0', '--mode', 'generic', '--hash-seed', '99');
  assert.equal(generic.code, 2);
  assert.match(generic.stderr, /lb0 runs in native mode, not generic: 'xdp-dr detach lb0' then attach in generic mode/);
  const seed = lab.run('attach', 'lb0');
  assert.equal(seed.code, 2);
  assert.match(seed.stderr, /runs with hash seed 99, not 0/);
  assert.deepEqual(lab.digest(), before);
});

test('service and backend verbs change the running load balancer; list shows it back', () => {
  assert.match(lab.ok('service', 'add', VIP), /\+ service +10\.77\.0\.100:80\/tcp/);
  // No --mac: resolved from the neighbour table (ARP to the real server's namespace).
  const added = lab.ok('backend', 'add', VIP, '10.77.0.11');
  assert.match(added, new RegExp(`\\+ backend +10\\.77\\.0\\.100:80/tcp -> 10\\.77\\.0\\.11 .*mac ${lab.rsMac} \\(neighbour table\\)`));
  assert.match(added, /table +10\.77\.0\.100:80\/tcp: 65537 of 65537 slots move/);
  lab.ok('backend', 'add', VIP, '10.77.0.12', '--mac', '02:00:00:00:00:12', '--weight', '2');
  lab.ok('backend', 'add', VIP, '10.77.0.13', '--mac', '02:00:00:00:00:13');
  lab.ok('service', 'add', '[fd77::100]:443/tcp', '--hash', 'l3');
  lab.ok('backend', 'add', '[fd77::100]:443/tcp', 'fd77::11');

  const human = lab.ok('list');
  assert.match(human, /^TCP  10\.77\.0\.100:80 +l4 conn-table$/m);
  assert.match(human, new RegExp(`^  -> 10\\.77\\.0\\.11 +${lab.rsMac}\\* +Route +1 +active$`, 'm'));
  assert.match(human, /^  -> 10\.77\.0\.12 +02:00:00:00:00:12 +Route +2 +active$/m);
  assert.match(human, /^TCP  \[fd77::100\]:443 +l3 conn-table$/m);

  const [lb] = listJson().load_balancers;
  assert.equal(lb.interface, 'lb0');
  assert.equal(lb.hash_seed, 99);
  assert.deepEqual(lb.services.map((s) => s.service), ['10.77.0.100:80/tcp', '[fd77::100]:443/tcp']);
  assert.deepEqual(lb.services[0].backends.map((b) => [b.address, b.weight, b.mac_source]), [
    ['10.77.0.11', 1, 'neighbour'], ['10.77.0.12', 2, 'given'], ['10.77.0.13', 1, 'given'],
  ]);
  assert.deepEqual(lb.services[1].backends.map((b) => [b.address, b.mac]), [['fd77::11', lab.rsMac]]);
});

test('simulate answers with the program itself, and agrees with an independent model of hash and table', () => {
  const [lb] = listJson().load_balancers;
  const svc = lb.services[0];
  const table = buildMaglevTable(svc.backends.map((b) => ({ id: b.id, key: b.address, weight: b.weight })), lb.table_size);
  const byId = new Map(svc.backends.map((b) => [b.id, b]));
  for (let i = 0; i < 12; i++) {
    const client = { src: `198.51.100.${i + 1}`, sport: 40000 + i * 13 };
    const res = JSON.parse(lab.ok('simulate', `${client.src}:${client.sport}`, VIP, '--json'));
    const h = flowHash(99, { src: client.src, dst: '10.77.0.100', sport: client.sport, dport: 80, proto: 6 }, false);
    const expected = byId.get(table[maglevSlot(h, lb.table_size)])!;
    assert.equal(res.action, 'XDP_TX');
    assert.deepEqual(res.backends.map((b: { address: string }) => b.address), [expected.address], `flow ${client.src}:${client.sport}`);
    assert.equal(res.mac, expected.mac);
  }
  assert.match(lab.ok('simulate', '198.51.100.1:5000', '10.77.0.100:81/tcp'), /XDP_PASS: no service 10\.77\.0\.100:81\/tcp/);
  assert.match(lab.ok('simulate', '[2001:db8::7]:5000', '[fd77::100]:443/tcp'), /XDP_TX to fd77::11 \(mac /);
});

test('drain keeps a backend listed with no new flows; edit and del change only what they name', () => {
  const before = listJson().load_balancers[0].services[0].backends;
  const drained = lab.ok('backend', 'drain', VIP, '10.77.0.12');
  assert.match(drained, /~ backend +10\.77\.0\.100:80\/tcp -> 10\.77\.0\.12 +\(weight 2 -> 0 \(drained\)\)/);
  assert.match(lab.ok('list'), /^  -> 10\.77\.0\.12 +02:00:00:00:00:12 +Route +0 +drained$/m);
  for (let i = 0; i < 30; i++) {
    const res = JSON.parse(lab.ok('simulate', `203.0.113.${i + 1}:${1000 + i}`, VIP, '--json'));
    assert.notEqual(res.mac, '02:00:00:00:00:12', 'a drained backend gets no new flow');
  }
  lab.ok('backend', 'edit', VIP, '10.77.0.12', '--weight', '5', '--mac', '02:00:00:00:00:22');
  lab.ok('backend', 'del', VIP, '10.77.0.13');
  const after = listJson().load_balancers[0].services[0].backends;
  assert.deepEqual(after.map((b) => [b.address, b.id, b.weight, b.mac]), [
    ['10.77.0.11', before[0].id, 1, lab.rsMac],
    ['10.77.0.12', before[1].id, 5, '02:00:00:00:00:22'],
  ]);
  lab.ok('service', 'edit', VIP, '--hash', 'l3');
  assert.equal(listJson().load_balancers[0].services[0].hash, 'l3');
});

test('a backend behind another interface is forwarded with XDP_REDIRECT out of it', () => {
  lab.ok('backend', 'add', VIP, '10.78.0.11', '--iface', 'lb1', '--weight', '1000');
  const b = listJson().load_balancers[0].services[0].backends.find((x) => x.address === '10.78.0.11')!;
  assert.equal(b.interface, 'lb1');
  assert.equal(b.mac, lab.rsMac2, 'resolved on lb1, not lb0');
  const hits = Array.from({ length: 10 }, (_, i) => JSON.parse(lab.ok('simulate', `192.0.2.${i + 1}:999`, VIP, '--json')));
  assert.ok(hits.some((h) => h.action === 'XDP_REDIRECT' && h.backends[0].interface === 'lb1'), JSON.stringify(hits));
  lab.ok('backend', 'del', VIP, '10.78.0.11');
});

test('real traffic through lb0: list --stats and --rate count what the program forwarded', async () => {
  // The real server's namespace sends UDP to a VIP routed via the LB; the LB bounces it back to rs0's MAC.
  lab.ok('service', 'add', '10.77.0.200:9/udp');
  lab.ok('backend', 'add', '10.77.0.200:9/udp', '10.77.0.11');
  execFileSync('ip', ['-n', lab.rs, 'route', 'replace', '10.77.0.200/32', 'via', '10.77.0.1', 'dev', 'rs0']);
  const script =
    "const s=require('node:dgram').createSocket('udp4');const end=Date.now()+2500;" +
    "(function f(){if(Date.now()>end){s.close();return;}for(let i=0;i<50;i++)s.send(Buffer.alloc(64),9,'10.77.0.200');setTimeout(f,5);})();";
  const sender = spawn('nsenter', [`--net=${nsPath(lab.rs)}`, '--', process.execPath, '-e', script], { stdio: 'ignore' });
  try {
    await new Promise((r) => setTimeout(r, 300));
    const rate = listJson('--rate', '--interval', '1');
    const udp = rate.load_balancers[0].services.find((s) => s.service === '10.77.0.200:9/udp')!;
    assert.ok((udp.pps ?? 0) > 100, `pps while sending: ${udp.pps}`);
    assert.ok((udp.backends[0].pps ?? 0) > 100);
    const human = lab.ok('list', '--rate', '--interval', '0.5');
    assert.match(human, /^UDP  10\.77\.0\.200:9 +\d+ +\d+$/m);
  } finally {
    await new Promise((r) => (sender.exitCode !== null ? r(null) : sender.once('exit', r)));
  }
  const stats = listJson('--stats').load_balancers[0];
  const udp = stats.services.find((s) => s.service === '10.77.0.200:9/udp')!;
  assert.ok(udp.packets > 500, `packets forwarded: ${udp.packets}`);
  assert.equal(udp.backends[0].packets, udp.packets, 'one backend took them all');
  assert.ok(stats.counters.TX.packets >= udp.packets);
  assert.match(lab.ok('list', '--stats'), /^data path: TX \d+/m);
});

test('list --connections shows the record a SYN wrote, with its real server', () => {
  const sim = JSON.parse(lab.ok('simulate', '192.0.2.77:4242', VIP, '--json'));
  const rows = (JSON.parse(lab.ok('list', '--connections', '--json')) as {
    load_balancers: { connections: { client: string; client_port: number; vip: string; port: number; real_server: string; state: string; expires_in_s: number }[] }[];
  }).load_balancers[0].connections;
  const row = rows.find((r) => r.client === '192.0.2.77' && r.client_port === 4242);
  assert.ok(row, JSON.stringify(rows));
  assert.deepEqual([row.vip, row.port, row.state, row.real_server], ['10.77.0.100', 80, 'open', sim.backends[0].address]);
  assert.match(lab.ok('list', '-c'), /^TCP +\d\d:\d\d +open +192\.0\.2\.77:4242 +10\.77\.0\.100:80 +10\.77\.0\.1\d$/m);
  assert.equal(lab.run('list', '-c', '--stats').code, 2);
});

test('apply -c: --dry-run shows the difference and writes nothing; apply makes it so; again is a no-op', () => {
  const file = lab.writeConfig('lb.yaml', [
    'hash_seed: 99',
    'interfaces:',
    '  - name: lb0',
    'services:',
    '  - vip: 10.77.0.100',
    '    port: 80',
    '    protocol: tcp',
    '    hash: l3',
    '    backends:',
    '      - address: 10.77.0.11',
    '      - address: 10.77.0.14',
    '        mac: "02:00:00:00:00:14"',
    '        weight: 3',
  ].join('\n'));
  const before = lab.digest();
  const dry = lab.ok('apply', '-c', file, '--dry-run');
  assert.match(dry, /lb0: \(dry run: nothing is written\)/);
  assert.match(dry, /- backend +10\.77\.0\.100:80\/tcp -> 10\.77\.0\.12/);
  assert.match(dry, /\+ backend +10\.77\.0\.100:80\/tcp -> 10\.77\.0\.14 +\(weight 3, mac 02:00:00:00:00:14\)/);
  assert.match(dry, /- service +\[fd77::100\]:443\/tcp/);
  assert.match(dry, /- service +10\.77\.0\.200:9\/udp/);
  assert.deepEqual(lab.digest(), before, 'a dry run writes nothing');
  lab.ok('apply', '-c', file);
  const [lb] = listJson().load_balancers;
  assert.deepEqual(lb.services.map((s) => [s.service, s.hash, s.backends.map((b) => `${b.address}*${b.weight}`).join(',')]), [
    ['10.77.0.100:80/tcp', 'l3', '10.77.0.11*1,10.77.0.14*3'],
  ]);
  assert.match(lab.ok('apply', '-c', file), /lb0: nothing to change/);
});

test('every command has --help with examples', () => {
  const commands = [[], ['attach'], ['detach'], ['service', 'add'], ['service', 'edit'], ['service', 'del'], ['backend', 'add'],
    ['backend', 'edit'], ['backend', 'drain'], ['backend', 'del'], ['list'], ['apply'], ['simulate']];
  for (const c of commands) {
    const r = lab.run(...c, '--help');
    assert.equal(r.code, 0, `${c.join(' ')} --help`);
    assert.match(r.stdout, /^Usage: xdp-dr/m);
    if (c.length) assert.match(r.stdout, /Examples:\n  \$ xdp-dr /, `${c.join(' ')} --help has examples`);
  }
});

test('an interface with a dot in its name (eth0.100) attaches, lists and detaches: bpffs refuses dots in names', () => {
  execFileSync('ip', ['-n', lab.lb, 'link', 'add', 'lb2.5', 'type', 'veth', 'peer', 'name', 'rs2', 'netns', lab.rs]);
  try {
    execFileSync('ip', ['-n', lab.lb, 'link', 'set', 'lb2.5', 'up']);
    execFileSync('ip', ['-n', lab.rs, 'link', 'set', 'rs2', 'up']);
    assert.match(lab.ok('attach', 'lb2.5'), /attached xdp-dr to lb2\.5 \(native mode/);
    assert.ok(lab.xdpProg('lb2.5'), 'lb2.5 runs the program');
    assert.ok(fs.existsSync(path.join(lab.pinBase, 'lb2:5', 'lb_info')), 'pinned under lb2:5');
    assert.deepEqual(listJson().load_balancers.map((l) => l.interface).sort(), ['lb0', 'lb2.5']);
    lab.ok('service', 'add', '10.79.0.100:80/tcp', '--lb', 'lb2.5');
    assert.equal(listJson('--lb', 'lb2.5').load_balancers[0].services.length, 1);
    lab.ok('detach', 'lb2.5');
    assert.equal(lab.xdpProg('lb2.5'), undefined);
    assert.ok(!fs.existsSync(path.join(lab.pinBase, 'lb2:5')));
  } finally {
    lab.run('detach', 'lb2.5');
    execFileSync('ip', ['-n', lab.lb, 'link', 'del', 'lb2.5']);
  }
});

test('detach removes the program and every pin; detaching again is a usage error', () => {
  assert.match(lab.ok('detach', 'lb0'), /detached xdp-dr from lb0/);
  assert.equal(lab.xdpProg(), undefined);
  assert.ok(!fs.existsSync(lab.pinDir()));
  const again = lab.run('detach', 'lb0');
  assert.equal(again.code, 2);
  assert.match(again.stderr, /not attached to lb0/);
});
