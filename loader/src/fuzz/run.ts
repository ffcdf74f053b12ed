// Fuzzing the data path: generated frames through BPF_PROG_TEST_RUN against a loaded service set. Every frame is
// checked against the invariants and a model of the program's decisions (generators.ts), and its outcome counter;
// all counters are read every batch, so that nothing else may have moved.
//   node dist/loader/src/fuzz/run.js [--frames N] [--seed S] [--kind K] [--index I] [--object FILE.bpf.o]
// --index replays one frame; --object fuzzes another build of the program (e.g. a deliberately broken one).
// Exits 1 on the first violation, printing what reproduces it: seed, index, kind and the frame in hex.
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { Dataplane, PIN_BASE } from '../dataplane/dataplane';
import { serviceKeyOf, SERVICE_FLAG, XDP_DR_EVENT } from '../dataplane/layout';
import { buildMaglevTable } from '../maglev';
import { buildFrame, ipToBytes, macToBytes, macToString } from '../packet';
import { testRun, BpfError, XDP_ACTION, XDP_ACTION_NAME } from '../libbpf';
import {
  FUZZ_SERVICES, LB_MAC, BACKEND_MACS, KINDS, Kind, Outcome, StatName, generate, expectedOutcome, truncationBases,
  TEST_RUN_LINEAR_MAX, TEST_RUN_MIN, TEST_RUN_MAX,
} from './generators';

export interface RunResult { retval: number; data: Buffer }

const ACTION_OF: Partial<Record<StatName, number>> = { TX: XDP_ACTION.TX, REDIRECT: XDP_ACTION.REDIRECT };
const actionName = (a: number) => XDP_ACTION_NAME[a] ?? `action ${a}`;

