// The XDP program in the real kernel through BPF_PROG_TEST_RUN: a fixture table of frames with the action and
// output each must get, then properties over many flows, truncations and counters.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { Dataplane } from '../../loader/src/dataplane/dataplane';
import { testRun, XDP_ACTION, XDP_ACTION_NAME, BpfError } from '../../loader/src/libbpf';
import { buildFrame, buildArpRequest, FrameSpec, macToString, TCP_FLAGS } from '../../loader/src/packet';
import { serviceKeyOf } from '../../loader/src/dataplane/layout';
import { ipToBytes } from '../../loader/src/packet';
import { testPinDir, removePins, installService, LB_MAC, TestService, snapshot, delta } from '../lib/dataplane';
import { flowHash, maglevSlot } from '../../loader/src/dataplane/flowhash';

const SEED = 0x5eed;
const A = { id: 1, ip: '192.0.2.11', mac: '02:00:00:00:00:a1' };
const B = { id: 2, ip: '192.0.2.12', mac: '02:00:00:00:00:b2' };
const C = { id: 3, ip: '192.0.2.13', mac: '02:00:00:00:00:c3' };
const A6 = { id: 11, ip: '2001:db8::11', mac: '02:00:00:00:06:a1' };
const B6 = { id: 12, ip: '2001:db8::12', mac: '02:00:00:00:06:b2' };

const S: Record<string, TestService> = {
  web: { id: 1, vip: '10.0.0.100', port: 80, proto: 'tcp', backends: [A, B, C] },
  dns: { id: 2, vip: '10.0.0.100', port: 53, proto: 'udp', backends: [A, B] },
  web6: { id: 3, vip: '2001:db8::100', port: 443, proto: 'tcp', backends: [A6, B6] },
  dns6: { id: 4, vip: '2001:db8::100', port: 53, proto: 'udp', backends: [A6, B6] },
  allTcp: { id: 5, vip: '10.0.0.200', port: 0, proto: 'tcp', backends: [A, B, C] },
  allUdp: { id: 6, vip: '10.0.0.200', port: 0, proto: 'udp', backends: [A, B, C] },
  sticky: { id: 7, vip: '10.0.0.201', port: 80, proto: 'tcp', l3: true, backends: [A, B, C] },
  drained: { id: 8, vip: '10.0.0.203', port: 80, proto: 'tcp', backends: [{ ...A, weight: 0 }] },
  otherNic: { id: 9, vip: '10.0.0.204', port: 80, proto: 'tcp', backends: [{ id: 4, ip: '192.0.2.14', mac: '02:00:00:00:00:d4', ifindex: 0 }] },
  lostNic: { id: 10, vip: '10.0.0.205', port: 80, proto: 'tcp', backends: [{ id: 5, ip: '192.0.2.15', mac: '02:00:00:00:00:e5', ifindex: 0x7ffffff0 }] },
};
const NO_TABLE = { id: 11, vip: '10.0.0.202', port: 80, proto: 'tcp' as const };

let dp: Dataplane;
let pinDir: string;
const tables = new Map<number, Uint32Array>();
const macOf = new Map<number, string>();
const dummy = `xdrt${process.pid % 100000}`;
let dummyIfindex = 0;

before(() => {
  pinDir = testPinDir();
  dp = Dataplane.load({ pinDir, hashSeed: SEED });
  execFileSync('ip', ['link', 'add', dummy, 'type', 'veth', 'peer', 'name', `${dummy}p`]);
  dummyIfindex = Number(fs.readFileSync(`/sys/class/net/${dummy}/ifindex`, 'utf8'));
  S.otherNic.backends[0].ifindex = dummyIfindex;
  dp.txPorts.update(dummyIfindex, dummyIfindex);
  for (const s of Object.values(S)) {
    tables.set(s.id, installService(dp, s));
    for (const b of s.backends) macOf.set(b.id, b.mac);
  }
  dp.putService(serviceKeyOf(ipToBytes(NO_TABLE.vip), NO_TABLE.port, NO_TABLE.proto), { id: NO_TABLE.id, flags: 0 });
});

after(() => {
  dp?.unpin();
  dp?.close();
  if (pinDir) removePins(pinDir);
  try {
    execFileSync('ip', ['link', 'del', dummy], { stdio: 'ignore' });
  } catch {
    /* not created */
  }
});

const PROTO = { tcp: 6, udp: 17 } as const;

