import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  TCP_FLAGS,
  buildArpRequest,
  buildFrame,
  buildIcmpError,
  bytesToIp,
  internetChecksum,
  ipToBytes,
  macToBytes,
  macToString,
  parseFrame,
} from '../../loader/src/packet';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

// Independent of the implementation under test, so a shared bug can't cancel out.
function pseudo(src: string, dst: string, proto: number, len: number): Buffer {
  const s = ipToBytes(src);
  const d = ipToBytes(dst);
  if (s.length === 4) {
    const ph = Buffer.alloc(12);
    s.copy(ph, 0);
    d.copy(ph, 4);
    ph[9] = proto;
    ph.writeUInt16BE(len, 10);
    return ph;
  }
  const ph = Buffer.alloc(40);
  s.copy(ph, 0);
  d.copy(ph, 16);
  ph.writeUInt32BE(len, 32);
  ph[39] = proto;
  return ph;
}

test('internetChecksum: RFC 1071 example and split odd-length parts', () => {
  // RFC 1071 §3: the words sum to 0xddf2, so the checksum is its complement.
  const data = hex('0001 f203 f4f5 f6f7');
  assert.equal(internetChecksum(data), 0x220d);
  assert.equal(internetChecksum(data.subarray(0, 3), data.subarray(3, 5), data.subarray(5)), 0x220d);
  assert.equal(internetChecksum(data.subarray(0, 1), Buffer.alloc(0), data.subarray(1)), 0x220d);
  // Odd total length: the final byte is padded with a zero low half.
  assert.equal(internetChecksum(hex('01')), ~0x0100 & 0xffff);
  assert.equal(internetChecksum(hex('0102 03')), ~(0x0102 + 0x0300) & 0xffff);
  assert.equal(internetChecksum(), 0xffff);
});

test('internetChecksum: known IPv4 header vector', () => {
  const h = hex('4500 0073 0000 4000 4011 0000 c0a8 0001 c0a8 00c7');
  assert.equal(internetChecksum(h), 0xb861);
  h.writeUInt16BE(0xb861, 10);
  assert.equal(internetChecksum(h), 0);
});

test('IPv4 header fields and checksum', () => {
  const f = buildFrame({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'tcp', ttl: 33, ipId: 0x1234, payload: Buffer.from('hi') });
  assert.equal(f.length, 14 + 20 + 20 + 2);
  assert.equal(f.readUInt16BE(12), 0x0800);
  assert.equal(macToString(f, 0), '02:00:00:00:00:02');
  assert.equal(macToString(f, 6), '02:00:00:00:00:01');
  const ip = f.subarray(14, 34);
  assert.equal(ip[0], 0x45);
  assert.equal(ip.readUInt16BE(2), 42);
  assert.equal(ip.readUInt16BE(4), 0x1234);
  assert.equal(ip.readUInt16BE(6), 0); // no DF, no MF, offset 0
  assert.equal(ip[8], 33);
  assert.equal(ip[9], 6);
  assert.deepEqual(ip.subarray(12, 16), hex('0a000001'));
  assert.deepEqual(ip.subarray(16, 20), hex('0a000002'));
  assert.notEqual(ip.readUInt16BE(10), 0);
  assert.equal(internetChecksum(ip), 0);
});

