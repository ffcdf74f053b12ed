// What every benchmark produces: results in one shape ({name, value, unit, reference, reference_value, ratio,
// params}), printed as a table, as JSON lines, and kept under bench-results/ with the machine they came from.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT } from '../dataplane/build';

export interface BenchResult {
  name: string;
  value: number | null;
  unit: string;
  /** What the value is compared with, measured in the same run; null when there is nothing to compare. */
  reference: string | null;
  reference_value: number | null;
  /** value / reference_value. */
  ratio: number | null;
  params: Record<string, unknown>;
}

export interface Machine {
  date: string;
  kernel: string;
  cpu_model: string;
  cpus: number;
  node: string;
}

export function machine(): Machine {
  return {
    date: new Date().toISOString(),
    kernel: os.release(),
    cpu_model: os.cpus()[0]?.model ?? 'unknown',
    cpus: os.cpus().length,
    node: process.version,
  };
}

export function result(
  name: string, value: number | null, unit: string, params: Record<string, unknown> = {},
  ref?: { name: string; value: number | null },
): BenchResult {
  const ratio = ref && value !== null && ref.value ? value / ref.value : null;
  return { name, value, unit, reference: ref?.name ?? null, reference_value: ref?.value ?? null, ratio, params };
}

export const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/**
 * The median of the ratios of runs taken back to back (ours[i] beside ref[i]): it holds up better than the ratio of
 * the medians when the machine's speed changes between runs.
 */
export const pairedRatio = (ours: readonly number[], ref: readonly number[]): number => median(ours.map((v, i) => v / ref[i]));

/**
 * The mean of the middle half of the paired ratios (the interquartile mean): BPF_PROG_TEST_RUN reports whole
 * nanoseconds, so at ~10 ns a median moves in steps of a tenth, too coarse for the difference of two figures; the
 * mean of the middle half resolves finer and still drops the runs that met a change of the machine's state.
 */
export const pairedRatioIqm = (ours: readonly number[], ref: readonly number[]): number => {
  const r = ours.map((v, i) => v / ref[i]).sort((a, b) => a - b);
  const q = Math.floor(r.length / 4);
  const mid = r.slice(q, r.length - q);
  return mid.reduce((a, b) => a + b, 0) / mid.length;
};

const fmt = (v: number | null, digits: number): string => (v === null ? '-' : Number.isInteger(v) ? String(v) : v.toFixed(digits));

/** A readable table of results: name, value, reference, ratio. */
export function formatTable(results: readonly BenchResult[], digits = 2): string[] {
  const rows = results.map((r) => [
    r.name,
    `${fmt(r.value, digits)} ${r.unit}`,
    r.reference ? `${fmt(r.reference_value, digits)} ${r.unit} (${r.reference})` : '',
    r.ratio === null ? '' : `${r.ratio.toFixed(2)}x`,
  ]);
  const head = ['result', 'value', 'reference, same run', 'ratio'];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === 1 || i === 3 ? c.padStart(w[i]) : c.padEnd(w[i]))).join('  ').trimEnd();
  return [line(head), ...rows.map(line)];
}

export const RESULTS_DIR = path.join(ROOT, 'bench-results');

/** Writes bench-results/<kind>-<date>.json (and any extra files beside it); returns the JSON path. */
export function saveResults(kind: string, results: readonly BenchResult[], extra: Record<string, string> = {}, dir = RESULTS_DIR): string {
  fs.mkdirSync(dir, { recursive: true });
  const m = machine();
  const stem = `${kind}-${m.date.replace(/[:.]/g, '-')}`;
  const file = path.join(dir, `${stem}.json`);
  fs.writeFileSync(file, JSON.stringify({ kind, machine: m, results }, null, 2) + '\n');
  for (const [ext, text] of Object.entries(extra)) fs.writeFileSync(path.join(dir, `${stem}.${ext}`), text);
  return file;
}
