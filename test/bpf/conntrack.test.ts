// The connection table in the real kernel: a TCP flow keeps the backend it was given while the Maglev table
// changes under it (added backends, weights, drains); only the removal of its own backend moves it.
import { test } from 'node:test';
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';
import { testRun, XDP_ACTION } from '../../loader/src/libbpf';
import { Dataplane } from '../../loader/src/dataplane/dataplane';
import { CONN_STATE, CONN_WAYS, XDP_DR_EVENT, type ConnKey } from '../../loader/src/dataplane/layout';
import { buildFrame, ipToBytes, macToString, TCP_FLAGS } from '../../loader/src/packet';
import { withLb } from '../lib/dataplane';
import type { RawService } from '../../loader/src/lb/desired';
import { readConnections } from '../../loader/src/lb/connections';
import { readState } from '../../loader/src/lb/state';

const mac = (n: number) => `02:00:00:00:00:${n.toString(16).padStart(2, '0')}`;
const be = (n: number, weight = 1) => ({ address: `10.1.0.${n}`, mac: mac(n), weight });
const svc = (vip: string, backends: RawService['backends'], connTable?: boolean): RawService => ({
  vip, port: 80, protocol: 'tcp', hash: 'l4', ...(connTable === undefined ? {} : { conn_table: connTable }), backends,
});
const TRACKED = '10.0.0.80';
const UNTRACKED = '10.0.0.81';
const FLOWS = Array.from({ length: 400 }, (_, i) => ({ src: `198.51.${100 + (i >> 8)}.${i & 255}`, sport: 30000 + i }));

function send(dp: Dataplane, vip: string, f: { src: string; sport: number }, flags: number): { action: number; mac: string } {
  const r = testRun(dp.progFd!, { data: buildFrame({ src: f.src, dst: vip, sport: f.sport, dport: 80, proto: 'tcp', tcpFlags: flags }) });
  return { action: r.retval, mac: macToString(r.data, 0) };
}
const syn = (dp: Dataplane, vip: string, f: { src: string; sport: number }) => send(dp, vip, f, TCP_FLAGS.SYN).mac;
const ack = (dp: Dataplane, vip: string, f: { src: string; sport: number }) => send(dp, vip, f, TCP_FLAGS.ACK).mac;

const keyOf = (f: { src: string; sport: number }, vip = TRACKED): ConnKey => ({
  src: Buffer.concat([ipToBytes(f.src), Buffer.alloc(12)]), dst: Buffer.concat([ipToBytes(vip), Buffer.alloc(12)]),
  sport: f.sport, dport: 80, proto: 6, family: 4, reserved: 0,
});

function events(dp: Dataplane): { hit: number; fresh: number; evicted: number } {
  return {
    hit: dp.eventCount(XDP_DR_EVENT.XDP_DR_EV_CONN_HIT), fresh: dp.eventCount(XDP_DR_EVENT.XDP_DR_EV_CONN_NEW),
    evicted: dp.eventCount(XDP_DR_EVENT.XDP_DR_EV_CONN_EVICTED),
  };
}

test('adding a backend moves no open flow on a tracked service; without the table some move', async (t) => {
  await withLb(async (dp, change) => {
    const four = [1, 2, 3, 4].map((n) => be(n));
    await change([svc(TRACKED, four), svc(UNTRACKED, four, false)]);
    const before = FLOWS.map((f) => [syn(dp, TRACKED, f), syn(dp, UNTRACKED, f)]);
    assert.equal(events(dp).fresh, FLOWS.length, 'one record per flow of the tracked service, none for the other');
    await change([svc(TRACKED, [...four, be(5)]), svc(UNTRACKED, [...four, be(5)], false)]);
    const tracked = FLOWS.filter((f, i) => ack(dp, TRACKED, f) !== before[i][0]).length;
    const untracked = FLOWS.filter((f, i) => ack(dp, UNTRACKED, f) !== before[i][1]).length;
    t.diagnostic(`adding a 5th backend moved ${tracked} of ${FLOWS.length} tracked flows and ${untracked} untracked ones`);
    assert.equal(tracked, 0);
    assert.ok(untracked > FLOWS.length * 0.1, `Maglev alone moves about 1/5: ${untracked}`);
    // New flows use the new table, so the new backend gets its share.
    const fresh = FLOWS.map((f) => syn(dp, TRACKED, { ...f, sport: f.sport + 10000 }));
    assert.ok(fresh.filter((m) => m === mac(5)).length > FLOWS.length * 0.1);
  });
});

