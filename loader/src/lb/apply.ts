// Carries out a plan as one transaction. The kernel cannot update several maps at once, so the writes are
// ordered such that every intermediate state forwards correctly (a backend exists before any table names
// it; a table stops naming a backend before the backend goes), and each write records its inverse: if any
// write fails, the inverses run newest first and the maps are back where they were.
import { Dataplane, StagedTable } from '../dataplane/dataplane';
import { Plan, ZERO_INFO, ZERO_META } from './plan';
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

  /** For tests: fail just before the n-th write, to prove that every prefix rolls back. */
  constructor(private readonly failAt?: number) {}

  get count(): number {
    return this.steps;
  }

  run(what: string, write: () => void, inverse: () => void): void {
    const n = this.steps++;
    try {
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

/** Stages several tables; on a failure part way, the ones staged so far are released. */
function stageAll(dp: Dataplane, tables: [number, Uint32Array][]): StagedTable[] {
  const staged: StagedTable[] = [];
  try {
    for (const [id, t] of tables) staged.push(dp.stageTable(id, t));
    return staged;
  } catch (e) {
    for (const st of staged) {
      st.next.close();
      st.prevLive?.close();
    }
    throw e;
  }
}

export interface ApplyStats {
  writes: number;
  slotsWritten: number;
}

export function applyPlan(dp: Dataplane, plan: Plan, journal: Journal): ApplyStats {
  const start = journal.count;
  let slotsWritten = 0;

  for (const ifindex of plan.txAdd)
    journal.run(`tx_ports add ${ifindex}`, () => dp.txPorts.update(ifindex, ifindex), () => dp.txPorts.delete(ifindex));

  for (const b of plan.backendWrites) {
    const prev = b.before ?? { info: ZERO_INFO, meta: ZERO_META };
    journal.run(
      `backend ${b.label}`,
      () => {
        if (b.fresh) dp.backendStats.fill(b.id, ZERO_COUNTER);
        dp.backends.update(b.id, b.info);
        dp.backendMeta.update(b.id, b.meta);
      },
      () => {
        dp.backendMeta.update(b.id, prev.meta);
        dp.backends.update(b.id, prev.info);
      },
    );
  }

  // Every table of the change is written into its standby, then all are swapped in one batch update.
  const tables = plan.serviceWrites.filter((s) => s.table);
  if (tables.length)
    journal.run(
      `tables of ${tables.map((s) => s.name).join(', ')}`,
      () => {
        for (const s of tables) if (s.fresh) dp.serviceStats.fill(s.id, ZERO_COUNTER);
        const staged = stageAll(dp, tables.map((s) => [s.id, s.table!]));
        slotsWritten += staged.reduce((n, st) => n + st.written, 0);
        dp.swapTables(staged);
      },
      () => {
        dp.swapTables(stageAll(dp, tables.filter((s) => s.tableBefore).map((s) => [s.id, s.tableBefore!])));
        dp.removeTables(...tables.filter((s) => !s.tableBefore).map((s) => s.id));
      },
    );

  for (const s of plan.serviceWrites) {
    if (s.fresh || s.infoBefore) {
      const infoBefore = s.infoBefore;
      journal.run(
        `service ${s.name}`,
        () => dp.putService(s.key, s.info),
        () => (infoBefore ? dp.putService(s.key, infoBefore) : dp.deleteService(s.key)),
      );
    }
  }

  for (const s of plan.serviceDeletes)
    journal.run(`remove service ${s.name}`, () => dp.deleteService(s.key), () => dp.putService(s.key, s.info));
  if (plan.serviceDeletes.length) {
    const gone = plan.serviceDeletes.map((s) => ({ id: s.id, table: dp.readTable(s.id) }));
    journal.run(
      `remove tables of ${plan.serviceDeletes.map((s) => s.name).join(', ')}`,
      () => dp.removeTables(...gone.map((g) => g.id)),
      () => dp.swapTables(stageAll(dp, gone.filter((g) => g.table).map((g) => [g.id, g.table!]))),
    );
  }

  for (const b of plan.backendDeletes) {
    journal.run(
      `remove backend ${b.label}`,
      () => {
        dp.backendMeta.update(b.id, ZERO_META);
        dp.backends.update(b.id, ZERO_INFO);
      },
      () => {
        dp.backends.update(b.id, b.before.info);
        dp.backendMeta.update(b.id, b.before.meta);
      },
    );
  }

  for (const ifindex of plan.txRemove)
    journal.run(`tx_ports remove ${ifindex}`, () => dp.txPorts.delete(ifindex), () => dp.txPorts.update(ifindex, ifindex));

  return { writes: journal.count - start, slotsWritten };
}
