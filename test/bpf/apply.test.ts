// Planning and applying changes against a real loaded program (maps in the kernel, packets through
// BPF_PROG_TEST_RUN). The load balancer is bound to `lo` without attaching anything: apply only needs the
// interface's index and MAC, and every backend here has its MAC given, so no neighbour lookup happens.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fork, spawn, spawnSync, type ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { testRun, XDP_ACTION } from '../../loader/src/libbpf';
import { Dataplane, PROG_PIN } from '../../loader/src/dataplane/dataplane';
import { prepare, apply } from '../../loader/src/lb/change';
import { Journal, ApplyError } from '../../loader/src/lb/apply';
import { planIsEmpty } from '../../loader/src/lb/plan';
import { readState } from '../../loader/src/lb/state';
import { buildMaglevTable } from '../../loader/src/maglev';
import { buildFrame, macToString } from '../../loader/src/packet';
import { withLb, servicesOf, stateDigest, snapshot, delta, quiesce } from '../lib/dataplane';
import type { RawService } from '../../loader/src/lb/desired';

const mac = (n: number) => `02:00:00:00:00:${n.toString(16).padStart(2, '0')}`;
const be = (n: number, weight = 1) => ({ address: `10.1.0.${n}`, mac: mac(n), weight });
const web = (backends: RawService['backends'], hash = 'l4'): RawService => ({ vip: '10.0.0.80', port: 80, protocol: 'tcp', hash, backends });

function forward(dp: Dataplane, src: string, sport: number, dst = '10.0.0.80', dport = 80): { action: number; mac: string } {
  const r = testRun(dp.progFd!, { data: buildFrame({ src, dst, sport, dport, proto: 'tcp' }) });
  return { action: r.retval, mac: macToString(r.data, 0) };
}

test('an applied config reads back from the maps alone, and applying it again plans nothing', async () => {
  await withLb(async (dp, change) => {
    const want: RawService[] = [
      web([be(1), be(2, 3), be(3, 0)]),
      { vip: '2001:db8::53', port: 0, protocol: 'udp', hash: 'l3', backends: [{ address: '2001:db8::11', mac: mac(0x11), weight: 1 }] },
      { vip: '10.0.0.81', port: 443, protocol: 'tcp', hash: 'l4', backends: [] },
    ];
    await change(want);
    const st = readState(Dataplane.open(dp.pinDir));
    assert.deepEqual(
      st.services.map((s) => ({ vip: s.vip, port: s.port, protocol: s.protocol, hash: s.hash, table: s.hasTable, backends: s.backends.map((b) => [b.address, b.mac, b.weight, b.macResolved]) })),
      [
        { vip: '10.0.0.80', port: 80, protocol: 'tcp', hash: 'l4', table: true, backends: [['10.1.0.1', mac(1), 1, false], ['10.1.0.2', mac(2), 3, false], ['10.1.0.3', mac(3), 0, false]] },
        { vip: '10.0.0.81', port: 443, protocol: 'tcp', hash: 'l4', table: true, backends: [] },
        { vip: '2001:db8::53', port: 0, protocol: 'udp', hash: 'l3', table: true, backends: [['2001:db8::11', mac(0x11), 1, false]] },
      ],
    );
    assert.equal(st.hashSeed, 7);
    const again = await prepare({ iface: 'lo', dp }, servicesOf(want));
    assert.ok(planIsEmpty(again.plan), `second apply planned: ${JSON.stringify(again.plan.changes)}`);

    // The program forwards by the table the control plane computed from (address, id, weight).
    const ids = new Map(st.services[0].backends.map((b) => [b.address, b.id]));
    const table = buildMaglevTable([...ids].map(([key, id]) => ({ id, key, weight: want[0].backends.find((b) => b.address === key)!.weight })), dp.limits.tableSize);
    assert.deepEqual(dp.readTable(st.services[0].id), table);
    const seen = new Map<string, number>();
    for (let p = 0; p < 400; p++) {
      const r = forward(dp, `198.51.100.${p % 200}`, 30000 + p);
      assert.equal(r.action, XDP_ACTION.TX);
      seen.set(r.mac, (seen.get(r.mac) ?? 0) + 1);
    }
    assert.deepEqual([...seen.keys()].sort(), [mac(1), mac(2)], 'weight 0 (drained) gets no flow');
    assert.ok(seen.get(mac(2))! > 2 * seen.get(mac(1))!, `weight 3 vs 1: ${JSON.stringify([...seen])}`);
  });
});

