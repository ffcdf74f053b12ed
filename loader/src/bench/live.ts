// Live benchmark: real frames through a real XDP attachment. An in-kernel generator (bpf/xdp_gen.bpf.c run with
// BPF_PROG_RUN in live-frames mode) sends frames out of one end of a veth pair in a scratch namespace; the other
// end runs the program under test in native mode, which sends them back (XDP_TX), where bpf/xdp_sink.bpf.c counts
// and drops them. The load balancer and the minimal XDP_TX program take turns on the same attachment (one
// bpf_link, its program swapped) under one unbroken stream of frames, window after window, so both are measured
// in the same run by the same counter.
//
// What it is and is not: veth has no wire, and the generator, both veths' NAPI polls and the program under test
// all run on the generating CPU (veth polls its peer on the CPU that sent), so one CPU's figure is the whole
// chain's, of which the program under test is one part. A real NIC needs `xdp-dr bench pktgen` or an external
// generator; see the README.
import os from 'node:os';
import path from 'node:path';
import { fork, ChildProcess } from 'node:child_process';
import { BpfObject, PerCpuMap, u32, u64, attachXdp, replaceLinkProgram, fn } from '../libbpf';
import { Dataplane } from '../dataplane/dataplane';
import { loadScratchLb, benchNetnsName, withSignalCleanup } from './scratch';
import { ensureObject } from '../dataplane/build';
import { SERVICE_FLAG } from '../dataplane/layout';
import { buildFrame, ipToBytes, TCP_FLAGS } from '../packet';
import { ScratchNetns } from './netns';
import { UsageError } from '../errors';
import { BenchResult, median, pairedRatio, result } from './result';
import { STAGES, COUNTERS_STEP } from './micro';
import type { BuildOptions } from '../dataplane/build';
import type { GenSetup, ToGen, FromGen } from './livegen';

export interface LiveOptions {
  /** Distinct 5-tuples the generator cycles through, one run per value. */
  flows: number[];
  /** Ethernet frame size including the 4-byte FCS that veth does not carry (64 = 60 bytes handed over). */
  frameSize: number;
  /** Generator processes, one per CPU 0..cpus-1. */
  cpus: number;
  /** One measuring window. */
  seconds: number;
  /** Windows per program and flow count, the two programs in turns (AB BA AB BA ...). */
  runs: number;
  /** Frames per live-mode batch (the kernel's default is 64). */
  batch: number;
  proto: 'tcp' | 'udp';
  /** The service tracks connections (TCP): after its first frame, each flow follows its record. */
  connTable: boolean;
  /** Also builds of the program cut short after each stage of its fast path (STAGES), each against xdp_min. */
  stages?: boolean;
  log?: (line: string) => void;
}

export const LIVE_DEFAULTS: LiveOptions = { flows: [1, 100, 10_000, 1_000_000], frameSize: 64, cpus: 1, seconds: 0.25, runs: 10, batch: 64, proto: 'tcp', connTable: false };

const VIP = '10.0.0.100';
const SRC_BASE = '198.18.0.0'; // RFC 2544 benchmarking range
const GEN_IF = 'gen0';
// The first window opens this long after the generators start (past the set-up of their page pools).
const SETTLE_MS = 200;
// A window opens this long after the programs swap.
const SWAP_MS = 20;
// Frames per generator call: the most one call takes (minutes at any rate here); the generators are killed once the
// windows are measured, and started again should one run out.
const FRAMES_PER_CALL = 0xffff_ffff;
const GEN_START_TIMEOUT_MS = 30_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const LB_IF = 'lb0';
const signed = (x: number) => `${x < 0 ? '' : '+'}${x.toFixed(2)}`;

class Generator {
  private waiting?: { resolve: (m: FromGen) => void; reject: (e: Error) => void };
  private constructor(private readonly child: ChildProcess) {
    child.on('message', (m: FromGen) => {
      const w = this.waiting;
      this.waiting = undefined;
      if (!w) return;
      if ('error' in m) w.reject(new Error(`live generator: ${m.error}`));
      else w.resolve(m);
    });
    child.on('exit', (code) => {
      const w = this.waiting;
      this.waiting = undefined;
      w?.reject(new Error(`live generator exited (code ${code})`));
    });
    // A message to a child that has gone fails here, not as an uncaught exception; the run fails through 'exit'.
    child.on('error', (e) => {
      const w = this.waiting;
      this.waiting = undefined;
      w?.reject(new Error(`live generator: ${e.message}`));
    });
  }

  private next(): Promise<FromGen> {
    return new Promise((resolve, reject) => (this.waiting = { resolve, reject }));
  }

