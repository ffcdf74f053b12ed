// ICMP errors about a flow, in the real kernel: a router's frag-needed / packet-too-big / time-exceeded sent to a
// VIP quotes a reply (VIP -> client) and must reach exactly the backend that the client's own packets reach, by
// the connection record when there is one, else by the Maglev table. Everything else ICMP goes to the kernel.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Dataplane } from '../../loader/src/dataplane/dataplane';
import { testRun, XDP_ACTION, XDP_ACTION_NAME } from '../../loader/src/libbpf';
import {
  buildFrame, buildIcmpError, internetChecksum, ipToBytes, macToString, FrameSpec, IcmpErrorSpec, ICMP, ICMPV6, TCP_FLAGS,
} from '../../loader/src/packet';
import { serviceKeyOf, XDP_DR_EVENT, CONN_STATE } from '../../loader/src/dataplane/layout';
import { testPinDir, removePins, installService, LB_MAC, TestService, snapshot, delta, withLb } from '../lib/dataplane';
import { flowHash, maglevSlot } from '../../loader/src/dataplane/flowhash';
import type { RawService } from '../../loader/src/lb/desired';

const SEED = 0x5eed;
// Backends n of each family: ids 1..3 (IPv4) and 11..13 (IPv6).
const be4 = (n: number) => ({ id: n, ip: `192.0.2.${10 + n}`, mac: `02:00:00:00:04:0${n}` });
const be6 = (n: number) => ({ id: 10 + n, ip: `2001:db8::${10 + n}`, mac: `02:00:00:00:06:0${n}` });
const [A, B, C] = [1, 2, 3].map(be4);
const [A6, B6, C6] = [1, 2, 3].map(be6);

const S: Record<string, TestService> = {
  web: { id: 1, vip: '10.0.0.100', port: 80, proto: 'tcp', backends: [A, B, C] },
  dns: { id: 2, vip: '10.0.0.100', port: 53, proto: 'udp', backends: [A, B, C] },
  web6: { id: 3, vip: '2001:db8::100', port: 443, proto: 'tcp', backends: [A6, B6, C6] },
  dns6: { id: 4, vip: '2001:db8::100', port: 53, proto: 'udp', backends: [A6, B6, C6] },
  all: { id: 5, vip: '10.0.0.200', port: 0, proto: 'tcp', backends: [A, B, C] },
  sticky: { id: 6, vip: '10.0.0.201', port: 80, proto: 'tcp', l3: true, backends: [A, B, C] },
  other6: { id: 7, vip: '2001:db8::200', port: 443, proto: 'tcp', backends: [A6, B6, C6] },
};

let dp: Dataplane;
let pinDir: string;
const tables = new Map<number, Uint32Array>();
const macOf = new Map<number, string>();

before(() => {
  pinDir = testPinDir();
  dp = Dataplane.load({ pinDir, hashSeed: SEED });
  for (const s of Object.values(S)) {
    tables.set(s.id, installService(dp, s));
    for (const b of s.backends) macOf.set(b.id, b.mac);
  }
});

after(() => {
  dp?.unpin();
  dp?.close();
  if (pinDir) removePins(pinDir);
});

const ROUTER4 = '203.0.113.1';
const ROUTER6 = '2001:db8:1::1';
const PROTO = { tcp: 6, udp: 17 } as const;
type Reply = FrameSpec & { sport: number; dport: number; proto: 'tcp' | 'udp' };

// Replies as the real servers send them, VIP -> client; the errors quote them.
const big = Buffer.alloc(1400, 0x61);
const reply4: Reply = { src: '10.0.0.100', dst: '198.51.100.7', sport: 80, dport: 40001, proto: 'tcp', tcpFlags: TCP_FLAGS.ACK, payload: big };
const reply6: Reply = { src: '2001:db8::100', dst: '2001:db8:ffff::7', sport: 443, dport: 40001, proto: 'tcp', tcpFlags: TCP_FLAGS.ACK, payload: big };
const udp4: Reply = { ...reply4, sport: 53, proto: 'udp', tcpFlags: undefined };
const udp6: Reply = { ...reply6, sport: 53, proto: 'udp', tcpFlags: undefined };

