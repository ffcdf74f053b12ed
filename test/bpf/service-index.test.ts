// The service index in front of the services hash map: services that share a slot are all found (the second
// through the hash map), and removing any of them leaves the others reachable and the slot consistent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { testRun, XDP_ACTION } from '../../loader/src/libbpf';
import { serviceKeyOf, serviceIndexSlot, SERVICE_SLOT_FLAG } from '../../loader/src/dataplane/layout';
import { buildFrame, ipToBytes } from '../../loader/src/packet';
import { withDataplane, installService } from '../lib/dataplane';

const BE = { id: 1, ip: '192.0.2.1', mac: '02:00:00:00:00:01' };

test('services sharing an index slot are all forwarded, whichever of them is removed first', async () => {
  await withDataplane((dp) => {
    const bits = dp.serviceIndexBits;
    assert.equal(bits, 12);
    // Three IPv4 VIPs whose port-80 TCP keys land in one slot.
    const vips: string[] = [];
    const slotOf = (vip: string) => serviceIndexSlot(serviceKeyOf(ipToBytes(vip), 80, 'tcp'), bits);
    const want = slotOf('10.9.0.1');
    for (let i = 1; vips.length < 3 && i < 1 << 20; i++) {
      const vip = `10.9.${i >> 8}.${i & 255}`;
      if (slotOf(vip) === want) vips.push(vip);
    }
    assert.equal(vips.length, 3);
    const forwarded = (vip: string) =>
      testRun(dp.progFd!, { data: buildFrame({ src: '198.51.100.1', dst: vip, sport: 1000, dport: 80, proto: 'tcp' }) }).retval === XDP_ACTION.TX;
    vips.forEach((vip, i) => installService(dp, { id: i + 1, vip, port: 80, proto: 'tcp', backends: [BE] }));
    assert.deepEqual(vips.map(forwarded), [true, true, true]);
    const slot = dp.serviceIndex.lookup(want)!;
    assert.equal(slot.flags, SERVICE_SLOT_FLAG.SERVICE_SLOT_F_OVERFLOW);
    assert.ok(slot.key.addr.subarray(0, 4).equals(ipToBytes(vips[0])));

    // The one in the slot goes: another takes its place, still with OVERFLOW for the third.
    dp.deleteService(serviceKeyOf(ipToBytes(vips[0]), 80, 'tcp'));
    assert.deepEqual(vips.map(forwarded), [false, true, true]);
    assert.equal(dp.serviceIndex.lookup(want)!.flags, SERVICE_SLOT_FLAG.SERVICE_SLOT_F_OVERFLOW);
    // One that lives only in the hash map goes: the slot no longer overflows.
    const inSlot = dp.serviceIndex.lookup(want)!.key;
    const other = vips.slice(1).find((v) => !inSlot.addr.subarray(0, 4).equals(ipToBytes(v)))!;
    dp.deleteService(serviceKeyOf(ipToBytes(other), 80, 'tcp'));
    assert.equal(dp.serviceIndex.lookup(want)!.flags, 0);
    assert.deepEqual(vips.map(forwarded), vips.map((v) => v !== vips[0] && v !== other));
    // The last goes: the slot is empty.
    dp.deleteService(inSlot);
    assert.equal(dp.serviceIndex.lookup(want)!.key.family, 0);
    assert.deepEqual(vips.map(forwarded), [false, false, false]);
  });
});

test('the index slot of a key is the same in the program and the loader for IPv6 and every port', async () => {
  await withDataplane((dp) => {
    const cases = [
      { vip: '2001:db8::100', port: 443, proto: 'tcp' as const },
      { vip: '2001:db8:1:2:3:4:5:6', port: 53, proto: 'udp' as const },
      { vip: '10.1.2.3', port: 65535, proto: 'udp' as const },
    ];
    cases.forEach((c, i) => installService(dp, { id: i + 1, ...c, backends: [{ ...BE, ip: c.vip.includes(':') ? '2001:db8::1' : BE.ip }] }));
    for (const c of cases) {
      const key = serviceKeyOf(ipToBytes(c.vip), c.port, c.proto);
      const s = dp.serviceIndex.lookup(serviceIndexSlot(key, dp.serviceIndexBits))!;
      assert.ok(s.key.addr.equals(key.addr), c.vip);
      const src = c.vip.includes(':') ? '2001:db8:ffff::1' : '198.51.100.1';
      const r = testRun(dp.progFd!, { data: buildFrame({ src, dst: c.vip, sport: 1000, dport: c.port, proto: c.proto }) });
      assert.equal(r.retval, XDP_ACTION.TX, c.vip);
    }
  });
});
