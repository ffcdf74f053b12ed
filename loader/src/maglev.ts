// Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
// Software Network Load Balancer", NSDI 2016, section 3.4).
//
// The lookup table maps a flow hash (mod M) to a backend id. Each backend
// walks its own pseudo-random permutation of the slots and the backends take
// turns claiming their next preferred free slot, which gives near-equal
// shares and, when the backend set changes, moves few slots.

import { createHash } from 'node:crypto';

// Prime and comfortably larger than 100x any realistic backend count, which
// the paper recommends to keep shares within about 1% of each other.
export const DEFAULT_TABLE_SIZE = 65537;

export interface MaglevBackend {
  /** Written into table slots; 0 is "unset" in the data path, so must be nonzero. */
  id: number;
  /** Stable identity that drives the permutation (e.g. canonical address). */
  key: string;
  /** Relative share; 0 drains the backend (no slots). */
  weight: number;
}

export class MaglevError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MaglevError';
  }
}

const U32_MAX = 0xffffffff;
// Keeps cur + skip below 2^32 so the walk never needs a modulo or BigInt.
const MAX_TABLE_SIZE = 2 ** 31;

export function isPrime(n: number): boolean {
  if (!Number.isSafeInteger(n) || n < 2) return false;
  if (n % 2 === 0) return n === 2;
  if (n % 3 === 0) return n === 3;
  for (let d = 5; d * d <= n; d += 6) {
    if (n % d === 0 || n % (d + 2) === 0) return false;
  }
  return true;
}

function validateSize(size: number): void {
  if (!Number.isInteger(size) || size < 3 || size > MAX_TABLE_SIZE) {
    throw new MaglevError(`table size ${size} out of range: must be an integer in [3, 2^31]`);
  }
  // A prime M makes every skip in [1, M-1] coprime with M, so each
  // backend's sequence visits every slot exactly once.
  if (!isPrime(size)) {
    throw new MaglevError(`table size ${size} is not prime`);
  }
}

function validateBackends(backends: readonly MaglevBackend[], size: number): void {
  const keys = new Set<string>();
  const ids = new Set<number>();
  let active = 0;
  for (const b of backends) {
    if (typeof b.key !== 'string' || b.key.length === 0) {
      throw new MaglevError(`backend id ${b.id}: key must be a non-empty string`);
    }
    if (!Number.isInteger(b.id) || b.id < 0 || b.id > U32_MAX) {
      throw new MaglevError(`backend ${b.key}: id ${b.id} is not a u32 integer`);
    }
    if (b.id === 0) {
      throw new MaglevError(`backend ${b.key}: id 0 is reserved (means unset)`);
    }
    if (!Number.isInteger(b.weight)) {
      throw new MaglevError(`backend ${b.key}: weight ${b.weight} is not an integer`);
    }
    if (b.weight < 0) {
      throw new MaglevError(`backend ${b.key}: weight ${b.weight} is negative`);
    }
    // Weights are u32 in the data path; the bound also keeps claim arithmetic exact.
    if (b.weight > U32_MAX) {
      throw new MaglevError(`backend ${b.key}: weight ${b.weight} exceeds 2^32-1`);
    }
    if (keys.has(b.key)) {
      throw new MaglevError(`duplicate backend key ${b.key}`);
    }
    if (ids.has(b.id)) {
      throw new MaglevError(`duplicate backend id ${b.id} (key ${b.key})`);
    }
    keys.add(b.key);
    ids.add(b.id);
    if (b.weight > 0) active++;
  }
  if (active > size) {
    throw new MaglevError(
      `too many backends: ${active} with weight > 0 but table size is only ${size}`,
    );
  }
}

/**
 * Populate a Maglev lookup table. Output depends only on the set of
 * backends (keys, ids, weights), never on input order.
 */