for (const [fam, src, dst] of [
  ['IPv4', '192.0.2.10', '198.51.100.7'],
  ['IPv6', '2001:db8::10', '2001:db8:1::7'],
] as const) {
  const l3 = fam === 'IPv4' ? 20 : 40;

  test(`${fam} TCP header and checksum`, () => {
    const payload = Buffer.from('hello, odd length'); // 17 bytes exercises the odd tail
    const f = buildFrame({
      src, dst, proto: 'tcp', sport: 40000, dport: 443,
      tcpFlags: TCP_FLAGS.ACK | TCP_FLAGS.PSH, seq: 0xdeadbeef, ack: 0x01020304, payload,
    });
    const seg = f.subarray(14 + l3);
    assert.equal(seg.length, 20 + payload.length);
    assert.equal(seg.readUInt16BE(0), 40000);
    assert.equal(seg.readUInt16BE(2), 443);
    assert.equal(seg.readUInt32BE(4), 0xdeadbeef);
    assert.equal(seg.readUInt32BE(8), 0x01020304);
    assert.equal(seg[12], 0x50);
    assert.equal(seg[13], 0x18);
    assert.equal(seg.readUInt16BE(14), 65535);
    assert.deepEqual(seg.subarray(20), payload);
    assert.equal(internetChecksum(pseudo(src, dst, 6, seg.length), seg), 0);
  });

  test(`${fam} TCP defaults to SYN`, () => {
    const f = buildFrame({ src, dst, proto: 'tcp' });
    const seg = f.subarray(14 + l3);
    assert.equal(seg[13], TCP_FLAGS.SYN);
    assert.equal(seg.readUInt16BE(0), 12345);
    assert.equal(seg.readUInt16BE(2), 80);
  });

  test(`${fam} UDP length and checksum`, () => {
    const payload = Buffer.from([1, 2, 3, 4, 5]);
    const f = buildFrame({ src, dst, proto: 'udp', sport: 53, dport: 5353, payload });
    const seg = f.subarray(14 + l3);
    assert.equal(seg.readUInt16BE(4), 13);
    assert.equal(seg.length, 13);
    assert.notEqual(seg.readUInt16BE(6), 0);
    assert.equal(internetChecksum(pseudo(src, dst, 17, seg.length), seg), 0);
  });

  test(`${fam} UDP checksum that computes to 0 is sent as 0xffff`, () => {
    // Choose a payload word equal to the checksum without it, which drives the sum to 0xffff.
    const base = buildFrame({ src, dst, proto: 'udp', payload: Buffer.alloc(2) });
    const c = base.readUInt16BE(14 + l3 + 6);
    const payload = Buffer.alloc(2);
    payload.writeUInt16BE(c);
    const f = buildFrame({ src, dst, proto: 'udp', payload });
    const seg = f.subarray(14 + l3);
    assert.equal(seg.readUInt16BE(6), 0xffff);
    assert.equal(internetChecksum(pseudo(src, dst, 17, seg.length), seg), 0);
  });

  test(`${fam} ICMP echo request`, () => {
    const payload = Buffer.from('ping!');
    const f = buildFrame({ src, dst, proto: 'icmp', sport: 7, seq: 9, payload });
    const msg = f.subarray(14 + l3);
    assert.equal(msg.length, 8 + payload.length);
    assert.equal(msg[1], 0);
    assert.equal(msg.readUInt16BE(4), 7);
    assert.equal(msg.readUInt16BE(6), 9);
    if (fam === 'IPv4') {
      assert.equal(f[14 + 9], 1);
      assert.equal(msg[0], 8);
      assert.equal(internetChecksum(msg), 0);
    } else {
      assert.equal(f[14 + 6], 58);
      assert.equal(msg[0], 128);
      assert.equal(internetChecksum(pseudo(src, dst, 58, msg.length), msg), 0);
    }
  });

  test(`${fam} raw protocol number carries the payload as-is`, () => {
    const payload = Buffer.from('GRE-ish bytes');
    const f = buildFrame({ src, dst, proto: 47, payload });
    assert.equal(f[14 + (fam === 'IPv4' ? 9 : 6)], 47);
    assert.deepEqual(f.subarray(14 + l3), payload);
  });
}

test('IPv6 header fields', () => {
  const f = buildFrame({ src: '2001:db8::1', dst: '2001:db8::2', proto: 'udp', ttl: 5, payload: Buffer.alloc(3) });
  assert.equal(f.readUInt16BE(12), 0x86dd);
  assert.equal(f.length, 14 + 40 + 8 + 3);
  assert.equal(f.readUInt32BE(14), 0x60000000);
  assert.equal(f.readUInt16BE(18), 11);
  assert.equal(f[20], 17);
  assert.equal(f[21], 5);
  assert.deepEqual(f.subarray(22, 38), ipToBytes('2001:db8::1'));
  assert.deepEqual(f.subarray(38, 54), ipToBytes('2001:db8::2'));
});