test('ids stay with what keeps existing; removing 1 of 10 backends moves about a tenth of the slots', async () => {
  await withLb(async (dp, change) => {
    const ten = Array.from({ length: 10 }, (_, i) => be(i + 1));
    await change([web(ten)]);
    const before = readState(dp).services[0];
    const prepared = await prepare({ iface: 'lo', dp }, servicesOf([web(ten.slice(1))]));
    const [d] = prepared.plan.disruption;
    assert.ok(d.slots / d.of > 0.08 && d.slots / d.of < 0.13, `moved ${d.slots}/${d.of}`);
    const stats = apply(prepared, new Journal());
    // The table packets do not read is written whole: no read-back, and nothing left from two changes ago.
    assert.equal(stats.slotsWritten, d.of);
    const after = readState(dp).services[0];
    assert.equal(after.id, before.id);
    assert.deepEqual(after.backends.map((b) => b.id), before.backends.slice(1).map((b) => b.id));
    // A backend added in the same change as a removal does not take the freed id: a packet that still holds
    // the old table must not reach the newcomer under the old one's id.
    await change([web([...ten.slice(2), be(11)])]);
    const added = readState(dp).services[0].backends.find((b) => b.address === '10.1.0.11')!;
    assert.notEqual(added.id, before.backends[1].id);
  });
});

test('a change right after another waits for packets still reading the other half while it plans, and only then writes', async () => {
  await withLb(async (dp, change) => {
    await change([web([be(1)])]);
    const calls: string[] = [];
    const asyncWait = dp.waitForReadersAsync.bind(dp);
    const syncWait = dp.waitForReaders.bind(dp);
    dp.waitForReaders = () => {
      calls.push('wait');
      syncWait();
    };
    const services = servicesOf([web([be(1), be(2)])]);

    // Right after that change: planning starts the wait, and returns only once it is over, having written nothing.
    assert.equal(dp.epochState().quiescent, 0);
    dp.waitForReadersAsync = async () => {
      calls.push('async wait starts');
      const waited = await asyncWait();
      calls.push('async wait ends');
      return waited;
    };
    const before = stateDigest(dp);
    const p = await prepare({ iface: 'lo', dp }, services);
    calls.push('planned');
    assert.deepEqual(calls, ['async wait starts', 'async wait ends', 'planned']);
    assert.equal(p.readersGone, dp.epochState().active);
    assert.deepEqual(stateDigest(dp), before, 'planning wrote nothing');
    apply(p, new Journal());
    assert.deepEqual(calls, ['async wait starts', 'async wait ends', 'planned'], 'apply did not wait again');

    // A wait that failed, or could not wait (membarrier refused), while planning is made good by apply itself.
    for (const [i, failed] of [() => Promise.reject(new Error('refused')), async () => false].entries()) {
      calls.length = 0;
      dp.waitForReadersAsync = failed;
      assert.equal(dp.epochState().quiescent, 0);
      const q = await prepare({ iface: 'lo', dp }, servicesOf([web([be(1), be(3 + i)])]));
      assert.equal(q.readersGone, undefined);
      apply(q, new Journal());
      assert.deepEqual(calls, ['wait']);
    }

    // At a quiet load balancer there is nothing to wait for.
    quiesce(dp);
    calls.length = 0;
    dp.waitForReadersAsync = async () => calls.push('async wait starts') > 0;
    const r = await prepare({ iface: 'lo', dp }, services);
    apply(r, new Journal());
    assert.deepEqual(calls, []);
    assert.equal(readState(dp).services[0].backends.length, 2);
  });
});

