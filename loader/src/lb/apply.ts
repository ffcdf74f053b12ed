// Carries out a plan as one transaction, in the half of the maps that packets do not read (struct lb_epoch):
// every record of the new state is written there, then one write switches packets over. Killed or failing at any
// point before that write, the load balancer runs the old state untouched; after it, the new one. What packets
// may see early (a VIP filter bit, an egress port, an empty table map) only ever widens, and is narrowed again
// once the switch is done. Each write records its inverse: if a write fails, the inverses run newest first.
import { Dataplane } from '../dataplane/dataplane';
import type { BackendInfo, BackendMeta, ServiceInfo, ServiceKey } from '../dataplane/layout';
import { Plan, serviceInfoOf } from './plan';
import { keyOf } from './state';
import { UsageError } from '../errors';

const ZERO_COUNTER = { packets: 0n, bytes: 0n };

export class ApplyError extends Error {
  override name = 'ApplyError';

  constructor(
    override readonly cause: unknown,
    readonly step: string,
    readonly undoErrors: unknown[],
  ) {
    super(
      `applying the change failed at ${step}: ${(cause as Error)?.message ?? cause}\n` +
        (undoErrors.length
          ? `rolling back also failed (${undoErrors.map((e) => (e as Error).message).join('; ')}): ` +
            "the state may be mixed; run 'xdp-dr list' and apply the config again"
          : 'every write before it was undone: the load balancer runs what it ran before'),
    );
  }
}

/** Writes with their inverses; one journal can span several load balancers and an attach. */
export class Journal {
  private readonly undo: { what: string; fn: () => void }[] = [];
  private steps = 0;

  /**
   * For tests: failAt fails just before the n-th write, to prove that every prefix rolls back; onWrite is called
   * before each write (a test can stop the process there).
   */
  constructor(
    private readonly failAt?: number,
    private readonly onWrite?: WriteHook,
  ) {}

  get count(): number {
    return this.steps;
  }

  run(what: string, write: () => void, inverse: () => void): void {
    const n = this.steps++;
    try {
      this.onWrite?.(n, what);
      if (this.failAt === n) throw new Error(`injected fault before write ${n}`);
      write();
    } catch (e) {
      throw this.rollback(e, what);
    }
    this.undo.push({ what, fn: inverse });
  }

  /** Undoes everything so far; returns the error to throw. */
  rollback(cause: unknown, step: string): Error {
    const errors: unknown[] = [];
    for (const u of this.undo.reverse()) {
      try {
        u.fn();
      } catch (e) {
        errors.push(new Error(`undo ${u.what}: ${(e as Error).message}`));
      }
    }
    this.undo.length = 0;
    // Bad input found late (e.g. a conflict with what runs) stays bad input once everything is undone.
    if (cause instanceof ApplyError || (cause instanceof UsageError && !errors.length)) return cause as Error;
    return new ApplyError(cause, step, errors);
  }
}

export interface ApplyStats {
  writes: number;
  slotsWritten: number;
}

/** For tests: called before each write with its number and name (a test can stop the process there). */
export type WriteHook = (n: number, what: string) => void;

/** readersGone: the active epoch, if a grace period has passed since the switch to it (waited for while planning). */
export function applyPlan(dp: Dataplane, plan: Plan, journal: Journal, readersGone?: number): ApplyStats {
  try {
    return applySteps(dp, plan, journal, readersGone);
  } catch (e) {
    // Also what fails between writes: the journal may span other load balancers' changes made before this one.
    throw journal.rollback(e, 'applying the change');
  }
}

