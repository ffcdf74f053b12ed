// Interface lookup and real-server MAC resolution against the real kernel: two network namespaces joined by a
// veth pair; the code under test runs inside namespace a (through nsenter), the "real server" is namespace b.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { addNetns, delNetns, sweepStaleNetns, nsName, nsPath, inNetns, ipJson, vethPair, callInNetns } from '../lib/netns';
import type { LinkInfo, MacAnswer, MacRequest } from '../../loader/src/lb/netif';

const MOD = path.resolve(__dirname, '../../loader/src/lb/netif.js');
const A = nsName('a');
const B = nsName('b');
const PEER4 = '192.0.2.2';
const PEER6 = '2001:db8:77::2';
const GHOST4 = '192.0.2.9'; // on the subnet, held by nobody
const GHOST6 = '2001:db8:77::9';
let peerMac = '';
let peerLinkLocal = '';

const resolve = (reqs: MacRequest[], timeoutMs?: number) =>
  callInNetns<Record<string, MacAnswer>>(A, MOD, 'resolveMacs', [reqs, { timeoutMs }]);
const neigh = (ns: string) => ipJson<{ dst: string; dev: string; lladdr?: string; state: string[] }[]>(ns, 'neigh', 'show');

before(() => {
  sweepStaleNetns();
  addNetns(A);
  addNetns(B);
  vethPair(A, 'xa', B, 'xb', { a: ['192.0.2.1/24', '2001:db8:77::1/64'], b: [`${PEER4}/24`, `${PEER6}/64`] });
  const [link] = ipJson<{ address: string; addr_info: { local: string; scope: string }[] }[]>(B, 'addr', 'show', 'dev', 'xb');
  peerMac = link.address;
  peerLinkLocal = link.addr_info.find((a) => a.scope === 'link')!.local;
});

after(() => {
  delNetns(A);
  delNetns(B);
});

