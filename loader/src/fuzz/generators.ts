// Frame generators for fuzzing the data path, the service set they aim at, and a model of what the program must do
// with any frame. Every frame is a pure function of (seed, index), so a failure is reproduced from those two numbers.
import {
  buildFrame, FrameSpec, VlanTag, ipToBytes, macToString,
  ETH_P_IP, ETH_P_IPV6, ETH_P_ARP, ETH_P_8021Q, ETH_P_8021AD,
  IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_AH,
  IPPROTO_ICMPV6, IPPROTO_DSTOPTS,
} from '../packet';

/** mulberry32: small, fast, and the same sequence on every machine. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  u32(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  /** 0 <= n < max */
  int(max: number): number {
    return Math.floor((this.u32() / 0x100000000) * max);
  }
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.u32() / 0x100000000 < p;
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)];
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    let i = 0;
    for (; i + 4 <= n; i += 4) {
      const x = this.u32();
      b[i] = x;
      b[i + 1] = x >>> 8;
      b[i + 2] = x >>> 16;
      b[i + 3] = x >>> 24;
    }
    for (let x = this.u32(); i < n; i++, x >>>= 8) b[i] = x;
    return b;
  }
}

function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** Each frame gets its own stream, so frame i can be regenerated without replaying frames 0..i-1. */
export function frameRng(seed: number, index: number): Rng {
  return new Rng(mix32(mix32(seed >>> 0) ^ mix32((index + 0x9e3779b9) >>> 0)));
}

// ---- the service set ----

export const LB_MAC = '02:00:00:00:1b:01';

/** Where a backend's frames leave: XDP_TX (no ifindex, or the ingress one), a tx_ports entry, or a port not in tx_ports. */
export type Egress = 'tx' | 'ingress' | 'tx-port' | 'missing';

export interface FuzzBackend { id: number; mac: string; weight: number; egress: Egress }
export interface FuzzService {
  name: string;
  vip: string;
  port: number;
  proto: 'tcp' | 'udp';
  l3?: boolean;
  conn?: boolean;
  /** false: the service key exists but no Maglev table was installed. */
  table?: boolean;
  backends: FuzzBackend[];
}

const be = (id: number, weight = 1, egress: Egress = 'tx'): FuzzBackend => ({
  id, weight, egress, mac: `02:00:00:00:${(id >> 8).toString(16).padStart(2, '0')}:${(id & 0xff).toString(16).padStart(2, '0')}`,
});

export const FUZZ_SERVICES: readonly FuzzService[] = [
  // A weight-0 backend in a live service: its MAC must never appear.
  { name: 'web4', vip: '10.0.0.100', port: 80, proto: 'tcp', conn: true, backends: [be(1), be(2, 2), be(3, 0)] },
  { name: 'tls4', vip: '10.0.0.100', port: 443, proto: 'tcp', backends: [be(1), be(2)] },
  { name: 'dns4', vip: '10.0.0.100', port: 53, proto: 'udp', backends: [be(1), be(2)] },
  { name: 'web6', vip: '2001:db8::100', port: 443, proto: 'tcp', conn: true, backends: [be(11), be(12)] },
  { name: 'dns6', vip: '2001:db8::100', port: 53, proto: 'udp', backends: [be(11), be(12)] },
  { name: 'any4tcp', vip: '10.0.0.200', port: 0, proto: 'tcp', backends: [be(21), be(22), be(23)] },
  { name: 'any4udp', vip: '10.0.0.200', port: 0, proto: 'udp', backends: [be(21), be(22)] },
  { name: 'any6udp', vip: '2001:db8::200', port: 0, proto: 'udp', backends: [be(31), be(32)] },
  { name: 'sticky4', vip: '10.0.0.201', port: 80, proto: 'tcp', l3: true, backends: [be(41), be(42)] },
  { name: 'sticky6', vip: '2001:db8::201', port: 8080, proto: 'tcp', l3: true, conn: true, backends: [be(43), be(44, 1, 'ingress')] },
  { name: 'notable4', vip: '10.0.0.202', port: 80, proto: 'tcp', table: false, backends: [] },
  { name: 'drained4', vip: '10.0.0.203', port: 80, proto: 'tcp', backends: [be(51, 0)] },
  { name: 'redirect4', vip: '10.0.0.204', port: 80, proto: 'tcp', backends: [be(61, 1, 'tx-port'), be(62, 1, 'tx-port')] },
  { name: 'redirect6', vip: '2001:db8::204', port: 53, proto: 'udp', backends: [be(63, 1, 'tx-port')] },
  { name: 'lostport4', vip: '10.0.0.205', port: 80, proto: 'tcp', backends: [be(71, 1, 'missing')] },
];

