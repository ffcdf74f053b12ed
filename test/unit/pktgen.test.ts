// The pktgen writes against the documented interface (Documentation/networking/pktgen.rst, "Current commands and
// configuration options"): which file takes which command, in which order, and the ranges that make the flows.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pktgenCommands, flowRanges, PktgenOptions, MAX_ADDRS, MAX_FLOWS } from '../../loader/src/bench/pktgen';
import { UsageError } from '../../loader/src/errors';

// From pktgen.rst: pgctrl, thread and device commands, and the flags.
const PGCTRL = ['start', 'stop', 'reset'];
const THREAD = ['add_device', 'rem_device_all'];
const DEVICE = [
  'count', 'clone_skb', 'burst', 'debug', 'frags', 'delay', 'src_mac_count', 'dst_mac_count', 'pkt_size', 'min_pkt_size',
  'max_pkt_size', 'queue_map_min', 'queue_map_max', 'skb_priority', 'tos', 'traffic_class', 'mpls', 'udp_src_min',
  'udp_src_max', 'udp_dst_min', 'udp_dst_max', 'node', 'flag', 'spi', 'dst_min', 'dst_max', 'src_min', 'src_max',
  'dst_mac', 'src_mac', 'clear_counters', 'src6', 'dst6', 'dst6_max', 'dst6_min', 'flows', 'flowlen', 'rate', 'ratep',
  'xmit_mode', 'vlan_cfi', 'vlan_id', 'vlan_p', 'svlan_cfi', 'svlan_id', 'svlan_p',
];
const FLAGS = [
  'IPSRC_RND', 'IPDST_RND', 'UDPSRC_RND', 'UDPDST_RND', 'MACSRC_RND', 'MACDST_RND', 'TXSIZE_RND', 'IPV6', 'MPLS_RND',
  'VID_RND', 'SVID_RND', 'FLOW_SEQ', 'QUEUE_MAP_RND', 'QUEUE_MAP_CPU', 'UDPCSUM', 'IPSEC', 'NODE_ALLOC', 'NO_TIMESTAMP', 'SHARED',
];

const base: PktgenOptions = {
  iface: 'eth1', vip: '10.0.0.100', port: 53, dstMac: '02:00:00:00:00:01', srcBase: '198.18.0.1', flows: 10_000, size: 64,
  threads: 2, burst: 32, seconds: 5,
};

test('every write goes to a documented file with a documented command', () => {
  for (const w of pktgenCommands(base)) {
    const [cmd, arg] = w.command.split(' ');
    if (w.file === 'pgctrl') assert.ok(PGCTRL.includes(cmd), w.command);
    else if (/^kpktgend_\d+$/.test(w.file)) assert.ok(THREAD.includes(cmd), w.command);
    else {
      assert.match(w.file, /^eth1@\d+$/);
      assert.ok(DEVICE.includes(cmd), `${w.file}: ${w.command}`);
      if (cmd === 'flag') assert.ok(FLAGS.includes(arg.replace(/^!/, '')), w.command);
    }
  }
});

test('order: reset first; per thread, its devices are removed, then added, then configured; start is not written', () => {
  const w = pktgenCommands(base);
  assert.deepEqual(w[0], { file: 'pgctrl', command: 'reset' });
  assert.ok(!w.some((x) => x.command === 'start'));
  for (const t of [0, 1]) {
    const rem = w.findIndex((x) => x.file === `kpktgend_${t}` && x.command === 'rem_device_all');
    const add = w.findIndex((x) => x.file === `kpktgend_${t}` && x.command === `add_device eth1@${t}`);
    const firstSet = w.findIndex((x) => x.file === `eth1@${t}`);
    assert.ok(rem >= 0 && rem < add && add < firstSet, `thread ${t}`);
    const dev = w.filter((x) => x.file === `eth1@${t}`).map((x) => x.command);
    assert.ok(dev.includes(`queue_map_min ${t}`) && dev.includes(`queue_map_max ${t}`));
  }
});