test('an id handed out again starts with zero counters', async () => {
  await withLb(async (dp, change) => {
    await change([web([be(1)])]);
    const id = readState(dp).services[0].backends[0].id;
    assert.equal(forward(dp, '198.51.100.1', 1000).action, XDP_ACTION.TX);
    assert.equal(Dataplane.sum(dp.backendStats.lookup(id)).packets, 1n);
    await change([web([])]);
    await change([web([be(2)])]);
    const reused = readState(dp).services[0].backends[0];
    assert.equal(reused.id, id, 'a later change may reuse the id');
    assert.deepEqual(Dataplane.sum(dp.backendStats.lookup(reused.id)), { packets: 0n, bytes: 0n });
  });
});

test('a write that fails at any point rolls every earlier write back: the maps are as before', async () => {
  await withLb(async (dp, change) => {
    const start: RawService[] = [
      web([be(1), be(2), be(3)]),
      { vip: '10.0.0.90', port: 53, protocol: 'udp', hash: 'l4', backends: [be(4)] },
    ];
    await change(start);
    const target: RawService[] = [
      web([be(1, 2), be(3), be(5)], 'l3'), // weight, hash, one out, one in
      { vip: '10.0.0.91', port: 8080, protocol: 'tcp', hash: 'l4', backends: [be(6)] }, // new; 10.0.0.90 goes
    ];
    const before = stateDigest(dp);
    const probe = (): string[] => Array.from({ length: 50 }, (_, p) => forward(dp, `203.0.113.${p}`, 2000 + p).mac);
    const flows = probe();
    // Fail before each write of the change in turn.
    const writes = await applyCount(dp, target);
    assert.ok(writes >= 8, `a change of this size takes several writes (${writes})`);
    for (let k = 0; k < writes; k++) {
      quiesce(dp);
      await assert.rejects(change(target, k), (e: unknown) => e instanceof ApplyError && /injected fault/.test(e.message) && /undone/.test(e.message));
      assert.deepEqual(stateDigest(dp), before, `after a failure before write ${k}`);
      assert.deepEqual(probe(), flows, `flows after a failure before write ${k}`);
    }
    await change(target);
    assert.notDeepEqual(stateDigest(dp), before);
    assert.deepEqual(readState(dp).services.map((s) => `${s.vip}:${s.port}/${s.protocol} ${s.hash} ${s.backends.map((b) => `${b.address}*${b.weight}`)}`), [
      '10.0.0.80:80/tcp l3 10.1.0.1*2,10.1.0.3*1,10.1.0.5*1',
      '10.0.0.91:8080/tcp l4 10.1.0.6*1',
    ]);
  });

  /** Applies the change in full to count its writes, then undoes it through the journal. */
  async function applyCount(dp: Dataplane, s: RawService[]): Promise<number> {
    const before = stateDigest(dp);
    quiesce(dp);
    const j = new Journal();
    apply(await prepare({ iface: 'lo', dp }, servicesOf(s)), j);
    j.rollback(new Error('counting only'), 'count');
    assert.deepEqual(stateDigest(dp), before, 'a full rollback restores the state too');
    return j.count;
  }
});