test('linkInfo and linkByIndex read the interface of the namespace they run in', async () => {
  const [ip] = ipJson<{ ifindex: number; address: string; mtu: number }[]>(A, 'link', 'show', 'dev', 'xa');
  const info = await callInNetns<LinkInfo>(A, MOD, 'linkInfo', ['xa']);
  assert.deepEqual(info, { name: 'xa', ifindex: ip.ifindex, mac: ip.address.toLowerCase(), up: true, mtu: ip.mtu });
  assert.match(info.mac, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
  assert.deepEqual(await callInNetns(A, MOD, 'linkByIndex', [ip.ifindex]), info);
  assert.equal(await callInNetns(A, MOD, 'linkByIndex', [99999]), undefined);
});

test('a missing interface is a NetifError that says where to look', async () => {
  const missing = { name: 'NetifError', message: "no interface named 'nosuch0' on this host (see 'ip link')" };
  await assert.rejects(callInNetns(A, MOD, 'linkInfo', ['nosuch0']), missing);
  await assert.rejects(resolve([{ address: PEER4, iface: 'xa' }, { address: PEER4, iface: 'nosuch0' }]), missing);
});

test('resolves the peer over ARP, ND and link-local ND when the kernel has no entry yet', async () => {
  inNetns(A, 'ip', ['neigh', 'flush', 'all']);
  const wanted = [PEER4, PEER6, peerLinkLocal];
  assert.ok(!neigh(A).some((n) => wanted.includes(n.dst) && n.lladdr), 'the flush left entries behind');
  const t0 = Date.now();
  const res = await resolve(wanted.map((address) => ({ address, iface: 'xa' })));
  assert.deepEqual(res, Object.fromEntries(wanted.map((a) => [`xa/${a}`, { mac: peerMac }])));
  assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
  // The kernel now holds what we returned: it was learnt, not guessed.
  for (const a of wanted) assert.equal(neigh(A).find((n) => n.dst === a)?.lladdr, peerMac);
});

// Without CAP_NET_ADMIN `ip neigh replace ... use` fails and a datagram to the discard port starts resolution.
const readableByAll = (file: string): boolean =>
  file === '/' || ((fs.statSync(file).mode & (file === MOD ? 0o004 : 0o001)) !== 0 && readableByAll(path.dirname(file)));
test('without CAP_NET_ADMIN the datagram fallback resolves too', { skip: !readableByAll(MOD) && 'dist/ is not readable by nobody' }, async () => {
  const asNobody = ['--net=' + nsPath(A), '--setuid=65534', '--setgid=65534', '--', 'ip', 'neigh', 'replace', PEER4, 'dev', 'xa', 'use'];
  assert.throws(() => execFileSync('nsenter', asNobody, { stdio: 'pipe' }), /Operation not permitted/);
  inNetns(A, 'ip', ['neigh', 'flush', 'all']);
  const reqs = [PEER4, peerLinkLocal].map((address) => ({ address, iface: 'xa' }));
  const res = await callInNetns(A, MOD, 'resolveMacs', [reqs, { timeoutMs: 2000 }], { uid: 65534 });
  assert.deepEqual(res, { [`xa/${PEER4}`]: { mac: peerMac }, [`xa/${peerLinkLocal}`]: { mac: peerMac } });
});

test('existing PERMANENT and STALE entries are used as they are', async () => {
  inNetns(A, 'ip', ['neigh', 'replace', '192.0.2.50', 'lladdr', '02:00:5e:00:00:50', 'nud', 'permanent', 'dev', 'xa']);
  inNetns(A, 'ip', ['neigh', 'replace', '192.0.2.51', 'lladdr', '02:00:5e:00:00:51', 'nud', 'stale', 'dev', 'xa']);
  const res = await resolve([{ address: '192.0.2.50', iface: 'xa' }, { address: '192.0.2.51', iface: 'xa' }], 500);
  assert.deepEqual(res, { 'xa/192.0.2.50': { mac: '02:00:5e:00:00:50' }, 'xa/192.0.2.51': { mac: '02:00:5e:00:00:51' } });
});

test('an address nobody holds gets an error after the timeout; the others in the call still resolve', async () => {
  const t0 = Date.now();
  const res = await resolve([GHOST4, GHOST6, PEER4].map((address) => ({ address, iface: 'xa' })), 1000);
  const took = Date.now() - t0;
  assert.ok(took >= 1000 && took < 3000, `took ${took} ms`);
  assert.deepEqual(res[`xa/${PEER4}`], { mac: peerMac });
  assert.match(res[`xa/${GHOST4}`].error!, /^no MAC for 192\.0\.2\.9 on xa: nobody answered ARP within 1 s .*--mac or mac: in the config$/);
  assert.match(res[`xa/${GHOST6}`].error!, /^no MAC for 2001:db8:77::9 on xa: nobody answered neighbour solicitation within 1 s /);
  assert.equal(res[`xa/${GHOST4}`].mac, undefined);
});

test('off-link, wrong-interface, local, down and malformed addresses get errors, not exceptions', async () => {
  inNetns(A, 'ip', ['route', 'add', '198.51.100.0/24', 'via', PEER4]);
  inNetns(A, 'ip', ['route', 'add', '2001:db8:99::/64', 'via', PEER6]);
  // Extra links are veth pairs with both ends in a (the dummy module may be missing).
  inNetns(A, 'ip', ['link', 'add', 'xd', 'type', 'veth', 'peer', 'name', 'xdp']);
  inNetns(A, 'ip', ['addr', 'add', '203.0.113.1/24', 'dev', 'xd']);
  inNetns(A, 'ip', ['link', 'set', 'xd', 'up']);
  inNetns(A, 'ip', ['link', 'add', 'xdown', 'type', 'veth', 'peer', 'name', 'xdownp']);
  const reqs: MacRequest[] = [
    { address: '198.51.100.7', iface: 'xa' },
    { address: '2001:db8:99::7', iface: 'xa' },
    { address: '203.0.113.5', iface: 'xa' },
    { address: '192.0.2.1', iface: 'xa' },
    { address: '192.0.2.5', iface: 'xdown' },
    { address: '10.0.0.300', iface: 'xa' },
    { address: PEER4, iface: 'xa' },
  ];
  const res = await resolve(reqs, 500);
  const err = (r: MacRequest) => res[`${r.iface}/${r.address}`].error ?? '';
  const l2 = 'in direct routing the real servers must share an L2 segment with the load balancer';
  assert.equal(err(reqs[0]), `198.51.100.7 is not on a network directly connected to xa (the route goes via ${PEER4} on xa): ${l2}`);
  assert.equal(err(reqs[1]), `2001:db8:99::7 is not on a network directly connected to xa (the route goes via ${PEER6} on xa): ${l2}`);
  assert.equal(err(reqs[2]), `203.0.113.5 is not on a network directly connected to xa (the route leaves through xd): ${l2}`);
  assert.match(err(reqs[3]), /^192\.0\.2\.1 is an address of this host itself/);
  assert.match(err(reqs[4]), /^no MAC for 192\.0\.2\.5 on xdown: xdown is down: bring it up with 'ip link set dev xdown up'$/);
  assert.match(err(reqs[5]), /^'10\.0\.0\.300' \(for xa\) is not an IPv4 or IPv6 address/);
  assert.deepEqual(res[`xa/${PEER4}`], { mac: peerMac });
  assert.equal(Object.keys(res).length, reqs.length);
  // Nothing was guessed for the refused addresses.
  assert.ok(!neigh(A).some((n) => ['198.51.100.7', '203.0.113.5'].includes(n.dst)));
});