const fragNeeded = (quote: Reply, more: Partial<IcmpErrorSpec> = {}) =>
  buildIcmpError({ src: ROUTER4, dst: quote.src, type: ICMP.DEST_UNREACH, code: ICMP.FRAG_NEEDED_CODE, mtu: 1400, quote, ...more });
const tooBig = (quote: Reply, more: Partial<IcmpErrorSpec> = {}) =>
  buildIcmpError({ src: ROUTER6, dst: quote.src, type: ICMPV6.PACKET_TOO_BIG, mtu: 1280, quote, ...more });

/** The flow as the client sends it: the quoted reply reversed. */
const clientFlow = (q: Reply): Reply => ({ src: q.dst, dst: q.src, sport: q.dport, dport: q.sport, proto: q.proto, tcpFlags: TCP_FLAGS.ACK });

function modelMac(s: TestService, q: Reply): string {
  const c = clientFlow(q);
  const h = flowHash(SEED, { src: c.src, dst: c.dst, sport: c.sport, dport: c.dport, proto: PROTO[q.proto] }, s.l3 ?? false);
  const table = tables.get(s.id)!;
  return macOf.get(table[maglevSlot(h, table.length)])!;
}

const run = (frame: Buffer) => testRun(dp.progFd!, { data: frame });

interface Routed { name: string; frame: Buffer; quote: Reply; service: TestService }
interface Passed { name: string; frame: Buffer; pass: string }

const ROUTED: Routed[] = [
  { name: 'IPv4 frag-needed about a TCP flow', frame: fragNeeded(reply4), quote: reply4, service: S.web },
  { name: 'IPv4 frag-needed quoting only the IP header and 8 bytes', frame: fragNeeded(reply4, { quoteLength: 28 }), quote: reply4, service: S.web },
  { name: 'IPv4 time exceeded about a UDP flow', frame: fragNeeded(udp4, { type: ICMP.TIME_EXCEEDED, code: 0, mtu: 0 }), quote: udp4, service: S.dns },
  { name: 'IPv4 port unreachable', frame: fragNeeded(udp4, { code: 3, mtu: 0 }), quote: udp4, service: S.dns },
  { name: 'IPv4 parameter problem', frame: fragNeeded(reply4, { type: ICMP.PARAMETER_PROBLEM, code: 0, mtu: 20 << 24 }), quote: reply4, service: S.web },
  {
    name: 'IPv4 quoted header with options (IHL 8), cut right after the ports',
    frame: fragNeeded({ ...reply4, ipv4Options: Buffer.from([1, 1, 1, 1, 0x94, 4, 0, 0, 1, 1, 1, 1]) }, { quoteLength: 40 }), quote: reply4, service: S.web,
  },
  { name: 'IPv4 quote of a first fragment (MF) uses its ports', frame: fragNeeded({ ...udp4, moreFragments: true }), quote: udp4, service: S.dns },
  { name: 'port-0 service', frame: fragNeeded({ ...reply4, src: '10.0.0.200', sport: 8443 }), quote: { ...reply4, src: '10.0.0.200', sport: 8443 }, service: S.all },
  { name: 'L3-hash service', frame: fragNeeded({ ...reply4, src: '10.0.0.201' }), quote: { ...reply4, src: '10.0.0.201' }, service: S.sticky },
  { name: '802.1Q tagged', frame: fragNeeded(reply4, { vlans: [{ vid: 10 }] }), quote: reply4, service: S.web },
  { name: 'IPv6 packet too big about a TCP flow', frame: tooBig(reply6), quote: reply6, service: S.web6 },
  { name: 'IPv6 packet too big quoting only the IP header and 8 bytes', frame: tooBig(reply6, { quoteLength: 48 }), quote: reply6, service: S.web6 },
  { name: 'IPv6 time exceeded about a UDP flow', frame: tooBig(udp6, { type: ICMPV6.TIME_EXCEEDED, mtu: 0 }), quote: udp6, service: S.dns6 },
  { name: 'IPv6 port unreachable', frame: tooBig(udp6, { type: ICMPV6.DEST_UNREACH, code: 4, mtu: 0 }), quote: udp6, service: S.dns6 },
  { name: 'IPv6 parameter problem', frame: tooBig(reply6, { type: ICMPV6.PARAMETER_PROBLEM, mtu: 6 }), quote: reply6, service: S.web6 },
  {
    name: 'IPv6 quote with destination options and routing headers',
    frame: tooBig({ ...reply6, ipv6ExtHeaders: [{ type: 60 }, { type: 43, body: Buffer.alloc(14) }] }, { quoteLength: 40 + 8 + 16 + 8 }), quote: reply6, service: S.web6,
  },
];

