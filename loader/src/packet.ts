// Wire-format frame builder/parser. Frames produced here are fed verbatim to
// the XDP program via BPF_PROG_TEST_RUN, so every length and checksum must be
// exactly what a real NIC would deliver.

import { isIPv4, isIPv6 } from 'node:net';

export type Mac = string;

export const TCP_FLAGS = { FIN: 1, SYN: 2, RST: 4, PSH: 8, ACK: 16 } as const;

export const ETH_P_IP = 0x0800;
export const ETH_P_IPV6 = 0x86dd;
export const ETH_P_ARP = 0x0806;
export const ETH_P_8021Q = 0x8100;
export const ETH_P_8021AD = 0x88a8;

export const IPPROTO_HOPOPTS = 0;
export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_ROUTING = 43;
export const IPPROTO_FRAGMENT = 44;
export const IPPROTO_AH = 51;
export const IPPROTO_ICMPV6 = 58;
export const IPPROTO_DSTOPTS = 60;

const MAC_RE = /^[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}$/;

export function macToBytes(mac: string): Buffer {
  if (typeof mac !== 'string' || !MAC_RE.test(mac)) {
    throw new Error(`invalid MAC address: ${JSON.stringify(mac)}`);
  }
  return Buffer.from(mac.split(':').map((o) => parseInt(o, 16)));
}

export function macToString(b: Uint8Array, offset = 0): string {
  if (offset < 0 || offset + 6 > b.length) {
    throw new RangeError(`need 6 bytes at offset ${offset}, have ${b.length}`);
  }
  const parts: string[] = [];
  for (let i = 0; i < 6; i++) parts.push(b[offset + i].toString(16).padStart(2, '0'));
  return parts.join(':');
}

export function ipToBytes(ip: string): Buffer {
  if (typeof ip === 'string' && isIPv4(ip)) {
    return Buffer.from(ip.split('.').map((o) => Number(o)));
  }
  // Zone IDs ("fe80::1%eth0") pass isIPv6 but have no wire representation.
  if (typeof ip !== 'string' || !isIPv6(ip) || ip.includes('%')) {
    throw new Error(`invalid IP address: ${JSON.stringify(ip)}`);
  }
  return parseIPv6(ip);
}

function parseIPv6(ip: string): Buffer {
  const out = Buffer.alloc(16);
  let text = ip;
  // A trailing dotted quad occupies the last two groups.
  let tail: Buffer | null = null;
  const lastColon = text.lastIndexOf(':');
  if (text.indexOf('.', lastColon) !== -1) {
    const v4 = text.slice(lastColon + 1);
    if (!isIPv4(v4)) throw new Error(`invalid IP address: ${JSON.stringify(ip)}`);
    tail = Buffer.from(v4.split('.').map((o) => Number(o)));
    // Replace the quad with two placeholder groups so the split below is uniform.
    text = text.slice(0, lastColon + 1) + '0:0';
  }
  const halves = text.split('::');
  if (halves.length > 2) throw new Error(`invalid IP address: ${JSON.stringify(ip)}`);
  const groups = (s: string): number[] => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  const head = groups(halves[0]);
  const rest = halves.length === 2 ? groups(halves[1]) : [];
  const all =
    halves.length === 2 ? [...head, ...new Array<number>(8 - head.length - rest.length).fill(0), ...rest] : head;
  if (all.length !== 8 || all.some((g) => !Number.isInteger(g) || g < 0 || g > 0xffff)) {
    throw new Error(`invalid IP address: ${JSON.stringify(ip)}`);
  }
  all.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  if (tail) tail.copy(out, 12);
  return out;
}

export function bytesToIp(b: Uint8Array): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (b.length !== 16) throw new Error(`IP address must be 4 or 16 bytes, got ${b.length}`);
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push((b[i * 2] << 8) | b[i * 2 + 1]);

  // RFC 5952 §5: IPv4-mapped addresses are written with a dotted quad.
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  }

  // RFC 5952 §4.2: compress the longest run of >= 2 zero groups, first one on ties.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]): string => xs.map((x) => x.toString(16)).join(':');
  if (bestStart < 0) return hex(g);
  return `${hex(g.slice(0, bestStart))}::${hex(g.slice(bestStart + bestLen))}`;
}