test('VLAN tags sit between MACs and ethertype with their TPIDs', () => {
  const f = buildFrame({
    src: '10.0.0.1', dst: '10.0.0.2', proto: 'udp',
    vlans: [{ tpid: 0x88a8, vid: 100, pcp: 3 }, { vid: 4094 }],
  });
  assert.equal(f.readUInt16BE(12), 0x88a8);
  assert.equal(f.readUInt16BE(14), (3 << 13) | 100);
  assert.equal(f.readUInt16BE(16), 0x8100);
  assert.equal(f.readUInt16BE(18), 4094);
  assert.equal(f.readUInt16BE(20), 0x0800);
  assert.equal(f[22], 0x45);
  assert.equal(internetChecksum(f.subarray(22, 42)), 0);
  const p = parseFrame(f);
  assert.deepEqual(p.vlans, [{ tpid: 0x88a8, vid: 100 }, { tpid: 0x8100, vid: 4094 }]);
  assert.equal(p.etherType, 0x0800);
  assert.equal(p.l3Offset, 22);

  assert.throws(() => buildFrame({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'udp', vlans: [{ vid: 4096 }] }));
  assert.throws(() => buildFrame({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'udp', vlans: [{ vid: 1, pcp: 8 }] }));
});

test('IPv4 options are zero-padded and move the L4 header', () => {
  const opts = Buffer.from([0x94, 0x04, 0x00]); // router alert, missing its last byte on purpose
  const f = buildFrame({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'tcp', sport: 1111, dport: 2222, ipv4Options: opts });
  assert.equal(f[14], 0x46);
  assert.deepEqual(f.subarray(34, 38), Buffer.from([0x94, 0x04, 0x00, 0x00]));
  assert.equal(f.readUInt16BE(16), 24 + 20);
  assert.equal(internetChecksum(f.subarray(14, 38)), 0);
  assert.equal(f.readUInt16BE(38), 1111);
  assert.equal(f.readUInt16BE(40), 2222);
  assert.equal(internetChecksum(pseudo('10.0.0.1', '10.0.0.2', 6, 20), f.subarray(38)), 0);
  const p = parseFrame(f);
  assert.equal(p.sport, 1111);
  assert.equal(p.dport, 2222);

  const max = buildFrame({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'udp', ipv4Options: Buffer.alloc(40, 1) });
  assert.equal(max[14], 0x4f);
  assert.throws(() => buildFrame({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'udp', ipv4Options: Buffer.alloc(41, 1) }));
});

test('IPv4 fragments: MF/offset and omitL4', () => {
  const first = buildFrame({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'udp', moreFragments: true, ipId: 77, payload: Buffer.alloc(16) });
  assert.equal(first.readUInt16BE(20), 0x2000);
  assert.equal(internetChecksum(first.subarray(14, 34)), 0);
  const pf = parseFrame(first);
  assert.equal(pf.fragment, true);
  assert.equal(pf.sport, 12345);

  const payload = Buffer.from('rest of datagram');
  const later = buildFrame({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'udp', fragOffset: 3, omitL4: true, ipId: 77, payload });
  assert.equal(later.length, 14 + 20 + payload.length);
  assert.equal(later.readUInt16BE(20), 3);
  assert.equal(later.readUInt16BE(16), 20 + payload.length);
  assert.equal(later[23], 17);
  assert.deepEqual(later.subarray(34), payload);
  assert.equal(internetChecksum(later.subarray(14, 34)), 0);
  const pl = parseFrame(later);
  assert.equal(pl.fragment, true);
  assert.equal(pl.proto, 17);
  assert.equal(pl.sport, undefined);
  assert.equal(pl.dport, undefined);

  const last = buildFrame({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'tcp', fragOffset: 8191, moreFragments: true, omitL4: true });
  assert.equal(last.readUInt16BE(20), 0x3fff);
  assert.throws(() => buildFrame({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'tcp', fragOffset: 8192 }));

  assert.equal(parseFrame(buildFrame({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'tcp' })).fragment, false);
});