test('weight changes and drains move no open flow; a drained backend gets no new flow', async () => {
  await withLb(async (dp, change) => {
    await change([svc(TRACKED, [be(1), be(2), be(3)])]);
    const before = FLOWS.map((f) => syn(dp, TRACKED, f));
    assert.ok(before.filter((m) => m === mac(2)).length > 50, 'backend 2 holds flows to keep');
    await change([svc(TRACKED, [be(1, 5), be(2, 0), be(3)])]);
    assert.deepEqual(FLOWS.map((f) => ack(dp, TRACKED, f)), before, 'every open flow stayed, also those on the drained backend');
    const fresh = FLOWS.map((f) => syn(dp, TRACKED, { ...f, sport: f.sport + 20000 }));
    assert.equal(fresh.filter((m) => m === mac(2)).length, 0, 'no new flow on the drained backend');
  });
});

test('removing a backend moves exactly its flows', async () => {
  await withLb(async (dp, change) => {
    await change([svc(TRACKED, [be(1), be(2), be(3), be(4)])]);
    const before = FLOWS.map((f) => syn(dp, TRACKED, f));
    await change([svc(TRACKED, [be(1), be(2), be(4)])]);
    const after = FLOWS.map((f) => ack(dp, TRACKED, f));
    FLOWS.forEach((_, i) => {
      if (before[i] === mac(3)) assert.notEqual(after[i], mac(3), 'a flow of the removed backend moved');
      else assert.equal(after[i], before[i], 'a flow of another backend stayed');
    });
    // Re-adding the address makes a new backend (a new gen): its old flows, now elsewhere, stay where they went.
    await change([svc(TRACKED, [be(1), be(2), be(3), be(4)])]);
    assert.deepEqual(FLOWS.map((f) => ack(dp, TRACKED, f)), after);
  });
});

test('FIN and RST mark a record closing; a new SYN on a closing record picks afresh; an RST opens nothing', async () => {
  await withLb(async (dp, change) => {
    await change([svc(TRACKED, [be(1), be(2), be(3)])]);
    const f = FLOWS[0];
    const first = syn(dp, TRACKED, f);
    const key = keyOf(f);
    assert.equal(dp.conns.lookup(key)?.state, CONN_STATE.CONN_OPEN);
    assert.equal(send(dp, TRACKED, f, TCP_FLAGS.FIN | TCP_FLAGS.ACK).mac, first);
    assert.equal(dp.conns.lookup(key)?.state, CONN_STATE.CONN_CLOSING);
    assert.equal(send(dp, TRACKED, f, TCP_FLAGS.ACK).mac, first, 'the last ACK of the close still goes to the same backend');
    const recorded = events(dp).fresh;
    syn(dp, TRACKED, f);
    assert.equal(events(dp).fresh, recorded + 1, 'a SYN on a closing record makes a new record');
    assert.equal(dp.conns.lookup(key)?.state, CONN_STATE.CONN_OPEN);

    const stray = { src: '203.0.113.9', sport: 4242 };
    assert.equal(send(dp, TRACKED, stray, TCP_FLAGS.RST).action, XDP_ACTION.TX, 'an RST is still forwarded');
    assert.equal(dp.conns.lookup(keyOf(stray)), undefined);
  });
});

test('a record idle longer than the timeout no longer binds its flow', async () => {
  await withLb(
    async (dp, change) => {
      await change([svc(TRACKED, [be(1), be(2), be(3)])]);
      const before = FLOWS.map((f) => syn(dp, TRACKED, f));
      await change([svc(TRACKED, [be(1), be(2), be(3), be(4)])]);
      assert.deepEqual(FLOWS.map((f) => ack(dp, TRACKED, f)), before, 'bound while fresh');
      // The clock counts whole seconds, so a timeout of 1 has surely passed after 2.2 s.
      await new Promise((r) => setTimeout(r, 2200));
      const after = FLOWS.map((f) => ack(dp, TRACKED, f));
      assert.ok(after.some((m, i) => m !== before[i]), 'idle flows follow the new table');
      assert.ok(after.some((m) => m === mac(4)));
    },
    { build: { CONN_IDLE_TIMEOUT_S: 1 } },
  );
});

test('a service that stops tracking stops following its records', async () => {
  await withLb(async (dp, change) => {
    const four = [1, 2, 3, 4].map((n) => be(n));
    await change([svc(TRACKED, four)]);
    const before = FLOWS.map((f) => syn(dp, TRACKED, f));
    await change([svc(TRACKED, [...four, be(5)], false)]);
    const moved = FLOWS.filter((f, i) => ack(dp, TRACKED, f) !== before[i]).length;
    assert.ok(moved > FLOWS.length * 0.1, `without the table the flows follow Maglev again: ${moved} moved`);
    assert.equal(events(dp).hit, 0, 'no record was followed');
  });
});


