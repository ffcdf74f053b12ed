// The health checker: probes every real server of every checked service on its own schedule and says when one
// goes down or comes back, with keepalived/HAProxy semantics (`fall` failures in a row take a server out, `rise`
// successes in a row bring it back). It only observes and reports; taking a server out of the Maglev table is the
// job of whoever listens to its 'change' events.

import { EventEmitter } from 'node:events';
import { DEFAULTS, type HealthCheck } from '../config';
import { httpProbe, tcpProbe, type ProbeResult } from './probes';
import { vipSynProbe, type VipRoute } from './vipprobe';

export interface ProbeTarget {
  /** Unique, e.g. "10.0.0.100:80/tcp|10.0.0.11". */
  key: string;
  address: string;
  check: HealthCheck;
  /** For `target: vip`: how to reach the VIP on this real server (its MAC, the interface and a source address). */
  viaVip?: VipRoute;
}

export type Health = 'up' | 'down';

export interface TargetStatus {
  health: Health;
  /** consecutive results in the current direction */
  streak: number;
  last?: ProbeResult;
  checks: number;
  failures: number;
}

export interface HealthChange {
  key: string;
  health: Health;
  previous: Health;
  /** e.g. "3 failed checks in a row: connection refused" or "2 good checks in a row" */
  reason: string;
}

export interface ProbeEvent {
  key: string;
  target: ProbeTarget;
  result: ProbeResult;
}

export type ProbeFn = (t: ProbeTarget) => Promise<ProbeResult>;

/** `target: vip` probes the VIP through the chosen real server (a SYN to its MAC: see vipprobe.ts). */
export const VIP_TARGET_SUPPORTED = true;

// First probes are spread over up to this long after a target is added, so that a config with hundreds of real
// servers does not open hundreds of connections in the same millisecond, and every one keeps its own phase.
const MAX_START_SPREAD_MS = 500;

/** The probe a check describes, against the real server's address. */
export function runCheck(t: ProbeTarget): Promise<ProbeResult> {
  const c = t.check;
  // The VIP as this real server serves it: whether it accepts TCP there (an HTTP check's path and status are
  // asked of the real server's own address only, since a SYN probe carries no request).
  if (c.target === 'vip') {
    if (!t.viaVip) return Promise.resolve({ ok: false, durationMs: 0, detail: 'no way to the VIP through this real server yet: its MAC or the interface is not known' });
    return vipSynProbe(t.viaVip, c.port, c.timeoutMs);
  }
  if (c.type === 'http') {
    return httpProbe(t.address, c.port, {
      path: c.path ?? DEFAULTS.httpPath,
      ...(c.host !== undefined ? { host: c.host } : {}),
      expectStatus: c.expectStatus ?? DEFAULTS.expectStatus,
      timeoutMs: c.timeoutMs,
    });
  }
  return tcpProbe(t.address, c.port, c.timeoutMs);
}

interface Entry {
  target: ProbeTarget;
  status: TargetStatus;
  /** Outcome of the latest result, the direction `streak` counts in; undefined before the first result. */
  lastOk?: boolean;
  timer?: NodeJS.Timeout;
  /** Bumped whenever the schedule restarts or stops, so that a result from before is dropped. */
  generation: number;
}

/** Settings that change what a probe does or when; any difference restarts the target's schedule. */
function sameProbe(a: ProbeTarget, b: ProbeTarget): boolean {
  const x = a.check;
  const y = b.check;
  return (
    a.address === b.address &&
    JSON.stringify(a.viaVip) === JSON.stringify(b.viaVip) &&
    x.type === y.type &&
    x.intervalMs === y.intervalMs &&
    x.timeoutMs === y.timeoutMs &&
    x.rise === y.rise &&
    x.fall === y.fall &&
    x.port === y.port &&
    x.target === y.target &&
    x.path === y.path &&
    x.host === y.host &&
    x.expectStatus === y.expectStatus
  );
}

function copyStatus(s: TargetStatus): TargetStatus {
  return { ...s };
}

function inARow(n: number, what: string): string {
  return n === 1 ? `1 ${what} check` : `${n} ${what} checks in a row`;
}

export interface HealthEvents {
  /** A target went down after `fall` failures in a row, or up after `rise` successes in a row. */
  change: [HealthChange];
  /** After every probe whose result was counted. */
  probe: [ProbeEvent];
}

export class HealthChecker extends EventEmitter<HealthEvents> {
  private readonly probe: ProbeFn;
  private readonly entries = new Map<string, Entry>();
  // Per key rather than per entry: a probe of a removed or restarted target may still be running when its
  // replacement's first tick comes, and two probes of one real server must never overlap.
  private readonly inFlight = new Set<string>();

  /**
   * @param opts.probe replaces the real probes (unit tests). It must settle by itself, as the built-in probes do
   *   within the check's timeoutMs: while it runs, that target's next ticks are skipped.
   */
  constructor(opts: { probe?: ProbeFn } = {}) {
    super();
    this.probe = opts.probe ?? runCheck;
  }