  static async start(setup: GenSetup): Promise<Generator> {
    const g = new Generator(fork(path.join(__dirname, 'livegen.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
    const ready = g.next();
    g.child.send(setup);
    // Loading the generator takes well under a second; a child that never answers must not hang the benchmark.
    let late = false;
    const timer = setTimeout(() => {
      late = true;
      g.stop();
    }, GEN_START_TIMEOUT_MS);
    try {
      await ready;
    } catch (e) {
      g.stop();
      throw late ? new Error(`the live generator did not start within ${GEN_START_TIMEOUT_MS / 1000} s`) : e;
    } finally {
      clearTimeout(timer);
    }
    return g;
  }

  /** Resolves once the generator has sent them all. */
  async run(frames: number): Promise<void> {
    const done = this.next();
    this.child.send({ go: frames } satisfies ToGen);
    await done;
  }

  /** Ends the generator, in the middle of a call if need be (the kernel's test run stops at a pending signal). */
  stop(): void {
    this.child.kill('SIGKILL');
  }
}

/** Generators that all send until they run out or are stopped; finished once any has run out, error if one failed. */
interface Running {
  finished: boolean;
  error?: Error;
  done: Promise<unknown>;
}

function startAll(gens: Generator[]): Running {
  const r: Running = { finished: false, done: Promise.resolve() };
  r.done = Promise.all(gens.map((g) => g.run(FRAMES_PER_CALL).then(() => (r.finished = true)))).catch((e: Error) => {
    r.finished = true;
    r.error = e;
  });
  return r;
}

export async function runLive(opts: Partial<LiveOptions> = {}): Promise<BenchResult[]> {
  const o = { ...LIVE_DEFAULTS, ...opts };
  if (o.connTable && o.proto !== 'tcp') throw new UsageError('--conn-table tracks TCP flows: use it with --proto tcp');
  if (o.connTable && o.stages) throw new UsageError('--stages cuts the fast path of a service without the connection table: leave out --conn-table');
  if (o.cpus > os.cpus().length) throw new UsageError(`--cpus ${o.cpus}: this machine has ${os.cpus().length} CPUs, one generator each at most`);
  const log = o.log ?? (() => {});
  const ns = ScratchNetns.create(benchNetnsName());
  const cleanup: (() => void)[] = [];
  let gens: Generator[] = [];
  // Also on SIGINT/SIGTERM: the namespace and the pins outlive the process, and a generator is in a kernel call.
  return withSignalCleanup(() => {
    for (const g of gens) g.stop();
    for (const c of cleanup.reverse()) {
      try {
        c();
      } catch {
        /* keep cleaning up */
      }
    }
    ns.remove();
  }, async () => {
    // One queue per generator CPU, so that CPUs do not share a veth ring.
    const q = String(Math.max(1, o.cpus));
    ns.ip('link', 'add', GEN_IF, 'numtxqueues', q, 'numrxqueues', q, 'type', 'veth', 'peer', 'name', LB_IF, 'numtxqueues', q, 'numrxqueues', q);
    ns.ip('link', 'set', GEN_IF, 'up');
    ns.ip('link', 'set', LB_IF, 'up');
    ns.enter();

    // The load balancer (and, with --stages, its builds cut short after each stage), with one service.
    const lb = (name: string, build?: BuildOptions): Dataplane => {
      const d = loadScratchLb(name, [{ id: 1, vip: VIP, port: 80, proto: o.proto, flags: o.connTable ? SERVICE_FLAG.SERVICE_F_CONN_TABLE : 0 }], build);
      cleanup.push(() => d.discard());
      return d;
    };
    const dp = lb('live');
    const txSlot = dp.statIds.get('TX')!;
    const cut = o.stages ? STAGES.map((_, i) => lb(`live-stage${i + 1}`, { BENCH_STAGE: i + 1 })) : [];

    const min = BpfObject.open(ensureObject('xdp_min'));
    cleanup.push(() => min.close());
    min.load();
    const sink = BpfObject.open(ensureObject('xdp_sink'));
    cleanup.push(() => sink.close());
    sink.load();
    const sinkCount = new PerCpuMap(sink.map('sink_count'), u32, u64);

    const sinkLink = attachXdp(sink.programFd('xdp_sink'), GEN_IF, 'native');
    cleanup.push(() => fn.close(sinkLink));
    const minFd = min.programFd('xdp_min_tx');
    const link = attachXdp(minFd, LB_IF, 'native');
    cleanup.push(() => fn.close(link));

    const frame = buildFrame({
      src: '198.18.0.1', dst: VIP, sport: 10000, dport: 80, proto: o.proto,
      tcpFlags: o.proto === 'tcp' ? TCP_FLAGS.ACK : undefined, padTo: o.frameSize - 4,
    });
    const forwarded = () => sinkCount.lookup(0)!.reduce((a, b) => a + b, 0n);
    const lbTx = () => Dataplane.sum(dp.stats.lookup(txSlot)).packets;

    const results: BenchResult[] = [];
    for (const flows of o.flows) {
      gens = [];
      try {
        for (let cpu = 0; cpu < o.cpus; cpu++)
          gens.push(await Generator.start({
            parent: process.pid, nsPath: ns.path, cpu, iface: GEN_IF, flows, srcBase: ipToBytes(SRC_BASE).readUInt32BE(0),
            frame: frame.toString('base64'), batch: o.batch,
          }));
        // The generators run on through every window while a program and xdp_min take turns on the link, in the
        // order AB BA AB BA ...: both meet the same generator and the same drift of a shared machine.
        let running = startAll(gens);
        await sleep(SETTLE_MS);
        // Programs against xdp_min, each in its own pairs of windows, the programs in turn round after round (so that
        // the builds of --stages meet the same drift); count: a program's own counter of frames sent, if it has one.
        const measure = async (builds: { fd: number; count?: () => bigint }[]) => {
          const ms = builds.map(() => ({ 'xdp_min': [] as number[], 'xdp-dr': [] as number[], counter: [] as number[] }));
          for (let r = 0; r < o.runs; r++) {
            for (const [i, { fd, count }] of builds.entries()) {
              const m = ms[i];
              const programs = [{ name: 'xdp_min', fd: minFd }, { name: 'xdp-dr', fd }];
              for (const p of r % 2 ? [...programs].reverse() : programs) {
                for (let attempt = 0; ; attempt++) {
                  replaceLinkProgram(link, p.fd, `${LB_IF} link`);
                  // Frames already in flight when the programs swap belong to the one before.
                  await sleep(SWAP_MS);
                  const f0 = forwarded();
                  const c0 = count?.() ?? 0n;
                  const t0 = process.hrtime.bigint();
                  await sleep(o.seconds * 1000);
                  const f1 = forwarded();
                  const c1 = count?.() ?? 0n;
                  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
                  if (running.error) throw running.error;
                  // A generator that ran out of frames inside the window would understate the rate: start it again.
                  if (running.finished) {
                    await running.done;
                    if (running.error) throw running.error;
                    if (attempt === 2)
                      throw new Error(`a generator sent all ${FRAMES_PER_CALL} frames of a call within a window of ${o.seconds} s, three times: use a shorter --seconds`);
                    running = startAll(gens);
                    await sleep(SETTLE_MS);
                    continue;
                  }
                  m[p.name as 'xdp_min' | 'xdp-dr'].push(Number(f1 - f0) / secs / 1e6);
                  if (p.name === 'xdp-dr' && count) m.counter.push(Number(c1 - c0) / secs / 1e6);
                  break;
                }
              }
            }
          }
          return ms.map((m) => ({ ...m, paired: pairedRatio(m['xdp-dr'], m['xdp_min']) }));
        };
        const [m, ...cutRuns] = await measure([{ fd: dp.progFd!, count: lbTx }, ...cut.map((d) => ({ fd: d.progFd! }))]);
        const paired = m.paired;
        const res = result(
          `live ${flows} flow${flows === 1 ? '' : 's'}, ${o.frameSize} B, ${o.cpus} CPU${o.cpus === 1 ? '' : 's'}${o.connTable ? ', connection table' : ''}`,
          median(m['xdp-dr']), 'Mpps',
          {
            flows, frame_bytes: o.frameSize, cpus: o.cpus, proto: o.proto, conn_table: o.connTable, batch: o.batch, seconds: o.seconds, runs: o.runs,
            lb_counter_mpps: median(m.counter),
            runs_mpps: m['xdp-dr'], reference_runs_mpps: m['xdp_min'], paired_ratio: Number(paired.toFixed(2)),
          },
          { name: 'xdp_min', value: median(m['xdp_min']) },
        );
        log(`  ${res.name}: xdp-dr ${res.value!.toFixed(2)} Mpps, xdp_min ${res.reference_value!.toFixed(2)} Mpps, median of paired ratios ${paired.toFixed(2)}`);
        // Where the frames' time goes: what each stage takes off the ratio, from xdp_min's 1.0 down to the whole
        // program's; the last step is the counters.
        let before = 1;
        for (const [i, c] of cutRuns.entries()) {
          const step = before - c.paired;
          const sr = result(`${res.name}, cut after stage ${i + 1}, ${STAGES[i]}`, median(c['xdp-dr']), 'Mpps', {
            ...res.params, lb_counter_mpps: undefined, runs_mpps: c['xdp-dr'], reference_runs_mpps: c['xdp_min'],
            paired_ratio: Number(c.paired.toFixed(2)), stage: i + 1, step: STAGES[i], step_cost: Number(step.toFixed(2)),
          }, { name: 'xdp_min', value: median(c['xdp_min']) });
          log(`  ${sr.name}: paired ratio ${c.paired.toFixed(2)}; ${STAGES[i]} ${signed(-step)}`);
          results.push(sr);
          before = c.paired;
        }
        if (cut.length) {
          Object.assign(res.params, { step: COUNTERS_STEP, step_cost: Number((before - paired).toFixed(2)) });
          log(`  ${res.name}, whole program: ${COUNTERS_STEP} ${signed(paired - before)}`);
        }
        results.push(res);
      } finally {
        for (const g of gens) g.stop();
      }
    }
    return results;
  });
}
