// Control-plane benchmark: how long a change takes from "wanted services" to "in the maps", the way the CLI
// makes it (plan against the pinned state, Maglev tables, journaled writes), and what the maps cost in memory.
// The load balancer is bound to `lo` without attaching, and MACs are given, so no neighbour lookup is timed.
// Reference in the same run: one bare batch write of a full table into an array map, the floor for a table push.
import fs from 'node:fs';
import os from 'node:os';
import { Dataplane, createRing } from '../dataplane/dataplane';
import { benchPinDir } from './scratch';
import { RawMap } from '../libbpf';
import { BuildOptions } from '../dataplane/build';
import { BenchResult, median, result } from './result';
import { MAGLEV_CHUNK, maglevChunk } from '../dataplane/layout';
import { validateConfig } from '../config';
import { prepare, apply } from '../lb/change';
import { readState } from '../lb/state';
import { requireLink } from '../lb/instance';
import { Journal } from '../lb/apply';
import type { RawService } from '../lb/desired';

export interface ControlOptions {
  runs: number;
  log?: (line: string) => void;
}

export const CONTROL_DEFAULTS: ControlOptions = { runs: 9 };
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

/** switched: from the start until the write that switches packets to the new state has returned. */
type Change = { total: number; plan: number; apply: number; slots: number; switched: number };
/** Parts of one full-table change, each timed alone right after it (same maps, same state). */
type Parts = { state: number; link: number; grace: number };

const MAP_LABELS = [
  'services', 'service_index', 'vip_filter', 'rings', 'backends', 'tx_ports', 'stats', 'service_stats', 'backend_stats', 'backend_meta',
  'lb_info', 'conns', 'events', 'epoch',
] as const;

/** Memlock of every fixed map, and of one service's two tables, for a loaded dataplane with a table. */
function memory(dp: Dataplane, serviceId: number): { fixed: number; perService: number; maps: Record<string, number> } {
  const raw = {
    services: dp.services.raw, vip_filter: dp.vipFilter.raw, rings: dp.rings, backends: dp.backends.raw, tx_ports: dp.txPorts.raw,
    stats: dp.stats.raw, service_stats: dp.serviceStats.raw, backend_stats: dp.backendStats.raw, backend_meta: dp.backendMeta.raw,
    lb_info: dp.lbInfo.raw, conns: dp.conns.raw, events: dp.events.raw, service_index: dp.serviceIndex.raw, epoch: dp.epoch.raw,
  };
  const maps = Object.fromEntries(MAP_LABELS.map((n) => [n, memlock(raw[n].fd)]));
  const slot = dp.servicesOf().find(([, i]) => i.id === serviceId)?.[1].table ?? 2 * serviceId;
  const ring = RawMap.fromId(dp.tableMapId(slot)!, 'ring');
  const perService = 2 * memlock(ring.fd);
  ring.close();
  return { fixed: Object.values(maps).reduce((a, b) => a + b, 0), perService, maps };
}

/** Map memory of a build holding `services` services, measured with one service installed. */
function memoryOfBuild(build: BuildOptions, label: string, services: number): BenchResult {
  const dp = Dataplane.load({ pinDir: benchPinDir('control-mem'), hashSeed: 1, build });
  try {
    dp.installTable(0, new Uint32Array(dp.limits.tableSize));
    const m = memory(dp, 0);
    return result(`map memory, ${label}`, (m.fixed + services * m.perService) / 2 ** 20, 'MiB', {
      build, services, fixed_maps_bytes: m.fixed, per_service_bytes: m.perService, maps_bytes: m.maps, cpus: os.cpus().length,
      how: 'memlock of every fixed map as loaded, plus services x (its two tables) as measured for one service',
    });
  } finally {
    dp.discard();
  }
}