/** Which backend the program must pick, from the table and an independent model of its hash. */
function expectedMac(s: TestService, f: FrameSpec, l3: boolean): string {
  const proto = PROTO[s.proto];
  const h = flowHash(SEED, { src: f.src, dst: f.dst, sport: f.sport ?? 12345, dport: f.dport ?? 80, proto }, l3);
  const table = tables.get(s.id)!;
  const id = table[maglevSlot(h, table.length)];
  return macOf.get(id)!;
}

function run(frame: Buffer) {
  return testRun(dp.progFd!, { data: frame });
}

function assertUnchanged(frame: Buffer, out: Buffer, name: string) {
  assert.ok(out.equals(frame), `${name}: a passed frame must leave the program byte for byte as it came`);
}

function assertForwarded(frame: Buffer, out: Buffer, mac: string, name: string) {
  assert.equal(out.length, frame.length, `${name}: length`);
  assert.equal(macToString(out, 0), mac, `${name}: destination MAC is the chosen backend's`);
  assert.equal(macToString(out, 6), LB_MAC, `${name}: source MAC is the LB's`);
  assert.ok(out.subarray(12).equals(frame.subarray(12)), `${name}: every byte after the MACs is identical`);
}

type Expect =
  | { pass: string }
  | { action: 'TX' | 'REDIRECT'; service: TestService; l3?: boolean };

interface Case { name: string; frame: FrameSpec | Buffer; expect: Expect }

const c4 = { src: '198.51.100.7', dst: '10.0.0.100', sport: 40001, dport: 80 };
const c6 = { src: '2001:db8:ffff::7', dst: '2001:db8::100', sport: 40001, dport: 443 };
const payload = Buffer.from('GET / HTTP/1.1\r\n\r\n');