/**
 * RFC 1071 ones' complement checksum over the concatenation of `parts`.
 * A part with odd length leaves its last byte as the high half of a word
 * that is completed by the next part, exactly as if the parts were joined.
 */
export function internetChecksum(...parts: Uint8Array[]): number {
  let sum = 0;
  let pendingHigh = -1;
  for (const p of parts) {
    let i = 0;
    if (pendingHigh >= 0 && p.length > 0) {
      sum += (pendingHigh << 8) | p[0];
      pendingHigh = -1;
      i = 1;
    }
    const end = p.length - ((p.length - i) & 1);
    for (; i < end; i += 2) sum += (p[i] << 8) | p[i + 1];
    if (i < p.length) pendingHigh = p[i];
    // Fold occasionally so the accumulator never leaves exact-integer range.
    if (sum > 0x7fffffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  }
  if (pendingHigh >= 0) sum += pendingHigh << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}

export interface VlanTag {
  tpid?: number;
  vid: number;
  pcp?: number;
}

export interface FrameSpec {
  srcMac?: string;
  dstMac?: string;
  /** Outermost first. */
  vlans?: VlanTag[];
  src: string;
  dst: string;
  /** A number means a raw IP protocol whose payload is carried as-is (no L4 header built). */
  proto: 'tcp' | 'udp' | 'icmp' | number;
  /** For ICMP echo, sport is used as the identifier. */
  sport?: number;
  /** ICMP type and code (default: echo request, code 0). */
  icmpType?: number;
  icmpCode?: number;
  /** ICMP header bytes 4..7 (default: identifier sport and sequence seq): the MTU of frag-needed or too-big. */
  icmpRest?: number;
  dport?: number;
  tcpFlags?: number;
  /** TCP sequence number; for ICMP echo its low 16 bits are the sequence. */
  seq?: number;
  ack?: number;
  payload?: Buffer | Uint8Array;
  ttl?: number;
  ipId?: number;
  ipv4Options?: Buffer;
  fragOffset?: number;
  moreFragments?: boolean;
  ipv6Fragment?: boolean | { id?: number };
  ipv6ExtHeaders?: { type: number; body?: Buffer }[];
  omitL4?: boolean;
  padTo?: number;
}

function checkInt(name: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new RangeError(`${name} must be an integer in [${min}, ${max}], got ${v}`);
  }
  return v;
}

function protoNumber(proto: FrameSpec['proto'], v6: boolean): number {
  switch (proto) {
    case 'tcp':
      return IPPROTO_TCP;
    case 'udp':
      return IPPROTO_UDP;
    case 'icmp':
      return v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP;
    default:
      if (typeof proto !== 'number') throw new Error(`unknown protocol: ${String(proto)}`);
      return checkInt('proto', proto, 0, 255);
  }
}

function pseudoHeader(src: Buffer, dst: Buffer, proto: number, l4Len: number): Buffer {
  if (src.length === 4) {
    const ph = Buffer.alloc(12);
    src.copy(ph, 0);
    dst.copy(ph, 4);
    ph[9] = proto;
    ph.writeUInt16BE(l4Len, 10);
    return ph;
  }
  const ph = Buffer.alloc(40);
  src.copy(ph, 0);
  dst.copy(ph, 16);
  ph.writeUInt32BE(l4Len, 32);
  ph[39] = proto;
  return ph;
}