test('IPv6 extension headers and fragment header chain next-header values', () => {
  const body7 = Buffer.from([1, 2, 3, 4, 5, 6, 7]);
  const f = buildFrame({
    src: '2001:db8::1', dst: '2001:db8::2', proto: 'tcp', sport: 5000, dport: 6000,
    ipv6ExtHeaders: [{ type: 0 }, { type: 43, body: Buffer.from([0, 0, 0, 0, 0, 0]) }, { type: 60, body: body7 }],
    ipv6Fragment: { id: 0xcafebabe }, moreFragments: true,
  });
  let off = 14;
  assert.equal(f[off + 6], 0); // IPv6 -> hop-by-hop
  off += 40;
  // Hop-by-hop, empty body: minimum 8 bytes.
  assert.equal(f[off], 43);
  assert.equal(f[off + 1], 0);
  off += 8;
  // Routing, 6-byte body fits exactly in 8.
  assert.equal(f[off], 60);
  assert.equal(f[off + 1], 0);
  off += 8;
  // Dest-opts, 2 + 7 bytes rounds up to 16.
  assert.equal(f[off], 44);
  assert.equal(f[off + 1], 1);
  assert.deepEqual(f.subarray(off + 2, off + 9), body7);
  assert.deepEqual(f.subarray(off + 9, off + 16), Buffer.alloc(7));
  off += 16;
  // Fragment header.
  assert.equal(f[off], 6);
  assert.equal(f[off + 1], 0);
  assert.equal(f.readUInt16BE(off + 2), 1); // offset 0, M set
  assert.equal(f.readUInt32BE(off + 4), 0xcafebabe);
  off += 8;
  assert.equal(f.readUInt16BE(18), f.length - 54); // payload length covers ext headers + L4
  assert.equal(f.readUInt16BE(off), 5000);
  assert.equal(internetChecksum(pseudo('2001:db8::1', '2001:db8::2', 6, f.length - off), f.subarray(off)), 0);

  const p = parseFrame(f);
  assert.equal(p.version, 6);
  assert.equal(p.proto, 6);
  assert.equal(p.fragment, true);
  assert.equal(p.sport, 5000);
  assert.equal(p.dport, 6000);
});

test('IPv6 non-first fragment', () => {
  const payload = Buffer.from('tail bytes');
  const f = buildFrame({ src: '2001:db8::1', dst: '2001:db8::2', proto: 'udp', ipv6Fragment: true, fragOffset: 185, omitL4: true, payload });
  assert.equal(f.length, 14 + 40 + 8 + payload.length);
  assert.equal(f[20], 44);
  assert.equal(f.readUInt16BE(18), 8 + payload.length);
  assert.equal(f[54], 17);
  assert.equal(f.readUInt16BE(56), 185 << 3);
  assert.deepEqual(f.subarray(62), payload);
  const p = parseFrame(f);
  assert.equal(p.fragment, true);
  assert.equal(p.proto, 17);
  assert.equal(p.sport, undefined);

  // Fragment fields imply a fragment header; explicitly refusing one is an error.
  const implied = buildFrame({ src: '2001:db8::1', dst: '2001:db8::2', proto: 'udp', moreFragments: true });
  assert.equal(implied[20], 44);
  assert.throws(() => buildFrame({ src: '2001:db8::1', dst: '2001:db8::2', proto: 'udp', moreFragments: true, ipv6Fragment: false }));
});