const CASES: Case[] = [
  { name: 'IPv4 TCP SYN to VIP', frame: { ...c4, proto: 'tcp' }, expect: { action: 'TX', service: S.web } },
  { name: 'IPv4 TCP data to VIP', frame: { ...c4, proto: 'tcp', tcpFlags: TCP_FLAGS.ACK | TCP_FLAGS.PSH, payload }, expect: { action: 'TX', service: S.web } },
  { name: 'IPv4 UDP to VIP', frame: { ...c4, dport: 53, proto: 'udp', payload }, expect: { action: 'TX', service: S.dns } },
  { name: 'IPv6 TCP to VIP', frame: { ...c6, proto: 'tcp' }, expect: { action: 'TX', service: S.web6 } },
  { name: 'IPv6 UDP to VIP', frame: { ...c6, dport: 53, proto: 'udp', payload }, expect: { action: 'TX', service: S.dns6 } },
  { name: '802.1Q tagged IPv4 TCP', frame: { ...c4, proto: 'tcp', vlans: [{ vid: 10 }] }, expect: { action: 'TX', service: S.web } },
  { name: 'QinQ (802.1ad + 802.1Q) IPv4 TCP', frame: { ...c4, proto: 'tcp', vlans: [{ tpid: 0x88a8, vid: 100 }, { vid: 10 }] }, expect: { action: 'TX', service: S.web } },
  { name: '802.1Q tagged IPv6 UDP', frame: { ...c6, dport: 53, proto: 'udp', vlans: [{ vid: 7 }] }, expect: { action: 'TX', service: S.dns6 } },
  { name: 'IPv4 with options (IHL 8)', frame: { ...c4, proto: 'tcp', ipv4Options: Buffer.from([1, 1, 1, 1, 0x94, 4, 0, 0, 1, 1, 1, 1]) }, expect: { action: 'TX', service: S.web } },
  { name: 'IPv4 with 40 bytes of options (IHL 15)', frame: { ...c4, proto: 'udp', dport: 53, ipv4Options: Buffer.alloc(40, 1) }, expect: { action: 'TX', service: S.dns } },
  { name: 'IPv4 first fragment (MF) hashes on addresses', frame: { ...c4, dport: 53, proto: 'udp', moreFragments: true, payload }, expect: { action: 'TX', service: S.dns, l3: true } },
  { name: 'IPv4 non-first fragment to a port-0 service', frame: { src: c4.src, dst: '10.0.0.200', proto: 'udp', fragOffset: 185, omitL4: true, payload }, expect: { action: 'TX', service: S.allUdp, l3: true } },
  { name: 'IPv4 non-first fragment, no port-0 service', frame: { ...c4, dport: 53, proto: 'udp', fragOffset: 185, omitL4: true, payload }, expect: { pass: 'PASS_FRAGMENT' } },
  { name: 'IPv6 first fragment hashes on addresses', frame: { ...c6, dport: 53, proto: 'udp', ipv6Fragment: true, moreFragments: true, payload }, expect: { action: 'TX', service: S.dns6, l3: true } },
  { name: 'IPv6 with hop-by-hop and destination options', frame: { ...c6, proto: 'tcp', ipv6ExtHeaders: [{ type: 0 }, { type: 60 }] }, expect: { action: 'TX', service: S.web6 } },
  { name: 'port-0 service takes any port', frame: { ...c4, dst: '10.0.0.200', dport: 8443, proto: 'tcp' }, expect: { action: 'TX', service: S.allTcp } },
  { name: 'port-0 service takes port 1', frame: { ...c4, dst: '10.0.0.200', dport: 1, proto: 'udp' }, expect: { action: 'TX', service: S.allUdp } },
  { name: 'L3-hash service', frame: { ...c4, dst: '10.0.0.201', proto: 'tcp' }, expect: { action: 'TX', service: S.sticky, l3: true } },
  { name: 'backend behind another interface', frame: { ...c4, dst: '10.0.0.204', proto: 'tcp' }, expect: { action: 'REDIRECT', service: S.otherNic } },
  { name: 'backend behind an interface missing from tx_ports', frame: { ...c4, dst: '10.0.0.205', proto: 'tcp' }, expect: { pass: 'PASS_NO_TX_PORT' } },
  { name: 'non-VIP address', frame: { ...c4, dst: '10.0.0.99', proto: 'tcp' }, expect: { pass: 'PASS_NO_SERVICE' } },
  { name: 'non-VIP sharing the low 16 bits of a VIP (filter hit, lookup miss)', frame: { ...c4, dst: '10.9.0.100', proto: 'tcp' }, expect: { pass: 'PASS_NO_SERVICE' } },
  { name: 'VIP, wrong port', frame: { ...c4, dport: 81, proto: 'tcp' }, expect: { pass: 'PASS_NO_SERVICE' } },
  { name: 'VIP, wrong protocol (UDP to a TCP port)', frame: { ...c4, proto: 'udp' }, expect: { pass: 'PASS_NO_SERVICE' } },
  { name: 'IPv6 VIP, wrong port', frame: { ...c6, dport: 80, proto: 'tcp' }, expect: { pass: 'PASS_NO_SERVICE' } },
  { name: 'IPv4 address of an IPv6 VIP family mix', frame: { ...c6, dst: '2001:db8::101', proto: 'tcp' }, expect: { pass: 'PASS_NO_SERVICE' } },
  { name: 'ICMP echo to VIP', frame: { src: c4.src, dst: c4.dst, proto: 'icmp' }, expect: { pass: 'PASS_OTHER_PROTO' } },
  { name: 'ICMPv6 echo to VIP', frame: { src: c6.src, dst: c6.dst, proto: 'icmp' }, expect: { pass: 'PASS_OTHER_PROTO' } },
  { name: 'ARP who-has VIP', frame: buildArpRequest({ srcMac: '02:00:00:00:00:99', srcIp: c4.src, targetIp: c4.dst }), expect: { pass: 'PASS_NOT_IP' } },
  { name: 'three VLAN tags (deeper than we walk)', frame: { ...c4, proto: 'tcp', vlans: [{ tpid: 0x88a8, vid: 1 }, { vid: 2 }, { vid: 3 }] }, expect: { pass: 'PASS_NOT_IP' } },
  { name: 'service without a table', frame: { ...c4, dst: NO_TABLE.vip, proto: 'tcp' }, expect: { pass: 'PASS_NO_TABLE' } },
  { name: 'service whose only backend is drained (empty table)', frame: { ...c4, dst: '10.0.0.203', proto: 'tcp' }, expect: { pass: 'PASS_NO_BACKEND' } },
  { name: 'IPv4 header length below 5', frame: corrupt({ ...c4, proto: 'tcp' }, (b) => (b[14] = 0x44)), expect: { pass: 'PASS_MALFORMED' } },
  { name: 'IPv4 total length beyond the frame', frame: corrupt({ ...c4, proto: 'tcp' }, (b) => b.writeUInt16BE(1500, 16)), expect: { pass: 'PASS_MALFORMED' } },
  { name: 'IPv4 total length below the header', frame: corrupt({ ...c4, proto: 'tcp' }, (b) => b.writeUInt16BE(10, 16)), expect: { pass: 'PASS_MALFORMED' } },
  { name: 'IPv4 ethertype with IPv6 version nibble', frame: corrupt({ ...c4, proto: 'tcp' }, (b) => (b[14] = 0x65)), expect: { pass: 'PASS_MALFORMED' } },
  { name: 'IPv6 payload length beyond the frame', frame: corrupt({ ...c6, proto: 'tcp' }, (b) => b.writeUInt16BE(1400, 18)), expect: { pass: 'PASS_MALFORMED' } },
  { name: 'TCP data offset below 5', frame: corrupt({ ...c4, proto: 'tcp' }, (b) => (b[14 + 20 + 12] = 0x40)), expect: { pass: 'PASS_MALFORMED' } },
  { name: 'padded minimum frame to VIP', frame: { ...c4, proto: 'udp', dport: 53, padTo: 60 }, expect: { action: 'TX', service: S.dns } },
];

