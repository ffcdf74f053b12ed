// pktgen driver: for kernels that have the pktgen module, the /proc/net/pktgen writes that send UDP to a VIP
// from many flows (Documentation/networking/pktgen.rst), and the rate the load balancer forwarded, read from its
// counters when it runs on this host. pktgen builds UDP only: it has no TCP mode.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, execFileSync } from 'node:child_process';
import { Dataplane } from '../dataplane/dataplane';
import { UsageError } from '../errors';
import { withSignalCleanup } from './scratch';
import { BenchResult, result } from './result';

export const PKTGEN_DIR = '/proc/net/pktgen';

export interface PktgenOptions {
  /** Interface pktgen sends from (towards the load balancer). */
  iface: string;
  vip: string;
  port: number;
  /** MAC of the load balancer's interface: the frames' destination. */
  dstMac: string;
  /** First source address; flows spread over consecutive addresses (flowRanges). */
  srcBase: string;
  /** Distinct (source address, source port) pairs, exactly. */
  flows: number;
  /** Frame size including the 4-byte FCS (pktgen's pkt_size leaves it out). */
  size: number;
  /** Kernel threads (kpktgend_0..threads-1), one per CPU, each with its own device queue. */
  threads: number;
  /** Times each frame is sent in a row (xmit_more): flows then arrive in runs of this many frames. */
  burst: number;
  seconds: number;
}

export interface PktgenWrite {
  file: string;
  command: string;
}

/** Ports per source address that the ranges aim at: enough addresses for a NIC's RSS to spread them. */
export const PORTS_PER_ADDR = 64;
/** Source addresses at most: the size of the RFC 2544 benchmarking range (198.18.0.0/15). */
export const MAX_ADDRS = 1 << 17;
const SRC_PORT_MIN = 10000;
/** Source ports at most: SRC_PORT_MIN and up, udp_src_max (one past the last) at most 65535, pktgen's field being 16 bits. */
export const MAX_PORTS = 65535 - SRC_PORT_MIN;
/** Most flows the command takes. */
export const MAX_FLOWS = 16_777_216;
/** Frames a device sends per second at most (100 Gb/s of 64-byte frames): a bound on how long a run can outlive us. */
const MAX_RATE = 150e6;

