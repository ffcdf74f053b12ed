// The benchmark framework without timing anything: result shape and ratios, the table, the files under
// bench-results/, the live chart, and the Maglev figures (pure computation, deterministic).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { result, formatTable, saveResults, median, pairedRatio, pairedRatioIqm } from '../../loader/src/bench/result';
import { liveChart } from '../../loader/src/bench/chart';
import { runMaglev } from '../../loader/src/bench/maglev';

test('a result carries its reference and the ratio to it; without one, the ratio is null', () => {
  assert.deepEqual(result('x', 30, 'ns/packet', { a: 1 }, { name: 'xdp_min', value: 15 }), {
    name: 'x', value: 30, unit: 'ns/packet', reference: 'xdp_min', reference_value: 15, ratio: 2, params: { a: 1 },
  });
  assert.equal(result('y', 3, 'ms').ratio, null);
  assert.equal(result('z', null, 'MiB', {}, { name: 'r', value: 1 }).ratio, null);
  assert.equal(median([5, 1, 3]), 3);
  assert.equal(median([4, 1, 3, 2]), 2.5);
});

test('paired ratios: the median of run-by-run ratios, and the mean of their middle half, which drops outliers', () => {
  const ref = [10, 10, 10, 10, 10, 10, 10, 10];
  const ours = [20, 21, 21, 21, 20, 21, 90, 1];
  // Sorted: 0.1 2 2 2.1 2.1 2.1 2.1 9: the median is 2.1, the mean of the middle half (2 2.1 2.1 2.1) 2.075.
  assert.ok(Math.abs(pairedRatio(ours, ref) - 2.1) < 1e-9);
  assert.ok(Math.abs(pairedRatioIqm(ours, ref) - 2.075) < 1e-9);
});

test('the table has a row per result and leaves the reference empty where there is none', () => {
  const lines = formatTable([result('a', 2, 'ms', {}, { name: 'ref', value: 1 }), result('b', null, 'MiB')]);
  assert.equal(lines.length, 3);
  assert.match(lines[1], /^a\s+2 ms\s+1 ms \(ref\)\s+2\.00x$/);
  assert.match(lines[2], /^b\s+- MiB$/);
});

test('results are saved with the machine they came from, extra files beside them', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xdr-bench-'));
  try {
    const file = saveResults('live', [result('a', 1, 'Mpps')], { svg: '<svg/>' }, dir);
    const saved = JSON.parse(fs.readFileSync(file, 'utf8'));
    assert.equal(saved.kind, 'live');
    assert.equal(saved.machine.kernel, os.release());
    assert.ok(saved.machine.cpu_model && saved.machine.date);
    assert.equal(saved.results.length, 1);
    assert.equal(fs.readFileSync(file.replace(/\.json$/, '.svg'), 'utf8'), '<svg/>');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the live chart draws two bars per flow count with their values and the ratio', () => {
  const rs = [1, 10000].map((flows, i) => result(`live ${flows}`, 3 + i, 'Mpps', { flows }, { name: 'xdp_min', value: 4 + i }));
  const svg = liveChart(rs, 'a <title>');
  assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.equal((svg.match(/<rect x=/g) ?? []).length, 4 + 2); // bars + legend
  assert.match(svg, /10,000 flows/);
  assert.match(svg, /xdp-dr: 4\.00 Mpps/);
  assert.match(svg, />80%</);
  assert.match(svg, /a &lt;title&gt;/);
});

test('Maglev: one of ten backends removed moves about a tenth of the slots; the table is balanced', () => {
  const r = runMaglev({ sizes: [10], trials: 3 });
  const removed = r.find((x) => x.name.includes('removed'))!;
  assert.equal(removed.reference_value, 0.1);
  assert.ok(removed.value! >= 0.1 && removed.value! < 0.12, String(removed.value));
  const bal = r.find((x) => x.name.startsWith('balance'))!;
  assert.ok(bal.value! >= 1 && bal.value! < 1.01, String(bal.value));
});
