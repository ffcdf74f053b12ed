// The benchmark's machinery in the real kernel (no timings are asserted: the machine is shared): test-run
// contexts, the live generator's per-frame tuples, one short live run end to end, and a short micro run.
import { test, after } from 'node:test';
import fs from 'node:fs';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { BpfObject, testRun, xdpContext, ifindexOf, XDP_ACTION, XDP_ACTION_NAME, BpfError } from '../../loader/src/libbpf';
import { ensureObject } from '../../loader/src/dataplane/build';
import { buildFrame, parseFrame, ipToBytes, TCP_FLAGS } from '../../loader/src/packet';
import { pinToCpu } from '../../loader/src/bench/netns';
import { runLive } from '../../loader/src/bench/live';
import { runMicro, MICRO_CASES, STAGES, COUNTERS_STEP, loadWithServices } from '../../loader/src/bench/micro';
import { liveChart } from '../../loader/src/bench/chart';
import { serviceKeyOf } from '../../loader/src/dataplane/layout';
import { snapshot } from '../lib/dataplane';
import { CLI, until } from '../lib/daemonlab';
import { Dataplane } from '../../loader/src/dataplane/dataplane';
import { reapStale, benchPinDir, tidyBenchPins, alive } from '../../loader/src/bench/scratch';

after(() => tidyBenchPins());

const frame = buildFrame({ src: '198.18.0.1', dst: '10.0.0.100', sport: 1, dport: 80, proto: 'udp', padTo: 60 });

function loaded<T>(name: string, constants: Record<string, number>, fn: (o: BpfObject) => T): T {
  const o = BpfObject.open(ensureObject(name), Object.keys(constants).length ? { constants } : {});
  try {
    o.load();
    return fn(o);
  } finally {
    o.close();
  }
}

test('a test-run context carries the frame size as data_end: the program sees the whole frame', () => {
  loaded('xdp_min', {}, (o) => {
    const fd = o.programFd('xdp_min_tx');
    const lo = ifindexOf('lo');
    assert.equal(testRun(fd, { data: frame, ctx: xdpContext(frame.length, lo) }).retval, XDP_ACTION.TX);
    // This kernel takes a shorter data_end and cuts the frame there: with data_end 0 the program sees nothing.
    const empty = xdpContext(frame.length, lo);
    empty.writeUInt32LE(0, 4);
    assert.equal(testRun(fd, { data: frame, ctx: empty }).retval, XDP_ACTION.PASS);
    assert.throws(() => testRun(fd, { data: frame, ctx: xdpContext(frame.length + 1, lo) }), (e: BpfError) => e.errno === 22);
  });
});

test('the live generator writes flow i as source base + i / 64, port 10000 + i % 64, and wraps after flows', () => {
  pinToCpu(0); // its flow counter is per CPU
  loaded('xdp_gen', { flows: 130, src_base: 0xc6120000 }, (o) => {
    const fd = o.programFd('xdp_gen');
    const seen: string[] = [];
    for (let i = 0; i < 132; i++) {
      const r = testRun(fd, { data: frame });
      assert.equal(r.retval, XDP_ACTION.TX);
      const p = parseFrame(r.data);
      seen.push(`${p.src}:${p.sport}`);
    }
    assert.deepEqual(seen.slice(0, 3), ['198.18.0.0:10000', '198.18.0.0:10001', '198.18.0.0:10002']);
    assert.equal(seen[64], '198.18.0.1:10000');
    assert.equal(seen[129], '198.18.0.2:10001');
    assert.deepEqual(seen.slice(130), seen.slice(0, 2));
    assert.equal(new Set(seen.slice(0, 130)).size, 130);
  });
});

test('live: frames go through the attached program and are counted at the far end', async () => {
  const [r] = await runLive({ flows: [1000], seconds: 0.2, runs: 1 });
  assert.equal(r.unit, 'Mpps');
  assert.equal(r.reference, 'xdp_min');
  assert.ok(r.value! > 0 && r.reference_value! > 0, JSON.stringify(r));
  // Everything the load balancer counted as sent arrived, give or take the frames in flight at the window's ends.
  assert.ok(Math.abs((r.params.lb_counter_mpps as number) - r.value!) <= 0.05 * r.value!, JSON.stringify(r.params));
});