export const BACKEND_MACS: ReadonlySet<string> = new Set(FUZZ_SERVICES.flatMap((s) => s.backends.map((b) => b.mac)));

const VIPS4 = [...new Set(FUZZ_SERVICES.filter((s) => !s.vip.includes(':')).map((s) => s.vip))];
const VIPS6 = [...new Set(FUZZ_SERVICES.filter((s) => s.vip.includes(':')).map((s) => s.vip))];

// ---- the model: what the program must do with a frame, from the documented rules alone ----

/**
 * BPF_PROG_TEST_RUN puts at most a page minus headroom (256) and skb_shared_info (320) in the linear part; the rest
 * of a bigger frame goes to fragments, which a program without xdp.frags cannot see: its data_end stops here.
 */
export const TEST_RUN_LINEAR_MAX = 4096 - 256 - 320;
/** And at most MAX_SKB_FRAGS (17) pages of fragments after it; a longer frame fails with ENOMEM. */
export const TEST_RUN_MAX = TEST_RUN_LINEAR_MAX + 17 * 4096;
/** Shorter frames are refused with EINVAL before the program runs. */
export const TEST_RUN_MIN = 14;

export type StatName =
  | 'TX' | 'REDIRECT' | 'PASS_NOT_IP' | 'PASS_MALFORMED' | 'PASS_OTHER_PROTO' | 'PASS_NO_SERVICE'
  | 'PASS_FRAGMENT' | 'PASS_NO_TABLE' | 'PASS_NO_BACKEND' | 'PASS_NO_TX_PORT';

export interface Outcome {
  stat: StatName;
  /** Set when the frame must be forwarded: to one of these MACs, by this service. */
  forward?: { service: string; macs: ReadonlySet<string> };
}

const VLAN_MAX_DEPTH = 2;
const IPV6_EXT_MAX_CHAIN = 4;

const serviceByKey = new Map<string, FuzzService>();
for (const s of FUZZ_SERVICES) serviceByKey.set(`${s.vip.includes(':') ? 6 : 4}|${ipToBytes(s.vip).toString('hex')}|${s.port}|${s.proto}`, s);
// The program's vip_filter: the low 16 bits of any VIP, whatever its family.
const filterBits = new Set(FUZZ_SERVICES.map((s) => ipToBytes(s.vip).readUInt16BE(ipToBytes(s.vip).length - 2)));

function serviceOutcome(s: FuzzService): Outcome {
  if (s.table === false) return { stat: 'PASS_NO_TABLE' };
  const live = s.backends.filter((b) => b.weight > 0);
  if (!live.length) return { stat: 'PASS_NO_BACKEND' };
  // Backends of one service share their egress here, so the action follows from the service.
  const egress = live[0].egress;
  if (egress === 'missing') return { stat: 'PASS_NO_TX_PORT' };
  return { stat: egress === 'tx-port' ? 'REDIRECT' : 'TX', forward: { service: s.name, macs: new Set(live.map((b) => b.mac)) } };
}

