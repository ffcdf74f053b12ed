// Micro-benchmark: ns/packet that BPF_PROG_TEST_RUN reports for the xdp-dr program and, in the same run, for
// the least an XDP forwarder can do (bpf/xdp_min.bpf.c). Runs alternate between the two, and each figure is
// the median of several runs, so that a noisy neighbour hits both alike.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BpfObject, testRun, XDP_ACTION_NAME } from '../libbpf';
import { Dataplane, PIN_BASE } from '../dataplane/dataplane';
import { ensureObject } from '../dataplane/build';
import { serviceKeyOf } from '../dataplane/layout';
import { buildMaglevTable } from '../maglev';
import { buildFrame, ipToBytes, macToBytes, FrameSpec } from '../packet';

const REPEAT = Number(process.env.BENCH_REPEAT ?? 5_000_000);
const RUNS = Number(process.env.BENCH_RUNS ?? 7);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function main(): void {
  const pinDir = path.join(PIN_BASE, `bench-${process.pid}`);
  const dp = Dataplane.load({ pinDir, hashSeed: 1 });
  const min = BpfObject.open(ensureObject('xdp_min'));
  try {
    min.load();
    const minFd = min.programFd('xdp_min_tx');
    const backends = [1, 2, 3].map((id) => ({ id, key: `192.0.2.${id}`, weight: 1 }));
    for (const b of backends)
      dp.backends.update(b.id, { dst_mac: macToBytes(`02:00:00:00:00:0${b.id}`), src_mac: macToBytes('02:00:00:00:00:ff'), ifindex: 0, gen: b.id });
    const table = buildMaglevTable(backends, dp.limits.tableSize);
    dp.installTable(1, table);
    dp.installTable(2, table);
    dp.putService(serviceKeyOf(ipToBytes('10.0.0.100'), 80, 'tcp'), { id: 1, flags: 0 });
    dp.putService(serviceKeyOf(ipToBytes('2001:db8::100'), 80, 'tcp'), { id: 2, flags: 0 });

    const base: FrameSpec = { src: '198.51.100.7', dst: '10.0.0.100', sport: 40000, dport: 80, proto: 'tcp', padTo: 60 };
    const cases: { name: string; spec: FrameSpec }[] = [
      { name: 'IPv4 TCP SYN to a VIP', spec: base },
      { name: 'IPv6 TCP SYN to a VIP', spec: { ...base, src: '2001:db8:ffff::7', dst: '2001:db8::100' } },
      { name: 'non-VIP IPv4 packet (XDP_PASS)', spec: { ...base, dst: '10.0.0.99' } },
    ];
    const minFrame = buildFrame(base);
    console.log(`xdp-dr micro-benchmark: BPF_PROG_TEST_RUN, repeat ${REPEAT}, median of ${RUNS} runs`);
    console.log(`kernel ${os.release()}, ${os.cpus()[0]?.model ?? 'unknown CPU'}, 64-byte frames\n`);
    const results: { name: string; ns: number; ref: number; action: string }[] = [];
    for (const c of cases) {
      const frame = buildFrame(c.spec);
      const action = XDP_ACTION_NAME[testRun(dp.progFd!, { data: frame }).retval];
      const ours: number[] = [];
      const ref: number[] = [];
      for (let i = 0; i < RUNS; i++) {
        ours.push(testRun(dp.progFd!, { data: frame, repeat: REPEAT }).duration);
        ref.push(testRun(minFd, { data: minFrame, repeat: REPEAT }).duration);
      }
      results.push({ name: c.name, ns: median(ours), ref: median(ref), action });
    }
    const w = Math.max(...results.map((r) => r.name.length));
    console.log(`${'packet'.padEnd(w)}  action        xdp-dr ns   minimal XDP_TX ns   ratio`);
    for (const r of results)
      console.log(`${r.name.padEnd(w)}  ${r.action.padEnd(12)}  ${String(r.ns).padStart(9)}   ${String(r.ref).padStart(17)}   ${(r.ns / r.ref).toFixed(2)}x`);
    if (process.env.BENCH_JSON) fs.writeFileSync(process.env.BENCH_JSON, JSON.stringify(results, null, 2));
  } finally {
    min.close();
    dp.discard();
  }
}

main();
