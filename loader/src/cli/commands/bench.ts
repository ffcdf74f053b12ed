// xdp-dr bench: the benchmarks, each a table on stdout (or one JSON object per result with --json), and every run
// kept under bench-results/ with the date, kernel and CPU model. Each figure comes with a reference measured in the
// same run; the machine's noise hits both.
import { Command, InvalidArgumentError } from 'commander';
import { BenchResult, formatTable, machine, saveResults } from '../../bench/result';
import { runMicro, MICRO_DEFAULTS } from '../../bench/micro';
import { runLive, LIVE_DEFAULTS } from '../../bench/live';
import { runControl, CONTROL_DEFAULTS } from '../../bench/control';
import { runMaglev, MAGLEV_DEFAULTS } from '../../bench/maglev';
import { runConnTable, CONNTABLE_DEFAULTS } from '../../bench/conntable';
import { liveChart } from '../../bench/chart';
import { reapStale, tidyBenchPins } from '../../bench/scratch';
import { pktgenAvailable, pktgenCommands, runPktgen, PKTGEN_DIR, MAX_FLOWS } from '../../bench/pktgen';
import { UsageError } from '../../errors';
import { ipToBytes, macToBytes } from '../../packet';
import { chooseInterface, openLb, requireLink } from '../../lb/instance';
import { examples, out } from '../common';

const int = (min: number, max: number) => (v: string) => {
  const n = Number(v.replace(/_/g, ''));
  if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`must be an integer in ${min}..${max}`);
  return n;
};
const num = (min: number, max: number) => (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n) || n < min || n > max) throw new InvalidArgumentError(`must be a number in ${min}..${max}`);
  return n;
};
const intList = (min: number, max: number) => (v: string) => v.split(',').map((x) => int(min, max)(x.trim()));

const progress = (line: string) => void process.stderr.write(`${line}\n`);

/** Prints results (table or JSON lines) and writes them under bench-results/. */
export function report(kind: string, title: string, results: BenchResult[], json: boolean, extra: Record<string, string> = {}): void {
  const file = saveResults(kind, results, extra);
  if (json) {
    for (const r of results) out(JSON.stringify(r));
  } else {
    const m = machine();
    out(`xdp-dr bench ${kind}: ${title}`);
    out(`${m.date}, kernel ${m.kernel}, ${m.cpus} x ${m.cpu_model}\n`);
    for (const l of formatTable(results, kind === 'maglev' ? 4 : 2)) out(l);
  }
  progress(`results written to ${file}${Object.keys(extra).length ? ` (and ${Object.keys(extra).map((e) => `.${e}`).join(', ')})` : ''}`);
}

function microCommand(): Command {
  return new Command('micro')
    .description('ns/packet under BPF_PROG_TEST_RUN for six kinds of packet, each against the minimal XDP_TX program on the same frame')
    .option('--repeat <n>', 'runs of the program per measurement', int(1, 1e9), MICRO_DEFAULTS.repeat)
    .option('--runs <n>', 'measurements per program; the median is reported', int(1, 1000), MICRO_DEFAULTS.runs)
    .option('--no-stages', 'skip the builds cut short after each stage of the fast path (where the ACK\'s time goes)')
    .option('--json', 'one JSON object per result')
    .action((o: { repeat: number; runs: number; stages: boolean; json?: boolean }) => {
      const r = runMicro({ repeat: o.repeat, runs: o.runs, stages: o.stages, log: progress });
      report('micro', `BPF_PROG_TEST_RUN, repeat ${o.repeat}, median of ${o.runs} runs, against xdp_min (MAC swap + XDP_TX)`, r, !!o.json);
    });
}