/** What the program must do with `frame`, following the rules in README "How the data path decides" step by step. */
export function expectedOutcome(frame: Uint8Array): Outcome {
  const end = Math.min(frame.length, TEST_RUN_LINEAR_MAX);
  const u16 = (o: number) => (frame[o] << 8) | frame[o + 1];
  if (end < 14) return { stat: 'PASS_MALFORMED' };
  let off = 14;
  let type = u16(12);
  for (let i = 0; i < VLAN_MAX_DEPTH && (type === ETH_P_8021Q || type === ETH_P_8021AD); i++) {
    if (off + 4 > end) return { stat: 'PASS_MALFORMED' };
    type = u16(off + 2);
    off += 4;
  }
  let family: 4 | 6;
  let proto: number;
  let hasPorts: boolean;
  let isFragment = false;
  let dst: Uint8Array;
  let l4: number;
  const l3 = off;
  if (type === ETH_P_IP) {
    if (off + 20 > end || frame[off] >> 4 !== 4 || (frame[off] & 0xf) < 5) return { stat: 'PASS_MALFORMED' };
    const ihl = (frame[off] & 0xf) * 4;
    const tot = u16(off + 2);
    if (tot < ihl || off + tot > end) return { stat: 'PASS_MALFORMED' };
    family = 4;
    proto = frame[off + 9];
    hasPorts = (u16(off + 6) & 0x1fff) === 0;
    isFragment = (u16(off + 6) & 0x3fff) !== 0;
    dst = frame.subarray(off + 16, off + 20);
    l4 = off + ihl;
  } else if (type === ETH_P_IPV6) {
    if (off + 40 > end || frame[off] >> 4 !== 6 || off + 40 + u16(off + 4) > end) return { stat: 'PASS_MALFORMED' };
    family = 6;
    dst = frame.subarray(off + 24, off + 40);
    hasPorts = true;
    let nh = frame[off + 6];
    let p = off + 40;
    for (let i = 0; i < IPV6_EXT_MAX_CHAIN; i++) {
      if (nh === IPPROTO_HOPOPTS || nh === IPPROTO_ROUTING || nh === IPPROTO_DSTOPTS) {
        if (p + 2 > end) return { stat: 'PASS_MALFORMED' };
        nh = frame[p];
        p += (frame[p + 1] + 1) * 8;
      } else if (nh === IPPROTO_FRAGMENT) {
        if (p + 8 > end) return { stat: 'PASS_MALFORMED' };
        nh = frame[p];
        // The last fragment header of the chain decides.
        hasPorts = (u16(p + 2) & 0xfff8) === 0;
        isFragment = true;
        p += 8;
      } else {
        break;
      }
    }
    proto = nh;
    l4 = p;
  } else {
    return { stat: 'PASS_NOT_IP' };
  }
  if (proto === (family === 4 ? IPPROTO_ICMP : IPPROTO_ICMPV6) && !isFragment) return icmpOutcome(frame, family, l3, l4, end);
  if (proto !== IPPROTO_TCP && proto !== IPPROTO_UDP) return { stat: 'PASS_OTHER_PROTO' };
  // The filter comes before the L4 header is looked at: a truncated header to a non-VIP counts as no service.
  if (!filterBits.has((dst[dst.length - 2] << 8) | dst[dst.length - 1])) return { stat: 'PASS_NO_SERVICE' };
  const protoName = proto === IPPROTO_TCP ? 'tcp' : 'udp';
  const key = (port: number) => `${family}|${Buffer.from(dst).toString('hex')}|${port}|${protoName}`;
  let svc: FuzzService | undefined;
  if (hasPorts) {
    if (l4 + (proto === IPPROTO_TCP ? 20 : 8) > end) return { stat: 'PASS_MALFORMED' };
    if (proto === IPPROTO_TCP && frame[l4 + 12] >> 4 < 5) return { stat: 'PASS_MALFORMED' };
    svc = serviceByKey.get(key(u16(l4 + 2)));
  }
  svc ??= serviceByKey.get(key(0));
  if (!svc) return { stat: hasPorts ? 'PASS_NO_SERVICE' : 'PASS_FRAGMENT' };
  return serviceOutcome(svc);
}

/** An IPv6 extension header chain as the program walks it (at most IPV6_EXT_MAX_CHAIN headers); null if cut short. */
function walkV6(frame: Uint8Array, p: number, nh: number, end: number): { proto: number; p: number; hasPorts: boolean } | null {
  let hasPorts = true;
  for (let i = 0; i < IPV6_EXT_MAX_CHAIN; i++) {
    if (nh === IPPROTO_HOPOPTS || nh === IPPROTO_ROUTING || nh === IPPROTO_DSTOPTS) {
      if (p + 2 > end) return null;
      const next = frame[p];
      p += (frame[p + 1] + 1) * 8;
      nh = next;
    } else if (nh === IPPROTO_FRAGMENT) {
      if (p + 8 > end) return null;
      hasPorts = (((frame[p + 2] << 8) | frame[p + 3]) & 0xfff8) === 0;
      nh = frame[p];
      p += 8;
    } else break;
  }
  return { proto: nh, p, hasPorts };
}

/**
 * An ICMP/ICMPv6 packet (not a fragment): errors about a flow of a VIP go where that flow's packets go (the
 * quoted packet reversed into the client's flow); everything else is passed. The rules of bpf/xdp_dr.bpf.c's
 * icmp_error, in its order.
 */