function asFragment(frame: Buffer): Buffer {
  const b = Buffer.from(frame);
  b[14 + 6] |= 0x20;
  b.writeUInt16BE(0, 14 + 10);
  b.writeUInt16BE(internetChecksum(b.subarray(14, 34)), 14 + 10);
  return b;
}

const PASSED: Passed[] = [
  { name: 'IPv4 echo request to a VIP', frame: buildFrame({ src: ROUTER4, dst: reply4.src, proto: 'icmp' }), pass: 'PASS_OTHER_PROTO' },
  { name: 'IPv4 echo reply to a VIP', frame: buildFrame({ src: ROUTER4, dst: reply4.src, proto: 'icmp', icmpType: ICMP.ECHO_REPLY }), pass: 'PASS_OTHER_PROTO' },
  { name: 'ICMPv6 echo reply to a VIP', frame: buildFrame({ src: ROUTER6, dst: reply6.src, proto: 'icmp', icmpType: ICMPV6.ECHO_REPLY }), pass: 'PASS_OTHER_PROTO' },
  { name: 'IPv4 quote cut one byte short of the ports', frame: fragNeeded(reply4, { quoteLength: 27 }), pass: 'PASS_MALFORMED' },
  { name: 'IPv4 quote cut inside the IP header', frame: fragNeeded(reply4, { quoteLength: 12 }), pass: 'PASS_MALFORMED' },
  { name: 'IPv4 quote with options cut before the ports', frame: fragNeeded({ ...reply4, ipv4Options: Buffer.alloc(12, 1) }, { quoteLength: 36 }), pass: 'PASS_MALFORMED' },
  // Without the IP length check the 8 zero bytes of padding would read as ports (0 -> 0, taken by the port-0 service).
  { name: 'IPv4 quote whose ports would be Ethernet padding', frame: fragNeeded({ ...reply4, src: '10.0.0.200' }, { quoteLength: 20, padTo: 14 + 48 + 8 }), pass: 'PASS_MALFORMED' },
  { name: 'IPv4 quote whose version is not 4', frame: corruptQuote(fragNeeded(reply4), 14 + 28, 0x65), pass: 'PASS_MALFORMED' },
  { name: 'IPv6 quote cut one byte short of the ports', frame: tooBig(reply6, { quoteLength: 47 }), pass: 'PASS_MALFORMED' },
  { name: 'IPv6 quote cut after its extension header, before the ports', frame: tooBig({ ...reply6, ipv6ExtHeaders: [{ type: 60 }] }, { quoteLength: 52 }), pass: 'PASS_MALFORMED' },
  // Each quoted source is a VIP with a service that would take the flow, were it not for the check.
  { name: 'IPv4 quoted source is another VIP than the error went to', frame: fragNeeded({ ...reply4, src: '10.0.0.200' }, { dst: reply4.src }), pass: 'PASS_MALFORMED' },
  { name: 'IPv6 quoted source is not the address the error went to', frame: tooBig({ ...reply6, src: '2001:db8::200' }, { dst: reply6.src }), pass: 'PASS_MALFORMED' },
  { name: 'IPv4 error to a non-VIP', frame: fragNeeded({ ...reply4, src: '10.0.0.99' }), pass: 'PASS_NO_SERVICE' },
  { name: 'IPv6 error to a non-VIP', frame: tooBig({ ...reply6, src: '2001:db8::99' }), pass: 'PASS_NO_SERVICE' },
  { name: 'quote from a VIP port with no service', frame: fragNeeded({ ...reply4, sport: 81 }), pass: 'PASS_NO_SERVICE' },
  { name: 'quote of an ICMP packet', frame: buildIcmpError({ src: ROUTER4, dst: reply4.src, type: 3, code: 1, quote: { src: reply4.src, dst: reply4.dst, proto: 'icmp', icmpType: 0 } }), pass: 'PASS_OTHER_PROTO' },
  { name: 'quote of a later fragment (no ports)', frame: fragNeeded({ ...udp4, fragOffset: 185, omitL4: true }), pass: 'PASS_FRAGMENT' },
  { name: 'an ICMP error that is itself a fragment', frame: asFragment(fragNeeded(reply4)), pass: 'PASS_OTHER_PROTO' },
];

