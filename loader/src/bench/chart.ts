// An SVG bar chart of live results: Mpps by flow count, one bar per program, written beside the JSON.
import type { BenchResult } from './result';

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function liveChart(results: readonly BenchResult[], title: string): string {
  // Builds cut short (--stages) are not programs one runs: they stay in the JSON only.
  const groups = results.filter((r) => r.params.stage === undefined).map((r) => ({
    label: `${Number(r.params.flows).toLocaleString('en-US')} flow${r.params.flows === 1 ? '' : 's'}`,
    bars: [
      { name: r.reference ?? 'reference', value: r.reference_value ?? 0, color: '#9e9e9e' },
      { name: 'xdp-dr', value: r.value ?? 0, color: '#1f77b4' },
    ],
    ratio: r.ratio,
  }));
  const W = 640, H = 360, left = 56, right = 16, top = 48, bottom = 56;
  const max = Math.max(1e-9, ...groups.flatMap((g) => g.bars.map((b) => b.value)));
  const step = niceStep(max / 5);
  const yMax = Math.ceil(max / step) * step;
  const y = (v: number) => top + (H - top - bottom) * (1 - v / yMax);
  const gw = (W - left - right) / Math.max(1, groups.length);
  const bw = Math.min(48, (gw * 0.7) / 2);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`,
  ];
  for (let v = 0; v <= yMax + step / 2; v += step) {
    out.push(`<line x1="${left}" x2="${W - right}" y1="${y(v)}" y2="${y(v)}" stroke="#e0e0e0"/>`);
    out.push(`<text x="${left - 6}" y="${y(v) + 4}" text-anchor="end">${+v.toFixed(2)}</text>`);
  }
  out.push(`<text transform="translate(14 ${(top + H - bottom) / 2}) rotate(-90)" text-anchor="middle">Mpps forwarded</text>`);
  groups.forEach((g, i) => {
    const cx = left + gw * (i + 0.5);
    g.bars.forEach((b, j) => {
      const x = cx - bw + j * bw;
      out.push(`<rect x="${x}" y="${y(b.value)}" width="${bw - 2}" height="${y(0) - y(b.value)}" fill="${b.color}"><title>${esc(b.name)}: ${b.value.toFixed(2)} Mpps</title></rect>`);
      out.push(`<text x="${x + bw / 2 - 1}" y="${y(b.value) - 4}" text-anchor="middle" font-size="10">${b.value.toFixed(2)}</text>`);
    });
    out.push(`<text x="${cx}" y="${H - bottom + 16}" text-anchor="middle">${esc(g.label)}</text>`);
    if (g.ratio !== null) out.push(`<text x="${cx}" y="${H - bottom + 30}" text-anchor="middle" fill="#555">${(100 * g.ratio).toFixed(0)}%</text>`);
  });
  const legend = [['#9e9e9e', groups[0]?.bars[0].name ?? 'reference'], ['#1f77b4', 'xdp-dr']];
  legend.forEach(([color, name], k) => {
    out.push(`<rect x="${left + 10 + k * 120}" y="32" width="10" height="10" fill="${color}"/>`);
    out.push(`<text x="${left + 24 + k * 120}" y="41">${esc(name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p;
}