function icmpOutcome(frame: Uint8Array, family: 4 | 6, l3: number, l4: number, end: number): Outcome {
  const u16 = (o: number) => (frame[o] << 8) | frame[o + 1];
  if (l4 + 8 > end) return { stat: 'PASS_OTHER_PROTO' };
  const type = frame[l4];
  if (!(family === 4 ? type === 3 || type === 11 || type === 12 : type >= 1 && type <= 4)) return { stat: 'PASS_OTHER_PROTO' };
  // The room the IP length fields give the ICMP message (not the Ethernet padding).
  let room: number;
  let outerDst: Uint8Array;
  if (family === 4) {
    room = u16(l3 + 2) - (frame[l3] & 0xf) * 4;
    outerDst = frame.subarray(l3 + 16, l3 + 20);
  } else {
    const w = walkV6(frame, l3 + 40, frame[l3 + 6], end);
    if (!w) return { stat: 'PASS_MALFORMED' };
    const ext = w.p - (l3 + 40);
    if (ext > u16(l3 + 4)) return { stat: 'PASS_MALFORMED' };
    room = u16(l3 + 4) - ext;
    outerDst = frame.subarray(l3 + 24, l3 + 40);
  }
  if (room < 8) return { stat: 'PASS_MALFORMED' };
  if (!filterBits.has((outerDst[outerDst.length - 2] << 8) | outerDst[outerDst.length - 1])) return { stat: 'PASS_NO_SERVICE' };
  room -= 8;
  const q = l4 + 8;
  let qproto: number;
  let hasPorts: boolean;
  let used: number;
  let ports: number;
  let qsrc: Uint8Array;
  if (family === 4) {
    if (q + 20 > end || room < 20 || frame[q] >> 4 !== 4 || (frame[q] & 0xf) < 5) return { stat: 'PASS_MALFORMED' };
    used = (frame[q] & 0xf) * 4;
    qproto = frame[q + 9];
    hasPorts = (u16(q + 6) & 0x1fff) === 0;
    qsrc = frame.subarray(q + 12, q + 16);
    ports = q + used;
  } else {
    if (q + 40 > end || room < 40 || frame[q] >> 4 !== 6) return { stat: 'PASS_MALFORMED' };
    const w = walkV6(frame, q + 40, frame[q + 6], end);
    if (!w) return { stat: 'PASS_MALFORMED' };
    qproto = w.proto;
    hasPorts = w.hasPorts;
    used = w.p - q;
    qsrc = frame.subarray(q + 8, q + 24);
    ports = w.p;
  }
  const l4known = qproto === IPPROTO_TCP || qproto === IPPROTO_UDP;
  if (l4known && hasPorts && (ports + 8 > end || used + 8 > room)) return { stat: 'PASS_MALFORMED' };
  if (!l4known) return { stat: 'PASS_OTHER_PROTO' };
  if (!hasPorts) return { stat: 'PASS_FRAGMENT' };
  if (!Buffer.from(qsrc).equals(Buffer.from(outerDst))) return { stat: 'PASS_MALFORMED' };
  const protoName = qproto === IPPROTO_TCP ? 'tcp' : 'udp';
  const key = (port: number) => `${family}|${Buffer.from(qsrc).toString('hex')}|${port}|${protoName}`;
  const svc = serviceByKey.get(key(u16(ports))) ?? serviceByKey.get(key(0));
  if (!svc) return { stat: 'PASS_NO_SERVICE' };
  return serviceOutcome(svc);
}

// ---- generators ----

export const KINDS = [
  'random', 'random-l3', 'valid', 'bitflip', 'truncate', 'bad-length', 'ipv6-ext', 'vlan-stack', 'fragment',
  'size', 'icmp', 'tcp-odd',
] as const;
export type Kind = (typeof KINDS)[number];

/** Relative frequency of each kind in a run. */
const WEIGHTS: Record<Kind, number> = {
  random: 8, 'random-l3': 10, valid: 12, bitflip: 14, truncate: 8, 'bad-length': 8, 'ipv6-ext': 10, 'vlan-stack': 6,
  fragment: 8, size: 3, icmp: 5, 'tcp-odd': 8,
};
const WEIGHT_SUM = KINDS.reduce((a, k) => a + WEIGHTS[k], 0);