export function buildMaglevTable(
  backends: readonly MaglevBackend[],
  size: number = DEFAULT_TABLE_SIZE,
): Uint32Array {
  validateSize(size);
  validateBackends(backends, size);

  const table = new Uint32Array(size);
  // Sorting by key (code-unit order, locale-independent) fixes the turn
  // order, which is the only thing besides the keys that affects the result.
  const active = backends
    .filter((b) => b.weight > 0)
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const n = active.length;
  if (n === 0) return table;

  const ids = new Uint32Array(n);
  const weights = new Float64Array(n);
  const skip = new Uint32Array(n);
  // Current permutation value for each backend: offset + j*skip (mod M).
  const cur = new Uint32Array(n);

  const bigM = BigInt(size);
  const bigM1 = BigInt(size - 1);
  let maxWeight = 0;
  let sumWeight = 0;
  for (let i = 0; i < n; i++) {
    const b = active[i];
    // Two disjoint 64-bit words of one digest act as the paper's two
    // independent hash functions; BigInt keeps the reduction exact.
    const digest = createHash('sha256').update(b.key, 'utf8').digest();
    const h1 = digest.readBigUInt64BE(0);
    const h2 = digest.readBigUInt64BE(8);
    ids[i] = b.id;
    weights[i] = b.weight;
    cur[i] = Number(h1 % bigM);
    skip[i] = Number(h2 % bigM1) + 1;
    if (b.weight > maxWeight) maxWeight = b.weight;
    sumWeight += b.weight;
  }

  // Walk backend i's permutation to its next free slot and take it. The walk
  // visits every slot, so a free one is always found while the table is not
  // full.
  const claim = (i: number): void => {
    let p = cur[i];
    const s = skip[i];
    while (table[p] !== 0) {
      p += s;
      if (p >= size) p -= size;
    }
    table[p] = ids[i];
    p += s;
    if (p >= size) p -= size;
    cur[i] = p;
  };

  // Weighted turns: in round r (from 1) every backend has earned r*weight of
  // credit and claims a slot each time its credit reaches another maxWeight,
  // so its k-th claim (k from 0) falls in round ceil((k+1)*maxWeight/weight),
  // with ties in a round going in sorted order. The heaviest backend claims
  // every round, so the table always fills, and claims are proportional to
  // weight. Equal weights reduce to the paper's plain round robin.
  //
  // Two equivalent schedulers: stepping round by round costs O(n * rounds),
  // cheapest when weights are similar but explosive when they are skewed
  // (1000:1 needs ~M rounds over all n backends); a min-heap keyed by
  // (round, position) costs O(M log n) regardless.
  const rounds = Math.ceil((size * maxWeight) / sumWeight);
  if (n * rounds <= 4 * size) {
    const credit = new Float64Array(n);
    let filled = 0;
    for (;;) {
      for (let i = 0; i < n; i++) {
        let c = credit[i] + weights[i];
        while (c >= maxWeight) {
          c -= maxWeight;
          claim(i);
          if (++filled === size) return table;
        }
        credit[i] = c;
      }
    }
  }

  // The heap tracks each ceiling incrementally as quotient plus remainder
  // (maxWeight = q*weight + rem), so no value grows past about 2^33 and the
  // arithmetic stays exact in doubles.
  const q = new Float64Array(n);
  const rem = new Float64Array(n);
  const base = new Float64Array(n); // floor((k+1)*maxWeight/weight)
  const acc = new Float64Array(n); // ((k+1)*maxWeight) mod weight
  const round = new Float64Array(n);
  const heap = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    q[i] = Math.floor(maxWeight / weights[i]);
    rem[i] = maxWeight - q[i] * weights[i];
    base[i] = q[i];
    acc[i] = rem[i];
    round[i] = acc[i] > 0 ? base[i] + 1 : base[i];
    heap[i] = i;
  }
  const before = (a: number, b: number): boolean =>
    round[a] < round[b] || (round[a] === round[b] && a < b);
  const siftDown = (pos: number): void => {
    const x = heap[pos];
    for (;;) {
      let child = 2 * pos + 1;
      if (child >= n) break;
      if (child + 1 < n && before(heap[child + 1], heap[child])) child++;
      if (!before(heap[child], x)) break;
      heap[pos] = heap[child];
      pos = child;
    }
    heap[pos] = x;
  };
  for (let pos = (n >> 1) - 1; pos >= 0; pos--) siftDown(pos);

  for (let filled = 0; filled < size; filled++) {
    const i = heap[0];
    claim(i);
    base[i] += q[i];
    acc[i] += rem[i];
    if (acc[i] >= weights[i]) {
      acc[i] -= weights[i];
      base[i] += 1;
    }
    round[i] = acc[i] > 0 ? base[i] + 1 : base[i];
    siftDown(0);
  }
  return table;
}

function checkSameSize(oldTable: Uint32Array, newTable: Uint32Array): void {
  if (oldTable.length !== newTable.length) {
    throw new MaglevError(
      `table size mismatch: old has ${oldTable.length} slots, new has ${newTable.length}`,
    );
  }
}

/** Slots whose value differs, with their new values, ready to push to a map. */
export function diffTables(
  oldTable: Uint32Array,
  newTable: Uint32Array,
): { slots: Uint32Array; ids: Uint32Array } {
  // Two passes so the result arrays are allocated once at their exact size.
  const count = countChanged(oldTable, newTable);
  const slots = new Uint32Array(count);
  const ids = new Uint32Array(count);
  let k = 0;
  for (let i = 0; i < newTable.length; i++) {
    if (oldTable[i] !== newTable[i]) {
      slots[k] = i;
      ids[k] = newTable[i];
      k++;
    }
  }
  return { slots, ids };
}

/** How many slots differ: what diffTables finds, without building its arrays (a plan only needs the count). */
export function countChanged(oldTable: Uint32Array, newTable: Uint32Array): number {
  checkSameSize(oldTable, newTable);
  let count = 0;
  for (let i = 0; i < newTable.length; i++) if (oldTable[i] !== newTable[i]) count++;
  return count;
}

/** Slot count per id; unfilled slots are counted under id 0. */
export function tableShares(table: Uint32Array): Map<number, number> {
  const shares = new Map<number, number>();
  for (let i = 0; i < table.length; i++) {
    const id = table[i];
    shares.set(id, (shares.get(id) ?? 0) + 1);
  }
  return shares;
}