test('live --stages: every build cut short forwards frames, in stage order; the chart keeps to the programs', async () => {
  const results = await runLive({ flows: [100], seconds: 0.1, runs: 1, stages: true });
  assert.deepEqual(results.map((r) => r.params.stage), [1, 2, 3, 4, undefined]);
  assert.deepEqual(results.map((r) => r.params.step), [...STAGES, COUNTERS_STEP]);
  for (const r of results) assert.ok(r.value! > 0 && r.reference_value! > 0, `${r.name}: frames forwarded`);
  // The whole program's own counter saw what the sink saw; the cut builds count nothing.
  const whole = results[4];
  assert.ok(Math.abs((whole.params.lb_counter_mpps as number) - whole.value!) <= 0.05 * whole.value!, JSON.stringify(whole.params));
  assert.equal((liveChart(results, 't').match(/100 flows/g) ?? []).length, 1);
  await assert.rejects(runLive({ flows: [1], connTable: true, stages: true }), /leave out --conn-table/);
});

test('bench micro runs every case with the action it claims, against both reference programs', () => {
  const results = runMicro({ repeat: 1000, runs: 1 });
  for (const c of MICRO_CASES) {
    const r = results.find((x) => x.name === c.name);
    assert.ok(r, `a result for ${c.name}`);
    assert.equal(r.params.action, c.action);
  }
  const names = results.map((r) => r.name);
  for (const want of ['against the same packet untracked', 'straightforward DR program', 'against the straightforward DR program', 'SYN of a new flow'])
    assert.ok(names.some((n) => n.includes(want)), `a result for '${want}'`);
  // Each stage build answered XDP_TX to the ACK (runMicro checks); where each is cut is the next test's.
  const steps = results.filter((r) => r.params.step !== undefined);
  assert.deepEqual(steps.map((r) => r.params.step), [...STAGES, COUNTERS_STEP]);
  for (const r of results) {
    assert.ok(r.value! > 0 && r.reference_value! > 0, `${r.name}: figures measured`);
    if (r.params.paired_ratio !== undefined) assert.ok(Number(r.params.paired_ratio) > 0);
  }
});

test('each stage build of bench micro stops right after its stage, and the whole program does everything', () => {
  const ack = (dport: number) => buildFrame({ src: '198.51.100.7', dst: '10.0.0.100', sport: 40000, dport, proto: 'tcp', tcpFlags: TCP_FLAGS.ACK, padTo: 60 });
  const served = ack(80);
  const noService = ack(82); // a VIP of the filter, no service on this port
  const noBackend = ack(81); // a service whose table is empty
  // What each build does to the three frames: the action, whether the MACs were rewritten, packets counted.
  const want: [string, number | undefined, string[], boolean, number][] = [
    ['parse + VIP filter', 1, ['XDP_TX', 'XDP_TX', 'XDP_TX'], false, 0],
    ['service lookup', 2, ['XDP_TX', 'XDP_PASS', 'XDP_TX'], false, 1],
    ['flow hash + Maglev pick', 3, ['XDP_TX', 'XDP_PASS', 'XDP_PASS'], false, 2],
    ['MAC rewrite', 4, ['XDP_TX', 'XDP_PASS', 'XDP_PASS'], true, 2],
    ['whole program', undefined, ['XDP_TX', 'XDP_PASS', 'XDP_PASS'], true, 3],
  ];
  for (const [label, stage, actions, rewritten, counted] of want) {
    const dp = loadWithServices(`test-stage${stage ?? 0}`, stage ? { BENCH_STAGE: stage } : undefined);
    try {
      dp.installTable(5, new Uint32Array(dp.limits.tableSize));
      dp.putService(serviceKeyOf(ipToBytes('10.0.0.100'), 81, 'tcp'), { id: 5, flags: 0 });
      const got = [served, noService, noBackend].map((f) => testRun(dp.progFd!, { data: f }));
      assert.deepEqual(got.map((r) => XDP_ACTION_NAME[r.retval]), actions, label);
      assert.equal(!got[0].data.equals(served), rewritten, `${label}: MACs rewritten`);
      const c = snapshot(dp);
      const packets = (m: Map<number, { packets: bigint }>) => [...m.values()].reduce((a, v) => a + Number(v.packets), 0);
      // A cut build exits before any counter; the PASS outcomes it reaches count, as they would in the program.
      assert.equal(packets(c.stats), counted, `${label}: outcomes counted`);
      assert.equal(packets(c.backends), stage ? 0 : 1, `${label}: backend counted`);
      assert.equal(packets(c.services), stage ? 0 : 1, `${label}: service counted`);
    } finally {
      dp.discard();
    }
  }
});

