// pktgen driver: for kernels that have the pktgen module, the /proc/net/pktgen writes that send UDP to a VIP
// from many flows (Documentation/networking/pktgen.rst), and the rate the load balancer forwarded, read from its
// counters when it runs on this host. pktgen builds UDP only: it has no TCP mode.
import fs from 'node:fs';
import path from 'node:path';
import { spawn, execFileSync } from 'node:child_process';
import { Dataplane } from '../dataplane/dataplane';
import { BenchResult, result } from './result';

export const PKTGEN_DIR = '/proc/net/pktgen';

export interface PktgenOptions {
  /** Interface pktgen sends from (towards the load balancer). */
  iface: string;
  vip: string;
  port: number;
  /** MAC of the load balancer's interface: the frames' destination. */
  dstMac: string;
  /** First source address; flows spread over consecutive addresses, up to PORTS_PER_ADDR ports each. */
  srcBase: string;
  flows: number;
  /** Frame size including the 4-byte FCS (pktgen's pkt_size leaves it out). */
  size: number;
  /** Kernel threads (kpktgend_0..threads-1), one per CPU, each with its own device queue. */
  threads: number;
  /** Copies queued per doorbell (xmit_more). */
  burst: number;
  seconds: number;
}

export interface PktgenWrite {
  file: string;
  command: string;
}

export const PORTS_PER_ADDR = 64;

function addIPv4(ip: string, n: number): string {
  const v = (ip.split('.').reduce((a, o) => a * 256 + Number(o), 0) + n) >>> 0;
  return [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.');
}

/** Distinct (source address, source port) pairs the generated ranges cover: at least `flows`. */
export function flowRanges(flows: number): { addrs: number; ports: number } {
  const ports = Math.min(flows, PORTS_PER_ADDR);
  return { addrs: Math.ceil(flows / ports), ports };
}

/** The writes, in order, that set pktgen up; `start` (which blocks until stopped) is left to the caller. */
export function pktgenCommands(o: PktgenOptions): PktgenWrite[] {
  const { addrs, ports } = flowRanges(o.flows);
  const w: PktgenWrite[] = [{ file: 'pgctrl', command: 'reset' }];
  for (let t = 0; t < o.threads; t++) {
    const thread = `kpktgend_${t}`;
    // dev@N names one device once per thread; each thread sends on its own TX queue.
    const dev = `${o.iface}@${t}`;
    w.push({ file: thread, command: 'rem_device_all' }, { file: thread, command: `add_device ${dev}` });
    const set = (command: string) => w.push({ file: dev, command });
    set('count 0'); // until stopped
    set('clone_skb 0'); // a fresh skb per frame: the ranges below only vary between skbs
    set(`burst ${o.burst}`);
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
    set('udp_src_min 10000');
    set(`udp_src_max ${10000 + ports - 1}`);
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

/** Runs pktgen for o.seconds; `lb` is the load balancer on this host whose TX/REDIRECT counters give the rate. */
export async function runPktgen(o: PktgenOptions, lb?: Dataplane): Promise<BenchResult[]> {
  for (const w of pktgenCommands(o)) fs.writeFileSync(path.join(PKTGEN_DIR, w.file), `${w.command}\n`);
  const devs = Array.from({ length: o.threads }, (_, t) => `${o.iface}@${t}`);
  const forwarded = () => {
    if (!lb) return 0n;
    const tx = Dataplane.sum(lb.stats.lookup(lb.statIds.get('TX')!)).packets;
    return tx + Dataplane.sum(lb.stats.lookup(lb.statIds.get('REDIRECT')!)).packets;
  };
  // Writing "start" returns only when pktgen stops, so it runs in a child while we sample.
  const starter = spawn('sh', ['-c', `echo start > ${PKTGEN_DIR}/pgctrl`], { stdio: 'ignore' });
  try {
    await sleep(500);
    const s0 = devs.reduce((a, d) => a + sentSoFar(d), 0);
    const f0 = forwarded();
    const t0 = process.hrtime.bigint();
    await sleep(o.seconds * 1000);
    const s1 = devs.reduce((a, d) => a + sentSoFar(d), 0);
    const f1 = forwarded();
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    const sent = (s1 - s0) / secs / 1e6;
    const params = { ...o, flows_generated: flowRanges(o.flows).addrs * flowRanges(o.flows).ports, proto: 'udp', sent_mpps: sent };
    return [
      lb
        ? result(`pktgen ${o.flows} flows, ${o.size} B, ${o.threads} thread${o.threads === 1 ? '' : 's'}: forwarded by the LB`,
          Number(f1 - f0) / secs / 1e6, 'Mpps', params, { name: 'sent by pktgen', value: sent })
        : result(`pktgen ${o.flows} flows, ${o.size} B, ${o.threads} thread${o.threads === 1 ? '' : 's'}: sent`, sent, 'Mpps',
          { ...params, note: 'the load balancer runs elsewhere: read its rate there with xdp-dr list --rate' }),
    ];
  } finally {
    fs.writeFileSync(path.join(PKTGEN_DIR, 'pgctrl'), 'stop\n');
    await new Promise((r) => (starter.exitCode !== null ? r(null) : starter.once('exit', r)));
  }
}