export async function runControl(opts: Partial<ControlOptions> = {}): Promise<BenchResult[]> {
  const o = { ...CONTROL_DEFAULTS, ...opts };
  const pinDir = benchPinDir('control');
  const dp = Dataplane.load({ pinDir, hashSeed: 1 });
  const results: BenchResult[] = [];
  try {
    dp.lbInfo.update(0, { ...dp.lbInfo.lookup(0)!, ifindex: 1, mode: 1 });
    const change = async (list: RawService[]): Promise<Change> => {
      const cfg = validateConfig({ hash_seed: 1, interfaces: [{ name: 'lo' }], services: list }, { limits: dp.limits });
      const t0 = process.hrtime.bigint();
      const p = await prepare({ iface: 'lo', dp }, cfg.services);
      const planned = ms(t0);
      const t1 = process.hrtime.bigint();
      let switched = NaN;
      let switching = false;
      // The write after the switch starts once the switch has returned.
      const st = apply(p, new Journal(undefined, (_n, what) => {
        if (switching && Number.isNaN(switched)) switched = ms(t0);
        switching = what.startsWith('switch to epoch');
      }));
      // A change with nothing to clean up returns right after its switch.
      const total = ms(t0);
      return { total, plan: planned, apply: ms(t1), slots: st.slotsWritten, switched: Number.isNaN(switched) ? total : switched };
    };
    const M = dp.limits.tableSize;

    // Reference: one batch write of a whole table (every element) into a fresh table map.
    const ref: number[] = [];
    const parts: Parts[] = [];
    const n = Math.ceil(M / MAGLEV_CHUNK);
    const keys = Buffer.alloc(4 * n);
    const vals = Buffer.alloc(maglevChunk.size * n, 1);
    for (let i = 0; i < n; i++) keys.writeUInt32LE(i, 4 * i);
    // One full table rewrite: 10 backends replaced by 10 never seen before, so every slot changes.
    await change([service(0, 10)]);
    const full: Change[] = [];
    const backToBack: Change[] = [];
    for (let r = 0; r < o.runs; r++) {
      // At a quiet load balancer (no change within the last grace period), as changes seconds apart find it; then
      // one right after it, which first waits for packets still reading the half it is about to write.
      dp.waitForReaders();
      dp.setEpoch(dp.epochState().active, 1);
      // Two disjoint sets of 10 in turn: every slot changes each time.
      full.push(await change([service(0, 10, 100)]));
      backToBack.push(await change([service(0, 10, 120)]));
      // What the plan and the writes are made of: reading the maps back, the interface lookup (an `ip` process),
      // and one wait for an RCU grace period (what a change right after another one, or one with clean-up, waits).
      let t = process.hrtime.bigint();
      readState(dp);
      const state = ms(t);
      t = process.hrtime.bigint();
      requireLink('lo');
      const link = ms(t);
      t = process.hrtime.bigint();
      dp.waitForReaders();
      parts.push({ state, link, grace: ms(t) });
      const ring = createRing(M, 0);
      const t0 = process.hrtime.bigint();
      ring.updateBatch(keys, vals);
      ref.push(ms(t0));
      ring.close();
    }
    // Every flow moves in these changes, and the table packets do not read is written whole each time.
    await change([]);
    const figures = (xs: Change[]) => ({
      plan_ms: median(xs.map((x) => x.plan)), writes_ms: median(xs.map((x) => x.apply)), slots_written: median(xs.map((x) => x.slots)),
      runs: xs.length, runs_ms: xs.map((x) => x.total), switched_ms: median(xs.map((x) => x.switched)),
    });
    const whole = result(`one ${M}-slot table, every slot to a new backend, at a quiet load balancer (plan + writes)`, median(full.map((f) => f.total)), 'ms',
      { ...figures(full), table_size: M }, { name: `bare batch write of ${M} slots`, value: median(ref) });
    const part = (k: keyof Parts) => median(parts.map((x) => x[k]));
    const plan = median(full.map((f) => f.plan));
    results.push(
      whole,
      result('  plan: read state, interface lookup, Maglev build, diff', plan, 'ms',
        { read_state_ms: part('state'), interface_lookup_ms: part('link'), rest_ms: plan - part('state') - part('link') },
        { name: 'read state + interface lookup, timed alone', value: part('state') + part('link') }),
      result('  writes: the table, the other half, the switch (and a grace period and clean-up, when there is any)',
        median(full.map((f) => f.apply)), 'ms', {}, { name: 'one RCU grace period alone (membarrier)', value: part('grace') }),
      result('the same change right after another one (it waits one grace period, while it plans)', median(backToBack.map((f) => f.total)), 'ms',
        { ...figures(backToBack), table_size: M }, { name: 'one RCU grace period alone (membarrier)', value: part('grace') }),
    );
    o.log?.(`  ${whole.name}: ${whole.value!.toFixed(1)} ms, live for packets after ${median(full.map((f) => f.switched)).toFixed(1)} ms`);

    // 100 services of 10 backends: created from nothing, then one backend added to each.
    const create: Change[] = [];
    const grow: Change[] = [];
    const hundred = Array.from({ length: 100 }, (_, i) => service(i, 10));
    const grown = hundred.map((s, i) => ({ ...s, backends: [...s.backends, service(i, 11).backends[10]] }));
    for (let r = 0; r < Math.max(3, Math.ceil(o.runs / 2)); r++) {
      create.push(await change(hundred));
      grow.push(await change(grown));
      await change([]);
    }
    results.push(result('100 services x 10 backends, from nothing', median(create.map((f) => f.total)), 'ms', figures(create)));
    results.push(result('100 services, one backend added to each', median(grow.map((f) => f.total)), 'ms', figures(grow)));
    o.log?.('  100-service changes done');

    // Memory the kernel charges (memlock), at the build's limits and at larger ones.
    await change([service(0, 10)]);
    const id = dp.servicesOf()[0][1].id;
    const m = memory(dp, id);
    const common = { fixed_maps_bytes: m.fixed, per_service_bytes: m.perService, maps_bytes: m.maps, cpus: os.cpus().length };
    results.push(result('map memory, default limits, 100 services', (m.fixed + 100 * m.perService) / 2 ** 20, 'MiB', { ...common, services: 100 }));
    results.push(result(`map memory, default limits, all ${dp.limits.maxServices} services`, (m.fixed + dp.limits.maxServices * m.perService) / 2 ** 20, 'MiB',
      { ...common, services: dp.limits.maxServices }));
  } finally {
    dp.discard();
  }
  results.push(memoryOfBuild({ MAX_SERVICES: 1000, MAX_BACKENDS: 10000, MAX_CONNS: 1_000_000 }, '1,000 services / 10,000 backends / 1,000,000 tracked flows build, all services', 1000));
  // The connection table is preallocated (an LRU hash always is): its memory is what its build asks for.
  const conns = (n: number): BenchResult => {
    const dp = Dataplane.load({ pinDir: benchPinDir('control-conns'), hashSeed: 1, build: n ? { MAX_CONNS: n } : {} });
    try {
      const bytes = memlock(dp.conns.raw.fd);
      return result(`map memory, connection table of ${dp.conns.capacity.toLocaleString('en')} tracked flows`, bytes / 2 ** 20, 'MiB',
        { max_conns: dp.conns.capacity, bytes, bytes_per_flow: bytes / dp.conns.capacity });
    } finally {
      dp.discard();
    }
  };
  results.push(conns(0), conns(1_000_000));
  return results;
}