function corrupt(spec: FrameSpec, f: (b: Buffer) => void): Buffer {
  const b = buildFrame(spec);
  f(b);
  return b;
}

test('fixture table: action and output of each frame', async (t) => {
  for (const c of CASES) {
    await t.test(c.name, () => {
      const frame = Buffer.isBuffer(c.frame) ? c.frame : buildFrame(c.frame);
      const before = snapshot(dp);
      const r = run(frame);
      const moved = delta(before.stats, snapshot(dp).stats);
      if ('pass' in c.expect) {
        assert.equal(XDP_ACTION_NAME[r.retval], 'XDP_PASS', `${c.name}: action`);
        assertUnchanged(frame, r.data, c.name);
        assert.deepEqual([...moved.keys()], [dp.statIds.get(c.expect.pass)], `${c.name}: counted as ${c.expect.pass}`);
      } else {
        assert.equal(XDP_ACTION_NAME[r.retval], `XDP_${c.expect.action}`, `${c.name}: action`);
        const spec = c.frame as FrameSpec;
        assertForwarded(frame, r.data, expectedMac(c.expect.service, spec, c.expect.l3 ?? false), c.name);
        assert.deepEqual([...moved.keys()], [dp.statIds.get(c.expect.action)], `${c.name}: counted as ${c.expect.action}`);
      }
    });
  }
});

test('a deleted service stops taking packets; its VIP filter bit goes only with the last service of that VIP', () => {
  const tmp = { id: 12, vip: '10.0.0.210', port: 80, proto: 'tcp' as const, backends: [A] };
  const tmpUdp = { ...tmp, id: 13, proto: 'udp' as const };
  installService(dp, tmp);
  installService(dp, tmpUdp);
  const frame = buildFrame({ ...c4, dst: tmp.vip, proto: 'tcp' });
  assert.equal(run(frame).retval, XDP_ACTION.TX);
  const bitSet = () => (dp.vipFilter.lookup(210 >> 6)! >> BigInt(210 & 63)) & 1n;
  assert.equal(dp.deleteService(serviceKeyOf(ipToBytes(tmp.vip), 80, 'tcp')), true);
  assert.equal(bitSet(), 1n, 'the UDP service of the same VIP still needs the bit');
  assert.equal(run(frame).retval, XDP_ACTION.PASS);
  assert.equal(dp.deleteService(serviceKeyOf(ipToBytes(tmp.vip), 80, 'udp')), true);
  assert.equal(bitSet(), 0n);
  assert.equal(dp.deleteService(serviceKeyOf(ipToBytes(tmp.vip), 80, 'udp')), false);
});

test('same flow, same backend, every time', () => {
  const frame = buildFrame({ ...c4, proto: 'tcp' });
  const first = macToString(run(frame).data, 0);
  for (let i = 0; i < 200; i++) assert.equal(macToString(run(frame).data, 0), first);
});

test('10,000 random flows spread over 3 backends within 5% of equal, each as the model predicts', (t) => {
  let x = 12345;
  const rnd = () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 8);
  const counts = new Map<string, number>();
  const N = 10000;
  for (let i = 0; i < N; i++) {
    const spec: FrameSpec = {
      src: `198.${51 + (rnd() % 4)}.${rnd() % 256}.${rnd() % 256}`,
      dst: c4.dst, sport: 1024 + (rnd() % 64000), dport: 80, proto: 'tcp',
    };
    const r = run(buildFrame(spec));
    assert.equal(r.retval, XDP_ACTION.TX);
    const mac = macToString(r.data, 0);
    assert.equal(mac, expectedMac(S.web, spec, false), `flow ${spec.src}:${spec.sport}`);
    counts.set(mac, (counts.get(mac) ?? 0) + 1);
  }
  assert.equal(counts.size, 3);
  for (const [mac, n] of counts) {
    t.diagnostic(`${mac}: ${n} flows (${((n / N) * 100).toFixed(2)}%)`);
    assert.ok(Math.abs(n - N / 3) <= 0.05 * (N / 3), `${mac} got ${n} of ${N}, outside 5% of ${Math.round(N / 3)}`);
  }
});