/** Processes running the live generator whose parent was pid (read from /proc while they live). */
function generatorsOf(pid: number): number[] {
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid && fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').includes('livegen')) out.push(Number(d));
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

/** Alive and not a zombie (a child of ours that has ended but not been reaped yet). */
function running(pid: number): boolean {
  try {
    return alive(pid) && !/^\S+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false; // gone between the two looks
  }
}

test('bench live leaves nothing behind: on SIGTERM it cleans up; after SIGKILL its generators die with it and the next bench removes the rest', async () => {
  for (const sig of ['SIGTERM', 'SIGKILL'] as const) {
    const child = spawn(process.execPath, [CLI, 'bench', 'live', '--flows', '1', '--runs', '100'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((r) => child.once('exit', (code, signal) => r(code ?? (signal === 'SIGKILL' ? 137 : null))));
    const pid = child.pid!;
    const ns = `/run/netns/xdrb-${pid}`;
    const pins = benchPinDir('live', pid);
    let gens: number[] = [];
    try {
      // Frames reach the load balancer once a generator is in its kernel call (of minutes), where it must be stopped.
      const forwarded = () => {
        let dp: Dataplane;
        try {
          dp = Dataplane.open(pins);
        } catch {
          return 0n; // not all pinned and written yet
        }
        try {
          return Dataplane.sum(dp.stats.lookup(dp.statIds.get('TX')!)).packets;
        } finally {
          dp.close();
        }
      };
      await until(() => forwarded() > 0n, 20_000, () => 'no frames through the load balancer');
      gens = generatorsOf(pid);
      assert.ok(gens.length > 0, 'a generator runs');
      assert.ok(fs.existsSync(ns) && fs.existsSync(pins), 'the benchmark made its namespace and pins');
      child.kill(sig);
      const code = await exited;
      assert.equal(code, sig === 'SIGTERM' ? 143 : 137, stderr);
      await until(() => gens.every((g) => !running(g)), 5_000, () => 'the generators outlived the benchmark');
      if (sig === 'SIGKILL') {
        assert.ok(fs.existsSync(ns) && fs.existsSync(pins), 'SIGKILL gives no chance to clean up');
        const next = spawnSync(process.execPath, [CLI, 'bench', 'maglev', '--backends', '10'], { encoding: 'utf8' });
        assert.equal(next.status, 0, next.stderr);
        assert.match(next.stderr, new RegExp(`removed ${pins}, left by a benchmark that did not finish`));
        const file = /results written to (\S+\.json)/.exec(next.stderr)?.[1];
        if (file) fs.rmSync(file, { force: true });
      }
      assert.ok(!fs.existsSync(ns), `${ns} removed`);
      assert.ok(!fs.existsSync(pins), `${pins} removed`);
    } finally {
      child.kill('SIGKILL');
      await exited;
      for (const g of gens.filter(running)) process.kill(g, 'SIGKILL');
      reapStale();
    }
  }
});

test('reapStale removes the scratch pins and namespace of processes that have gone, and nothing of one that runs', () => {
  const gone = spawnSync('true').pid!;
  const made = [benchPinDir('live', gone), benchPinDir('live')];
  for (const d of made) fs.mkdirSync(d, { recursive: true });
  execFileSync('ip', ['netns', 'add', `xdrb-${gone}`]);
  try {
    const removed = reapStale();
    assert.ok(removed.includes(made[0]) && removed.includes(`network namespace xdrb-${gone}`), removed.join(', '));
    assert.ok(!removed.includes(made[1]));
    assert.ok(!fs.existsSync(made[0]) && fs.existsSync(made[1]));
    assert.ok(!fs.existsSync(`/run/netns/xdrb-${gone}`));
  } finally {
    for (const d of made) fs.rmSync(d, { recursive: true, force: true });
    if (fs.existsSync(`/run/netns/xdrb-${gone}`)) execFileSync('ip', ['netns', 'del', `xdrb-${gone}`]);
  }
});
