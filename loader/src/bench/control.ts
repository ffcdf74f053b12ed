// Control-plane benchmark: how long a change takes from "wanted services" to "in the maps", the way the CLI
// makes it (plan against the pinned state, Maglev tables, journaled writes), and what the maps cost in memory.
// The load balancer is bound to `lo` without attaching, and MACs are given, so no neighbour lookup is timed.
// Reference in the same run: one bare batch write of a full table into an array map, the floor for a table push.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Dataplane, PIN_BASE, createRing } from '../dataplane/dataplane';
import { RawMap } from '../libbpf';
import { MAGLEV_CHUNK, maglevChunk } from '../dataplane/layout';
import { validateConfig } from '../config';
import { prepare, apply } from '../lb/change';
import { Journal } from '../lb/apply';
import type { RawService } from '../lb/desired';

const RUNS = Number(process.env.BENCH_RUNS ?? 9);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

function mac(n: number): string {
  return `02:00:${[(n >> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255].map((x) => x.toString(16).padStart(2, '0')).join(':')}`;
}

function service(i: number, backends: number, offset = 0): RawService {
  const net = `10.${100 + (i >> 8)}.${i & 255}`;
  return {
    vip: `${net}.1`, port: 80, protocol: 'tcp', hash: 'l4',
    backends: Array.from({ length: backends }, (_, j) => ({ address: `${net}.${10 + offset + j}`, mac: mac(i * 256 + offset + j + 1), weight: 1 })),
  };
}

/** Bytes the kernel charges for a map (memlock in its fdinfo). */
function memlock(fd: number): number {
  const m = /memlock:\s+(\d+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

async function main(): Promise<void> {
  const pinDir = path.join(PIN_BASE, `bench-control-${process.pid}`);
  const dp = Dataplane.load({ pinDir, hashSeed: 1 });
  try {
    dp.lbInfo.update(0, { ...dp.lbInfo.lookup(0)!, ifindex: 1, mode: 1 });
    const change = async (list: RawService[]) => {
      const cfg = validateConfig({ hash_seed: 1, interfaces: [{ name: 'lo' }], services: list }, { limits: dp.limits });
      const t0 = process.hrtime.bigint();
      const p = await prepare({ iface: 'lo', dp }, cfg.services);
      const planned = ms(t0);
      const t1 = process.hrtime.bigint();
      const st = apply(p, new Journal());
      return { total: ms(t0), plan: planned, apply: ms(t1), slots: st.slotsWritten };
    };
    const M = dp.limits.tableSize;
    console.log(`xdp-dr control-plane benchmark: median of ${RUNS} runs, Maglev M=${M}`);
    console.log(`kernel ${os.release()}, ${os.cpus()[0]?.model ?? 'unknown CPU'}\n`);

    // Reference: one batch write of a whole table (every element) into a fresh table map.
    const ref: number[] = [];
    const n = Math.ceil(M / MAGLEV_CHUNK);
    const keys = Buffer.alloc(4 * n);
    const vals = Buffer.alloc(maglevChunk.size * n, 1);
    for (let i = 0; i < n; i++) keys.writeUInt32LE(i, 4 * i);
    // One full table rewrite: 10 backends replaced by 10 never seen before, so every slot changes.
    await change([service(0, 10)]);
    const full = [];
    for (let r = 0; r < RUNS; r++) {
      full.push(await change([service(0, 10, 20 * (r + 1))]));
      const ring = createRing(M, 0);
      const t0 = process.hrtime.bigint();
      ring.updateBatch(keys, vals);
      ref.push(ms(t0));
      ring.close();
    }
    // Every flow moves in these changes; fewer than M writes happen where the standby table (two changes old)
    // already holds the wanted id by chance.
    await change([]);

    // 100 services of 10 backends: created from nothing, then one backend added to each.
    const create = [];
    const grow = [];
    const hundred = Array.from({ length: 100 }, (_, i) => service(i, 10));
    const grown = hundred.map((s, i) => ({ ...s, backends: [...s.backends, service(i, 11).backends[10]] }));
    for (let r = 0; r < Math.max(3, Math.ceil(RUNS / 2)); r++) {
      create.push(await change(hundred));
      grow.push(await change(grown));
      await change([]);
    }

    const row = (name: string, xs: { total: number; plan: number; apply: number; slots: number }[]) =>
      console.log(
        `${name.padEnd(44)} ${median(xs.map((x) => x.total)).toFixed(1).padStart(8)} ms  ` +
          `(plan ${median(xs.map((x) => x.plan)).toFixed(1)} ms, writes ${median(xs.map((x) => x.apply)).toFixed(1)} ms, ` +
          `${median(xs.map((x) => x.slots))} slots)`,
      );
    console.log('change (plan + journaled writes)                 median');
    row(`one table, every slot to a new backend`, full);
    console.log(`${`  reference: bare batch write of ${M} slots`.padEnd(44)} ${median(ref).toFixed(1).padStart(8)} ms  ` +
      `(ratio ${(median(full.map((f) => f.apply)) / median(ref)).toFixed(1)}x for the writes)`);
    row('100 services x 10 backends, from nothing', create);
    row('100 services, one backend added to each', grow);

    // Memory the kernel charges, at the build's limits.
    await change(hundred);
    const mapFds = Object.entries({
      services: dp.services.raw, vip_filter: dp.vipFilter.raw, rings: dp.rings,
      backends: dp.backends.raw, tx_ports: dp.txPorts.raw, stats: dp.stats.raw, service_stats: dp.serviceStats.raw,
      backend_stats: dp.backendStats.raw, backend_meta: dp.backendMeta.raw, lb_info: dp.lbInfo.raw,
    });
    const fixed = mapFds.reduce((n, [, m]) => n + memlock(m.fd), 0);
    const inner = dp.rings.lookup(Buffer.from(new Uint32Array([dp.services.all()[0][1].id]).buffer))!;
    const ring = RawMap.fromId(inner.readUInt32LE(0), 'ring');
    const perService = 2 * memlock(ring.fd);
    ring.close();
    const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
    console.log(`\nmap memory (memlock, ${os.cpus().length} CPUs; per-CPU counters scale with the CPU count)`);
    for (const [name, m] of mapFds) console.log(`  ${name.padEnd(16)} ${String(memlock(m.fd)).padStart(12)} bytes`);
    console.log(`  ${'fixed maps'.padEnd(16)} ${String(fixed).padStart(12)} bytes (${mib(fixed)})`);
    console.log(`  ${'per service'.padEnd(16)} ${String(perService).padStart(12)} bytes (live + standby Maglev table of ${M} slots)`);
    console.log(`  with 100 services:        ${mib(fixed + 100 * perService)}`);
    console.log(`  at MAX_SERVICES=${dp.limits.maxServices}:     ${mib(fixed + dp.limits.maxServices * perService)}`);
    if (process.env.BENCH_JSON)
      fs.writeFileSync(process.env.BENCH_JSON, JSON.stringify({ full, ref, create, grow, fixed, perService }, null, 2));
  } finally {
    dp.discard();
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