function corruptQuote(frame: Buffer, at: number, value: number): Buffer {
  const b = Buffer.from(frame);
  b[at] = value;
  return b;
}

test('ICMP errors about a flow reach the backend that flow reaches', async (t) => {
  for (const c of ROUTED) {
    await t.test(c.name, () => {
      const before = snapshot(dp);
      const routed = dp.eventCount(XDP_DR_EVENT.XDP_DR_EV_ICMP_ROUTED);
      const r = run(c.frame);
      assert.equal(XDP_ACTION_NAME[r.retval], 'XDP_TX');
      const mac = macToString(r.data, 0);
      assert.equal(mac, modelMac(c.service, c.quote), 'the Maglev pick for the client flow, by the model of the hash');
      assert.equal(macToString(r.data, 6), LB_MAC);
      assert.ok(r.data.subarray(12).equals(c.frame.subarray(12)), 'every byte after the MACs is identical');
      assert.deepEqual([...delta(before.stats, snapshot(dp).stats)], [[dp.statIds.get('TX'), { packets: 1, bytes: c.frame.length }]]);
      assert.equal(dp.eventCount(XDP_DR_EVENT.XDP_DR_EV_ICMP_ROUTED), routed + 1);
      assert.equal(mac, macToString(run(buildFrame(clientFlow(c.quote))).data, 0), "the client's own packet goes there too");
    });
  }
});

test('other ICMP, and errors whose quote is unusable, go to the kernel untouched', async (t) => {
  for (const c of PASSED) {
    await t.test(c.name, () => {
      const before = snapshot(dp);
      const routed = dp.eventCount(XDP_DR_EVENT.XDP_DR_EV_ICMP_ROUTED);
      const r = run(c.frame);
      assert.equal(XDP_ACTION_NAME[r.retval], 'XDP_PASS');
      assert.ok(r.data.equals(c.frame), 'byte for byte as it came');
      assert.deepEqual([...delta(before.stats, snapshot(dp).stats).keys()], [dp.statIds.get(c.pass)]);
      assert.equal(dp.eventCount(XDP_DR_EVENT.XDP_DR_EV_ICMP_ROUTED), routed);
    });
  }
});