/** Flows of one client whose two buckets satisfy want, found by trying source ports in order. */
function flowsWhere(dp: Dataplane, n: number, want: (b1: number, b2: number) => boolean, from = 1024) {
  const out: { src: string; sport: number }[] = [];
  for (let sport = from; out.length < n && sport < 65536; sport++) {
    const f = { src: '198.51.100.200', sport };
    if (want(...dp.conns.bucketsOf(keyOf(f)))) out.push(f);
  }
  assert.equal(out.length, n, 'enough source ports with the buckets wanted');
  return out;
}

test('flows that share a first bucket also use their second ones, and keep their backends', async () => {
  await withLb(async (dp, change) => {
    await change([svc(TRACKED, [be(1), be(2), be(3)])]);
    const [first] = dp.conns.bucketsOf(keyOf({ src: '198.51.100.200', sport: 1024 }));
    const flows = flowsWhere(dp, CONN_WAYS + 2, (b1, b2) => b1 === first && b2 !== first);
    const before = flows.map((f) => syn(dp, TRACKED, f));
    assert.ok(flows.every((f) => dp.conns.lookup(keyOf(f)) !== undefined), 'every flow has a record');
    const inFirst = dp.conns.buckets.lookup(first)!.way.filter((e) => e.key.family !== 0).length;
    assert.ok(inFirst >= 1 && inFirst <= flows.length - 2, `${inFirst} of ${flows.length} in the shared bucket, the rest in their second ones`);
    await change([svc(TRACKED, [be(1), be(2), be(3), be(4), be(5)])]);
    assert.deepEqual(flows.map((f) => ack(dp, TRACKED, f)), before, 'all of them stayed, also those in their second bucket');
    assert.equal(events(dp).evicted, 0, 'no live record made room');
  }, { build: { MAX_CONNS: 16 * CONN_WAYS } }); // 16 buckets, so that one client's ports soon share a first bucket
});

test('when both buckets of a new flow are full, the record seen longest ago makes room', async () => {
  // Two buckets in all; flows whose two buckets are both bucket 0 compete for its four records.
  await withLb(
    async (dp, change) => {
      await change([svc(TRACKED, [be(1), be(2), be(3)])]);
      const [a, b, c, d, e, g] = flowsWhere(dp, 6, (b1, b2) => b1 === 0 && b2 === 0);
      for (const f of [a, b, c, d]) syn(dp, TRACKED, f);
      // The clock counts whole seconds: after 1.2 s the refreshed records are surely newer.
      await new Promise((r) => setTimeout(r, 1200));
      for (const f of [b, d]) ack(dp, TRACKED, f);
      const fresh = events(dp).fresh;
      for (const f of [e, g]) syn(dp, TRACKED, f);
      assert.equal(events(dp).fresh, fresh + 2, 'the new flows were recorded');
      assert.equal(events(dp).evicted, 2, 'each took the place of a live record, and said so');
      const recorded = (f: { src: string; sport: number }) => dp.conns.lookup(keyOf(f)) !== undefined;
      assert.deepEqual([a, b, c, d, e, g].map(recorded), [false, true, false, true, true, true],
        'the two records not seen since went; the refreshed ones stayed');
    },
    { build: { MAX_CONNS: 2 * CONN_WAYS } },
  );
});

test('records rewritten on two CPUs at once never send a packet to another flow\'s backend', { skip: os.cpus().length < 2 && 'one CPU' }, async (t) => {
  // Two buckets (8 records) and 12 flows that differ only in their source port: a third of the packets rewrite a
  // record, often one the other CPU is reading or writing too, and every key shares its first four words. Without
  // the check word this found 1 to 8 packets sent to another flow's backend in each of 4 runs.
  await withLb(
    async (dp, change) => {
      const backends = [be(1), be(2), be(3)];
      await change([svc(TRACKED, backends), svc(UNTRACKED, backends, false)]);
      const flows = Array.from({ length: 12 }, (_, i) => ({ src: '198.51.100.9', sport: 20000 + i }));
      // The table never changes, so a flow's record and its Maglev pick (seen on the untracked twin) agree.
      const want = flows.map((f) => ({ ...f, mac: ack(dp, UNTRACKED, f) }));
      const before = events(dp);
      const hammer = (cpu: number) => new Promise<{ sent: number; wrong: number }>((resolve, reject) => {
        const child = spawn(process.execPath, [path.join(__dirname, '../lib/conn-hammer.js'), dp.pinDir, String(cpu), TRACKED, JSON.stringify(want), '200000'],
          { stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        child.stdout.on('data', (d) => (out += d));
        child.on('error', reject);
        child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`hammer on CPU ${cpu} exited ${code}`))));
      });
      const [a, b] = await Promise.all([hammer(0), hammer(1)]);
      const ev = events(dp);
      t.diagnostic(`${a.sent + b.sent} packets, ${ev.fresh - before.fresh} records written, ${ev.hit - before.hit} followed; wrong backend: ${a.wrong} + ${b.wrong}`);
      assert.ok(ev.fresh - before.fresh > 50_000 && ev.hit - before.hit > 50_000, 'records were both rewritten and followed');
      assert.equal(a.wrong + b.wrong, 0);
    },
    { build: { MAX_CONNS: 2 * CONN_WAYS } },
  );
});