/** L4 header + payload; checksum covers the whole thing even when it will be fragmented. */
function buildL4(spec: FrameSpec, proto: number, src: Buffer, dst: Buffer, payload: Buffer): Buffer {
  const v6 = src.length === 16;
  const sport = checkInt('sport', spec.sport ?? 12345, 0, 0xffff);
  const dport = checkInt('dport', spec.dport ?? 80, 0, 0xffff);
  if (spec.proto === 'tcp') {
    const h = Buffer.alloc(20);
    h.writeUInt16BE(sport, 0);
    h.writeUInt16BE(dport, 2);
    h.writeUInt32BE(checkInt('seq', spec.seq ?? 0, 0, 0xffffffff), 4);
    h.writeUInt32BE(checkInt('ack', spec.ack ?? 0, 0, 0xffffffff), 8);
    h[12] = 5 << 4;
    h[13] = checkInt('tcpFlags', spec.tcpFlags ?? TCP_FLAGS.SYN, 0, 0xff);
    h.writeUInt16BE(65535, 14);
    const seg = Buffer.concat([h, payload]);
    seg.writeUInt16BE(internetChecksum(pseudoHeader(src, dst, proto, seg.length), seg), 16);
    return seg;
  }
  if (spec.proto === 'udp') {
    const len = 8 + payload.length;
    // IPv4 can rely on total length, but the UDP length field itself is 16 bits.
    checkInt('UDP length', len, 8, 0xffff);
    const h = Buffer.alloc(8);
    h.writeUInt16BE(sport, 0);
    h.writeUInt16BE(dport, 2);
    h.writeUInt16BE(len, 4);
    const seg = Buffer.concat([h, payload]);
    // Zero means "no checksum" (IPv4) or is illegal (IPv6); RFC 768 sends 0xffff instead.
    const ck = internetChecksum(pseudoHeader(src, dst, proto, len), seg);
    seg.writeUInt16BE(ck === 0 ? 0xffff : ck, 6);
    return seg;
  }
  if (spec.proto === 'icmp') {
    const h = Buffer.alloc(8);
    h[0] = checkInt('icmpType', spec.icmpType ?? (v6 ? 128 : 8), 0, 255);
    h[1] = checkInt('icmpCode', spec.icmpCode ?? 0, 0, 255);
    if (spec.icmpRest !== undefined) {
      h.writeUInt32BE(checkInt('icmpRest', spec.icmpRest, 0, 0xffffffff), 4);
    } else {
      h.writeUInt16BE(sport, 4);
      h.writeUInt16BE((spec.seq ?? 1) & 0xffff, 6);
    }
    const msg = Buffer.concat([h, payload]);
    // ICMPv6 (RFC 4443) covers a pseudo-header; ICMPv4 does not.
    const ck = v6
      ? internetChecksum(pseudoHeader(src, dst, proto, msg.length), msg)
      : internetChecksum(msg);
    msg.writeUInt16BE(ck, 2);
    return msg;
  }
  return payload;
}

function buildIPv6ExtHeader(type: number, next: number, body: Buffer): Buffer {
  // Fragment (fixed 8 bytes) and AH (4-byte length units) don't fit the generic encoding.
  if (type === IPPROTO_FRAGMENT || type === IPPROTO_AH) {
    throw new Error(`IPv6 extension header type ${type} is not supported via ipv6ExtHeaders`);
  }
  checkInt('ipv6ExtHeaders type', type, 0, 255);
  // Zero padding is a run of Pad1 options, so the result stays a valid options header.
  const total = Math.max(8, Math.ceil((2 + body.length) / 8) * 8);
  if (total > 2048) throw new RangeError(`IPv6 extension header body too long: ${body.length}`);
  const h = Buffer.alloc(total);
  h[0] = next;
  h[1] = total / 8 - 1;
  body.copy(h, 2);
  return h;
}