  /**
   * Reconciles the set of targets: new keys start probing, missing keys stop, a key whose check settings changed
   * restarts its schedule but keeps its health. Also resumes probing after stop().
   */
  set(targets: ProbeTarget[]): void {
    const wanted = new Map<string, ProbeTarget>();
    for (const t of targets) {
      if (wanted.has(t.key)) throw new Error(`health check target ${t.key} is listed twice`);
      wanted.set(t.key, t);
    }
    for (const [key, entry] of this.entries) {
      if (!wanted.has(key)) {
        this.unschedule(entry);
        this.entries.delete(key);
      }
    }
    for (const [key, target] of wanted) {
      const entry = this.entries.get(key);
      if (entry === undefined) {
        // Up from the start: applying a config must not wait for checks before traffic flows.
        const fresh: Entry = { target, status: { health: 'up', streak: 0, checks: 0, failures: 0 }, generation: 0 };
        this.entries.set(key, fresh);
        this.schedule(fresh);
        continue;
      }
      const changed = !sameProbe(entry.target, target);
      entry.target = target;
      if (changed) {
        this.unschedule(entry);
        // The streak was counted for the old check; the new one starts counting afresh.
        entry.status.streak = 0;
        entry.lastOk = undefined;
        if (target.check.type === 'none' && entry.status.health === 'down') {
          // Nothing will ever probe it again, so nothing could bring it back.
          this.transition(entry, 'up', 'health check removed (type none)');
        }
        this.schedule(entry);
      } else if (entry.timer === undefined) {
        this.schedule(entry); // after stop()
      }
    }
  }

  status(key: string): TargetStatus | undefined {
    const entry = this.entries.get(key);
    return entry === undefined ? undefined : copyStatus(entry.status);
  }

  statuses(): Map<string, TargetStatus> {
    return new Map([...this.entries].map(([key, e]) => [key, copyStatus(e.status)]));
  }

  /** Stops every timer; a probe still running finishes, but its result is dropped. Statuses stay readable. */
  stop(): void {
    for (const entry of this.entries.values()) this.unschedule(entry);
  }

  private unschedule(entry: Entry): void {
    if (entry.timer !== undefined) {
      clearTimeout(entry.timer); // clears the interval as well
      entry.timer = undefined;
    }
    entry.generation++;
  }

  private schedule(entry: Entry): void {
    const check = entry.target.check;
    if (check.type === 'none') return;
    const interval = Math.max(1, check.intervalMs);
    const generation = entry.generation;
    const spread = Math.random() * Math.min(interval, MAX_START_SPREAD_MS);
    // A fixed-rate interval after the first probe: each target keeps the phase its random start gave it.
    entry.timer = setTimeout(() => {
      if (entry.generation !== generation) return;
      entry.timer = setInterval(() => this.tick(entry, generation), interval);
      this.tick(entry, generation);
    }, spread);
  }

  private tick(entry: Entry, generation: number): void {
    const key = entry.target.key;
    if (entry.generation !== generation || this.entries.get(key) !== entry) return;
    // Still waiting on the previous probe (a slow server): skip this tick rather than pile up connections.
    if (this.inFlight.has(key)) return;
    this.inFlight.add(key);
    const target = entry.target;
    let running: Promise<ProbeResult>;
    try {
      running = Promise.resolve(this.probe(target));
    } catch (err) {
      running = Promise.reject(err);
    }
    running
      .catch((err: unknown): ProbeResult => ({
        ok: false,
        durationMs: 0,
        detail: `probe failed: ${err instanceof Error ? err.message : String(err)}`,
      }))
      .then((result) => {
        this.inFlight.delete(key);
        // Removed, restarted with other settings, or stopped meanwhile: the result no longer means anything.
        if (entry.generation !== generation || this.entries.get(key) !== entry) return;
        this.record(entry, result);
      });
  }

  private record(entry: Entry, result: ProbeResult): void {
    const s = entry.status;
    const { rise, fall } = entry.target.check;
    s.checks++;
    if (!result.ok) s.failures++;
    s.last = result;
    s.streak = entry.lastOk === result.ok ? s.streak + 1 : 1;
    entry.lastOk = result.ok;

    let change: [Health, string] | undefined;
    if (s.health === 'up' && !result.ok && s.streak >= fall) {
      change = ['down', `${inARow(s.streak, 'failed')}: ${result.detail}`];
    } else if (s.health === 'down' && result.ok && s.streak >= rise) {
      change = ['up', inARow(s.streak, 'good')];
    }
    // State first, events after: a listener that reads status() sees the new health.
    const previous = s.health;
    if (change !== undefined) s.health = change[0];
    this.emit('probe', { key: entry.target.key, target: entry.target, result });
    if (change !== undefined) {
      this.emit('change', { key: entry.target.key, health: change[0], previous, reason: change[1] });
    }
  }

  private transition(entry: Entry, health: Health, reason: string): void {
    const previous = entry.status.health;
    if (previous === health) return;
    entry.status.health = health;
    this.emit('change', { key: entry.target.key, health, previous, reason });
  }
}