test('backends added and removed through apply while packets stream: no packet lacks a backend, none reaches a removed one', async (t) => {
  await withLb(async (dp, change) => {
    const all = Array.from({ length: 6 }, (_, i) => be(i + 1));
    await change([web(all)]);
    const before = snapshot(dp);
    const worker = path.join(__dirname, '../lib/traffic-worker.js');
    const child = fork(worker, [path.join(dp.pinDir, PROG_PIN), '10.0.0.80', '80', '3000'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    try {
      await new Promise<void>((res) => child.once('message', () => res()));
      let changes = 0;
      for (let i = 0; i < 20; i++) {
        const gone = all[i % all.length];
        await change([web(all.filter((b) => b !== gone))]);
        for (let p = 0; p < 150; p++) {
          const r = forward(dp, `192.0.2.${p % 250}`, 40000 + p + i);
          assert.equal(r.action, XDP_ACTION.TX);
          assert.notEqual(r.mac, gone.mac, `a packet went to ${gone.address} after its removal returned`);
        }
        await change([web(all)]);
        changes += 2;
        await new Promise((res) => setImmediate(res));
      }
      child.send('stop');
      const report = await new Promise<{ actions: Record<string, number>; macs: Record<string, number> }>((res) => child.on('message', (m) => res(m as never)));
      t.diagnostic(`${changes} applies while the other process sent ${JSON.stringify(report.actions)}`);
      assert.deepEqual(Object.keys(report.actions), ['XDP_TX'], 'every streamed packet was forwarded');
      assert.ok(report.actions.XDP_TX > 1000, 'the stream ran alongside the changes');
      const moved = delta(before.stats, snapshot(dp).stats);
      assert.deepEqual([...moved.keys()], [dp.statIds.get('TX')], 'no packet was counted as passed or dropped');
    } finally {
      child.kill();
    }
  });
});

/**
 * What packets and the control plane can tell of a load balancer, without its ids and epoch (which a change may
 * give out differently): each service with its backends, the backend address of every table slot, and where
 * each probe flow goes.
 */
function observe(dp: Dataplane): unknown {
  const st = readState(dp);
  // Probes of earlier observations left connection records that would pin the flows: start without them.
  dp.conns.clear();
  const probes = Array.from({ length: 40 }, (_, p) => [
    forward(dp, `203.0.113.${p}`, 3000 + p).mac, forward(dp, `203.0.113.${p}`, 3000 + p, '10.0.0.91', 8080).mac,
    forward(dp, `203.0.113.${p}`, 3000 + p, '10.0.0.90', 53).action,
  ]);
  return {
    services: st.services.map((s) => {
      const addr = new Map(s.backends.map((b) => [b.id, b.address]));
      const t = dp.readTable(s.id);
      const slots = t ? createHash('sha256').update(Array.from(t, (id) => addr.get(id) ?? '-').join(',')).digest('hex') : 'none';
      return `${s.vip}:${s.port}/${s.protocol} ${s.hash} ${s.connTable} ${s.backends.map((b) => `${b.address}*${b.weight}@${b.mac}`)} ${slots}`;
    }),
    probes,
  };
}

/** Runs test/lib/apply-child in its own process; with stopAt, kills it (SIGKILL) when it reaches that write. */
async function applyInChild(pinDir: string, s: RawService[], kill: { stopAt?: number; afterMs?: number } = {}):
  Promise<{ done?: { writes: number; ms: number }; killedAt?: string }> {
  const args = [path.join(__dirname, '../lib/apply-child.js'), pinDir, JSON.stringify(s)];
  if (kill.stopAt !== undefined) args.push(String(kill.stopAt));
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  let last = '';
  let timer: NodeJS.Timeout | undefined;
  child.stderr.on('data', (d) => (err += d));
  child.stdout.on('data', (d) => {
    out += d;
    const lines = out.split('\n').filter(Boolean);
    last = lines[lines.length - 1] ?? '';
    if (kill.stopAt !== undefined && last.startsWith(`write ${kill.stopAt} `)) child.kill('SIGKILL');
    if (kill.afterMs !== undefined && last === 'ready' && !timer) timer = setTimeout(() => child.kill('SIGKILL'), kill.afterMs);
  });
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  clearTimeout(timer);
  const done = /^done (\d+) ([\d.]+)$/m.exec(out);
  if (done) return { done: { writes: Number(done[1]), ms: Number(done[2]) } };
  if (code !== null) throw new Error(`apply child exited ${code}: ${err}`);
  return { killedAt: last };
}

test('killed at any point of an apply, the maps hold the old state or the new one, never a mix', { timeout: 300_000 }, async (t) => {
  await withLb(async (dp, change) => {
    const start: RawService[] = [
      web([be(1), be(2), be(3)]),
      { vip: '10.0.0.90', port: 53, protocol: 'udp', hash: 'l4', backends: [be(4)] },
    ];
    const target: RawService[] = [
      web([be(1, 2), be(3), be(5)], 'l3'), // weight, hash, one out, one in
      { vip: '10.0.0.91', port: 8080, protocol: 'tcp', hash: 'l4', backends: [be(6), be(7)] }, // new; 10.0.0.90 goes
    ];
    await change(start);
    const old = observe(dp);
    quiesce(dp);
    const full = await applyInChild(dp.pinDir, target);
    const neu = observe(dp);
    assert.notDeepEqual(neu, old);
    const writes = full.done!.writes;
    t.diagnostic(`the change takes ${writes} writes, ${full.done!.ms.toFixed(1)} ms in a process of its own`);
    const seen = { old: 0, new: 0 };
    const check = async (label: string) => {
      const now = observe(dp);
      const which = JSON.stringify(now) === JSON.stringify(old) ? 'old' : JSON.stringify(now) === JSON.stringify(neu) ? 'new' : 'mix';
      assert.notEqual(which, 'mix', `${label}: the maps hold neither the old state nor the new one: ${JSON.stringify(now)}`);
      seen[which as 'old' | 'new']++;
      // The next process (a restarted daemon) takes it from there: back to the start, whichever it found.
      await change(start);
      assert.deepEqual(observe(dp), old, `${label}: a later change converges`);
      const used = readState(dp).services.flatMap((x) => [2 * x.id, 2 * x.id + 1]);
      assert.deepEqual(dp.tableSlots().filter((x) => !used.includes(x)), [], `${label}: no table map is left behind`);
      return which;
    };
    await change(start);
    for (let k = 0; k < writes; k++) {
      quiesce(dp);
      const r = await applyInChild(dp.pinDir, target, { stopAt: k });
      assert.ok(r.killedAt?.startsWith(`write ${k} `), `killed at write ${k}: ${JSON.stringify(r)}`);
      const which = await check(`killed before write ${k} (${r.killedAt})`);
      t.diagnostic(`killed before ${r.killedAt!.slice(6)}: ${which} state`);
    }
    // And at random moments, not only between writes.
    for (let i = 0; i < 12; i++) {
      const afterMs = Math.random() * full.done!.ms * 1.5;
      const r = await applyInChild(dp.pinDir, target, { afterMs });
      if (r.done) {
        assert.deepEqual(observe(dp), neu);
        seen.new++;
        await change(start);
      } else {
        await check(`killed ${afterMs.toFixed(1)} ms in`);
      }
    }
    t.diagnostic(`outcomes: ${JSON.stringify(seen)}`);
    assert.ok(seen.old > 0 && seen.new > 0, 'kills landed before and after the switch');
  });
});

const LOCK_JS = JSON.stringify(path.join(__dirname, '../../loader/src/lb/lock.js'));

/**
 * Runs a change-lock test on a pin base of its own: set for this process, and for the node scripts it starts
 * through `node` (killed at the end if still running). The base goes whatever the test does.
 */
async function withLockBase(
  name: string,
  fn: (base: string, node: (code: string) => ChildProcessByStdio<null, Readable, null>, env: NodeJS.ProcessEnv) => Promise<void>,
): Promise<void> {
  const base = path.join('/sys/fs/bpf/xdp-dr', `lock-test-${process.pid}-${name}`);
  const env = { ...process.env, XDP_DR_PIN_BASE: base };
  const started: ChildProcessByStdio<null, Readable, null>[] = [];
  const node = (code: string) => {
    const child = spawn(process.execPath, ['-e', code], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    started.push(child);
    return child;
  };
  process.env.XDP_DR_PIN_BASE = base;
  try {
    await fn(base, node, env);
  } finally {
    delete process.env.XDP_DR_PIN_BASE;
    for (const child of started) child.kill('SIGKILL');
    fs.rmSync(base, { recursive: true, force: true });
  }
}

const said = (child: ChildProcessByStdio<null, Readable, null>, what: RegExp) =>
  new Promise<void>((resolve) => child.stdout.on('data', (d) => what.test(String(d)) && resolve()));

test('one change at a time: a second process waits for the change lock, or gives up with a clear error', async () => {
  await withLockBase('wait', async (_base, node) => {
    // Another process takes the lock for 600 ms.
    await said(node(`require(${LOCK_JS}).withChangeLock(() => { process.stdout.write('held\\n'); return new Promise((r) => setTimeout(r, 600)); })`), /held/);
    const { withChangeLock } = await import('../../loader/src/lb/lock');
    await assert.rejects(withChangeLock(() => 1, { timeoutMs: 100 }), /another xdp-dr process is changing the load balancers/);
    const t0 = Date.now();
    assert.equal(await withChangeLock(() => 2, { timeoutMs: 5000 }), 2);
    assert.ok(Date.now() - t0 >= 300, 'it waited for the holder');
  });
});

test('a process that waited for the change lock while the pin base was removed and made again locks the new one', async () => {
  await withLockBase('again', async (base, node, env) => {
    // The holder removes the directory under its lock and another one takes its place, as a detach of the last
    // load balancer and a new attach would.
    const dir = JSON.stringify(base);
    await said(node(`const fs = require('node:fs'); require(${LOCK_JS}).withChangeLock(() => { process.stdout.write('held\\n'); return new Promise((r) => setTimeout(() => { fs.rmdirSync(${dir}); fs.mkdirSync(${dir}); r(); }, 300)); })`), /held/);
    const { withChangeLock } = await import('../../loader/src/lb/lock');
    const other = await withChangeLock(() => {
      // While this process holds the lock, a third one must be kept out.
      const probe = spawnSync(process.execPath, ['-e', `require(${LOCK_JS}).withChangeLock(() => console.log('got it'), { timeoutMs: 200 }).catch((e) => console.log(e.message))`], { env, encoding: 'utf8' });
      return probe.stdout;
    }, { timeoutMs: 5000 });
    assert.match(other, /another xdp-dr process is changing the load balancers/);
  });
});

test('the change lock survives the pin base being removed between making and opening it', async () => {
  await withLockBase('gone', async (base, node) => {
    // One process removes the directory under the lock over and over, as detaches of the last load balancer would.
    const remover = node(`const fs = require('node:fs'); const { withChangeLock } = require(${LOCK_JS}); const end = Date.now() + 1500;
      (async () => { while (Date.now() < end) await withChangeLock(() => fs.rmdirSync(${JSON.stringify(base)})); })().catch((e) => { console.error(e); process.exit(1); });`);
    const { withChangeLock } = await import('../../loader/src/lb/lock');
    let runs = 0;
    const end = Date.now() + 1200;
    while (Date.now() < end) runs += await withChangeLock(() => 1, { timeoutMs: 5000 });
    assert.ok(runs > 10, `${runs} changes ran`);
    await new Promise((r) => (remover.exitCode !== null ? r(null) : remover.once('exit', r)));
    assert.equal(remover.exitCode, 0, 'the remover never failed either');
  });
});

test('a service whose table maps were removed behind our back gets them again with its next change', async () => {
  await withLb(async (dp, change) => {
    await change([web([be(1), be(2)])]);
    const [svc] = readState(dp).services;
    dp.dropTables([2 * svc.id, 2 * svc.id + 1]);
    assert.equal(readState(dp).services[0].hasTable, false);
    assert.equal(forward(dp, '203.0.113.1', 4000).action, XDP_ACTION.PASS);
    await change([web([be(1), be(2), be(3)])]);
    assert.equal(readState(dp).services[0].hasTable, true);
    assert.equal(forward(dp, '203.0.113.1', 4000).action, XDP_ACTION.TX);
  });
});