function ip4(r: Rng): string {
  return `${r.int(256)}.${r.int(256)}.${r.int(256)}.${r.int(256)}`;
}
function ip6(r: Rng): string {
  const g: string[] = [];
  for (let i = 0; i < 8; i++) g.push(r.int(0x10000).toString(16));
  return g.join(':');
}
/** An address that passes vip_filter (same low 16 bits as a VIP) but is no VIP. */
function filterTwin(r: Rng, vip: string): string {
  const b = ipToBytes(vip);
  for (let i = 0; i < b.length - 2; i++) if (r.chance(0.5)) b[i] = r.int(256);
  b[0] ^= 0x80; // at least one byte differs
  return b.length === 4 ? [...b].join('.') : [...Array(8).keys()].map((i) => b.readUInt16BE(i * 2).toString(16)).join(':');
}

/** Source addresses and ports from small pools, so flows repeat and the connection table is hit as well as filled. */
function client(r: Rng, v6: boolean): { src: string; sport: number } {
  if (r.chance(0.5)) return { src: v6 ? `2001:db8:ffff::${r.int(8) + 1}` : `198.51.100.${r.int(8) + 1}`, sport: 40000 + r.int(16) };
  return { src: v6 ? ip6(r) : ip4(r), sport: r.int(0x10000) };
}

/** Destination and protocol: a service's own, a VIP with another port or protocol, a filter twin, or anything. */
function target(r: Rng, v6: boolean): { dst: string; dport: number; proto: 'tcp' | 'udp' } {
  const own = FUZZ_SERVICES.filter((s) => s.vip.includes(':') === v6);
  const x = r.int(100);
  if (x < 60) {
    const s = r.pick(own);
    return { dst: s.vip, dport: s.port || r.int(0x10000), proto: s.proto };
  }
  const proto = r.chance(0.5) ? 'tcp' : 'udp';
  if (x < 75) return { dst: r.pick(v6 ? VIPS6 : VIPS4), dport: r.pick([0, 1, 53, 80, 443, 8080, r.int(0x10000)]), proto };
  if (x < 88) return { dst: filterTwin(r, r.pick(v6 ? VIPS6 : VIPS4)), dport: r.pick([53, 80, 443]), proto };
  return { dst: v6 ? ip6(r) : ip4(r), dport: r.int(0x10000), proto };
}

const COMMON_FLAGS = [0x02, 0x10, 0x18, 0x11, 0x04, 0x14, 0x12, 0x01];

function vlans(r: Rng, n: number): VlanTag[] {
  const out: VlanTag[] = [];
  for (let i = 0; i < n; i++) out.push({ tpid: r.chance(0.3) ? ETH_P_8021AD : ETH_P_8021Q, vid: r.int(4096), pcp: r.int(8) });
  return out;
}

/** A well-formed frame: IPv4/IPv6, TCP/UDP, mostly to services, 0-3 VLAN tags (3 is one more than the program walks). */
function validSpec(r: Rng, v6 = r.chance(0.45)): FrameSpec {
  const t = target(r, v6);
  const spec: FrameSpec = {
    ...client(r, v6), ...t,
    srcMac: macToString(r.bytes(6)), dstMac: r.chance(0.8) ? LB_MAC : macToString(r.bytes(6)),
    tcpFlags: r.pick(COMMON_FLAGS), seq: r.u32(), ack: r.u32(),
    payload: r.bytes(r.chance(0.7) ? r.int(64) : r.int(1400)),
    ttl: r.int(256), ipId: r.int(0x10000),
    vlans: vlans(r, r.pick([0, 0, 0, 1, 1, 2, 3])),
  };
  if (!v6 && r.chance(0.15)) spec.ipv4Options = r.bytes(4 * r.range(1, 10));
  if (v6 && r.chance(0.15)) {
    spec.ipv6ExtHeaders = [];
    for (let i = r.range(1, 2); i > 0; i--) spec.ipv6ExtHeaders.push({ type: r.pick([IPPROTO_HOPOPTS, IPPROTO_DSTOPTS]), body: Buffer.alloc(r.int(20)) });
  }
  if (r.chance(0.1)) spec.padTo = 60 + r.int(40);
  return spec;
}

function flip(r: Rng, f: Buffer): Buffer {
  const n = r.range(1, 8);
  for (let i = 0; i < n; i++) {
    // Mostly in the headers, where a flip changes a decision.
    const pos = r.chance(0.85) ? r.int(Math.min(f.length, 100)) : r.int(f.length);
    f[pos] ^= 1 << r.int(8);
  }
  return f;
}

/** Offset of the IP header in a frame built by buildFrame (after its VLAN tags). */
function l3Offset(spec: FrameSpec): number {
  return 14 + 4 * (spec.vlans?.length ?? 0);
}