test('frames go to the VIP and port from enough source addresses and ports for the flows; pkt_size leaves out the FCS', () => {
  const dev = pktgenCommands({ ...base, threads: 1 }).filter((x) => x.file === 'eth1@0').map((x) => x.command);
  for (const c of ['dst_min 10.0.0.100', 'dst_max 10.0.0.100', 'udp_dst_min 53', 'udp_dst_max 53', 'dst_mac 02:00:00:00:00:01',
    'pkt_size 60', 'count 1050000000', 'burst 32', 'src_min 198.18.0.1', 'src_max 198.18.2.113', 'udp_src_min 10000', 'udp_src_max 10016'])
    assert.ok(dev.includes(c), `missing '${c}' in ${dev.join('; ')}`);
  assert.deepEqual(flowRanges(10_000), { addrs: 625, ports: 16 });
  assert.deepEqual(flowRanges(1), { addrs: 1, ports: 1 });
  assert.deepEqual(flowRanges(1_000_000), { addrs: 15_625, ports: 64 });
  // Ranges cross an octet boundary correctly.
  const wide = pktgenCommands({ ...base, threads: 1, flows: 1_000_000, srcBase: '198.18.255.200' }).map((x) => x.command);
  assert.ok(wide.includes('src_max 198.19.60.208'), wide.join('; '));
});

// pktgen's stepping, as its source has it (net/core/pktgen.c, mod_cur_headers): before each frame the source port
// goes up by one and wraps to udp_src_min when it reaches udp_src_max (so max is never sent), and the source address
// goes up by one and wraps to src_min past src_max; each moves only when its min is below its max. Both start at
// their min, where writing the min puts them.
function walk(dev: string[], frames: number): Set<number> {
  const arg = (k: string) => dev.find((c) => c.startsWith(`${k} `))!.split(' ')[1];
  const ip = (a: string) => a.split('.').reduce((v, o) => v * 256 + Number(o), 0);
  const [pmin, pmax, amin, amax] = [Number(arg('udp_src_min')), Number(arg('udp_src_max')), ip(arg('src_min')), ip(arg('src_max'))];
  let port = pmin;
  let addr = amin;
  const seen = new Set<number>();
  for (let i = 0; i < frames; i++) {
    if (pmin < pmax && ++port >= pmax) port = pmin;
    if (amin < amax && ++addr > amax) addr = amin;
    seen.add((addr - amin) * 65536 + port);
  }
  return seen;
}

test('pktgen, stepping as it does, sends exactly --flows distinct source address/port pairs, every one in each --flows frames', () => {
  for (const flows of [1, 2, 63, 64, 65, 100, 4032, 10_000, 10_007, 100_000, 131_073, 1_000_000]) {
    const dev = pktgenCommands({ ...base, threads: 1, flows }).filter((x) => x.file === 'eth1@0').map((x) => x.command);
    assert.equal(walk(dev, flows).size, flows, `--flows ${flows}: ${dev.filter((c) => /src_m/.test(c)).join('; ')}`);
    // A second cycle brings nothing new.
    assert.equal(walk(dev, 2 * flows).size, flows, `--flows ${flows}, two cycles`);
    const r = flowRanges(flows)!;
    assert.ok(r.addrs <= MAX_ADDRS, `--flows ${flows}: ${r.addrs} addresses`);
  }
});

test('a flow count that no address and port counts make is refused with one that works', () => {
  // 999,983 is prime and needs more addresses than the benchmarking range holds.
  assert.equal(flowRanges(999_983), null);
  assert.throws(() => pktgenCommands({ ...base, flows: 999_983 }), (e: Error) => e instanceof UsageError && /use 999982/.test(e.message));
  assert.ok(flowRanges(999_982));
  // The nearest, below when that is nearer, and never past what the command takes.
  assert.throws(() => pktgenCommands({ ...base, flows: 1 << 20 }), (e: Error) => /use 1048575$/.test(e.message) || /use 1048577$/.test(e.message));
  assert.throws(() => pktgenCommands({ ...base, flows: MAX_FLOWS }), (e: Error) => {
    const n = Number(/use (\d+)$/.exec(e.message)?.[1]);
    return n < MAX_FLOWS && flowRanges(n) !== null;
  });
});