export function buildFrame(spec: FrameSpec): Buffer {
  const src = ipToBytes(spec.src);
  const dst = ipToBytes(spec.dst);
  if (src.length !== dst.length) {
    throw new Error(`src ${spec.src} and dst ${spec.dst} are different address families`);
  }
  const v6 = src.length === 16;
  const proto = protoNumber(spec.proto, v6);
  const payload = Buffer.from(spec.payload ?? Buffer.alloc(0));
  const ttl = checkInt('ttl', spec.ttl ?? 64, 0, 255);
  const fragOffset = checkInt('fragOffset', spec.fragOffset ?? 0, 0, 0x1fff);
  const mf = spec.moreFragments === true;

  const l4 = spec.omitL4 ? payload : buildL4(spec, proto, src, dst, payload);

  let l3: Buffer;
  if (!v6) {
    if (spec.ipv6Fragment || spec.ipv6ExtHeaders?.length) {
      throw new Error('ipv6Fragment/ipv6ExtHeaders given for an IPv4 frame');
    }
    const rawOpts = spec.ipv4Options ?? Buffer.alloc(0);
    const optLen = Math.ceil(rawOpts.length / 4) * 4;
    if (optLen > 40) throw new RangeError(`IPv4 options too long: ${rawOpts.length} bytes (max 40)`);
    const hlen = 20 + optLen;
    const total = hlen + l4.length;
    checkInt('IPv4 total length', total, hlen, 0xffff);
    const h = Buffer.alloc(hlen);
    h[0] = 0x40 | (hlen / 4);
    h.writeUInt16BE(total, 2);
    h.writeUInt16BE(checkInt('ipId', spec.ipId ?? 0, 0, 0xffff), 4);
    h.writeUInt16BE((mf ? 0x2000 : 0) | fragOffset, 6);
    h[8] = ttl;
    h[9] = proto;
    src.copy(h, 12);
    dst.copy(h, 16);
    rawOpts.copy(h, 20);
    h.writeUInt16BE(internetChecksum(h), 10);
    l3 = Buffer.concat([h, l4]);
  } else {
    if (spec.ipv4Options?.length) throw new Error('ipv4Options given for an IPv6 frame');
    // Fragment fields on IPv6 live in the fragment header, so asking for them implies one.
    const wantFrag = spec.ipv6Fragment ?? (fragOffset !== 0 || mf);
    if (!wantFrag && (fragOffset !== 0 || mf)) {
      throw new Error('fragOffset/moreFragments on IPv6 need a fragment header (ipv6Fragment is false)');
    }
    const chain: { type: number; body: Buffer | null }[] = (spec.ipv6ExtHeaders ?? []).map((e) => ({
      type: e.type,
      body: e.body ?? Buffer.alloc(0),
    }));
    if (wantFrag) chain.push({ type: IPPROTO_FRAGMENT, body: null });

    // Build back to front so each header knows the type of the one after it.
    const headers: Buffer[] = [];
    let next = proto;
    for (let i = chain.length - 1; i >= 0; i--) {
      const e = chain[i];
      let h: Buffer;
      if (e.body === null) {
        h = Buffer.alloc(8);
        h[0] = next;
        h.writeUInt16BE((fragOffset << 3) | (mf ? 1 : 0), 2);
        const id = typeof spec.ipv6Fragment === 'object' ? spec.ipv6Fragment.id : undefined;
        h.writeUInt32BE(checkInt('fragment id', id ?? spec.ipId ?? 1, 0, 0xffffffff), 4);
      } else {
        h = buildIPv6ExtHeader(e.type, next, e.body);
      }
      headers.unshift(h);
      next = e.type;
    }
    const ext = Buffer.concat(headers);
    const plen = checkInt('IPv6 payload length', ext.length + l4.length, 0, 0xffff);
    const h = Buffer.alloc(40);
    h.writeUInt32BE(0x60000000, 0);
    h.writeUInt16BE(plen, 4);
    h[6] = next;
    h[7] = ttl;
    src.copy(h, 8);
    dst.copy(h, 24);
    l3 = Buffer.concat([h, ext, l4]);
  }

  const vlans = spec.vlans ?? [];
  const eth = Buffer.alloc(14 + 4 * vlans.length);
  macToBytes(spec.dstMac ?? '02:00:00:00:00:02').copy(eth, 0);
  macToBytes(spec.srcMac ?? '02:00:00:00:00:01').copy(eth, 6);
  let off = 12;
  for (const v of vlans) {
    eth.writeUInt16BE(checkInt('vlan tpid', v.tpid ?? ETH_P_8021Q, 0, 0xffff), off);
    const tci = (checkInt('vlan pcp', v.pcp ?? 0, 0, 7) << 13) | checkInt('vlan vid', v.vid, 0, 0xfff);
    eth.writeUInt16BE(tci, off + 2);
    off += 4;
  }
  eth.writeUInt16BE(v6 ? ETH_P_IPV6 : ETH_P_IP, off);

  const frame = Buffer.concat([eth, l3]);
  const padTo = spec.padTo ?? 0;
  if (frame.length >= padTo) return frame;
  return Buffer.concat([frame, Buffer.alloc(padTo - frame.length)]);
}