test('L3-hash service: one client goes to one backend whatever its ports', () => {
  const macs = new Set<string>();
  for (let p = 1000; p < 1100; p++) macs.add(macToString(run(buildFrame({ ...c4, dst: '10.0.0.201', sport: p, proto: 'tcp' })).data, 0));
  assert.equal(macs.size, 1);
});

test('every truncation of a valid VIP frame is passed unaltered', () => {
  const frames = [
    buildFrame({ ...c4, proto: 'tcp', tcpFlags: TCP_FLAGS.ACK, payload }),
    buildFrame({ ...c6, dport: 53, proto: 'udp', payload, vlans: [{ vid: 5 }] }),
    buildFrame({ ...c4, proto: 'tcp', ipv4Options: Buffer.alloc(8, 1), vlans: [{ tpid: 0x88a8, vid: 1 }, { vid: 2 }] }),
  ];
  let refused = 0;
  let passed = 0;
  for (const full of frames) {
    assert.equal(run(full).retval, XDP_ACTION.TX, 'the whole frame is forwarded');
    for (let len = 0; len < full.length; len++) {
      const cut = Buffer.from(full.subarray(0, len));
      let r;
      try {
        r = run(cut);
      } catch (e) {
        // The kernel itself refuses test frames shorter than an Ethernet header.
        assert.ok(e instanceof BpfError && e.code === 'EINVAL' && len < 14, `length ${len}: ${(e as Error).message}`);
        refused++;
        continue;
      }
      assert.equal(r.retval, XDP_ACTION.PASS, `length ${len} of ${full.length}: action`);
      assertUnchanged(cut, r.data, `length ${len}`);
      passed++;
    }
  }
  assert.ok(passed > 100 && refused <= 3 * 14);
});

test('counters move by exactly what was sent', () => {
  const before = snapshot(dp);
  const sends: { frame: Buffer; stat: string; service?: number }[] = [];
  for (let i = 0; i < 30; i++) sends.push({ frame: buildFrame({ ...c4, sport: 2000 + i, proto: 'tcp', payload: Buffer.alloc(i) }), stat: 'TX', service: S.web.id });
  for (let i = 0; i < 7; i++) sends.push({ frame: buildFrame({ ...c6, sport: 3000 + i, dport: 53, proto: 'udp' }), stat: 'TX', service: S.dns6.id });
  for (let i = 0; i < 5; i++) sends.push({ frame: buildFrame({ ...c4, dport: 9, proto: 'tcp' }), stat: 'PASS_NO_SERVICE' });
  for (let i = 0; i < 3; i++) sends.push({ frame: buildArpRequest({ srcMac: '02:00:00:00:00:99', srcIp: c4.src, targetIp: c4.dst }), stat: 'PASS_NOT_IP' });

  const wantStats = new Map<number, { packets: number; bytes: number }>();
  const wantServices = new Map<number, { packets: number; bytes: number }>();
  const wantBackends = new Map<number, { packets: number; bytes: number }>();
  const add = (m: Map<number, { packets: number; bytes: number }>, k: number, bytes: number) => {
    const v = m.get(k) ?? { packets: 0, bytes: 0 };
    v.packets++;
    v.bytes += bytes;
    m.set(k, v);
  };
  for (const s of sends) {
    const r = run(s.frame);
    add(wantStats, dp.statIds.get(s.stat)!, s.frame.length);
    if (s.service !== undefined) {
      add(wantServices, s.service, s.frame.length);
      const mac = macToString(r.data, 0);
      const id = [...macOf].find(([, m]) => m === mac)![0];
      add(wantBackends, id, s.frame.length);
    }
  }
  const after = snapshot(dp);
  assert.deepEqual(delta(before.stats, after.stats), wantStats, 'global counters');
  assert.deepEqual(delta(before.services, after.services), wantServices, 'per-service counters');
  assert.deepEqual(delta(before.backends, after.backends), wantBackends, 'per-backend counters');
});
