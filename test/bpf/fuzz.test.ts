// Fuzzing the data path in the real kernel: a short run of every generator kind and every truncation of valid
// frames, each frame held to the invariants (loader/src/fuzz/run.ts); and proof that the checks can fail.
// The long run: node dist/loader/src/fuzz/run.js [--frames N] [--seed S].
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Fuzzer, checkFrame, checkCounters, formatViolation, RunResult, Moved } from '../../loader/src/fuzz/run';
import {
  KINDS, generate, expectedOutcome, truncationBases, TEST_RUN_MIN, TEST_RUN_LINEAR_MAX, TEST_RUN_MAX,
} from '../../loader/src/fuzz/generators';
import { buildFrame } from '../../loader/src/packet';
import { XDP_ACTION } from '../../loader/src/libbpf';

const SEED = 0x7e57;
const FRAMES = 30_000;
let fz: Fuzzer;

before(() => {
  fz = Fuzzer.open();
});

after(() => fz?.close());

test('frames are a function of (seed, index) alone', () => {
  for (const i of [0, 1, 977, 29_999]) {
    const a = generate(SEED, i);
    const b = generate(SEED, i);
    assert.equal(a.kind, b.kind);
    assert.ok(a.frame.equals(b.frame), `index ${i}`);
  }
  const differ = [0, 1, 2, 3, 4, 5, 6, 7].filter((i) => !generate(SEED, i).frame.equals(generate(SEED + 1, i).frame));
  assert.ok(differ.length >= 7, 'another seed gives other frames');
});

test(`test_run takes ${TEST_RUN_MIN}..${TEST_RUN_MAX} bytes and shows the program the first ${TEST_RUN_LINEAR_MAX}`, () => {
  assert.deepEqual(fz.probeLimits(), { min: TEST_RUN_MIN, linear: TEST_RUN_LINEAR_MAX, max: TEST_RUN_MAX });
});

test(`${FRAMES} generated frames of every kind: every invariant holds for every frame`, (t) => {
  const r = fz.fuzz({ seed: SEED, frames: FRAMES });
  assert.equal(r.violation && formatViolation(r.violation), undefined);
  assert.equal(r.ran + r.refused, FRAMES);
  t.diagnostic(`${FRAMES} frames in ${r.seconds.toFixed(1)} s; ${r.refused} refused (< 14 bytes)`);
  for (const k of KINDS) assert.ok((r.byKind.get(k)?.get('frames') ?? 0) > 500, `kind ${k} is generated`);
  // The generators must reach every decision the program makes, or the invariants are checked on too little.
  for (const name of fz.dp.statIds.keys()) assert.ok((r.byStat.get(name) ?? 0) > 50, `outcome ${name} is reached: ${r.byStat.get(name) ?? 0}`);
  assert.ok(r.refused > 0, 'some frames are shorter than 14 bytes');
  assert.ok(r.conn.new > 100 && r.conn.hit > 100, `the connection table is filled and followed: ${JSON.stringify(r.conn)}`);
});

test('every truncation of valid frames to services: refused below 14 bytes, passed unaltered until whole', () => {
  const bases = truncationBases();
  const r = fz.truncations();
  assert.equal(r.violation && formatViolation(r.violation), undefined);
  assert.equal(r.ran + r.refused, bases.reduce((n, b) => n + b.frame.length + 1, 0));
  assert.equal(r.refused, TEST_RUN_MIN * bases.length);
  // Only the whole frames are forwarded: a cut anywhere leaves an IP length beyond the frame, or no header.
  const m = r.byKind.get('truncation')!;
  assert.equal((m.get('XDP_TX') ?? 0) + (m.get('XDP_REDIRECT') ?? 0), bases.length);
});