test('a quote is used exactly when it holds the whole IP header and 8 bytes of L4', () => {
  const quotes: { quote: Reply; need: number; build: (q: Reply, m: Partial<IcmpErrorSpec>) => Buffer }[] = [
    { quote: reply4, need: 28, build: fragNeeded },
    { quote: { ...reply4, ipv4Options: Buffer.alloc(40, 1) }, need: 68, build: fragNeeded },
    { quote: reply6, need: 48, build: tooBig },
    { quote: { ...reply6, ipv6ExtHeaders: [{ type: 0 }, { type: 60, body: Buffer.alloc(20) }] }, need: 40 + 8 + 24 + 8, build: tooBig },
  ];
  for (const { quote, need, build } of quotes) {
    for (let len = 0; len <= need + 8; len++) {
      const r = run(build(quote, { quoteLength: len }));
      assert.equal(r.retval, len >= need ? XDP_ACTION.TX : XDP_ACTION.PASS, `${quote.src}, quote of ${len} bytes (needs ${need})`);
    }
  }
});

// With the control plane: TCP services track connections by default.
const mac = (n: number) => `02:00:00:00:00:${n.toString(16).padStart(2, '0')}`;
const TRACKED = '10.0.0.80';
const TRACKED6 = '2001:db8::80';
// Backend n of a VIP: 10.1.0.n or 2001:db8:1::n, with MAC ..:n or ..:6n.
const macOfBackend = (vip: string, n: number) => mac(vip === TRACKED ? n : 0x60 + n);
const be = (vip: string, n: number, weight = 1) =>
  ({ address: vip === TRACKED ? `10.1.0.${n}` : `2001:db8:1::${n}`, mac: macOfBackend(vip, n), weight });
/** Both tracked services (TCP: connection table on by default) with backends 1..n, weight w(n). */
const both = (ns: number[], w: (n: number) => number = () => 1): RawService[] =>
  [TRACKED, TRACKED6].map((vip) => ({ vip, port: 80, protocol: 'tcp', hash: 'l4', backends: ns.map((n) => be(vip, n, w(n))) }));
const FLOWS = Array.from({ length: 300 }, (_, i) => ({
  vip: i % 2 ? TRACKED6 : TRACKED, client: i % 2 ? `2001:db8:ffff::${(i + 1).toString(16)}` : `198.51.100.${i % 250}`, port: 30000 + i,
}));
type Flow = (typeof FLOWS)[number];

const toVip = (f: Flow, flags: number) => buildFrame({ src: f.client, dst: f.vip, sport: f.port, dport: 80, proto: 'tcp', tcpFlags: flags });
const replyOf = (f: Flow): Reply => ({ src: f.vip, dst: f.client, sport: 80, dport: f.port, proto: 'tcp', tcpFlags: TCP_FLAGS.ACK, payload: big });
const errorAbout = (f: Flow) => (f.vip === TRACKED ? fragNeeded(replyOf(f)) : tooBig(replyOf(f)));
const sendMac = (d: Dataplane, frame: Buffer) => {
  const r = testRun(d.progFd!, { data: frame });
  assert.equal(r.retval, XDP_ACTION.TX);
  return macToString(r.data, 0);
};

/** The Maglev pick for a flow now, from the live table and the model of the hash. */
function maglevMac(d: Dataplane, f: Flow, seed: number): string {
  const id = d.services.lookup({ key: serviceKeyOf(ipToBytes(f.vip), 80, 'tcp'), epoch: d.epochState().active })!.id;
  const table = d.readTable(id)!;
  const h = flowHash(seed, { src: f.client, dst: f.vip, sport: f.port, dport: 80, proto: 6 }, false);
  const meta = d.backendMeta.lookup(d.backendSlot(table[maglevSlot(h, table.length)]))!;
  return macOfBackend(f.vip, meta.addr[f.vip === TRACKED ? 3 : 15]);
}

const connKey = (f: Flow) => {
  const pad = (ip: string) => Buffer.concat([ipToBytes(ip), Buffer.alloc(16 - ipToBytes(ip).length)]);
  return { src: pad(f.client), dst: pad(f.vip), sport: f.port, dport: 80, proto: 6, family: f.vip === TRACKED ? 4 : 6, reserved: 0 };
};

