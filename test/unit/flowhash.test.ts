// Balance of the flow hash (loader/src/dataplane/flowhash.ts, which the packet tests hold to the program's own choices): flows
// through the hash and a Maglev table of equal backends land on each backend about as often as its share says,
// for random tuples and for the regular ones real traffic brings (one client's ports, a block of addresses).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { buildMaglevTable, DEFAULT_TABLE_SIZE } from '../../loader/src/maglev';
import { connBucket } from '../../loader/src/dataplane/layout';
import { flowHash, flowHashWords, maglevSlot, connBuckets, connCheck, CONN_GROUP_BUCKETS, FlowTuple } from '../../loader/src/dataplane/flowhash';

const FLOWS = 100_000;
const BACKENDS = 10;
const table = buildMaglevTable(
  Array.from({ length: BACKENDS }, (_, i) => ({ id: i + 1, key: `192.0.2.${i + 1}`, weight: 1 })),
  DEFAULT_TABLE_SIZE,
);

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

const ip4 = (n: number) => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');

/** Largest deviation of a backend's count from the ideal share, in percent of that share; and chi-square. */
function spread(flows: (i: number) => FlowTuple, seed: number, l3: boolean) {
  const counts = new Array<number>(BACKENDS + 1).fill(0);
  for (let i = 0; i < FLOWS; i++) counts[table[maglevSlot(flowHash(seed, flows(i), l3), table.length)]]++;
  const ideal = FLOWS / BACKENDS;
  const per = counts.slice(1);
  const worst = Math.max(...per.map((c) => Math.abs(c - ideal) / ideal)) * 100;
  const chi2 = per.reduce((s, c) => s + (c - ideal) ** 2 / ideal, 0);
  return { per, worst, chi2 };
}

// 9 degrees of freedom: chi-square above 33.7 happens by chance once in 10,000 runs.
const CHI2_MAX = 33.7;

const r = rng(7);
const cases: [string, (i: number) => FlowTuple, boolean][] = [
  ['random IPv4 5-tuples', () => ({ src: ip4(r()), dst: '10.0.0.100', sport: r() & 0xffff, dport: 80, proto: 6 }), false],
  // 60,000 ports a client: a tuple repeated would count twice and skew the figures.
  ['few clients, consecutive source ports', (i) => ({ src: `198.51.100.${7 + Math.floor(i / 60000)}`, dst: '10.0.0.100', sport: 1024 + (i % 60000), dport: 443, proto: 6 }), false],
  ['consecutive client addresses, one port', (i) => ({ src: ip4(0xc6120000 + i), dst: '10.0.0.100', sport: 40000, dport: 80, proto: 17 }), false],
  ['consecutive client addresses, source-IP persistence', (i) => ({ src: ip4(0x0a000000 + i), dst: '10.0.0.100', sport: 0, dport: 0, proto: 6 }), true],
  ['random IPv6 5-tuples', () => ({ src: `2001:db8:${(r() & 0xffff).toString(16)}::${(r() & 0xffff).toString(16)}:${(r() & 0xffff).toString(16)}`, dst: '2001:db8::100', sport: r() & 0xffff, dport: 80, proto: 6 }), false],
  ['consecutive IPv6 clients in one /64, source-IP persistence', (i) => ({ src: `2001:db8:1:2::${(i >>> 16).toString(16)}:${(i & 0xffff).toString(16)}`, dst: '2001:db8::100', sport: 0, dport: 0, proto: 6 }), true],
];

for (const [name, flows, l3] of cases) {
  test(`flow hash spreads ${FLOWS.toLocaleString('en')} flows evenly over ${BACKENDS} backends: ${name}`, (t) => {
    for (const seed of [0, 1, 0xdeadbeef]) {
      const s = spread(flows, seed, l3);
      t.diagnostic(`seed ${seed}: worst ${s.worst.toFixed(2)}% off the ideal share, chi-square ${s.chi2.toFixed(1)}`);
      assert.ok(s.chi2 < CHI2_MAX, `seed ${seed}: chi-square ${s.chi2.toFixed(1)} over ${BACKENDS} backends, counts ${s.per.join(' ')}`);
    }
  });
}