function firstDiff(a: Buffer, b: Buffer, from = 0): number {
  const n = Math.min(a.length, b.length);
  for (let i = from; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/**
 * Invariants 1 and 2 for one frame: the action is PASS, TX or REDIRECT; a passed frame comes back byte for byte; a
 * forwarded one keeps its length and every byte from 12 on, with a backend's MAC and the LB's MAC in front; and the
 * frame is forwarded exactly when the model says it is for a service, to one of that service's live backends.
 * Returns what is broken, or null.
 */
export function checkFrame(frame: Buffer, res: RunResult, exp: Outcome): string | null {
  const act = res.retval;
  if (act !== XDP_ACTION.PASS && act !== XDP_ACTION.TX && act !== XDP_ACTION.REDIRECT)
    return `returned ${actionName(act)}: only XDP_PASS, XDP_TX or XDP_REDIRECT may come back (no service drops)`;
  if (act === XDP_ACTION.PASS) {
    const i = firstDiff(frame, res.data);
    if (i >= 0) return `XDP_PASS with the frame altered at byte ${i} (in ${frame.length}, out ${res.data.length})`;
    if (exp.forward) return `XDP_PASS, but the model says ${exp.stat} (service ${exp.forward.service})`;
    return null;
  }
  if (res.data.length !== frame.length) return `${actionName(act)} changed the length from ${frame.length} to ${res.data.length}`;
  const i = firstDiff(frame, res.data, 12);
  if (i >= 0) return `${actionName(act)} changed byte ${i}: only bytes 0..11 (the MACs) may change`;
  const dst = macToString(res.data, 0);
  const src = macToString(res.data, 6);
  if (src !== LB_MAC) return `${actionName(act)} with source MAC ${src}, not the LB's ${LB_MAC}`;
  if (!BACKEND_MACS.has(dst)) return `${actionName(act)} to ${dst}, which is no backend's MAC`;
  if (!exp.forward) return `${actionName(act)}, but the model says ${exp.stat}: not a valid packet to a service`;
  if (act !== ACTION_OF[exp.stat]) return `${actionName(act)}, but the model says ${exp.stat} (service ${exp.forward.service})`;
  if (!exp.forward.macs.has(dst)) return `${actionName(act)} to ${dst}, not a live backend of service ${exp.forward.service}`;
  return null;
}

export type Moved = Map<string, { packets: number; bytes: number }>;

export interface Expected {
  /** Frames the program ran on (refused ones excluded). */
  frames: number;
  /** Frames that came back TX or REDIRECT. */
  forwarded: number;
  /** Per outcome counter, from the model: packets and bytes (the program counts only what it can see). */
  byStat: Moved;
}

/**
 * Invariant 3 over a stretch of frames: the outcome counters moved by exactly the frames run, TX + REDIRECT by
 * the frames returned as such, and each counter by what the model predicts (packets and bytes).
 */
export function checkCounters(exp: Expected, moved: Moved): string | null {
  let total = 0;
  for (const v of moved.values()) total += v.packets;
  if (total !== exp.frames) return `the outcome counters moved by ${total} for ${exp.frames} frames run`;
  const fwd = (moved.get('TX')?.packets ?? 0) + (moved.get('REDIRECT')?.packets ?? 0);
  if (fwd !== exp.forwarded) return `TX + REDIRECT moved by ${fwd}, but ${exp.forwarded} frames came back TX or REDIRECT`;
  for (const k of new Set([...moved.keys(), ...exp.byStat.keys()])) {
    const m = moved.get(k) ?? { packets: 0, bytes: 0 };
    const e = exp.byStat.get(k) ?? { packets: 0, bytes: 0 };
    if (m.packets !== e.packets || m.bytes !== e.bytes)
      return `counter ${k} moved by ${m.packets} packets / ${m.bytes} bytes, the model expects ${e.packets} / ${e.bytes}`;
  }
  return null;
}

export interface Item { kind: Kind | 'truncation'; where: string; frame: Buffer }

export interface Violation { message: string; item: Item; expected?: Outcome; result?: RunResult }

export interface Report {
  ran: number;
  /** Frames shorter than an Ethernet header, which the kernel refuses (EINVAL) before the program runs. */
  refused: number;
  /** Per kind: how many frames, and of them refused / per action. */
  byKind: Map<string, Map<string, number>>;
  /** What the stats map counted, per outcome. */
  byStat: Map<string, number>;
  /** Connection-table events (enum xdp_dr_event): packets that followed a record, records written. */
  conn: { hit: number; new: number };
  seconds: number;
  violation?: Violation;
}

/** Frames between full reads of the counters (one read costs as much as ~20 frames). */
const BATCH = 2048;
let instances = 0;

/** A loaded program with FUZZ_SERVICES installed, and a veth pair to stand as the redirect backends' egress. */
export class Fuzzer {
  private closed = false;

  private constructor(readonly dp: Dataplane, private readonly veth: string) {}

  /** objectPath: fuzz that build of the program instead of the current one (e.g. a deliberately broken one). */
  static open(opts: { hashSeed?: number; objectPath?: string } = {}): Fuzzer {
    const tag = `${process.pid % 100000}${instances++}`;
    const dp = Dataplane.load({ pinDir: path.join(PIN_BASE, `fuzz-${tag}`), hashSeed: opts.hashSeed ?? 0x5eed, objectPath: opts.objectPath });
    const veth = `xfz${tag}`;
    const f = new Fuzzer(dp, veth);
    try {
      execFileSync('ip', ['link', 'add', veth, 'type', 'veth', 'peer', 'name', `${veth}p`], { stdio: 'pipe' });
      const txIfindex = Number(fs.readFileSync(`/sys/class/net/${veth}/ifindex`, 'utf8'));
      dp.txPorts.update(txIfindex, txIfindex);
      // A test run's ingress is the loopback device (ifindex 1): a backend there is XDP_TX, not a redirect.
      const ifindex = { tx: 0, ingress: 1, 'tx-port': txIfindex, missing: 0x7ffffff0 } as const;
      FUZZ_SERVICES.forEach((s, i) => {
        const id = i + 1;
        for (const b of s.backends)
          dp.setBackend(b.id, { dst_mac: macToBytes(b.mac), src_mac: macToBytes(LB_MAC), ifindex: ifindex[b.egress], gen: b.id });
        if (s.table !== false)
          dp.installTable(id, buildMaglevTable(s.backends.map((b) => ({ id: b.id, key: b.mac, weight: b.weight })), dp.limits.tableSize));
        const flags = (s.l3 ? SERVICE_FLAG.SERVICE_F_HASH_L3 : 0) | (s.conn ? SERVICE_FLAG.SERVICE_F_CONN_TABLE : 0);
        dp.putService(serviceKeyOf(ipToBytes(s.vip), s.port, s.proto), { id, flags });
      });
      // The generators and the model assume these sizes; on another page size they would lie. (The linear part
      // is measured through the program, so a broken program must fail the fuzzing, not this; the test checks it.)
      const { min, max } = f.probeLimits();
      if (min !== TEST_RUN_MIN || max !== TEST_RUN_MAX)
        throw new Error(`this kernel's test runs take ${min}..${max} bytes, the generators assume ${TEST_RUN_MIN}..${TEST_RUN_MAX}`);
    } catch (e) {
      f.close();
      throw e;
    }
    return f;
  }

  /**
   * Measures what this kernel's test runs take: the shortest and the longest frame, and how many bytes of a long
   * one the program sees (the linear part; the rest sits in fragments beyond data_end).
   */
  probeLimits(): { min: number; linear: number; max: number } {
    const accepted = (n: number) => {
      try {
        testRun(this.dp.progFd!, { data: Buffer.alloc(n) });
        return true;
      } catch (e) {
        if (e instanceof BpfError) return false;
        throw e;
      }
    };
    // Largest n in [lo, hi) for which ok(n) holds, given ok(lo) and that ok is monotonic.
    const last = (lo: number, hi: number, ok: (n: number) => boolean) => {
      while (lo + 1 < hi) {
        const m = (lo + hi) >>> 1;
        if (ok(m)) lo = m;
        else hi = m;
      }
      return lo;
    };
    let min = 0;
    while (min < 64 && !accepted(min)) min++;
    // A UDP datagram to a service that fills the frame is forwarded only while the program sees all of it.
    const seen = (n: number) => {
      const r = this.run(buildFrame({ src: '198.51.100.1', dst: '10.0.0.100', dport: 53, proto: 'udp', payload: Buffer.alloc(n - 42) }));
      return r !== 'refused' && r.retval === XDP_ACTION.TX;
    };
    return { min, linear: last(60, 65535 + 14, seen), max: last(min, 1 << 20, accepted) };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.dp.discard();
    try {
      execFileSync('ip', ['link', 'del', this.veth], { stdio: 'ignore' });
    } catch {
      /* never created */
    }
  }

  /** One test run; 'refused' when the kernel turns the frame away as too short, as it must below 14 bytes. */
  run(frame: Buffer): RunResult | 'refused' {
    try {
      return testRun(this.dp.progFd!, { data: frame });
    } catch (e) {
      if (e instanceof BpfError && e.code === 'EINVAL' && frame.length < TEST_RUN_MIN) return 'refused';
      throw e;
    }
  }

  /** The outcome counters by name, summed over CPUs. */
  counters(): Map<string, { packets: bigint; bytes: bigint }> {
    const out = new Map<string, { packets: bigint; bytes: bigint }>();
    const all = this.dp.stats.all();
    for (const [name, id] of this.dp.statIds) out.set(name, Dataplane.sum(all.get(id)));
    return out;
  }

  /**
   * Runs the items and checks every frame: its action and bytes (checkFrame), and that the one outcome counter the
   * model names moved by one packet and the bytes the program saw. Every BATCH frames all counters are read: had
   * anything else moved, they would not add up (checkCounters). Stops at the first violation.
   * `tamper` exists for the tests: it alters a result before the check, which must then catch it.
   */
  runItems(items: Iterable<Item>, opts: { tamper?: (item: Item, res: RunResult) => void } = {}): Report {
    const report: Report = { ran: 0, refused: 0, byKind: new Map(), byStat: new Map(), conn: { hit: 0, new: 0 }, seconds: 0 };
    const t0 = process.hrtime.bigint();
    const ev0 = this.connEvents();
    let batch: Item[] = [];
    let exp: Expected = { frames: 0, forwarded: 0, byStat: new Map() };
    let before = this.counters();
    // Each counter as checked so far: `before` plus what the frames of this batch were seen to add.
    const known = new Map(before);
    const tally = (kind: string, what: string) => {
      const m = report.byKind.get(kind) ?? new Map<string, number>();
      m.set(what, (m.get(what) ?? 0) + 1);
      report.byKind.set(kind, m);
    };
    const endBatch = (): boolean => {
      const now = this.counters();
      const moved = diff(before, now);
      for (const [k, v] of moved) report.byStat.set(k, (report.byStat.get(k) ?? 0) + v.packets);
      const bad = checkCounters(exp, moved);
      if (bad) {
        report.violation = this.pinpoint(batch) ?? { message: `${bad} (somewhere in ${batch[0].where} .. ${batch[batch.length - 1].where})`, item: batch[0] };
        return false;
      }
      before = now;
      for (const [k, v] of now) known.set(k, v);
      batch = [];
      exp = { frames: 0, forwarded: 0, byStat: new Map() };
      return true;
    };
    for (const item of items) {
      tally(item.kind, 'frames');
      const res = this.run(item.frame);
      if (res === 'refused') {
        report.refused++;
        tally(item.kind, 'refused');
        continue;
      }
      opts.tamper?.(item, res);
      const expected = expectedOutcome(item.frame);
      report.ran++;
      tally(item.kind, actionName(res.retval));
      const bad = checkFrame(item.frame, res, expected);
      if (bad) {
        report.violation = { message: bad, item, expected, result: res };
        break;
      }
      // The program counts what it can see: a frame longer than the linear part counts as that part.
      const seen = Math.min(item.frame.length, TEST_RUN_LINEAR_MAX);
      const was = known.get(expected.stat)!;
      const is = Dataplane.sum(this.dp.stats.lookup(this.dp.statIds.get(expected.stat)!));
      if (is.packets - was.packets !== 1n || is.bytes - was.bytes !== BigInt(seen)) {
        // The extra count may come from an earlier frame that also moved this counter: replay to find it.
        report.violation = this.pinpoint([...batch, item]) ?? {
          message: `counter ${expected.stat} moved by ${is.packets - was.packets} packets / ${is.bytes - was.bytes} bytes, the model expects 1 / ${seen}`,
          item, expected, result: res,
        };
        break;
      }
      known.set(expected.stat, is);
      batch.push(item);
      exp.frames++;
      if (res.retval === XDP_ACTION.TX || res.retval === XDP_ACTION.REDIRECT) exp.forwarded++;
      addTo(exp.byStat, expected.stat, seen);
      if (batch.length === BATCH && !endBatch()) break;
    }
    if (!report.violation && batch.length) endBatch();
    report.seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const ev1 = this.connEvents();
    report.conn = { hit: ev1.hit - ev0.hit, new: ev1.new - ev0.new };
    return report;
  }

  private connEvents(): { hit: number; new: number } {
    return { hit: this.dp.eventCount(XDP_DR_EVENT.XDP_DR_EV_CONN_HIT), new: this.dp.eventCount(XDP_DR_EVENT.XDP_DR_EV_CONN_NEW) };
  }

  /** Replays a batch whose counters did not add up one frame at a time, to name the frame. */
  private pinpoint(batch: Item[]): Violation | undefined {
    for (const item of batch) {
      const before = this.counters();
      const res = this.run(item.frame);
      if (res === 'refused') continue;
      const expected = expectedOutcome(item.frame);
      const byStat: Moved = new Map();
      addTo(byStat, expected.stat, Math.min(item.frame.length, TEST_RUN_LINEAR_MAX));
      const forwarded = res.retval === XDP_ACTION.TX || res.retval === XDP_ACTION.REDIRECT ? 1 : 0;
      const bad = checkCounters({ frames: 1, forwarded, byStat }, diff(before, this.counters()));
      if (bad) return { message: bad, item, expected, result: res };
    }
    return undefined;
  }

  /** `frames` generated frames of the run with `seed`, from index `start` on. */
  fuzz(opts: { seed: number; frames: number; start?: number; only?: Kind; tamper?: (item: Item, res: RunResult) => void }): Report {
    const { seed, frames, start = 0, only } = opts;
    function* items(): Generator<Item> {
      for (let i = start; i < start + frames; i++) {
        const g = generate(seed, i, only);
        yield { kind: g.kind, where: `seed ${seed} index ${i}${only ? ` kind ${only}` : ''}`, frame: g.frame };
      }
    }
    return this.runItems(items(), { tamper: opts.tamper });
  }

  /** Every prefix, from 0 bytes to the whole frame, of each of truncationBases(). */
  truncations(): Report {
    function* items(): Generator<Item> {
      for (const b of truncationBases())
        for (let len = 0; len <= b.frame.length; len++)
          yield { kind: 'truncation', where: `truncation of "${b.name}" at ${len} of ${b.frame.length}`, frame: Buffer.from(b.frame.subarray(0, len)) };
    }
    return this.runItems(items());
  }
}

function addTo(m: Moved, k: string, bytes: number): void {
  const v = m.get(k) ?? { packets: 0, bytes: 0 };
  v.packets++;
  v.bytes += bytes;
  m.set(k, v);
}

function diff(a: Map<string, { packets: bigint; bytes: bigint }>, b: Map<string, { packets: bigint; bytes: bigint }>): Moved {
  const out: Moved = new Map();
  for (const [k, v] of b) {
    const p = Number(v.packets - (a.get(k)?.packets ?? 0n));
    const by = Number(v.bytes - (a.get(k)?.bytes ?? 0n));
    if (p || by) out.set(k, { packets: p, bytes: by });
  }
  return out;
}

/** Everything needed to reproduce and read a violation. */
export function formatViolation(v: Violation): string {
  const lines = [
    `INVARIANT VIOLATED: ${v.message}`,
    `  at:       ${v.item.where}`,
    `  kind:     ${v.item.kind}`,
    `  length:   ${v.item.frame.length}`,
    `  frame:    ${v.item.frame.toString('hex')}`,
  ];
  if (v.expected) lines.push(`  model:    ${v.expected.stat}${v.expected.forward ? ` (service ${v.expected.forward.service})` : ''}`);
  if (v.result) {
    lines.push(`  returned: ${actionName(v.result.retval)}`);
    if (!v.result.data.equals(v.item.frame)) lines.push(`  output:   ${v.result.data.toString('hex')}`);
  }
  return lines.join('\n');
}

export function formatReport(r: Report): string {
  const cols = ['frames', 'refused', 'XDP_PASS', 'XDP_TX', 'XDP_REDIRECT'];
  const other = new Set<string>();
  for (const m of r.byKind.values()) for (const k of m.keys()) if (!cols.includes(k)) other.add(k);
  const all = [...cols, ...other];
  const rows = [['kind', ...all]];
  const sum = new Map<string, number>();
  for (const k of [...KINDS, 'truncation']) {
    const m = r.byKind.get(k);
    if (!m) continue;
    rows.push([k, ...all.map((c) => String(m.get(c) ?? 0))]);
    for (const c of all) sum.set(c, (sum.get(c) ?? 0) + (m.get(c) ?? 0));
  }
  rows.push(['total', ...all.map((c) => String(sum.get(c) ?? 0))]);
  const w = all.map((_, i) => Math.max(...rows.map((row) => row[i + 1].length)));
  const lines = rows.map((row) => row[0].padEnd(12) + row.slice(1).map((c, i) => c.padStart(w[i] + 2)).join(''));
  lines.push('', 'outcome counters (stats map): ' + [...r.byStat].filter(([, n]) => n).map(([k, n]) => `${k} ${n}`).join(', '));
  lines.push(`connection table: ${r.conn.new} records written, ${r.conn.hit} packets followed a record`);
  return lines.join('\n');
}

interface Args { frames: number; seed: number; kind?: Kind; index?: number; object?: string }

function parseArgs(argv: string[]): Args {
  const out: Args = { frames: 1_000_000, seed: 1 };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    const num = () => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) throw new Error(`${argv[i]} needs a non-negative integer, got ${v}`);
      i++;
      return n;
    };
    if (argv[i] === '--frames') out.frames = num();
    else if (argv[i] === '--seed') out.seed = num() >>> 0;
    else if (argv[i] === '--index') out.index = num();
    else if (argv[i] === '--kind') {
      if (!(KINDS as readonly string[]).includes(v)) throw new Error(`--kind is one of ${KINDS.join(', ')}`);
      out.kind = v as Kind;
      i++;
    } else if (argv[i] === '--object' && v) {
      out.object = v;
      i++;
    } else throw new Error(`unknown argument ${argv[i]}; usage: run.js [--frames N] [--seed S] [--kind K] [--index I] [--object FILE.bpf.o]`);
  }
  return out;
}

