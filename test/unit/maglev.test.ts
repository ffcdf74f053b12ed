import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  DEFAULT_TABLE_SIZE,
  MaglevBackend,
  MaglevError,
  buildMaglevTable,
  countChanged,
  diffTables,
  isPrime,
  tableShares,
} from '../../loader/src/maglev';

const M = DEFAULT_TABLE_SIZE;

function keyOf(i: number): string {
  return `10.0.${i >> 8}.${i & 255}`;
}

function makeBackends(n: number, start = 0): MaglevBackend[] {
  const out: MaglevBackend[] = [];
  for (let i = start; i < start + n; i++) out.push({ id: i + 1, key: keyOf(i), weight: 1 });
  return out;
}

// Seeded PRNG so shuffles are reproducible across runs.
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffled<T>(arr: readonly T[], seed: number): T[] {
  const rnd = mulberry32(seed);
  const out = arr.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

function slotKeys(table: Uint32Array, backends: readonly MaglevBackend[]): string[] {
  const byId = new Map(backends.map((b) => [b.id, b.key] as const));
  return Array.from(table, (id) => byId.get(id) ?? '');
}

function changedFraction(a: string[], b: string[]): number {
  let changed = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) changed++;
  return changed / a.length;
}

test('equal weights spread evenly with no empty slot', (t) => {
  for (const n of [3, 10, 100]) {
    const table = buildMaglevTable(makeBackends(n));
    assert.equal(table.length, M);
    assert.ok(!table.includes(0), `N=${n}: table has an empty slot`);
    const shares = tableShares(table);
    assert.equal(shares.size, n);
    const ideal = M / n;
    let worst = 0;
    for (const count of shares.values()) {
      worst = Math.max(worst, Math.abs(count - ideal) / ideal);
    }
    const msg = `N=${n}: ideal ${ideal.toFixed(2)} slots, min ${Math.min(...shares.values())}, max ${Math.max(...shares.values())}, worst deviation ${(worst * 100).toFixed(3)}%`;
    t.diagnostic(msg);
    console.log(msg);
    assert.ok(worst <= 0.01, msg);
  }
});

test('weights 1:2:3 give proportional shares', (t) => {
  const backends: MaglevBackend[] = [
    { id: 1, key: '10.0.0.1', weight: 1 },
    { id: 2, key: '10.0.0.2', weight: 2 },
    { id: 3, key: '10.0.0.3', weight: 3 },
  ];
  const table = buildMaglevTable(backends);
  assert.ok(!table.includes(0));
  const shares = tableShares(table);
  const parts: string[] = [];
  for (const b of backends) {
    const share = (shares.get(b.id) ?? 0) / M;
    const want = b.weight / 6;
    parts.push(`w=${b.weight}: ${share.toFixed(5)} (want ${want.toFixed(5)}, err ${Math.abs(share - want).toExponential(2)})`);
    assert.ok(Math.abs(share - want) <= 0.01, `weight ${b.weight}: share ${share} vs ${want}`);
  }
  const msg = `shares ${parts.join('; ')}`;
  t.diagnostic(msg);
  console.log(msg);
});

test('removing or adding one backend moves few slots', (t) => {
  const n = 10;
  const base = makeBackends(n);
  const before = slotKeys(buildMaglevTable(base), base);

  const removed = base.filter((_, i) => i !== 4);
  const afterRemove = slotKeys(buildMaglevTable(removed), removed);
  const fracRemove = changedFraction(before, afterRemove);
  const limitRemove = 1 / n + 0.02;
  let msg = `remove 1 of ${n}: ${(fracRemove * 100).toFixed(3)}% of slots moved (limit ${(limitRemove * 100).toFixed(1)}%)`;
  t.diagnostic(msg);
  console.log(msg);
  assert.ok(fracRemove <= limitRemove, msg);
  // Every slot of the removed backend must have moved.
  for (let i = 0; i < M; i++) {
    if (before[i] === keyOf(4)) assert.notEqual(afterRemove[i], keyOf(4));
  }

  const added = makeBackends(n + 1);
  const afterAdd = slotKeys(buildMaglevTable(added), added);
  const fracAdd = changedFraction(before, afterAdd);
  const limitAdd = 1 / n + 0.02;
  msg = `add 1 to ${n}: ${(fracAdd * 100).toFixed(3)}% of slots moved (ideal ${(100 / (n + 1)).toFixed(3)}%, limit ${(limitAdd * 100).toFixed(1)}%)`;
  t.diagnostic(msg);
  console.log(msg);
  assert.ok(fracAdd <= limitAdd, msg);
});