test('family mismatches and cross-family options throw', () => {
  assert.throws(() => buildFrame({ src: '10.0.0.1', dst: '2001:db8::1', proto: 'tcp' }));
  assert.throws(() => buildFrame({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'tcp', ipv6Fragment: true }));
  assert.throws(() => buildFrame({ src: '2001:db8::1', dst: '2001:db8::2', proto: 'tcp', ipv4Options: Buffer.from([1]) }));
  assert.throws(() => buildFrame({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'tcp', sport: 70000 }));
});

test('padTo pads after the IP packet without changing IP length', () => {
  const f = buildFrame({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'udp', padTo: 60 });
  assert.equal(f.length, 60);
  assert.equal(f.readUInt16BE(16), 28);
  assert.deepEqual(f.subarray(42), Buffer.alloc(18));
  assert.equal(parseFrame(f).sport, 12345);
  assert.equal(buildFrame({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'udp', padTo: 10 }).length, 42);
});

test('parseFrame round-trips buildFrame', () => {
  const cases = [
    { src: '10.1.2.3', dst: '10.9.8.7', proto: 'tcp' as const, sport: 1, dport: 65535, num: 6 },
    { src: '10.1.2.3', dst: '10.9.8.7', proto: 'udp' as const, sport: 53, dport: 53, num: 17 },
    { src: 'fe80::1', dst: '2001:db8::abcd', proto: 'tcp' as const, sport: 2, dport: 3, num: 6 },
    { src: '::ffff:1.2.3.4', dst: '::ffff:5.6.7.8', proto: 'udp' as const, sport: 4, dport: 5, num: 17 },
  ];
  for (const c of cases) {
    const f = buildFrame({
      ...c, srcMac: 'AA:BB:CC:DD:EE:01', dstMac: '00:11:22:33:44:55', vlans: [{ vid: 10 }],
    });
    const p = parseFrame(f);
    assert.deepEqual(p, {
      dstMac: '00:11:22:33:44:55',
      srcMac: 'aa:bb:cc:dd:ee:01',
      vlans: [{ tpid: 0x8100, vid: 10 }],
      etherType: c.src.includes(':') ? 0x86dd : 0x0800,
      l3Offset: 18,
      version: c.src.includes(':') ? 6 : 4,
      src: c.src,
      dst: c.dst,
      proto: c.num,
      sport: c.sport,
      dport: c.dport,
      fragment: false,
    });
  }
  const icmp = parseFrame(buildFrame({ src: '2001:db8::1', dst: '2001:db8::2', proto: 'icmp' }));
  assert.equal(icmp.proto, 58);
  assert.equal(icmp.sport, undefined);
});

test('parseFrame never throws on truncated or garbage input', () => {
  const frames = [
    buildFrame({ src: '10.0.0.1', dst: '10.0.0.2', proto: 'tcp', vlans: [{ vid: 1 }, { vid: 2 }], ipv4Options: Buffer.alloc(8, 1), payload: Buffer.alloc(5) }),
    buildFrame({
      src: '2001:db8::1', dst: '2001:db8::2', proto: 'udp', vlans: [{ tpid: 0x88a8, vid: 3 }],
      ipv6ExtHeaders: [{ type: 0 }, { type: 60, body: Buffer.alloc(20) }], ipv6Fragment: true,
    }),
    buildArpRequest({ srcMac: '02:00:00:00:00:09', srcIp: '10.0.0.9', targetIp: '10.0.0.1' }),
  ];
  for (const f of frames) {
    const full = parseFrame(f);
    for (let len = 0; len <= f.length; len++) {
      const p = parseFrame(f.subarray(0, len));
      if (p.sport !== undefined) assert.equal(p.sport, full.sport);
      if (p.src !== undefined) assert.equal(p.src, full.src);
    }
  }
  // Bogus IHL and an extension-header length pointing past the end.
  const bad4 = Buffer.from(frames[0]);
  bad4[22] = 0x41;
  parseFrame(bad4);
  const bad6 = Buffer.from(frames[1]);
  bad6[18 + 40 + 1] = 255;
  assert.equal(parseFrame(bad6).proto, undefined);
  for (let i = 0; i < 200; i++) {
    parseFrame(Buffer.from(Array.from({ length: i }, (_, j) => (j * 7919 + i) & 0xff)));
  }
});

