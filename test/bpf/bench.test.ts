// The benchmark's machinery in the real kernel (no timings are asserted: the machine is shared): test-run
// contexts, the live generator's per-frame tuples, one short live run end to end, and a short micro run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BpfObject, testRun, xdpContext, ifindexOf, XDP_ACTION, BpfError } from '../../loader/src/libbpf';
import { ensureObject } from '../../loader/src/dataplane/build';
import { buildFrame, parseFrame } from '../../loader/src/packet';
import { pinToCpu } from '../../loader/src/bench/netns';
import { runLive } from '../../loader/src/bench/live';
import { runMicro, MICRO_CASES, STAGES } from '../../loader/src/bench/micro';

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
  // Each stage build answered XDP_TX to the ACK (runMicro checks), and the steps add up to the whole program's ratio.
  const steps = results.filter((r) => r.params.step !== undefined);
  assert.deepEqual(steps.map((r) => r.params.step), [...STAGES, 'counters (service, backend, outcome)']);
  const sum = steps.reduce((a, r) => a + Number(r.params.step_cost), 1);
  assert.ok(Math.abs(sum - Number(steps[steps.length - 1].params.paired_ratio_iqm)) < 0.05, `steps ${sum} add up to the whole program's ratio`);
  for (const r of results) {
    assert.ok(r.value! > 0 && r.reference_value! > 0, `${r.name}: figures measured`);
    if (r.params.paired_ratio !== undefined) assert.ok(Number(r.params.paired_ratio) > 0);
  }
});