test('output is independent of input order and of id assignment', (t) => {
  const base = makeBackends(50);
  base[7].weight = 3;
  base[20].weight = 0;
  const ref = Buffer.from(buildMaglevTable(base).buffer);
  const seeds = [1, 2, 3, 42, 1234];
  for (const seed of seeds) {
    const table = buildMaglevTable(shuffled(base, seed));
    assert.ok(Buffer.from(table.buffer).equals(ref), `shuffle seed ${seed} differs`);
  }
  const reversed = buildMaglevTable(base.slice().reverse());
  assert.ok(Buffer.from(reversed.buffer).equals(ref), 'reversed order differs');

  // Same keys, different ids: slot -> key mapping must not change.
  const renumbered = base.map((b, i) => ({ ...b, id: 1000 + (base.length - i) * 7 }));
  const keysA = slotKeys(buildMaglevTable(base), base);
  const keysB = slotKeys(buildMaglevTable(shuffled(renumbered, 99)), renumbered);
  assert.deepEqual(keysB, keysA);
  const msg = `${seeds.length + 1} orderings and 1 renumbering produced identical tables (${ref.length} bytes)`;
  t.diagnostic(msg);
  console.log(msg);
});

test('weight 0 drains a backend; all zero gives an empty table', (t) => {
  const backends = makeBackends(5);
  backends[2].weight = 0;
  const table = buildMaglevTable(backends);
  const shares = tableShares(table);
  assert.equal(shares.get(backends[2].id), undefined);
  assert.ok(!table.includes(0));
  assert.equal(shares.size, 4);

  const drained = backends.map((b) => ({ ...b, weight: 0 }));
  const empty = buildMaglevTable(drained);
  assert.equal(empty.length, M);
  assert.ok(empty.every((v) => v === 0));
  assert.deepEqual(tableShares(empty), new Map([[0, M]]));
  assert.ok(buildMaglevTable([]).every((v) => v === 0));
  const msg = `drained backend slots: 0; other 4 backends: ${[...shares.values()].join(', ')}; all-drained table zero slots: ${M}`;
  t.diagnostic(msg);
  console.log(msg);
});

test('diffTables returns exactly the changed slots', (t) => {
  const oldB = makeBackends(10);
  const newB = makeBackends(10).filter((b) => b.id !== 3);
  newB.push({ id: 77, key: '10.0.9.9', weight: 2 });
  newB[0].weight = 3;
  const oldT = buildMaglevTable(oldB);
  const newT = buildMaglevTable(newB);
  const { slots, ids } = diffTables(oldT, newT);

  const naive: number[] = [];
  for (let i = 0; i < M; i++) if (oldT[i] !== newT[i]) naive.push(i);
  assert.deepEqual(Array.from(slots), naive);
  assert.equal(ids.length, slots.length);

  const patched = oldT.slice();
  for (let k = 0; k < slots.length; k++) patched[slots[k]] = ids[k];
  assert.ok(Buffer.from(patched.buffer).equals(Buffer.from(newT.buffer)));

  const same = diffTables(newT, newT);
  assert.equal(same.slots.length, 0);
  assert.equal(countChanged(oldT, newT), slots.length);
  assert.equal(countChanged(newT, newT), 0);
  assert.throws(() => countChanged(oldT, new Uint32Array(13)), /size mismatch/);
  assert.throws(() => diffTables(oldT, new Uint32Array(13)), MaglevError);
  assert.throws(() => diffTables(oldT, new Uint32Array(13)), /size mismatch/);

  const msg = `diff: ${slots.length} of ${M} slots changed (${((slots.length / M) * 100).toFixed(3)}%), patch reproduces new table`;
  t.diagnostic(msg);
  console.log(msg);
});