export const ICMP = { DEST_UNREACH: 3, FRAG_NEEDED_CODE: 4, TIME_EXCEEDED: 11, PARAMETER_PROBLEM: 12, ECHO_REPLY: 0 } as const;
export const ICMPV6 = { DEST_UNREACH: 1, PACKET_TOO_BIG: 2, TIME_EXCEEDED: 3, PARAMETER_PROBLEM: 4, ECHO_REPLY: 129 } as const;

export interface IcmpErrorSpec {
  srcMac?: string;
  dstMac?: string;
  vlans?: VlanTag[];
  /** The router that reports the error. */
  src: string;
  /** Where the error goes; routers send it to the quoted packet's source. */
  dst: string;
  type: number;
  code?: number;
  /** Next-hop MTU (IPv4 frag-needed: low 16 bits; ICMPv6 packet too big: all 32). */
  mtu?: number;
  /** The packet the error is about: its IP packet, from the IP header on, is quoted. */
  quote: FrameSpec;
  /**
   * Bytes of it quoted. Default: as much as keeps the error within 576 bytes (IPv4, RFC 1812) or 1280 (IPv6,
   * RFC 4443), as Linux does; RFC 792 asks for no more than the IP header and 8 bytes.
   */
  quoteLength?: number;
  ttl?: number;
  padTo?: number;
}

/** An ICMP or ICMPv6 error quoting a packet, with correct checksums (ICMPv6's over the pseudo-header). */
export function buildIcmpError(spec: IcmpErrorSpec): Buffer {
  const inner = buildFrame({ ...spec.quote, vlans: [], padTo: 0 });
  const packet = inner.subarray(14);
  const v6 = ipToBytes(spec.dst).length === 16;
  if ((packet[0] >> 4 === 6) !== v6) throw new Error('an ICMP error quotes a packet of its own IP version');
  const max = v6 ? 1280 - 40 - 8 : 576 - 20 - 8;
  const len = checkInt('quoteLength', spec.quoteLength ?? Math.min(packet.length, max), 0, packet.length);
  return buildFrame({
    srcMac: spec.srcMac, dstMac: spec.dstMac, vlans: spec.vlans, src: spec.src, dst: spec.dst, ttl: spec.ttl, padTo: spec.padTo,
    proto: 'icmp', icmpType: spec.type, icmpCode: spec.code ?? 0, icmpRest: spec.mtu ?? 0, payload: packet.subarray(0, len),
  });
}

export function buildArpRequest(opts: { srcMac: string; srcIp: string; targetIp: string }): Buffer {
  const mac = macToBytes(opts.srcMac);
  const spa = ipToBytes(opts.srcIp);
  const tpa = ipToBytes(opts.targetIp);
  if (spa.length !== 4 || tpa.length !== 4) throw new Error('ARP requires IPv4 addresses');
  const f = Buffer.alloc(42);
  f.fill(0xff, 0, 6);
  mac.copy(f, 6);
  f.writeUInt16BE(ETH_P_ARP, 12);
  f.writeUInt16BE(1, 14); // hardware type: Ethernet
  f.writeUInt16BE(ETH_P_IP, 16);
  f[18] = 6;
  f[19] = 4;
  f.writeUInt16BE(1, 20); // opcode: request
  mac.copy(f, 22);
  spa.copy(f, 28);
  // Target hardware address (32..37) stays zero: that's what is being asked for.
  tpa.copy(f, 38);
  return f;
}

