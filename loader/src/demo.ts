// `make demo`: the data path at work, in the kernel. It loads the XDP program, declares one service with three
// real servers, runs 30,000 client flows through the program (BPF_PROG_TEST_RUN: the real program on real
// frames, no NIC needed), shows where they went, then removes one real server live and shows what moved.
import path from 'node:path';
import { testRun, XDP_ACTION } from './libbpf';
import { Dataplane, PIN_BASE } from './dataplane/dataplane';
import { serviceKeyOf } from './dataplane/layout';
import { buildMaglevTable, MaglevBackend } from './maglev';
import { buildFrame, ipToBytes, macToBytes, macToString } from './packet';

const VIP = '10.0.0.100';
const LB_MAC = '02:00:00:00:1b:01';
const REALS = [
  { id: 1, ip: '10.0.0.11', mac: '02:00:00:00:00:11', name: 'real-1' },
  { id: 2, ip: '10.0.0.12', mac: '02:00:00:00:00:12', name: 'real-2' },
  { id: 3, ip: '10.0.0.13', mac: '02:00:00:00:00:13', name: 'real-3' },
];
const FLOWS = 30000;

function flows(): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < FLOWS; i++)
    out.push(buildFrame({ src: `198.51.${100 + (i >> 14)}.${(i >> 6) & 255}`, dst: VIP, sport: 1024 + (i & 63) * 811, dport: 80, proto: 'tcp' }));
  return out;
}

function main(): void {
  const pinDir = path.join(PIN_BASE, `demo-${process.pid}`);
  const dp = Dataplane.load({ pinDir, hashSeed: 2024 });
  try {
    console.log(`xdp-dr demo: LVS direct routing in XDP\n`);
    console.log(`Loaded the XDP program into the kernel (maps pinned under ${pinDir}).`);
    console.log(`Service ${VIP}:80/tcp -> ${REALS.map((r) => `${r.name} (${r.ip}, ${r.mac})`).join(', ')}`);
    console.log(`For each packet to the VIP the program picks a real server from the service's Maglev table`);
    console.log(`(${dp.limits.tableSize} slots) and rewrites only the destination MAC (and the source MAC to the LB's).`);
    console.log(`The IP header still says ${VIP}, which each real server holds on lo, so it answers the`);
    console.log(`client directly: replies never pass through the load balancer.\n`);

    for (const r of REALS) dp.backends.update(r.id, { dst_mac: macToBytes(r.mac), src_mac: macToBytes(LB_MAC), ifindex: 0 });
    const install = (reals: typeof REALS) =>
      dp.installTable(1, buildMaglevTable(reals.map<MaglevBackend>((r) => ({ id: r.id, key: r.ip, weight: 1 })), dp.limits.tableSize));
    install(REALS);
    dp.putService(serviceKeyOf(ipToBytes(VIP), 80, 'tcp'), { id: 1, flags: 0 });

    const frames = flows();
    const send = () => frames.map((f) => {
      const r = testRun(dp.progFd!, { data: f });
      if (r.retval !== XDP_ACTION.TX) throw new Error(`a VIP packet was not forwarded (action ${r.retval})`);
      return macToString(r.data, 0);
    });
    const nameOf = (mac: string) => REALS.find((r) => r.mac === mac)?.name ?? mac;
    const show = (macs: string[]) => {
      const counts = new Map<string, number>();
      for (const m of macs) counts.set(nameOf(m), (counts.get(nameOf(m)) ?? 0) + 1);
      for (const [n, c] of [...counts].sort()) console.log(`  ${n}: ${String(c).padStart(6)} flows  ${'#'.repeat(Math.round((c / macs.length) * 60))}`);
    };

    console.log(`Sending ${FLOWS} client flows (distinct source address/port) through the program:`);
    const first = send();
    show(first);

    console.log(`\nLive change: ${REALS[1].name} is removed. Only its table slots are rewritten (atomic swap):`);
    const { written } = install([REALS[0], REALS[2]]);
    console.log(`  ${written} of ${dp.limits.tableSize} slots written`);
    const second = send();
    show(second);
    let moved = 0;
    let movedOther = 0;
    second.forEach((m, i) => {
      if (m !== first[i]) {
        moved++;
        if (first[i] !== REALS[1].mac) movedOther++;
      }
    });
    console.log(`  flows that changed real server: ${moved} (${((moved / FLOWS) * 100).toFixed(1)}%), of which were not on ${REALS[1].name}: ${movedOther}`);

    const tx = Dataplane.sum(dp.stats.lookup(dp.statIds.get('TX')!));
    console.log(`\nLoad balancer counters: ${tx.packets} packets forwarded with XDP_TX, ${tx.bytes} bytes.`);
    console.log(`Next: 'make test' runs the packet-level tests; README.md says how to put xdp-dr in front of real servers.`);
  } finally {
    dp.discard();
  }
}

main();