test('invalid input throws MaglevError naming the problem', (t) => {
  const ok = makeBackends(3);
  const cases: Array<[string, () => unknown, RegExp]> = [
    ['non-prime size', () => buildMaglevTable(ok, 65536), /not prime/],
    ['size too small', () => buildMaglevTable(ok, 2), /out of range/],
    ['size too large', () => buildMaglevTable(ok, 2 ** 31 + 11), /out of range/],
    ['non-integer size', () => buildMaglevTable(ok, 13.5), /out of range/],
    ['duplicate key', () => buildMaglevTable([...ok, { id: 9, key: ok[0].key, weight: 1 }]), /duplicate backend key/],
    ['duplicate id', () => buildMaglevTable([...ok, { id: ok[1].id, key: '10.9.9.9', weight: 1 }]), /duplicate backend id/],
    ['id 0', () => buildMaglevTable([{ id: 0, key: '10.0.0.1', weight: 1 }]), /id 0 is reserved/],
    ['id not u32', () => buildMaglevTable([{ id: 2 ** 32, key: '10.0.0.1', weight: 1 }]), /not a u32/],
    ['id fractional', () => buildMaglevTable([{ id: 1.5, key: '10.0.0.1', weight: 1 }]), /not a u32/],
    ['negative weight', () => buildMaglevTable([{ id: 1, key: '10.0.0.1', weight: -1 }]), /negative/],
    ['non-integer weight', () => buildMaglevTable([{ id: 1, key: '10.0.0.1', weight: 0.5 }]), /not an integer/],
    ['NaN weight', () => buildMaglevTable([{ id: 1, key: '10.0.0.1', weight: NaN }]), /not an integer/],
    ['empty key', () => buildMaglevTable([{ id: 1, key: '', weight: 1 }]), /key must be/],
    ['more backends than size', () => buildMaglevTable(makeBackends(14), 13), /too many backends/],
  ];
  for (const [name, fn, re] of cases) {
    assert.throws(fn, MaglevError, name);
    assert.throws(fn, re, name);
  }
  // Drained backends don't count toward the size limit.
  const many = makeBackends(20).map((b, i) => ({ ...b, weight: i < 13 ? 1 : 0 }));
  assert.equal(buildMaglevTable(many, 13).length, 13);
  const msg = `${cases.length} invalid inputs rejected with MaglevError`;
  t.diagnostic(msg);
  console.log(msg);
});

test('small prime table sizes work', (t) => {
  assert.deepEqual(
    // 2147117569 = 46337^2 exercises the trial-division bound.
    [2, 3, 4, 13, 15, 251, 253, 65537, 65541, 2147483647, 2147117569, 1, 0, -7, 9.5].map(isPrime),
    [true, true, false, true, false, true, false, true, false, true, false, false, false, false, false],
  );
  const parts: string[] = [];
  for (const size of [13, 251]) {
    for (const n of [3, 10]) {
      const table = buildMaglevTable(makeBackends(n), size);
      assert.equal(table.length, size);
      assert.ok(!table.includes(0));
      const counts = [...tableShares(table).values()];
      assert.equal(counts.length, n);
      // Equal weights take one slot per round, so counts differ by at most 1.
      assert.ok(Math.max(...counts) - Math.min(...counts) <= 1, `M=${size} N=${n}: ${counts}`);
      parts.push(`M=${size} N=${n}: min ${Math.min(...counts)} max ${Math.max(...counts)}`);
    }
  }
  // As many backends as slots: each gets exactly one.
  const full = buildMaglevTable(makeBackends(13), 13);
  assert.deepEqual(Array.from(full).sort((a, b) => a - b), Array.from({ length: 13 }, (_, i) => i + 1));
  const msg = parts.join('; ') + '; M=13 N=13: one slot each';
  t.diagnostic(msg);
  console.log(msg);
});

// Times are printed for the reader, never asserted: these machines are shared and noisy.
test('1000 backends at the default size: skewed weights keep their share (build times printed)', (t) => {
  const backends = makeBackends(1000);
  buildMaglevTable(backends); // warm up the JIT
  const runs = 5;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < runs; i++) buildMaglevTable(backends);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6 / runs;

  const mixed = backends.map((b, i) => ({ ...b, weight: 1 + (i % 100) }));
  const t1 = process.hrtime.bigint();
  const mixedTable = buildMaglevTable(mixed);
  const msMixed = Number(process.hrtime.bigint() - t1) / 1e6;
  assert.ok(!mixedTable.includes(0));

  // One heavy backend among many light ones: many rounds, few claims each.
  const skewed = backends.map((b, i) => ({ ...b, weight: i === 0 ? 1000 : 1 }));
  const t2 = process.hrtime.bigint();
  const skewedTable = buildMaglevTable(skewed);
  const msSkewed = Number(process.hrtime.bigint() - t2) / 1e6;
  const heavy = tableShares(skewedTable).get(1) ?? 0;
  // 1000 / (1000 + 999) of the table, give or take a slot per backend.
  assert.ok(Math.abs(heavy / M - 1000 / 1999) <= 0.01, `heavy share ${heavy / M}`);

  const msg = `M=${M} N=1000: ${ms.toFixed(2)} ms/build (equal weights, mean of ${runs}); ${msMixed.toFixed(2)} ms (weights 1..100); ${msSkewed.toFixed(2)} ms (weights 1000:1x999, heavy share ${(heavy / M).toFixed(4)})`;
  t.diagnostic(msg);
  console.log(msg);
});