test('the frame check catches every kind of violation', () => {
  const frame = buildFrame({ src: '198.51.100.7', dst: '10.0.0.100', sport: 40001, dport: 53, proto: 'udp', payload: Buffer.alloc(20, 7) });
  const exp = expectedOutcome(frame);
  assert.equal(exp.stat, 'TX');
  const real = fz.run(frame) as RunResult;
  assert.equal(real.retval, XDP_ACTION.TX);
  assert.equal(checkFrame(frame, real, exp), null);

  const fake = (f: (r: RunResult) => void) => {
    const r = { retval: real.retval, data: Buffer.from(real.data) };
    f(r);
    return checkFrame(frame, r, exp);
  };
  assert.match(fake((r) => (r.data[20] ^= 1)) ?? '', /changed byte 20/);
  assert.match(fake((r) => (r.data = r.data.subarray(0, r.data.length - 1))) ?? '', /changed the length/);
  assert.match(fake((r) => (r.retval = XDP_ACTION.DROP)) ?? '', /XDP_DROP/);
  assert.match(fake((r) => (r.retval = XDP_ACTION.ABORTED)) ?? '', /XDP_ABORTED/);
  assert.match(fake((r) => (r.retval = XDP_ACTION.REDIRECT)) ?? '', /model says TX/);
  assert.match(fake((r) => (r.data[11] ^= 1)) ?? '', /source MAC/);
  assert.match(fake((r) => (r.data[5] ^= 0x40)) ?? '', /no backend's MAC/);
  // Backend 3 of web4 has weight 0: a real backend's MAC, but not one this service may use.
  assert.match(fake((r) => Buffer.from([2, 0, 0, 0, 0, 3]).copy(r.data, 0)) ?? '', /not a live backend/);
  assert.match(fake((r) => (r.retval = XDP_ACTION.PASS)) ?? '', /XDP_PASS with the frame altered at byte \d+/);
  assert.match(fake((r) => { r.retval = XDP_ACTION.PASS; r.data = Buffer.from(frame); }) ?? '', /model says TX/);

  const other = buildFrame({ src: '198.51.100.7', dst: '10.0.0.99', proto: 'udp', dport: 53 });
  const passed = fz.run(other) as RunResult;
  assert.equal(checkFrame(other, passed, expectedOutcome(other)), null);
  const forged = { retval: XDP_ACTION.TX, data: Buffer.concat([real.data.subarray(0, 12), other.subarray(12)]) };
  assert.match(checkFrame(other, forged, expectedOutcome(other)) ?? '', /not a valid packet to a service/);
  assert.match(checkFrame(other, { ...passed, data: Buffer.from(passed.data).fill(0, 30, 31) }, expectedOutcome(other)) ?? '', /altered at byte 30/);
});

test('the counter check catches counters that do not add up', () => {
  const byStat: Moved = new Map([['TX', { packets: 2, bytes: 200 }], ['PASS_NOT_IP', { packets: 1, bytes: 60 }]]);
  const exp = { frames: 3, forwarded: 2, byStat };
  const moved = (m: [string, number, number][]): Moved => new Map(m.map(([k, p, b]) => [k, { packets: p, bytes: b }]));
  assert.equal(checkCounters(exp, moved([['TX', 2, 200], ['PASS_NOT_IP', 1, 60]])), null);
  assert.match(checkCounters(exp, moved([['TX', 2, 200]])) ?? '', /moved by 2 for 3 frames/);
  assert.match(checkCounters(exp, moved([['TX', 1, 100], ['REDIRECT', 1, 100], ['PASS_NOT_IP', 1, 60]])) ?? '', /counter TX moved by 1 packets/);
  assert.match(checkCounters(exp, moved([['TX', 1, 100], ['PASS_NOT_IP', 2, 160]])) ?? '', /TX \+ REDIRECT moved by 1/);
  assert.match(checkCounters(exp, moved([['TX', 2, 201], ['PASS_NOT_IP', 1, 60]])) ?? '', /counter TX moved by 2 packets \/ 201 bytes/);
});

test('a run stops at the first violation and prints what reproduces it', () => {
  // A result changed after the kernel returned it, as a bug in the program would change it.
  const r = fz.fuzz({ seed: SEED, frames: 100, tamper: (item, res) => {
    if (item.where.endsWith('index 42')) res.retval = XDP_ACTION.DROP;
  } });
  assert.ok(r.violation);
  assert.equal(r.ran, 43 - r.refused);
  const text = formatViolation(r.violation);
  const g = generate(SEED, 42);
  assert.match(text, /returned XDP_DROP/);
  assert.match(text, new RegExp(`seed ${SEED} index 42`));
  assert.match(text, new RegExp(`kind:\\s+${g.kind}`));
  assert.ok(text.includes(g.frame.toString('hex')), 'the frame in hex');

  // Packets the counters see but the run did not send. The frame's own again: its counter moves by two.
  const twice = fz.fuzz({ seed: SEED, frames: 100, start: 1000, tamper: (item) => {
    if (item.where.endsWith('index 1050')) fz.run(item.frame);
  } });
  assert.match(twice.violation?.message ?? '', /counter \w+ moved by 2 packets .* the model expects 1 \//);
  assert.match(twice.violation!.item.where, /index 1050$/);
  // After the last frame, counted elsewhere than that frame: only the full read of all counters at the end sees it.
  const last = generate(SEED, 2099).frame;
  assert.ok(last.length >= 14, 'the kernel runs the last frame');
  const extra = expectedOutcome(last).stat === 'PASS_NOT_IP'
    ? buildFrame({ src: '198.51.100.7', dst: '10.0.0.99', proto: 'udp', dport: 53 })
    : Buffer.concat([Buffer.alloc(12), Buffer.from([0x08, 0x06]), Buffer.alloc(46)]);
  assert.notEqual(expectedOutcome(extra).stat, expectedOutcome(last).stat);
  const late = fz.fuzz({ seed: SEED, frames: 100, start: 2000, tamper: (item) => {
    if (item.where.endsWith('index 2099')) fz.run(extra);
  } });
  const m = /outcome counters moved by (\d+) for (\d+) frames run/.exec(late.violation?.message ?? '');
  assert.ok(m && Number(m[1]) === Number(m[2]) + 1, late.violation?.message);
});