function liveCommand(): Command {
  return new Command('live')
    .description(
      'Mpps through a veth pair in a scratch namespace: an in-kernel generator (BPF_PROG_RUN, live frames) on one end, ' +
        'the load balancer attached in native mode on the other, and the minimal XDP_TX program in its place as the reference',
    )
    .option('--flows <list>', 'distinct 5-tuples, one run per value (1..1000000)', intList(1, 1_000_000), LIVE_DEFAULTS.flows)
    .option('--size <bytes>', 'frame size including the FCS', int(64, 1518), LIVE_DEFAULTS.frameSize)
    .option('--cpus <n>', 'generator CPUs (0..n-1)', int(1, 1024), LIVE_DEFAULTS.cpus)
    .option('--seconds <s>', 'measuring window', num(0.1, 60), LIVE_DEFAULTS.seconds)
    .option('--runs <n>', 'windows per program and flow count, the two programs in turns; medians are reported', int(1, 100), LIVE_DEFAULTS.runs)
    .option('--batch <n>', 'frames per live-mode batch', int(1, 256), LIVE_DEFAULTS.batch)
    .option('--proto <p>', 'tcp (ACK packets of established flows) or udp', (v) => {
      if (v !== 'tcp' && v !== 'udp') throw new InvalidArgumentError('must be tcp or udp');
      return v;
    }, LIVE_DEFAULTS.proto)
    .option('--conn-table', 'the service tracks connections: each flow follows its record after its first frame (tcp only)')
    .option('--stages', 'also the builds cut short after each stage of the fast path, each against xdp_min: where the frames\' time goes')
    .option('--json', 'one JSON object per result')
    .action(async (o: { flows: number[]; size: number; cpus: number; seconds: number; runs: number; batch: number; proto: 'tcp' | 'udp'; connTable?: boolean; stages?: boolean; json?: boolean }) => {
      const r = await runLive({
        flows: o.flows, frameSize: o.size, cpus: o.cpus, seconds: o.seconds, runs: o.runs, batch: o.batch, proto: o.proto, connTable: !!o.connTable,
        stages: !!o.stages, log: progress,
      });
      const title = `Mpps forwarded, ${o.size}-byte frames, ${o.cpus} generator CPU${o.cpus === 1 ? '' : 's'}${o.connTable ? ', connection table' : ''}`;
      report('live', `${title}, median of ${o.runs} windows of ${o.seconds} s each, in turns with xdp_min on the same attachment`, r, !!o.json, {
        svg: liveChart(r, `xdp-dr live: ${title}`),
      });
    });
}

interface PktgenCli {
  iface: string; vip: string; dstMac?: string; lb?: string; src: string; flows: number; size: number; threads: number; burst: number;
  seconds: number; dryRun?: boolean; json?: boolean;
}