function main(): number {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error((e as Error).message);
    return 2;
  }
  const fz = Fuzzer.open({ objectPath: args.object });
  const stop = () => {
    fz.close();
    process.exit(130);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  try {
    if (args.index !== undefined) {
      // Replays one frame and shows it, whether or not it breaks anything.
      const r = fz.fuzz({ seed: args.seed, frames: 1, start: args.index, only: args.kind });
      const g = generate(args.seed, args.index, args.kind);
      const exp = expectedOutcome(g.frame);
      console.log(`seed ${args.seed} index ${args.index}: kind ${g.kind}, ${g.frame.length} bytes, model ${exp.stat}`);
      console.log(g.frame.toString('hex'));
      if (r.violation) console.log(formatViolation(r.violation));
      else console.log(r.refused ? 'refused by the kernel (shorter than 14 bytes), as expected' : 'all invariants hold');
      return r.violation ? 1 : 0;
    }
    const lim = fz.probeLimits();
    console.log(`fuzzing ${args.frames} frames, seed ${args.seed}${args.kind ? `, kind ${args.kind} only` : ''}, ` +
      `${FUZZ_SERVICES.length} services; test_run takes ${lim.min}..${lim.max} bytes and shows the program the first ${lim.linear}`);
    if (lim.linear !== TEST_RUN_LINEAR_MAX) console.log(`  (the model assumes ${TEST_RUN_LINEAR_MAX}: expect violations)`);
    const trunc = fz.truncations();
    if (trunc.violation) {
      console.log(formatViolation(trunc.violation));
      return 1;
    }
    const r = fz.fuzz({ seed: args.seed, frames: args.frames, only: args.kind });
    for (const [k, m] of trunc.byKind) r.byKind.set(k, m);
    for (const [k, n] of trunc.byStat) r.byStat.set(k, (r.byStat.get(k) ?? 0) + n);
    r.conn.new += trunc.conn.new;
    r.conn.hit += trunc.conn.hit;
    console.log(formatReport(r));
    const rate = r.seconds > 0 ? Math.round((r.ran + r.refused) / r.seconds) : 0;
    console.log(`\n${r.ran + r.refused} generated frames in ${r.seconds.toFixed(1)} s (${rate} frames/s), ` +
      `plus ${trunc.ran + trunc.refused} truncations in ${trunc.seconds.toFixed(1)} s; ${r.refused + trunc.refused} refused by the kernel (< 14 bytes)`);
    if (r.violation) {
      console.log('\n' + formatViolation(r.violation));
      return 1;
    }
    console.log('every invariant held for every frame');
    return 0;
  } finally {
    fz.close();
  }
}

if (require.main === module) process.exitCode = main();