// Straight transcription of the algorithm with full permutation arrays and a
// round-by-round credit loop; the optimised builder must match it exactly.
function referenceTable(backends: readonly MaglevBackend[], size: number): Uint32Array {
  const active = backends
    .filter((b) => b.weight > 0)
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const table = new Uint32Array(size);
  if (active.length === 0) return table;
  const perms = active.map((b) => {
    const hex = createHash('sha256').update(b.key).digest('hex');
    const offset = Number(BigInt('0x' + hex.slice(0, 16)) % BigInt(size));
    const skip = Number(BigInt('0x' + hex.slice(16, 32)) % BigInt(size - 1)) + 1;
    return Array.from({ length: size }, (_, j) => (offset + j * skip) % size);
  });
  const next = active.map(() => 0);
  const credit = active.map(() => 0);
  const maxWeight = Math.max(...active.map((b) => b.weight));
  let filled = 0;
  while (filled < size) {
    for (let i = 0; i < active.length && filled < size; i++) {
      credit[i] += active[i].weight;
      while (credit[i] >= maxWeight && filled < size) {
        credit[i] -= maxWeight;
        let slot = perms[i][next[i]];
        while (table[slot] !== 0) slot = perms[i][++next[i]];
        table[slot] = active[i].id;
        next[i]++;
        filled++;
      }
    }
  }
  return table;
}

test('matches a naive reference for equal, mixed and skewed weights', (t) => {
  const configs: Array<[string, MaglevBackend[], number]> = [
    ['equal N=50', makeBackends(50), M],
    ['1:2:3', makeBackends(3).map((b, i) => ({ ...b, weight: i + 1 })), M],
    ['weights 1..50', makeBackends(50).map((b, i) => ({ ...b, weight: i + 1 })), M],
    ['1000:1 x49', makeBackends(50).map((b, i) => ({ ...b, weight: i === 0 ? 1000 : 1 })), M],
    ['near-u32 weights', makeBackends(4).map((b, i) => ({ ...b, weight: [2 ** 32 - 1, 2 ** 32 - 2, 2 ** 31, 3][i] })), 1009],
    ['u32 max vs 1 x19', makeBackends(20).map((b, i) => ({ ...b, weight: i === 5 ? 2 ** 32 - 1 : 1 })), 1009],
    ['skewed N=200 M=251', makeBackends(200).map((b, i) => ({ ...b, weight: i % 7 === 0 ? 97 : 1 + (i % 3) })), 251],
    ['N=M=13', makeBackends(13).map((b, i) => ({ ...b, weight: 1 + i })), 13],
  ];
  for (const [name, backends, size] of configs) {
    const got = buildMaglevTable(backends, size);
    const want = referenceTable(backends, size);
    assert.ok(Buffer.from(got.buffer).equals(Buffer.from(want.buffer)), `${name}: differs from reference`);
  }
  const msg = `${configs.length} configurations identical to the reference (${configs.map((c) => c[0]).join(', ')})`;
  t.diagnostic(msg);
  console.log(msg);
});

test('matches the naive reference on random backend sets, weights and sizes', (t) => {
  const rnd = mulberry32(20261126);
  const sizes = [13, 251, 1009, 4093, M];
  const cases = 40;
  for (let c = 0; c < cases; c++) {
    const size = sizes[Math.floor(rnd() * sizes.length)];
    const n = 1 + Math.floor(rnd() * Math.min(size, 60));
    // Weights from 0 (drained) through small to skewed and near 2^32, keys of both families and odd text.
    const weight = (): number => {
      const r = rnd();
      return r < 0.1 ? 0 : r < 0.7 ? 1 + Math.floor(rnd() * 5) : r < 0.9 ? 1 + Math.floor(rnd() * 1000) : 2 ** 32 - 1 - Math.floor(rnd() * 1000);
    };
    const key = (i: number): string =>
      rnd() < 0.5 ? `10.${c}.${i >> 8}.${i & 255}` : rnd() < 0.5 ? `fd00::${c.toString(16)}:${i.toString(16)}` : `rs-${c}-${i}-é`;
    const ids = shuffled(Array.from({ length: n }, (_, i) => 1 + i * 7 + Math.floor(rnd() * 7)), c);
    const backends = Array.from({ length: n }, (_, i) => ({ id: ids[i], key: key(i), weight: weight() }));
    const got = buildMaglevTable(backends, size);
    const want = referenceTable(backends, size);
    assert.ok(Buffer.from(got.buffer).equals(Buffer.from(want.buffer)), `case ${c} (N=${n}, M=${size}): differs from reference`);
  }
  t.diagnostic(`${cases} random configurations identical to the reference`);
});
