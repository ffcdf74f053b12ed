// What a benchmark makes and must not leave behind: pin directories of its scratch load balancers and the live
// benchmark's network namespace, each named with the process that made it. A benchmark killed where it cannot clean
// up (kill -9, or a signal during a long test run) leaves them; the next benchmark removes those whose process has
// gone. The pins live apart from the load balancers' (PIN_BASE), so that no command takes them for one and the
// sweep can never reach one.
import fs from 'node:fs';
import path from 'node:path';
import { BPFFS, Dataplane } from '../dataplane/dataplane';
import type { BuildOptions } from '../dataplane/build';
import { serviceKeyOf } from '../dataplane/layout';
import { buildMaglevTable } from '../maglev';
import { ipToBytes, macToBytes } from '../packet';
import { RUN_NETNS, deleteNetns } from './netns';

const NETNS_PREFIX = 'xdrb-';
export const BENCH_PIN_BASE = path.join(BPFFS, 'xdp-dr-bench');

/** Pin directory of a scratch load balancer of a process (this one by default). */
export function benchPinDir(name: string, pid = process.pid): string {
  return path.join(BENCH_PIN_BASE, `${name}-${pid}`);
}

/** The backends of every scratch load balancer (ids 1-3), and the MACs a frame gets towards one. */
export const SCRATCH_BACKENDS = [1, 2, 3].map((id) => ({ id, key: `192.0.2.${id}`, weight: 1 }));
export const scratchMacs = (id: number) => ({ dst_mac: macToBytes(`02:00:00:00:00:0${id}`), src_mac: macToBytes('02:00:00:00:00:ff') });

export interface ScratchService {
  id: number;
  vip: string;
  port: number;
  proto: 'tcp' | 'udp';
  flags?: number;
}

/** A load balancer (of the given build) pinned under benchPinDir(name), with SCRATCH_BACKENDS behind each service. */
export function loadScratchLb(name: string, services: readonly ScratchService[], build?: BuildOptions): Dataplane {
  const dp = Dataplane.load({ pinDir: benchPinDir(name), hashSeed: 1, build });
  try {
    for (const b of SCRATCH_BACKENDS)
      dp.setBackend(b.id, { ...scratchMacs(b.id), ifindex: 0, gen: b.id });
    const table = buildMaglevTable(SCRATCH_BACKENDS, dp.limits.tableSize);
    for (const s of services) {
      dp.installTable(s.id, table);
      dp.putService(serviceKeyOf(ipToBytes(s.vip), s.port, s.proto), { id: s.id, flags: s.flags ?? 0 });
    }
    return dp;
  } catch (e) {
    dp.discard();
    throw e;
  }
}

/** Name of this process's scratch network namespace. */
export function benchNetnsName(): string {
  return `${NETNS_PREFIX}${process.pid}`;
}

/** Whether a process runs (one of another user's counts). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function entries(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/** Removes the directory of benchmark pins once no benchmark has any there. */
export function tidyBenchPins(): void {
  try {
    fs.rmdirSync(BENCH_PIN_BASE);
  } catch {
    /* in use by another benchmark, or already gone */
  }
}

/** Removes what benchmarks of processes that no longer run left behind; returns what it removed. */
export function reapStale(): string[] {
  const removed: string[] = [];
  const pidOf = (name: string, prefix: string): number | null => {
    const m = name.startsWith(prefix) ? /-(\d+)$/.exec(name) : null;
    return m ? Number(m[1]) : null;
  };
  for (const name of entries(BENCH_PIN_BASE)) {
    const pid = pidOf(name, '');
    if (pid === null || pid === process.pid || alive(pid)) continue;
    fs.rmSync(path.join(BENCH_PIN_BASE, name), { recursive: true, force: true });
    removed.push(path.join(BENCH_PIN_BASE, name));
  }
  for (const name of entries(RUN_NETNS)) {
    const pid = pidOf(name, NETNS_PREFIX);
    if (pid === null || pid === process.pid || alive(pid)) continue;
    try {
      if (deleteNetns(name)) removed.push(`network namespace ${name}`);
    } catch {
      /* gone meanwhile, or no iproute2: nothing of ours to remove then */
    }
  }
  return removed;
}

/**
 * Runs body with cleanup registered for SIGINT and SIGTERM too: a signal runs cleanup and ends the process
 * (128 + the signal's number, as a shell reports it). For bodies that wait (an await), where a signal's handler gets
 * to run; a synchronous body leaves it to reapStale.
 */
export async function withSignalCleanup<T>(cleanup: () => void, body: () => Promise<T>): Promise<T> {
  const onSignal = (sig: NodeJS.Signals) => {
    try {
      cleanup();
    } finally {
      process.exit(128 + (sig === 'SIGINT' ? 2 : 15));
    }
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    return await body();
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    cleanup();
  }
}