function pktgenCommand(): Command {
  return new Command('pktgen')
    .description(
      "UDP from many flows to a VIP with the kernel's pktgen (/proc/net/pktgen), out of a real NIC or a veth; the " +
        "forwarded rate comes from the load balancer's counters when it runs on this host (--lb). Kernels without pktgen: use 'bench live'",
    )
    .requiredOption('--iface <name>', 'interface pktgen sends from')
    .requiredOption('--vip <ip:port>', 'IPv4 VIP and UDP port of a service, e.g. 10.0.0.100:53')
    .option('--dst-mac <mac>', "the load balancer's MAC (default: the MAC of --lb)")
    .option('--lb <iface>', 'the interface of a load balancer on this host whose counters give the forwarded rate')
    .option('--src <ip>', 'first source address: the flows take consecutive addresses, with up to about 64 ports each as the count allows', '198.18.0.1')
    .option('--flows <n>', 'distinct source address/port pairs, exactly (a count that pktgen cannot make is refused with the nearest that it can)', int(1, MAX_FLOWS), 10_000)
    .option('--size <bytes>', 'frame size including the FCS', int(64, 9018), 64)
    .option('--threads <n>', 'pktgen threads (CPUs), each on its own TX queue', int(1, 1024), 1)
    .option('--burst <n>', 'times each frame is sent in a row (xmit_more): more frames per thread, but flows arrive in runs of n; a veth takes only 1', int(1, 1024), 1)
    .option('--seconds <s>', 'measuring window', num(0.1, 3600), 5)
    .option('--dry-run', 'print the /proc/net/pktgen writes instead of running them (works without pktgen)')
    .option('--json', 'one JSON object per result')
    .action(async (o: PktgenCli) => {
      const m = /^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(o.vip);
      if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new UsageError(`--vip '${o.vip}': write it as IPv4:PORT, e.g. 10.0.0.100:53`);
      try {
        ipToBytes(m[1]);
        ipToBytes(o.src);
        if (o.dstMac) macToBytes(o.dstMac);
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
      const lbIface = o.lb === undefined ? undefined : chooseInterface(o.lb);
      const dstMac = o.dstMac ?? (lbIface ? requireLink(lbIface).mac : undefined);
      if (!dstMac) throw new UsageError('give --dst-mac (the MAC of the load balancer) or --lb <iface> of a load balancer on this host');
      const opts = {
        iface: o.iface, vip: m[1], port: Number(m[2]), dstMac, srcBase: o.src, flows: o.flows, size: o.size, threads: o.threads,
        burst: o.burst, seconds: o.seconds,
      };
      if (o.dryRun) {
        for (const w of pktgenCommands(opts)) out(`echo '${w.command}' > ${PKTGEN_DIR}/${w.file}`);
        out(`echo start > ${PKTGEN_DIR}/pgctrl   # blocks until: echo stop > ${PKTGEN_DIR}/pgctrl`);
        return;
      }
      if (!pktgenAvailable()) {
        out(`xdp-dr bench pktgen: this kernel has no pktgen (${PKTGEN_DIR} is missing and modprobe pktgen did not help); use 'xdp-dr bench live'`);
        return;
      }
      const dp = lbIface ? openLb(lbIface) : undefined;
      try {
        const r = await runPktgen(opts, dp);
        report('pktgen', `pktgen out of ${o.iface}, UDP to ${o.vip}, ${o.seconds} s`, r, !!o.json);
      } finally {
        dp?.close();
      }
    });
}

function controlCommand(): Command {
  return new Command('control')
    .description('time from wanted services to maps (plan + journaled writes) and the memory the maps take')
    .option('--runs <n>', 'runs per change; the median is reported', int(1, 1000), CONTROL_DEFAULTS.runs)
    .option('--json', 'one JSON object per result')
    .action(async (o: { runs: number; json?: boolean }) => {
      const r = await runControl({ runs: o.runs, log: progress });
      report('control', `median of ${o.runs} runs; load balancer bound to lo, MACs given (no ARP timed)`, r, !!o.json);
    });
}

function maglevCommand(): Command {
  return new Command('maglev')
    .description('Maglev table quality: slots moved when 1 of N backends leaves or joins, and balance (max/mean slots)')
    .option('--backends <list>', 'values of N', intList(1, 65535), MAGLEV_DEFAULTS.sizes)
    .option('--json', 'one JSON object per result')
    .action((o: { backends: number[]; json?: boolean }) => {
      const r = runMaglev({ sizes: o.backends, log: progress });
      report('maglev', `table of ${MAGLEV_DEFAULTS.tableSize} slots, against the ideal`, r, !!o.json);
    });
}

function connTableCommand(): Command {
  return new Command('conntable')
    .description('established flows that change backend when one backend is added, with and without the connection table')
    .option('--flows <n>', 'established flows', int(1, 1_000_000), CONNTABLE_DEFAULTS.flows)
    .option('--backends <n>', 'backends before the one added', int(1, 1000), CONNTABLE_DEFAULTS.backends)
    .option('--json', 'one JSON object per result')
    .action(async (o: { flows: number; backends: number; json?: boolean }) => {
      const r = await runConnTable({ flows: o.flows, backends: o.backends, log: progress });
      report('conntable', `${o.flows} established TCP flows through the program (BPF_PROG_TEST_RUN), one backend added to ${o.backends}`, r, !!o.json);
    });
}

export function benchCommand(): Command {
  const c = new Command('bench')
    .description('benchmarks, each against a reference measured in the same run; results also go to bench-results/')
    .addCommand(microCommand())
    .addCommand(liveCommand())
    .addCommand(pktgenCommand())
    .addCommand(controlCommand())
    .addCommand(maglevCommand())
    .addCommand(connTableCommand())
    // A benchmark killed where it could not clean up left its scratch pins or namespace; they go now.
    .hook('preAction', () => {
      for (const r of reapStale()) progress(`removed ${r}, left by a benchmark that did not finish`);
    })
    .hook('postAction', () => tidyBenchPins());
  return examples(c, [
    'xdp-dr bench micro',
    'xdp-dr bench live --flows 1,10000,1000000 --size 64 --cpus 1',
    'xdp-dr bench pktgen --iface eth1 --vip 10.0.0.100:53 --dst-mac 02:00:00:00:00:01 --flows 10000 --threads 2',
    'xdp-dr bench control --json',
    'xdp-dr bench maglev --backends 10,100,1000',
  ]);
}