function badLength(r: Rng): Buffer {
  const v6 = r.chance(0.5);
  const spec = { ...validSpec(r, v6), vlans: vlans(r, r.int(3)) };
  const f = buildFrame(spec);
  const o = l3Offset(spec);
  const ihl = v6 ? 40 : (f[o] & 0xf) * 4;
  const field = r.int(4);
  if (field === 0 && !v6) f[o] = 0x40 | r.int(16); // IHL 0..15
  else if (field === 0) f[o] = (r.int(16) << 4) | (f[o] & 0xf); // IPv6 version nibble
  else if (field === 1) {
    // IPv4 total length / IPv6 payload length: zero, one either side of the truth, beyond the frame, anything.
    const truth = f.readUInt16BE(o + (v6 ? 4 : 2));
    const room = f.length - o - (v6 ? 40 : 0);
    f.writeUInt16BE(r.pick([0, 1, ihl - 1, truth - 1, truth + 1, room, room + 1, r.int(0x10000), 0xffff]) & 0xffff, o + (v6 ? 4 : 2));
  } else if (field === 2 && spec.proto === 'tcp' && !spec.ipv6ExtHeaders) {
    f[o + ihl + 12] = (r.int(16) << 4) | (f[o + ihl + 12] & 0xf); // TCP data offset 0..15
  } else if (field === 2) {
    f.writeUInt16BE(r.int(0x10000), o + ihl + (spec.ipv6ExtHeaders ? 0 : 4)); // UDP length, or an ext header's start
  } else {
    // A valid header with Ethernet padding, or a frame cut inside the L4 header.
    return r.chance(0.5) ? Buffer.concat([f, r.bytes(r.range(1, 64))]) : f.subarray(0, o + ihl + r.int(20));
  }
  return f;
}

const EXT_TYPES = [IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_AH, 50 /* ESP */, 59 /* no next */, 135 /* mobility */, 253 /* experimental */];

/** IPv6 with a chain of 0..7 extension headers, hand-built so unknown and repeated types, AH and long chains appear. */
function ipv6Ext(r: Rng): Buffer {
  const t = target(r, true);
  const chain: number[] = [];
  const n = r.pick([0, 1, 2, 3, 4, 4, 5, 6, 7]);
  for (let i = 0; i < n; i++) chain.push(r.chance(0.8) ? r.pick(EXT_TYPES.slice(0, 4)) : r.pick(EXT_TYPES));
  const last = r.chance(0.9) ? (t.proto === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP) : r.int(256);
  const parts: Buffer[] = [];
  for (let i = 0; i < chain.length; i++) {
    const next = i + 1 < chain.length ? chain[i + 1] : last;
    let h: Buffer;
    if (chain[i] === IPPROTO_FRAGMENT) {
      h = r.bytes(8);
      // Mostly first fragments (ports follow), some later ones.
      h.writeUInt16BE(r.chance(0.7) ? r.int(2) : r.int(0x10000), 2);
    } else {
      const len = r.chance(0.9) ? r.int(3) : r.int(256);
      h = Buffer.alloc((len + 1) * 8);
      h[1] = len;
      if (chain[i] === IPPROTO_AH) h[1] = r.int(8); // AH counts 4-byte units: the program must not walk it
    }
    h[0] = next;
    parts.push(h);
  }
  const c = client(r, true);
  const l4 = buildFrame({ ...c, dst: t.dst, dport: t.dport, proto: t.proto, payload: r.bytes(r.int(40)), tcpFlags: r.pick(COMMON_FLAGS) }).subarray(54);
  const first = chain.length ? chain[0] : last;
  return buildFrame({ src: c.src, dst: t.dst, proto: first, omitL4: true, payload: Buffer.concat([...parts, l4]), vlans: vlans(r, r.int(2)) });
}

function fragment(r: Rng): Buffer {
  const v6 = r.chance(0.5);
  const t = target(r, v6);
  const which = r.pick(['first', 'middle', 'last']);
  const spec: FrameSpec = {
    ...client(r, v6), ...t, payload: r.bytes(8 * r.range(1, 60)), vlans: vlans(r, r.int(2)),
    fragOffset: which === 'first' ? 0 : r.range(1, 0x1fff), moreFragments: which !== 'last',
    ipId: r.int(0x10000),
  };
  if (v6) spec.ipv6Fragment = { id: r.u32() };
  if (which !== 'first') spec.omitL4 = true;
  if (which === 'last' && r.chance(0.1)) spec.fragOffset = 0; // offset 0 and no MF: not a fragment after all
  return buildFrame(spec);
}

