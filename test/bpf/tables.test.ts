// Maglev tables in the kernel: a change writes the table packets do not read and then points at it, so a
// packet sees the old table or the new one: while another process streams packets, backends come and go and
// no packet ever misses a backend.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fork } from 'node:child_process';
import { testRun, XDP_ACTION } from '../../loader/src/libbpf';
import { buildMaglevTable } from '../../loader/src/maglev';
import { buildFrame, macToString } from '../../loader/src/packet';
import { withDataplane, installService, snapshot, delta, TestBackend } from '../lib/dataplane';
import { PROG_PIN } from '../../loader/src/dataplane/dataplane';

const backends: TestBackend[] = Array.from({ length: 10 }, (_, i) => ({
  id: i + 1, ip: `192.0.2.${i + 1}`, mac: `02:00:00:00:01:${(i + 1).toString(16).padStart(2, '0')}`,
}));
const table = (bs: TestBackend[], size: number) => buildMaglevTable(bs.map((b) => ({ id: b.id, key: b.ip, weight: 1 })), size);

test('each service has two table maps: a change writes the one packets do not read, then points at it', async () => {
  await withDataplane((dp) => {
    const M = dp.limits.tableSize;
    const t10 = table(backends, M);
    const t9 = table(backends.slice(1), M);
    installService(dp, { id: 1, vip: '10.0.0.1', port: 80, proto: 'tcp', backends });
    assert.deepEqual(dp.readTable(1), t10);
    const slotOf = () => dp.servicesOf()[0][1].table;
    assert.equal(slotOf(), 2);
    const liveMap = dp.tableMapId(2);
    dp.installTable(1, t9);
    // The map that was live is untouched: a packet still reading it finds the old table whole.
    assert.equal(slotOf(), 3);
    assert.deepEqual(dp.readTableSlot(2), t10);
    assert.equal(dp.tableMapId(2), liveMap, 'maps are written, never swapped, once installed');
    assert.deepEqual(dp.readTable(1), t9);
    dp.installTable(1, t10);
    assert.equal(slotOf(), 2);
    assert.deepEqual(dp.readTable(1), t10);
    assert.deepEqual(dp.readTableSlot(3), t9);
  });
});

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
      t.diagnostic(`${changes} table changes while the other process sent ${JSON.stringify(report.actions)}`);
      assert.deepEqual(Object.keys(report.actions), ['XDP_TX'], 'every streamed packet was forwarded');
      const moved = delta(before.stats, snapshot(dp).stats);
      assert.deepEqual([...moved.keys()], [dp.statIds.get('TX')], 'no packet was counted as passed or dropped');
    } finally {
      child.kill();
    }
  });
});

test('waiting for running programs without membarrier: a map-in-map update, which changes no table', async () => {
  await withDataplane((dp) => {
    // No table yet: a spare slot gets one for the wait and loses it again.
    dp.waitByMapUpdate();
    assert.deepEqual(dp.tableSlots(), []);
    const t = table(backends, dp.limits.tableSize);
    installService(dp, { id: 1, vip: '10.0.0.1', port: 80, proto: 'tcp', backends });
    const before = dp.tableMapId(2);
    dp.waitByMapUpdate();
    assert.deepEqual(dp.tableSlots(), [2]);
    assert.equal(dp.tableMapId(2), before);
    assert.deepEqual(dp.readTable(1), t);
  });
});
