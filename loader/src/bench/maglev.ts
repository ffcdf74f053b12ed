// Maglev table quality, as the Maglev paper (NSDI 2016) measures it: how many slots move when one of N backends
// is removed or added (ideal: 1/N of the table), and how evenly slots are spread (max slots / mean slots; ideal 1).
// Pure computation over the same table builder the control plane uses; no kernel involved.
import { buildMaglevTable, DEFAULT_TABLE_SIZE, MaglevBackend } from '../maglev';
import { BenchResult, result } from './result';

export interface MaglevOptions {
  sizes: number[];
  tableSize: number;
  /** How many different backends to remove (and add) per N; the figure is the mean, the worst is in params. */
  trials: number;
  log?: (line: string) => void;
}

export const MAGLEV_DEFAULTS: MaglevOptions = { sizes: [10, 100, 1000], tableSize: DEFAULT_TABLE_SIZE, trials: 5 };

const backend = (i: number): MaglevBackend => ({ id: i + 1, key: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, weight: 1 });

function moved(a: Uint32Array, b: Uint32Array): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n;
}

function balance(t: Uint32Array, n: number): number {
  const counts = new Map<number, number>();
  for (const id of t) counts.set(id, (counts.get(id) ?? 0) + 1);
  return Math.max(...counts.values()) / (t.length / n);
}

export function runMaglev(opts: Partial<MaglevOptions> = {}): BenchResult[] {
  const o = { ...MAGLEV_DEFAULTS, ...opts };
  const results: BenchResult[] = [];
  for (const n of o.sizes) {
    const all = Array.from({ length: n + 1 }, (_, i) => backend(i));
    const base = all.slice(0, n);
    const table = buildMaglevTable(base, o.tableSize);
    // Spread the removed backends over the list; the added one is each time a backend never seen before.
    const picks = Array.from({ length: Math.min(o.trials, n) }, (_, k) => Math.floor((k * n) / Math.min(o.trials, n)));
    const removed = picks.map((p) => moved(table, buildMaglevTable(base.filter((_, i) => i !== p), o.tableSize)) / o.tableSize);
    const added = picks.map((_, k) => {
      const extra = backend(n + 1 + k);
      return moved(table, buildMaglevTable([...base, extra], o.tableSize)) / o.tableSize;
    });
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const ideal = { name: 'ideal 1/N', value: 1 / n };
    const params = { backends: n, table_size: o.tableSize, trials: picks.length };
    results.push(result(`slots moved, 1 of ${n} backends removed`, mean(removed), 'fraction', { ...params, worst: Math.max(...removed) }, ideal));
    results.push(result(`slots moved, 1 backend added to ${n}`, mean(added), 'fraction', { ...params, worst: Math.max(...added) },
      { name: 'ideal 1/(N+1)', value: 1 / (n + 1) }));
    results.push(result(`balance, ${n} backends (max slots / mean slots)`, balance(table, n), 'max/mean', params, { name: 'ideal', value: 1 }));
    o.log?.(`  N=${n} done`);
  }
  return results;
}