test('macToBytes / macToString', () => {
  assert.deepEqual(macToBytes('aa:bb:cc:dd:ee:ff'), hex('aabbccddeeff'));
  assert.deepEqual(macToBytes('AA:Bb:0c:00:01:F0'), hex('aabb0c0001f0'));
  assert.equal(macToString(hex('ffaabbccddeeff01'), 1), 'aa:bb:cc:dd:ee:ff');
  for (const bad of ['aa:bb:cc:dd:ee', 'gg:bb:cc:dd:ee:ff', 'aa:bb:cc:dd:ee:ff:00', 'a:bb:cc:dd:ee:ff', 'aa-bb-cc-dd-ee-ff', 'aabb.ccdd.eeff', '', ' aa:bb:cc:dd:ee:ff']) {
    assert.throws(() => macToBytes(bad), Error, bad);
  }
});

test('ipToBytes accepts valid and rejects malformed addresses', () => {
  assert.deepEqual(ipToBytes('1.2.3.4'), hex('01020304'));
  assert.deepEqual(ipToBytes('255.255.255.255'), hex('ffffffff'));
  assert.deepEqual(ipToBytes('2001:db8::1'), hex('20010db8000000000000000000000001'));
  assert.deepEqual(ipToBytes('::'), Buffer.alloc(16));
  assert.deepEqual(ipToBytes('::1'), hex('00000000000000000000000000000001'));
  assert.deepEqual(ipToBytes('fe80::'), hex('fe800000000000000000000000000000'));
  assert.deepEqual(ipToBytes('::ffff:1.2.3.4'), hex('00000000000000000000ffff01020304'));
  assert.deepEqual(ipToBytes('2001:DB8:0:0:0:0:0:1'), hex('20010db8000000000000000000000001'));
  assert.deepEqual(ipToBytes('1:2:3:4:5:6:7:8'), hex('00010002000300040005000600070008'));
  assert.deepEqual(ipToBytes('64:ff9b::192.0.2.33'), hex('0064ff9b0000000000000000c0000221'));
  for (const bad of ['1.2.3', '1.2.3.256', '1.2.3.4.5', '2001:db8:::1', '1::2::3', '1:2:3:4:5:6:7:8:9', 'fe80::1%eth0', '::ffff:1.2.3', 'hello', '']) {
    assert.throws(() => ipToBytes(bad), Error, bad);
  }
});