function size(r: Rng): Buffer {
  const x = r.int(10);
  if (x < 3) {
    // Tiny: headers only, or shorter than them.
    const f = buildFrame({ ...validSpec(r), payload: Buffer.alloc(0), vlans: [] });
    return f.subarray(0, r.range(TEST_RUN_MIN, f.length));
  }
  // Around the linear limit, real jumbo sizes, and up to the most test_run takes.
  const len = x < 6 ? r.range(TEST_RUN_LINEAR_MAX - 64, TEST_RUN_LINEAR_MAX + 64)
    : x < 9 ? r.range(1500, 9018)
      : r.range(9018, TEST_RUN_MAX);
  const spec = { ...validSpec(r), vlans: [], ipv6ExtHeaders: undefined, ipv4Options: undefined, padTo: undefined };
  const v6 = spec.src.includes(':');
  const l4hdr = spec.proto === 'tcp' ? 20 : 8;
  // The IP length fields stop at 65535; the rest of a bigger frame is Ethernet padding.
  const payload = Math.max(0, Math.min(len - 14 - (v6 ? 40 : 20) - l4hdr, 65535 - (v6 ? 0 : 20) - l4hdr));
  return buildFrame({ ...spec, payload: r.bytes(payload), padTo: len });
}

function icmp(r: Rng): Buffer {
  const v6 = r.chance(0.5);
  const c = client(r, v6);
  const t = target(r, v6);
  if (r.chance(0.4)) return buildFrame({ src: c.src, dst: t.dst, proto: 'icmp', sport: r.int(0x10000), seq: r.int(0x10000), payload: r.bytes(r.int(56)), vlans: vlans(r, r.int(2)) });
  // An error quoting a packet to a VIP: the quoted ports must not make it look like TCP or UDP.
  const quoted = buildFrame({ src: t.dst, dst: c.src, sport: t.dport, dport: c.sport, proto: t.proto }).subarray(14, 14 + (v6 ? 48 : 28));
  const h = Buffer.alloc(8);
  const types = v6 ? [[1, r.int(7)], [2, 0], [3, r.int(2)], [4, r.int(3)], [129, 0]] : [[3, r.int(16)], [11, r.int(2)], [12, 0], [5, 1], [0, 0]];
  const [type, code] = r.pick(types);
  h[0] = type;
  h[1] = code;
  if (v6 && type === 2) h.writeUInt32BE(1280, 4);
  return buildFrame({ src: c.src, dst: t.dst, proto: v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP, omitL4: true, payload: Buffer.concat([h, quoted]) });
}

function tcpOdd(r: Rng): Buffer {
  const v6 = r.chance(0.4);
  const s = r.pick(FUZZ_SERVICES.filter((x) => x.proto === 'tcp' && x.vip.includes(':') === v6));
  const spec: FrameSpec = { ...client(r, v6), dst: s.vip, dport: s.port || r.int(0x10000), proto: 'tcp', tcpFlags: r.int(256), payload: r.bytes(r.int(48)), seq: r.u32() };
  const f = buildFrame(spec);
  const th = 14 + (v6 ? 40 : 20);
  f[th + 12] = (r.int(16) << 4) | r.int(16); // data offset 0..15 and the reserved bits
  return f;
}

function randomL3(r: Rng): Buffer {
  const tags = vlans(r, r.pick([0, 0, 1, 2]));
  const type = r.pick([ETH_P_IP, ETH_P_IP, ETH_P_IPV6, ETH_P_IPV6, ETH_P_ARP, ETH_P_8021Q, 0x88cc, r.int(0x10000)]);
  const eth = Buffer.alloc(14 + 4 * tags.length);
  r.bytes(12).copy(eth);
  tags.forEach((t, i) => {
    eth.writeUInt16BE(t.tpid!, 12 + 4 * i);
    eth.writeUInt16BE(t.vid, 14 + 4 * i);
  });
  eth.writeUInt16BE(type, eth.length - 2);
  const body = r.bytes(r.int(r.chance(0.8) ? 120 : 1500));
  const v6 = type === ETH_P_IPV6;
  if (body.length > 0 && (type === ETH_P_IP || v6) && r.chance(0.8)) body[0] = (body[0] & 0x0f) | (v6 ? 0x60 : 0x40);
  if (r.chance(0.6)) {
    // Point it at a VIP, with a length field that fits, so the garbage reaches the service lookup.
    const vip = ipToBytes(r.pick(v6 ? VIPS6 : VIPS4));
    const at = v6 ? 24 : 16;
    if (body.length >= at + vip.length) vip.copy(body, at);
    if (r.chance(0.7) && body.length >= 20) {
      if (v6) body.writeUInt16BE(Math.max(0, body.length - 40 - r.int(4)), 4);
      else body.writeUInt16BE(body.length - r.int(4), 2);
      if (!v6) body[0] = 0x45;
      body[v6 ? 6 : 9] = r.pick([IPPROTO_TCP, IPPROTO_UDP, r.int(256)]);
    }
  }
  return Buffer.concat([eth, body]);
}

