// Test fixture: a real XDP program loaded into the kernel with its maps pinned in a directory of its own,
// removed again whatever the test does.
import path from 'node:path';
import { createHash } from 'node:crypto';
import { Dataplane, PIN_BASE } from '../../loader/src/dataplane/dataplane';
import { serviceKeyOf, SERVICE_FLAG, Counter } from '../../loader/src/dataplane/layout';
import { buildMaglevTable } from '../../loader/src/maglev';
import { ipToBytes, macToBytes } from '../../loader/src/packet';
import { BuildOptions } from '../../loader/src/dataplane/build';
import { validateConfig, type Service } from '../../loader/src/config';
import { prepare, apply } from '../../loader/src/lb/change';
import { Journal, type ApplyStats } from '../../loader/src/lb/apply';
import type { RawService } from '../../loader/src/lb/desired';

export const LB_MAC = '02:00:00:00:1b:01';
let seq = 0;

export function testPinDir(): string {
  return path.join(PIN_BASE, `test-${process.pid}-${seq++}`);
}

export { removePinDir as removePins } from '../../loader/src/dataplane/dataplane';

export async function withDataplane<T>(
  fn: (dp: Dataplane) => T | Promise<T>,
  opts: { hashSeed?: number; build?: BuildOptions } = {},
): Promise<T> {
  const dp = Dataplane.load({ pinDir: testPinDir(), hashSeed: opts.hashSeed ?? 0x5eed, build: opts.build });
  try {
    return await fn(dp);
  } finally {
    dp.discard();
  }
}

export interface TestBackend { id: number; ip: string; mac: string; ifindex?: number; weight?: number }
export interface TestService {
  id: number;
  vip: string;
  port: number;
  proto: 'tcp' | 'udp';
  l3?: boolean;
  backends: TestBackend[];
}

/** Writes a service the way the control plane does: backends first, then the table, then the service key. */
export function installService(dp: Dataplane, s: TestService): Uint32Array {
  for (const b of s.backends)
    dp.setBackend(b.id, { dst_mac: macToBytes(b.mac), src_mac: macToBytes(LB_MAC), ifindex: b.ifindex ?? 0, gen: b.id });
  const table = buildMaglevTable(
    s.backends.map((b) => ({ id: b.id, key: b.ip, weight: b.weight ?? 1 })),
    dp.limits.tableSize,
  );
  dp.installTable(s.id, table);
  dp.putService(serviceKeyOf(ipToBytes(s.vip), s.port, s.proto), { id: s.id, flags: s.l3 ? SERVICE_FLAG.SERVICE_F_HASH_L3 : 0 });
  return table;
}

export interface CounterSnapshot {
  stats: Map<number, Counter>;
  services: Map<number, Counter>;
  backends: Map<number, Counter>;
}

function summed(m: Map<number, Counter[]>): Map<number, Counter> {
  return new Map([...m].map(([k, v]) => [k, Dataplane.sum(v)]));
}

export function snapshot(dp: Dataplane): CounterSnapshot {
  return { stats: summed(dp.stats.all()), services: summed(dp.serviceStats.all()), backends: summed(dp.backendStats.all()) };
}

/** Per key, what moved between two snapshots (keys that did not move are left out). */
export function delta(a: Map<number, Counter>, b: Map<number, Counter>): Map<number, { packets: number; bytes: number }> {
  const out = new Map<number, { packets: number; bytes: number }>();
  for (const [k, v] of b) {
    const before = a.get(k) ?? { packets: 0n, bytes: 0n };
    const p = Number(v.packets - before.packets);
    const by = Number(v.bytes - before.bytes);
    if (p || by) out.set(k, { packets: p, bytes: by });
  }
  return out;
}

/**
 * Everything packets can tell of a load balancer, as comparable text: the active epoch and its half of every
 * epoch-dependent map, the maps shared by both halves (arrays: the nonzero entries), the contents of each active
 * service's Maglev table and (withTableIds) which map holds it. Two equal digests mean no packet could tell the
 * states apart.
 */
export function stateDigest(dp: Dataplane, opts: { withTableIds?: boolean } = {}): Record<string, string[]> {
  const hex = (b: Buffer) => b.toString('hex');
  const entries = (m: { raw: { lookupAll(): { keys: Buffer; values: Buffer; count: number }; info: { keySize: number }; valueBytes: number } }, keep = (_k: number) => true) => {
    const { keys, values, count } = m.raw.lookupAll();
    const out: string[] = [];
    for (let i = 0; i < count; i++) {
      const v = values.subarray(i * m.raw.valueBytes, (i + 1) * m.raw.valueBytes);
      const k = keys.subarray(i * m.raw.info.keySize, (i + 1) * m.raw.info.keySize);
      if (v.some((x) => x !== 0) && keep(k.length === 4 ? k.readUInt32LE(0) : 0)) out.push(`${hex(k)}=${hex(v)}`);
    }
    return out.sort();
  };
  const { active } = dp.epochState();
  const services = dp.servicesOf(active);
  const inHalf = (n: number) => (i: number) => Math.floor(i / n) === active;
  const digest: Record<string, string[]> = {
    epoch: [String(active)],
    services: services.map(([k, v]) => `${hex(dp.services.encodeKey({ key: k, epoch: active }))}=${v.id}/${v.flags}/${v.table}`).sort(),
    service_index: entries(dp.serviceIndex, inHalf(1 << dp.serviceIndexBits)),
    vip_filter: entries(dp.vipFilter),
    backends: entries(dp.backends, inHalf(dp.limits.maxBackends)),
    backend_meta: entries(dp.backendMeta, inHalf(dp.limits.maxBackends)),
    lb_info: entries(dp.lbInfo),
    tx_ports: [...dp.txPorts.entries()].map(([k, v]) => `${k}=${v}`).sort(),
    tables: services.map(([, v]) => {
      const t = dp.readTableSlot(v.table);
      return `${v.id}=${t ? createHash('sha256').update(t).digest('hex') : 'none'}`;
    }).sort(),
  };
  if (opts.withTableIds) digest.table_ids = services.map(([, v]) => `${v.id}=${dp.tableMapId(v.table)}`).sort();
  return digest;
}

/**
 * A load balancer with no change in its last grace period, as one is between changes seconds apart: the next change
 * then takes the same writes every time (right after a change it first waits for packets still reading).
 */
export function quiesce(dp: Dataplane): void {
  dp.waitForReaders();
  dp.setEpoch(dp.epochState().active, 1);
}

/** Services as the control plane takes them (the config file's shape), checked by the config rules. */
export function servicesOf(list: RawService[], hashSeed = 7): Service[] {
  return validateConfig({ hash_seed: hashSeed, interfaces: [{ name: 'lo', mode: 'native' }], services: list }).services;
}

export type Change = (s: RawService[], failAt?: number) => Promise<ApplyStats>;

/**
 * A load balancer bound to `lo` without attaching anything: changes go through the real plan and journal,
 * which only need the interface's index and MAC; backends get their MACs given, so no neighbour lookup runs.
 */
export async function withLb<T>(fn: (dp: Dataplane, change: Change) => Promise<T>, opts: { build?: BuildOptions } = {}): Promise<T> {
  return withDataplane(
    async (dp) => {
      dp.lbInfo.update(0, { ...dp.lbInfo.lookup(0)!, ifindex: 1, mode: 1 });
      const change: Change = async (s, failAt) => apply(await prepare({ iface: 'lo', dp }, servicesOf(s)), new Journal(failAt));
      return fn(dp, change);
    },
    { hashSeed: 7, build: opts.build },
  );
}