test('the seed changes where flows go', () => {
  const f: FlowTuple = { src: '198.51.100.7', dst: '10.0.0.100', sport: 40000, dport: 80, proto: 6 };
  const hashes = new Set([0, 1, 2, 3, 0xffffffff].map((seed) => flowHash(seed, f, false)));
  assert.equal(hashes.size, 5);
});

test("a flow's two connection buckets differ and lie in one 4 KB page; seconds spread over the page", () => {
  const n = 65536;
  const seen = new Set<number>();
  for (let i = 0; i < 20000; i++) {
    const h = (Math.imul(i, 0x9e3779b1) ^ (i >>> 7)) >>> 0;
    const [first, second] = connBuckets(h, 7, n);
    assert.notEqual(first, second);
    assert.equal(Math.floor(first / CONN_GROUP_BUCKETS), Math.floor(second / CONN_GROUP_BUCKETS), `h ${h}`);
    seen.add(first ^ second);
  }
  // Flows sharing a first bucket must not all share the second: every offset within the page is used.
  assert.equal(seen.size, CONN_GROUP_BUCKETS - 1);
  // The group is a page of buckets as the program lays them out (the codec is held to the program's BTF).
  assert.equal(CONN_GROUP_BUCKETS * connBucket.size, 4096);
});

test('the hash in 32-bit halves equals the 64-bit arithmetic of bpf/hash.h, edge values included', () => {
  // The C definitions in BigInt, as the oracle.
  const M64 = (1n << 64n) - 1n;
  const K = [0x9e3779b97f4a7c15n, 0xc2b2ae3d27d4eb4fn, 0x165667b19e3779f9n, 0x27d4eb2f165667c5n, 0xff51afd7ed558ccdn];
  const word = (w: bigint, seed: number, k: bigint) => ((w ^ (BigInt(seed >>> 0) * 0x100000001n)) * k) & M64;
  const pair = (lo: number, hi: number) => BigInt(lo >>> 0) | (BigInt(hi >>> 0) << 32n);
  const top = (x: bigint) => Number((x & M64) >> 32n);
  const scaleB = (x: number, n: number) => Number((BigInt(x >>> 0) * BigInt(n)) >> 32n);
  const edges = [0, 1, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
  let state = 12345;
  const rnd = () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) ^ (Math.imul(state, 0x9e3779b1) >>> 0);
  const value = (i: number) => (i < edges.length * 4 ? edges[i % edges.length] : rnd() >>> 0);
  for (let i = 0; i < 5000; i++) {
    const [seed, a, b, c, d, p] = [value(i), value(i + 1), value(i + 3), value(i + 5), value(i + 7), value(i + 2)];
    assert.equal(flowHashWords(seed, [a], [b], p, false), top(word(pair(a, p), seed, K[0])));
    assert.equal(flowHashWords(seed, [a], [b], p, true), top(word(pair(a, b), seed, K[0])));
    const src = [a, b, c, d], dst = [d, c, p, a];
    assert.equal(flowHashWords(seed, src, dst, p, false),
      top(word(pair(a, b), seed, K[0]) + word(pair(c, d), seed, K[1]) + word(BigInt(p >>> 0), seed, K[4])));
    assert.equal(flowHashWords(seed, src, dst, p, true),
      top(word(pair(a, b), seed, K[0]) + word(pair(c, d), seed, K[1]) + word(pair(d, c), seed, K[2]) + word(pair(p, a), seed, K[3])));
    assert.equal(connCheck(a, b, c, d, seed), top(word(pair(b, c), seed, K[1]) + word(pair(d, a), seed, K[2])));
    for (const n of [1, 2, 7, 16, 17, 64, 65536, (1 << 22) + 3]) {
      const first = scaleB(a, n);
      const second = (first ^ (1 + scaleB(top(word(BigInt(a >>> 0), seed, K[3])), 15))) % n;
      assert.deepEqual(connBuckets(a, seed, n), [first, second], `h ${a} seed ${seed} n ${n}`);
    }
    assert.equal(maglevSlot(a, 65537), scaleB(a, 65537));
  }
});