function randomBytes(r: Rng): Buffer {
  // Lengths below 14 included: the kernel refuses them, which is counted separately.
  const len = r.chance(0.5) ? r.int(100) : r.chance(0.9) ? r.int(1600) : r.int(TEST_RUN_MAX + 1);
  return r.bytes(len);
}

const GENERATORS: Record<Kind, (r: Rng) => Buffer> = {
  random: randomBytes,
  'random-l3': randomL3,
  valid: (r) => buildFrame(validSpec(r)),
  bitflip: (r) => flip(r, buildFrame(validSpec(r))),
  truncate: (r) => {
    const f = buildFrame(validSpec(r));
    return f.subarray(0, r.int(f.length));
  },
  'bad-length': badLength,
  'ipv6-ext': ipv6Ext,
  'vlan-stack': (r) => {
    // Up to six tags of any TPID (0x9100 and odd ones included), outnumbering the two the program walks.
    const n = r.range(0, 6);
    const spec = { ...validSpec(r), vlans: [] as VlanTag[] };
    for (let i = 0; i < n; i++) spec.vlans.push({ tpid: r.pick([ETH_P_8021Q, ETH_P_8021AD, 0x9100, r.int(0x10000)]), vid: r.int(4096) });
    return buildFrame(spec);
  },
  fragment,
  size,
  icmp,
  'tcp-odd': tcpOdd,
};

export interface Generated { index: number; kind: Kind; frame: Buffer }

/** Frame `index` of the run with `seed`: the kind is drawn first, then the frame, all from the frame's own stream. */
export function generate(seed: number, index: number, only?: Kind): Generated {
  const r = frameRng(seed, index);
  let kind: Kind = KINDS[0];
  let x = r.int(WEIGHT_SUM);
  for (const k of KINDS) {
    if ((x -= WEIGHTS[k]) < 0) {
      kind = k;
      break;
    }
  }
  if (only) kind = only;
  return { index, kind, frame: Buffer.from(GENERATORS[kind](r)) };
}

/** Valid frames to services whose every prefix is run: each layer the parser walks, cut at every byte. */
export function truncationBases(): { name: string; frame: Buffer }[] {
  const payload = Buffer.from('GET / HTTP/1.1\r\n\r\n');
  return [
    { name: 'IPv4 TCP, options, QinQ', frame: buildFrame({ src: '198.51.100.7', dst: '10.0.0.100', sport: 40001, dport: 80, proto: 'tcp', tcpFlags: 0x18, payload, ipv4Options: Buffer.alloc(12, 1), vlans: [{ tpid: ETH_P_8021AD, vid: 1 }, { vid: 2 }] }) },
    { name: 'IPv6 UDP, hop-by-hop + dest opts, 802.1Q', frame: buildFrame({ src: '2001:db8:ffff::7', dst: '2001:db8::100', sport: 40001, dport: 53, proto: 'udp', payload, vlans: [{ vid: 5 }], ipv6ExtHeaders: [{ type: IPPROTO_HOPOPTS }, { type: IPPROTO_DSTOPTS, body: Buffer.alloc(10) }] }) },
    { name: 'IPv6 UDP first fragment to a port-0 service', frame: buildFrame({ src: '2001:db8:ffff::7', dst: '2001:db8::200', sport: 40001, dport: 9999, proto: 'udp', payload, ipv6Fragment: true, moreFragments: true }) },
    { name: 'IPv4 TCP redirected', frame: buildFrame({ src: '198.51.100.7', dst: '10.0.0.204', sport: 40001, dport: 80, proto: 'tcp', payload }) },
    { name: 'IPv4 UDP non-first fragment to a port-0 service', frame: buildFrame({ src: '198.51.100.7', dst: '10.0.0.200', proto: 'udp', fragOffset: 100, omitL4: true, payload }) },
  ];
}
