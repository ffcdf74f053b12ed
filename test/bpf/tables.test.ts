// Maglev tables in the kernel: only changed slots are written, and the swap is atomic per service: while
// another process streams packets, backends come and go and no packet ever misses a backend.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fork } from 'node:child_process';
import { fn, check, testRun, XDP_ACTION } from '../../loader/src/libbpf';
import { buildMaglevTable, diffTables } from '../../loader/src/maglev';
import { buildFrame, macToString } from '../../loader/src/packet';
import { withDataplane, installService, snapshot, delta, TestBackend } from '../lib/dataplane';
import { PROG_PIN } from '../../loader/src/dataplane/dataplane';

const backends: TestBackend[] = Array.from({ length: 10 }, (_, i) => ({
  id: i + 1, ip: `192.0.2.${i + 1}`, mac: `02:00:00:00:01:${(i + 1).toString(16).padStart(2, '0')}`,
}));
const table = (bs: TestBackend[], size: number) => buildMaglevTable(bs.map((b) => ({ id: b.id, key: b.ip, weight: 1 })), size);

test('a table change writes only the slots that differ from the standby table', async (t) => {
  await withDataplane((dp) => {
    const M = dp.limits.tableSize;
    const t10 = table(backends, M);
    const t9 = table(backends.slice(1), M);
    const t8 = table(backends.slice(2), M);
    installService(dp, { id: 1, vip: '10.0.0.1', port: 80, proto: 'tcp', backends });
    assert.deepEqual(dp.readTable(1), t10);
    // A new service gets its standby filled too, so even the first change is a diff.
    assert.equal(dp.installTable(1, t9).written, diffTables(t10, t9).slots.length);
    assert.ok(diffTables(t10, t9).slots.length < M * 0.15);
    assert.deepEqual(dp.readTable(1), t9);
    // The old live table is now the standby: going back to it writes nothing, only the swap.
    assert.equal(dp.installTable(1, t10).written, 0);
    assert.deepEqual(dp.readTable(1), t10);
    const want = diffTables(t9, t8).slots.length;
    const got = dp.installTable(1, t8).written;
    t.diagnostic(`removing a second backend of 10 rewrote ${got} of ${M} slots (${((got / M) * 100).toFixed(1)}%)`);
    assert.equal(got, want);
    assert.ok(got < M * 0.25);
    assert.deepEqual(dp.readTable(1), t8);
  });
});

test('a standby that is also live (an interrupted swap) is replaced, not written in place', async () => {
  await withDataplane((dp) => {
    const M = dp.limits.tableSize;
    installService(dp, { id: 2, vip: '10.0.0.2', port: 80, proto: 'tcp', backends });
    const liveId = dp.tableIds(2).live!;
    // What a process killed between the swap and the re-pin leaves behind: the same table live and standby.
    const liveFd = fdOf(liveId);
    fs.rmSync(dp.standbyPin(2));
    check(fn.bpf_obj_pin(liveFd, dp.standbyPin(2)), 'bpf_obj_pin', 'standby');
    fn.close(liveFd);
    assert.deepEqual(dp.tableIds(2), { live: liveId, standby: liveId });
    const t7 = table(backends.slice(3), M);
    assert.equal(dp.installTable(2, t7).written, M);
    assert.notEqual(dp.tableIds(2).live, liveId);
    assert.equal(dp.tableIds(2).standby, liveId);
    assert.deepEqual(dp.readTable(2), t7);
  });
});

function fdOf(mapId: number): number {
  return check(fn.bpf_map_get_fd_by_id(mapId), 'bpf_map_get_fd_by_id', `map ${mapId}`);
}

test('backends added and removed while packets stream: every packet finds a backend', async (t) => {
  await withDataplane(async (dp) => {
    const vip = '10.0.0.3';
    installService(dp, { id: 3, vip, port: 80, proto: 'tcp', backends });
    const progPin = path.join(dp.pinDir, PROG_PIN);
    const before = snapshot(dp);
    const worker = path.join(__dirname, '../lib/traffic-worker.js');
    const child = fork(worker, [progPin, vip, '80', '2000'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    try {
      await new Promise<void>((res) => child.once('message', () => res()));
      const M = dp.limits.tableSize;
      const removed = backends[4];
      let changes = 0;
      for (let i = 0; i < 30; i++) {
        dp.installTable(3, table(backends.filter((b) => b !== removed), M));
        // With the removal in place, no flow may reach the removed backend.
        for (let p = 0; p < 200; p++) {
          const r = testRun(dp.progFd!, { data: buildFrame({ src: `203.0.113.${p % 250}`, dst: vip, sport: 20000 + p, dport: 80, proto: 'tcp' }) });
          assert.equal(r.retval, XDP_ACTION.TX);
          assert.notEqual(macToString(r.data, 0), removed.mac);
        }
        dp.installTable(3, table(backends, M));
        changes += 2;
        await new Promise((res) => setImmediate(res));
      }
      child.send('stop');
      const report = await new Promise<{ actions: Record<string, number>; rounds: number }>((res) => child.on('message', (m) => res(m as never)));
      t.diagnostic(`${changes} table swaps while the other process sent ${JSON.stringify(report.actions)}`);
      assert.deepEqual(Object.keys(report.actions), ['XDP_TX'], 'every streamed packet was forwarded');
      const moved = delta(before.stats, snapshot(dp).stats);
      assert.deepEqual([...moved.keys()], [dp.statIds.get('TX')], 'no packet was counted as passed or dropped');
    } finally {
      child.kill();
    }
  });
});