test('the records as list --connections shows them: client, VIP, real server, state and time left', async () => {
  await withLb(async (dp, change) => {
    await change([svc(TRACKED, [be(1), be(2), be(3)])]);
    const flows = FLOWS.slice(0, 30);
    const macs = flows.map((f) => syn(dp, TRACKED, f));
    send(dp, TRACKED, flows[0], TCP_FLAGS.FIN | TCP_FLAGS.ACK);
    let rows = readConnections(dp, readState(dp));
    assert.equal(rows.length, flows.length);
    for (const [i, f] of flows.entries()) {
      const r = rows.find((x) => x.client === f.src && x.client_port === f.sport)!;
      assert.ok(r, `a row for ${f.src}:${f.sport}`);
      assert.deepEqual([r.vip, r.port, r.service], [TRACKED, 80, `${TRACKED}:80/tcp`]);
      assert.equal(mac(Number(r.real_server!.split('.')[3])), macs[i], 'the real server the packet went to');
      // The loader's clock agrees with the program's to within a second.
      assert.ok(r.idle_s <= 1, `idle ${r.idle_s} s just after the SYN`);
      if (i === 0) assert.deepEqual([r.state, r.expires_in_s <= 10], ['closing', true]);
      else assert.deepEqual([r.state, r.expires_in_s >= 898], ['open', true]);
    }
    // Backend 2 removed: its flows' records no longer name a real server; the others stay.
    await change([svc(TRACKED, [be(1), be(3)])]);
    rows = readConnections(dp, readState(dp));
    const gone = rows.filter((r) => r.real_server === null).length;
    assert.equal(gone, macs.filter((m) => m === mac(2)).length);
    assert.ok(gone > 0);
  });
});

/** Moves every record's last-seen time by delta seconds, as another CPU's refresh a tick later would. */
function shiftSeen(dp: Dataplane, delta: number, only?: (k: ConnKey) => boolean): void {
  for (const [i, bucket] of dp.conns.buckets.all({ skipZero: true })) {
    for (const e of bucket.way) if (e.key.family !== 0 && (!only || only(e.key))) e.value.seen = (e.value.seen + delta) >>> 0;
    dp.conns.buckets.update(i, bucket);
  }
}

test('a record refreshed by another CPU a tick after this packet read the clock still binds, and is not taken for free', async () => {
  await withLb(async (dp, change) => {
    await change([svc(TRACKED, [be(1), be(2)])]);
    const flows = FLOWS.slice(0, 40);
    const before = flows.map((f) => syn(dp, TRACKED, f));
    await change([svc(TRACKED, [be(1), be(2), be(3), be(4), be(5)])]);
    shiftSeen(dp, 1);
    assert.deepEqual(flows.map((f) => ack(dp, TRACKED, f)), before, 'no open flow moved');
  });
  await withLb(
    async (dp, change) => {
      await change([svc(TRACKED, [be(1), be(2), be(3)])]);
      const [a, b, c] = flowsWhere(dp, 3, (b1, b2) => b1 === 0 && b2 === 0);
      syn(dp, TRACKED, a);
      syn(dp, TRACKED, b);
      shiftSeen(dp, 1, (k) => k.sport === a.sport);
      syn(dp, TRACKED, c);
      assert.deepEqual([a, b, c].map((f) => dp.conns.lookup(keyOf(f)) !== undefined), [true, true, true], 'the new flow took an empty record');
      assert.equal(events(dp).evicted, 0);
    },
    { build: { MAX_CONNS: 2 * CONN_WAYS } },
  );
});

test('list --connections leaves out records no service follows any more', async () => {
  await withLb(async (dp, change) => {
    await change([svc(TRACKED, [be(1), be(2)])]);
    for (const f of FLOWS.slice(0, 5)) syn(dp, TRACKED, f);
    assert.equal(readConnections(dp, readState(dp)).length, 5);
    // The service goes and another takes its id: the records bind nothing.
    await change([]);
    await change([{ ...svc('10.0.0.99', [be(1), be(2)]), port: 443 }]);
    assert.equal(readConnections(dp, readState(dp)).length, 0);
    // A service that stops tracking stops following its records.
    await change([svc(TRACKED, [be(1), be(2)])]);
    for (const f of FLOWS.slice(0, 5)) syn(dp, TRACKED, f);
    await change([svc(TRACKED, [be(1), be(2)], false)]);
    assert.equal(readConnections(dp, readState(dp)).length, 0);
  });
});