test('an ICMP error follows the connection record, not the changed table; it writes and refreshes no record', async (t) => {
  await withLb(async (d, change) => {
    await change(both([1, 2, 3]));
    const recorded = FLOWS.map((f) => sendMac(d, toVip(f, TCP_FLAGS.SYN)));
    const seen = FLOWS.map((f) => d.conns.lookup(connKey(f))!.seen);
    await change(both([1, 2, 3, 4], (n) => (n === 1 ? 3 : 1)));
    const fresh = d.eventCount(XDP_DR_EVENT.XDP_DR_EV_CONN_NEW);
    const hits = d.eventCount(XDP_DR_EVENT.XDP_DR_EV_CONN_HIT);
    let moved = 0;
    FLOWS.forEach((f, i) => {
      assert.equal(sendMac(d, errorAbout(f)), recorded[i], `${f.client}:${f.port}: the error goes where the record says`);
      if (maglevMac(d, f, 7) !== recorded[i]) moved++;
    });
    t.diagnostic(`${moved} of ${FLOWS.length} flows have another Maglev pick now; their errors still followed their records`);
    assert.ok(moved > FLOWS.length * 0.2, `the change must move the Maglev pick of many flows: ${moved}`);
    assert.equal(d.eventCount(XDP_DR_EVENT.XDP_DR_EV_ICMP_ROUTED), FLOWS.length);
    assert.equal(d.eventCount(XDP_DR_EVENT.XDP_DR_EV_CONN_NEW), fresh, 'no record written');
    assert.equal(d.eventCount(XDP_DR_EVENT.XDP_DR_EV_CONN_HIT), hits, 'an error is not a packet of the flow');
    assert.deepEqual(FLOWS.map((f) => d.conns.lookup(connKey(f))!.seen), seen, 'no record refreshed');
    // The flows' own packets agree.
    FLOWS.forEach((f, i) => assert.equal(sendMac(d, toVip(f, TCP_FLAGS.ACK)), recorded[i]));
  });
});

test('without a valid record an ICMP error takes the Maglev pick, and opens no record', async () => {
  await withLb(async (d, change) => {
    await change(both([1, 2, 3, 4]));
    for (const f of FLOWS) {
      assert.equal(sendMac(d, errorAbout(f)), maglevMac(d, f, 7));
      assert.equal(d.conns.lookup(connKey(f)), undefined);
    }
    // Records of a removed backend no longer hold: their errors are re-picked like their packets.
    const recorded = FLOWS.map((f) => sendMac(d, toVip(f, TCP_FLAGS.SYN)));
    await change(both([1, 2, 4]));
    let checked = 0;
    FLOWS.forEach((f, i) => {
      if (recorded[i] !== macOfBackend(f.vip, 3)) return;
      checked++;
      assert.equal(sendMac(d, errorAbout(f)), maglevMac(d, f, 7));
      assert.notEqual(maglevMac(d, f, 7), recorded[i]);
    });
    assert.ok(checked > 20, `flows of the removed backend: ${checked}`);
  });
});

test('closing records still route errors, and an error leaves them closing', async (t) => {
  await withLb(async (d, change) => {
    await change(both([1, 2, 3]));
    const recorded = FLOWS.map((f) => sendMac(d, toVip(f, TCP_FLAGS.SYN)));
    for (const f of FLOWS) sendMac(d, toVip(f, TCP_FLAGS.FIN | TCP_FLAGS.ACK));
    await change(both([1, 2, 3, 4, 5]));
    const moved = FLOWS.filter((f, i) => maglevMac(d, f, 7) !== recorded[i]).length;
    t.diagnostic(`${moved} closing flows have another Maglev pick now`);
    assert.ok(moved > 0);
    FLOWS.forEach((f, i) => {
      assert.equal(sendMac(d, errorAbout(f)), recorded[i]);
      assert.equal(d.conns.lookup(connKey(f))!.state, CONN_STATE.CONN_CLOSING);
    });
  });
});