function addIPv4(ip: string, n: number): string {
  const v = (ip.split('.').reduce((a, o) => a * 256 + Number(o), 0) + n) >>> 0;
  return [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.');
}

const gcd = (a: number, b: number): number => (b ? gcd(b, a % b) : a);

/**
 * How `flows` (address, port) pairs are made. pktgen steps the source address and the source port together, once
 * per frame, each wrapping on its own; so the pairs it visits are all addrs x ports of them only when the two counts
 * share no factor (else it repeats after lcm(addrs, ports)). The split takes the number of ports nearest to
 * PORTS_PER_ADDR for which that holds; null when none keeps the addresses within MAX_ADDRS.
 */
export function flowRanges(flows: number): { addrs: number; ports: number } | null {
  let best: number | null = null;
  for (let ports = 1; ports <= Math.min(flows, MAX_PORTS); ports++) {
    if (flows % ports || gcd(ports, flows / ports) !== 1 || flows / ports > MAX_ADDRS) continue;
    if (best === null || Math.abs(Math.log(ports / PORTS_PER_ADDR)) < Math.abs(Math.log(best / PORTS_PER_ADDR))) best = ports;
  }
  return best === null ? null : { addrs: flows / best, ports: best };
}

/** flowRanges, or an error that names the nearest count that works. */
export function requireFlowRanges(flows: number): { addrs: number; ports: number } {
  const r = flowRanges(flows);
  if (r) return r;
  let near = 0;
  for (let d = 1; !near; d++) {
    if (flows - d >= 1 && flowRanges(flows - d)) near = flows - d;
    else if (flows + d <= MAX_FLOWS && flowRanges(flows + d)) near = flows + d;
  }
  throw new UsageError(
    `--flows ${flows}: pktgen steps source address and port together, so the flows must split into address and port counts ` +
      `with no common factor, at most ${MAX_ADDRS} addresses and ${MAX_PORTS} ports; ${flows} does not: use ${near}`,
  );
}

/** The writes, in order, that set pktgen up; `start` (which blocks until stopped) is left to the caller. */
export function pktgenCommands(o: PktgenOptions): PktgenWrite[] {
  const { addrs, ports } = requireFlowRanges(o.flows);
  const w: PktgenWrite[] = [{ file: 'pgctrl', command: 'reset' }];
  for (let t = 0; t < o.threads; t++) {
    const thread = `kpktgend_${t}`;
    // dev@N names one device once per thread; each thread sends on its own TX queue.
    const dev = `${o.iface}@${t}`;
    w.push({ file: thread, command: 'rem_device_all' }, { file: thread, command: `add_device ${dev}` });
    const set = (command: string) => w.push({ file: dev, command });
    // Stopped when measured; the count only ends a run that outlives this process (kill -9), after o.seconds + 2 s
    // at the most a device can send, longer when it sends less.
    set(`count ${Math.ceil((o.seconds + 2) * MAX_RATE)}`);
    set('clone_skb 0'); // a fresh skb per frame: the ranges below only vary between skbs
    set(`burst ${o.burst}`); // sends each skb this many times
    set(`pkt_size ${o.size - 4}`);
    set('delay 0');
    set(`queue_map_min ${t}`);
    set(`queue_map_max ${t}`);
    set(`dst_mac ${o.dstMac}`);
    set(`dst_min ${o.vip}`);
    set(`dst_max ${o.vip}`);
    set(`src_min ${o.srcBase}`);
    set(`src_max ${addIPv4(o.srcBase, addrs - 1)}`);
    set(`udp_dst_min ${o.port}`);
    set(`udp_dst_max ${o.port}`);
    // Ports run from min to max - 1 (max itself is never sent), addresses from min to max.
    set(`udp_src_min ${SRC_PORT_MIN}`);
    set(`udp_src_max ${SRC_PORT_MIN + (ports > 1 ? ports : 0)}`);
    set('flag NO_TIMESTAMP');
  }
  return w;
}

/** Whether this kernel has pktgen, loading the module when modprobe can. */
export function pktgenAvailable(): boolean {
  if (fs.existsSync(path.join(PKTGEN_DIR, 'pgctrl'))) return true;
  try {
    execFileSync('modprobe', ['pktgen'], { stdio: 'ignore' });
  } catch {
    return false;
  }
  return fs.existsSync(path.join(PKTGEN_DIR, 'pgctrl'));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Sent packets per device as pktgen reports them ("pkts-sofar: N"). */
function sentSoFar(dev: string): number {
  const m = /pkts-sofar:\s*(\d+)/.exec(fs.readFileSync(path.join(PKTGEN_DIR, dev), 'utf8'));
  return m ? Number(m[1]) : 0;
}

/** pktgen's threads: one per CPU, kpktgend_0 and up. */
function pktgenThreads(): number {
  return fs.readdirSync(PKTGEN_DIR).filter((f) => /^kpktgend_\d+$/.test(f)).length;
}

/** Why pktgen refused a write, in words that say what to do. */
function refusal(w: PktgenWrite, e: NodeJS.ErrnoException): Error {
  const cmd = w.command.split(' ')[0];
  // ENOTSUPP (524): pktgen's answer to a burst on a device that cannot send one skb several times.
  if (cmd === 'burst' && (e.errno === -524 || /524/.test(e.message)))
    return new UsageError(`${w.file} cannot send a frame several times in a row (veth cannot): use --burst 1`);
  if (cmd === 'add_device') return new UsageError(`pktgen cannot use ${w.command.slice(11)}: is the interface there and up?`);
  return new Error(`pktgen refused '${w.command}' for ${w.file}: ${e.message}`);
}

/** Runs pktgen for o.seconds; `lb` is the load balancer on this host whose TX/REDIRECT counters give the rate. */
export async function runPktgen(o: PktgenOptions, lb?: Dataplane): Promise<BenchResult[]> {
  const threads = pktgenThreads();
  if (o.threads > threads)
    throw new UsageError(`--threads ${o.threads}: pktgen has ${threads} thread${threads === 1 ? '' : 's'} here, one per CPU (of ${os.cpus().length})`);
  const { addrs, ports } = requireFlowRanges(o.flows);
  const pgctrl = path.join(PKTGEN_DIR, 'pgctrl');
  try {
    for (const w of pktgenCommands(o)) {
      try {
        fs.writeFileSync(path.join(PKTGEN_DIR, w.file), `${w.command}\n`);
      } catch (e) {
        throw refusal(w, e as NodeJS.ErrnoException);
      }
    }
  } catch (e) {
    // Nothing half set up stays bound to the threads; the refusal is what to report, whatever reset says.
    try {
      fs.writeFileSync(pgctrl, 'reset\n');
    } catch {
      /* the refusal below says what went wrong */
    }
    throw e;
  }
  const devs = Array.from({ length: o.threads }, (_, t) => `${o.iface}@${t}`);
  const forwarded = () => {
    if (!lb) return 0n;
    const tx = Dataplane.sum(lb.stats.lookup(lb.statIds.get('TX')!)).packets;
    return tx + Dataplane.sum(lb.stats.lookup(lb.statIds.get('REDIRECT')!)).packets;
  };
  // Writing "start" returns only when pktgen stops, so it runs in a child while we sample. Stopped on SIGINT and
  // SIGTERM too: pktgen runs in the kernel and would go on sending.
  const starter = spawn('sh', ['-c', `echo start > ${PKTGEN_DIR}/pgctrl`], { stdio: 'ignore' });
  const stop = () => fs.writeFileSync(pgctrl, 'stop\n');
  return withSignalCleanup(stop, async () => {
    await sleep(500);
    const s0 = devs.reduce((a, d) => a + sentSoFar(d), 0);
    const f0 = forwarded();
    const t0 = process.hrtime.bigint();
    await sleep(o.seconds * 1000);
    const s1 = devs.reduce((a, d) => a + sentSoFar(d), 0);
    const f1 = forwarded();
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    const sent = (s1 - s0) / secs / 1e6;
    const params = { ...o, source_addresses: addrs, source_ports: ports, proto: 'udp', sent_mpps: sent };
    return [
      lb
        ? result(`pktgen ${o.flows} flows, ${o.size} B, ${o.threads} thread${o.threads === 1 ? '' : 's'}: forwarded by the LB`,
          Number(f1 - f0) / secs / 1e6, 'Mpps', params, { name: 'sent by pktgen', value: sent })
        : result(`pktgen ${o.flows} flows, ${o.size} B, ${o.threads} thread${o.threads === 1 ? '' : 's'}: sent`, sent, 'Mpps',
          { ...params, note: 'the load balancer runs elsewhere: read its rate there with xdp-dr list --rate' }),
    ];
  }).finally(() => new Promise((r) => (starter.exitCode !== null ? r(null) : starter.once('exit', r))));
}