test('bytesToIp produces RFC 5952 canonical text', () => {
  const canon = (s: string): string => bytesToIp(ipToBytes(s));
  assert.equal(bytesToIp(hex('c0a80001')), '192.168.0.1');
  assert.equal(canon('2001:db8:0:0:0:0:0:1'), '2001:db8::1');
  assert.equal(canon('2001:0DB8:0000:0000:0000:0000:0000:0001'), '2001:db8::1');
  assert.equal(canon('2001:db8:0:1:1:1:1:1'), '2001:db8:0:1:1:1:1:1'); // lone zero group not compressed
  assert.equal(canon('2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1'); // tie: first run wins
  assert.equal(canon('2001:0:0:1:0:0:0:1'), '2001:0:0:1::1'); // longest run wins
  assert.equal(canon('0:0:0:0:0:0:0:0'), '::');
  assert.equal(canon('0:0:0:0:0:0:0:1'), '::1');
  assert.equal(canon('fe80:0:0:0:0:0:0:0'), 'fe80::');
  assert.equal(canon('::ffff:1.2.3.4'), '::ffff:1.2.3.4');
  assert.throws(() => bytesToIp(Buffer.alloc(5)));
});

test('ARP who-has request', () => {
  const f = buildArpRequest({ srcMac: '02:aa:bb:cc:dd:ee', srcIp: '192.0.2.1', targetIp: '192.0.2.99' });
  assert.equal(f.length, 42);
  assert.equal(macToString(f, 0), 'ff:ff:ff:ff:ff:ff');
  assert.equal(macToString(f, 6), '02:aa:bb:cc:dd:ee');
  assert.equal(f.readUInt16BE(12), 0x0806);
  assert.equal(f.readUInt16BE(14), 1);
  assert.equal(f.readUInt16BE(16), 0x0800);
  assert.equal(f[18], 6);
  assert.equal(f[19], 4);
  assert.equal(f.readUInt16BE(20), 1);
  assert.equal(macToString(f, 22), '02:aa:bb:cc:dd:ee');
  assert.deepEqual(f.subarray(28, 32), hex('c0000201'));
  assert.deepEqual(f.subarray(32, 38), Buffer.alloc(6));
  assert.deepEqual(f.subarray(38, 42), hex('c0000263'));
  const p = parseFrame(f);
  assert.equal(p.etherType, 0x0806);
  assert.equal(p.version, undefined);
  assert.throws(() => buildArpRequest({ srcMac: '02:aa:bb:cc:dd:ee', srcIp: '2001:db8::1', targetIp: '192.0.2.99' }));
});

test('ICMP frag-needed quotes the IP packet it is about; its checksum covers the message alone', () => {
  const quote = { src: '10.0.0.100', dst: '198.51.100.7', sport: 80, dport: 40001, proto: 'tcp' as const, payload: Buffer.alloc(1400, 7) };
  const inner = buildFrame(quote).subarray(14);
  const f = buildIcmpError({ src: '203.0.113.1', dst: '10.0.0.100', type: 3, code: 4, mtu: 1400, quote });
  const p = parseFrame(f);
  assert.deepEqual([p.src, p.dst, p.proto], ['203.0.113.1', '10.0.0.100', 1]);
  const msg = f.subarray(14 + 20);
  assert.deepEqual([msg[0], msg[1], msg.readUInt16BE(4), msg.readUInt16BE(6)], [3, 4, 0, 1400]);
  assert.equal(f.length, 14 + 576, 'quotes as much as keeps the error within 576 bytes');
  assert.deepEqual(msg.subarray(8), inner.subarray(0, 576 - 28));
  assert.equal(internetChecksum(msg), 0);
  assert.equal(internetChecksum(f.subarray(14, 34)), 0, 'IPv4 header checksum');

  const short = buildIcmpError({ src: '203.0.113.1', dst: '10.0.0.100', type: 11, quote, quoteLength: 28 });
  assert.deepEqual(short.subarray(14 + 28), inner.subarray(0, 28), 'IP header and 8 bytes, as RFC 792 asks');
  assert.equal(internetChecksum(short.subarray(14 + 20)), 0);
});

test('ICMPv6 packet too big: 32-bit MTU, checksum over the pseudo-header', () => {
  const quote = { src: '2001:db8::100', dst: '2001:db8:ffff::7', sport: 443, dport: 40001, proto: 'tcp' as const, payload: Buffer.alloc(1500, 1) };
  const inner = buildFrame(quote).subarray(14);
  const f = buildIcmpError({ src: '2001:db8:1::1', dst: '2001:db8::100', type: 2, mtu: 0x10005dc, quote });
  const msg = f.subarray(14 + 40);
  assert.equal(f.length, 14 + 1280, 'quotes as much as keeps the error within 1280 bytes');
  assert.deepEqual([msg[0], msg[1], msg.readUInt32BE(4)], [2, 0, 0x10005dc]);
  assert.deepEqual(msg.subarray(8), inner.subarray(0, 1280 - 48));
  assert.equal(internetChecksum(pseudo('2001:db8:1::1', '2001:db8::100', 58, msg.length), msg), 0);
  assert.notEqual(internetChecksum(msg), 0, 'the pseudo-header is part of it');
  assert.throws(() => buildIcmpError({ src: '2001:db8:1::1', dst: '2001:db8::100', type: 2, quote: { ...quote, src: '10.0.0.1', dst: '10.0.0.2' } }));
});