export interface ParsedFrame {
  /** Empty string when the frame is too short to contain it. */
  dstMac: string;
  srcMac: string;
  vlans: { tpid: number; vid: number }[];
  /** Innermost ethertype read (0 if none). */
  etherType: number;
  l3Offset: number;
  version?: 4 | 6;
  src?: string;
  dst?: string;
  /** Upper-layer protocol (after IPv6 extension headers). */
  proto?: number;
  sport?: number;
  dport?: number;
  /** IPv4: MF set or offset != 0. IPv6: a fragment header is present. */
  fragment?: boolean;
}

const VLAN_TPIDS = new Set([ETH_P_8021Q, ETH_P_8021AD, 0x9100]);

/** Best-effort inspection of a frame; never throws, fills only what the bytes allow. */
export function parseFrame(frame: Uint8Array): ParsedFrame {
  const b = frame;
  const n = b.length;
  const u16 = (o: number): number => (b[o] << 8) | b[o + 1];
  const has = (o: number, len: number): boolean => o + len <= n;

  const out: ParsedFrame = {
    dstMac: has(0, 6) ? macToString(b, 0) : '',
    srcMac: has(6, 6) ? macToString(b, 6) : '',
    vlans: [],
    etherType: 0,
    l3Offset: 14,
  };
  let off = 12;
  if (!has(off, 2)) return out;
  let type = u16(off);
  off += 2;
  while (VLAN_TPIDS.has(type)) {
    out.etherType = type;
    out.l3Offset = off;
    if (!has(off, 4)) return out;
    out.vlans.push({ tpid: type, vid: u16(off) & 0xfff });
    type = u16(off + 2);
    off += 4;
  }
  out.etherType = type;
  out.l3Offset = off;
  if (!has(off, 1)) return out;

  let l4Off: number;
  let end: number;
  let firstFragment: boolean;
  if (type === ETH_P_IP && b[off] >> 4 === 4) {
    out.version = 4;
    const hlen = (b[off] & 0xf) * 4;
    if (hlen < 20 || !has(off, 20)) return out;
    const fragField = u16(off + 6);
    out.fragment = (fragField & 0x3fff) !== 0;
    firstFragment = (fragField & 0x1fff) === 0;
    out.proto = b[off + 9];
    out.src = bytesToIp(b.subarray(off + 12, off + 16));
    out.dst = bytesToIp(b.subarray(off + 16, off + 20));
    l4Off = off + hlen;
    // Ethernet padding must not be mistaken for L4 bytes.
    end = Math.min(n, off + u16(off + 2));
  } else if (type === ETH_P_IPV6 && b[off] >> 4 === 6) {
    out.version = 6;
    if (!has(off, 40)) return out;
    out.src = bytesToIp(b.subarray(off + 8, off + 24));
    out.dst = bytesToIp(b.subarray(off + 24, off + 40));
    end = Math.min(n, off + 40 + u16(off + 4));
    out.fragment = false;
    firstFragment = true;
    let next = b[off + 6];
    let p = off + 40;
    for (;;) {
      if (next === IPPROTO_HOPOPTS || next === IPPROTO_ROUTING || next === IPPROTO_DSTOPTS) {
        if (!has(p, 2)) return out;
        const nh = b[p];
        p += (b[p + 1] + 1) * 8;
        next = nh;
      } else if (next === IPPROTO_AH) {
        if (!has(p, 2)) return out;
        const nh = b[p];
        p += (b[p + 1] + 2) * 4;
        next = nh;
      } else if (next === IPPROTO_FRAGMENT) {
        if (!has(p, 8)) return out;
        out.fragment = true;
        firstFragment = firstFragment && (u16(p + 2) & 0xfff8) === 0;
        next = b[p];
        p += 8;
      } else {
        break;
      }
    }
    out.proto = next;
    l4Off = p;
  } else {
    return out;
  }

  if (firstFragment && (out.proto === IPPROTO_TCP || out.proto === IPPROTO_UDP) && l4Off + 4 <= end) {
    out.sport = u16(l4Off);
    out.dport = u16(l4Off + 2);
  }
  return out;
}