function applySteps(dp: Dataplane, plan: Plan, journal: Journal, readersGone?: number): ApplyStats {
  const start = journal.count;
  const from = plan.from;
  const live = from.epoch;
  const next = live ^ 1;
  if (dp.epochState().active !== live)
    throw new Error('the load balancer changed while this change was planned (another xdp-dr at work?): plan it again');

  // The new state, whole: every service and backend record of the other half.
  const deleted = new Set(plan.serviceDeletes.map((s) => s.id));
  const services = new Map<number, [ServiceKey, ServiceInfo]>();
  for (const s of from.services)
    if (!deleted.has(s.id)) services.set(s.id, [keyOf(s), serviceInfoOf(s)]);
  for (const w of plan.serviceWrites) services.set(w.id, [w.key, w.info]);
  const backends = new Map<number, { info: BackendInfo; meta: BackendMeta }>();
  for (const [id, r] of from.records) if (r.info && r.meta) backends.set(id, { info: r.info, meta: r.meta });
  for (const b of plan.backendDeletes) backends.delete(b.id);
  for (const b of plan.backendWrites) backends.set(b.id, { info: b.info, meta: b.meta });
  const liveKeys = from.services.map((s) => keyOf(s));
  const nextKeys = [...services.values()].map(([k]) => k);

  // Until a grace period has passed since the last switch, a packet may still be reading the other half.
  if (!dp.epochState().quiescent)
    journal.run('wait for packets still reading the other half', () => {
      if (readersGone !== live) dp.waitForReaders();
      dp.setEpoch(live, 1);
    }, () => {});

  for (const ifindex of plan.txAdd)
    journal.run(`tx_ports add ${ifindex}`, () => dp.txPorts.update(ifindex, ifindex), () => dp.txPorts.delete(ifindex));
  if (plan.serviceWrites.some((w) => w.fresh))
    journal.run('VIP filter: add the new VIPs', () => dp.writeVipFilter([...liveKeys, ...nextKeys]), () => dp.writeVipFilter(liveKeys));

  // A new service gets both its table maps now; a change writes the map its live record does not name (made now
  // if it is missing, as it is for a service whose tables were dropped by hand).
  const fresh = plan.serviceWrites.filter((w) => w.fresh);
  const needed = [...fresh.flatMap((w) => [2 * w.id, 2 * w.id + 1]), ...plan.serviceWrites.filter((w) => w.table).map((w) => w.info.table)];
  if (needed.some((slot) => !dp.hasTableSlot(slot))) {
    let added: number[] = [];
    journal.run(
      `table maps of ${plan.serviceWrites.filter((w) => w.fresh || w.table).map((w) => w.name).join(', ')}`,
      () => (added = dp.ensureTables(needed)),
      () => dp.dropTables(added),
    );
  }
  let slotsWritten = 0;
  for (const w of plan.serviceWrites) {
    if (!w.table) continue;
    const table = w.table;
    journal.run(`table of ${w.name}`, () => dp.writeTable(w.info.table, table), () => {});
    slotsWritten += table.length;
  }

  const freshBackends = plan.backendWrites.filter((b) => b.fresh);
  if (fresh.length || freshBackends.length)
    journal.run('zero the counters of new ids', () => {
      for (const w of fresh) dp.serviceStats.fill(w.id, ZERO_COUNTER);
      for (const b of freshBackends) dp.backendStats.fill(b.id, ZERO_COUNTER);
    }, () => {});
  journal.run(`backends of epoch ${next}`, () => dp.writeBackendHalf(next, backends), () => {});
  journal.run(`services of epoch ${next}`, () => dp.writeServiceHalf(next, [...services.values()]), () => {});

  // The switch: packets read the new half from here on. Two writers at once would have written the same half.
  journal.run(`switch to epoch ${next}`, () => {
    if (dp.epochState().active !== live) throw new Error('another process switched the load balancer during this change: plan it again');
    dp.setEpoch(next, 0);
  }, () => {
    // Back to the old half, and no older inverse may run while a packet still reads the new one.
    dp.setEpoch(live, 0);
    dp.waitForReaders();
    dp.setEpoch(live, 1);
  });

  // Narrow what was widened for the switch, and free what no record names any more: the tables of removed services
  // and any that a change killed before its switch left behind. Only once no packet reads the old half; a change
  // with nothing to narrow or free returns at the switch, and the next change waits first if it comes too soon.
  const used = new Set([...services.values()].flatMap(([, i]) => [2 * i.id, 2 * i.id + 1]));
  const unused = dp.tableSlots().filter((s) => !used.has(s));
  const narrowVips = dp.vipFilterHasMore(nextKeys);
  if (!narrowVips && !plan.txRemove.length && !unused.length) return { writes: journal.count - start, slotsWritten };
  journal.run('wait for packets still reading the old half', () => {
    dp.waitForReaders();
    dp.setEpoch(next, 1);
  }, () => {});
  if (narrowVips)
    journal.run('VIP filter: only the VIPs in use', () => dp.writeVipFilter(nextKeys), () => dp.writeVipFilter([...liveKeys, ...nextKeys]));
  for (const ifindex of plan.txRemove)
    journal.run(`tx_ports remove ${ifindex}`, () => dp.txPorts.delete(ifindex), () => dp.txPorts.update(ifindex, ifindex));
  // One write each: a removal that fails part way must still undo the ones before it.
  for (const slot of unused) {
    const table = dp.readTableSlot(slot);
    journal.run(`remove the table in slot ${slot}, which no service uses`, () => dp.dropTables([slot]), () => {
      dp.ensureTables([slot]);
      if (table) dp.writeTable(slot, table);
    });
  }
  return { writes: journal.count - start, slotsWritten };
}
