// One change to one load balancer, start to end: look up the interfaces and real-server MACs the wanted
// services need, plan the writes against what runs, and (unless it is a dry run) apply them as one transaction.
import { Dataplane } from '../dataplane/dataplane';
import type { Service } from '../config';
import { UsageError } from '../errors';
import { logger } from '../log';
import { LbState, readState } from './state';
import { MacChoice, Plan, planChange } from './plan';
import { applyPlan, ApplyStats, Journal } from './apply';
import { LinkInfo, MacAnswer, resolveMacs } from './netif';
import { requireLink } from './instance';

export class ResolveError extends Error {
  override name = 'ResolveError';
}

export interface Target {
  iface: string;
  dp: Dataplane;
}

export interface Prepared {
  target: Target;
  state: LbState;
  plan: Plan;
  warnings: string[];
  /** The active epoch when planning began, if a grace period has passed since the switch to it. */
  readersGone?: number;
}

export interface PrepareOptions {
  /** Addresses whose given MAC was resolved earlier (kept as such by commands that only carry it over). */
  resolvedMacs?: Set<string>;
  resolveTimeoutMs?: number;
  /** Answers already read from the neighbour table, by `${iface}/${address}`; only the others are looked up. */
  neighbours?: Map<string, MacAnswer>;
}

/** Everything that can fail for a reason outside the maps happens here, before any write. */
export async function prepare(target: Target, services: Service[], opts: PrepareOptions = {}): Promise<Prepared> {
  // Right after another change, packets may still read the half this one will write, and it must wait a grace
  // period before its first write: that wait runs on a worker thread while the change is planned.
  const epoch = target.dp.epochState();
  const readers = epoch.quiescent ? undefined : target.dp.waitForReadersAsync().catch(() => false);
  const state = readState(target.dp);
  const ingress = requireLink(target.iface);
  if (ingress.ifindex !== state.ifindex)
    throw new UsageError(
      `${target.iface} now has ifindex ${ingress.ifindex}, but the load balancer was attached to ifindex ${state.ifindex}: ` +
        `the interface was re-created; 'xdp-dr detach ${target.iface}' and attach again`,
    );
  const egress = new Map<string, LinkInfo>();
  for (const s of services)
    for (const b of s.backends)
      if (b.interface && b.interface !== target.iface && !egress.has(b.interface)) egress.set(b.interface, requireLink(b.interface));

  const warnings: string[] = [];
  const macs = new Map<string, MacChoice>();
  const ask = new Map<string, string>(); // address -> interface it must be reached through
  for (const s of services)
    for (const b of s.backends) {
      if (b.mac) macs.set(b.address, { mac: b.mac, resolved: opts.resolvedMacs?.has(b.address) ?? false });
      else ask.set(b.address, b.interface ?? target.iface);
    }
  for (const a of macs.keys()) ask.delete(a); // a MAC given for one service serves all of them
  if (ask.size) {
    const answers = new Map(opts.neighbours ?? []);
    const unknown = [...ask].filter(([address, iface]) => !answers.has(`${iface}/${address}`));
    if (unknown.length)
      for (const [k, a] of await resolveMacs(unknown.map(([address, iface]) => ({ address, iface })), { timeoutMs: opts.resolveTimeoutMs }))
        answers.set(k, a);
    const running = new Map(state.services.flatMap((s) => s.backends.map((b) => [b.address, b] as const)));
    const failed: string[] = [];
    for (const [address, iface] of ask) {
      const a = answers.get(`${iface}/${address}`);
      if (a?.mac) {
        macs.set(address, { mac: a.mac, resolved: true });
        continue;
      }
      // A real server that is already in use keeps its MAC rather than failing an unrelated change.
      const cur = running.get(address);
      if (cur?.macResolved) {
        warnings.push(`${a?.error ?? `no MAC for ${address}`}; keeping ${cur.mac}, which it had`);
        macs.set(address, { mac: cur.mac, resolved: true });
        continue;
      }
      failed.push(a?.error ?? `no MAC for ${address} on ${iface}`);
    }
    if (failed.length) throw new ResolveError(failed.join('\n'));
  }

  const plan = planChange({ dp: target.dp, state, ingress, egress, services, macs });
  const readersGone = readers && (await readers) ? epoch.active : undefined;
  return { target, state, plan, warnings, readersGone };
}

export function apply(p: Prepared, journal: Journal): ApplyStats {
  const t0 = process.hrtime.bigint();
  const stats = applyPlan(p.target.dp, p.plan, journal, p.readersGone);
  logger.debug('change applied', { iface: p.target.iface, writes: stats.writes, slots: stats.slotsWritten, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
  return stats;
}
