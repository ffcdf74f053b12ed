// What the end-to-end tests of `xdp-dr run` share: the CLI and the daemon run in the load balancer's namespace of
// a lab, a client sends real HTTP through the VIPs, and the daemon's JSON log and metrics are read back.
import fs from 'node:fs';
import path from 'node:path';
import { ChildProcess } from 'node:child_process';
import { Topology, Host, VIP4, VIP6 } from '../../loader/src/lab/topology';

export const CLI = path.resolve(__dirname, '../../loader/src/cli/main.js');
const CLIENT = path.resolve(__dirname, '../../loader/src/lab/client.js');

/** Health-check timing of the labs' configs, and its YAML (indented for a service). */
export const CHECK = { intervalMs: 400, timeoutMs: 300, rise: 2, fall: 2 };
export const CHECK_YAML = `      interval: ${CHECK.intervalMs}ms\n      timeout: ${CHECK.timeoutMs}ms\n      rise: ${CHECK.rise}\n      fall: ${CHECK.fall}\n`;

export interface Daemon {
  child: ChildProcess;
  /** Its log lines (JSON), as they come. */
  log: string[];
}

export class DaemonLab {
  private clientPort = 20000;

  constructor(
    readonly topo: Topology,
    readonly pinBase: string,
    readonly configFile: string,
    readonly metrics = '127.0.0.1:9642', // inside the load balancer's namespace
  ) {}

  cli(h: Host, ...args: string[]): string {
    process.env.XDP_DR_PIN_BASE = this.pinBase;
    return this.topo.exec(h.ns, process.execPath, [CLI, ...args]);
  }

  /** n HTTP connections from the client to the VIP, each from a source port not used before. */
  connect(vip: string, n: number): { counts: Record<string, number>; errors: string[] } {
    const out = JSON.parse(this.topo.exec(this.topo.client.ns, process.execPath, [CLIENT, vip, String(n), String(this.clientPort), '16']));
    this.clientPort += n;
    return out;
  }

  /** Starts the daemon in the LB namespace; resolves when it says it runs. DAEMON_LOG=file keeps its log. */
  async startDaemon(surveyMs: number, ...extra: string[]): Promise<Daemon> {
    process.env.XDP_DR_PIN_BASE = this.pinBase;
    const child = this.topo.spawn(this.topo.lb.ns, process.execPath, [
      CLI, 'run', '-c', this.configFile, '--metrics-address', this.metrics, '--log-format', 'json', '--survey-interval', String(surveyMs), ...extra,
    ]);
    const log: string[] = [];
    const keep = process.env.DAEMON_LOG;
    if (keep) {
      child.stderr!.on('data', (d) => fs.appendFileSync(keep, d));
      child.on('exit', (c, s) => fs.appendFileSync(keep, `EXIT ${c} ${s}\n`));
    }
    let buf = '';
    child.stderr!.on('data', (d) => {
      buf += d;
      const lines = buf.split('\n');
      buf = lines.pop()!;
      log.push(...lines);
    });
    await until(() => log.some((l) => JSON.parse(l).msg === 'running'), 10_000, () => `daemon did not start: ${log.join('\n')}`);
    return { child, log };
  }

  /** The lab with real servers holding both VIPs and serving HTTP, the config written, the daemon running. */
  async setUp(config: string, surveyMs: number): Promise<Daemon> {
    this.topo.create();
    for (const rs of this.topo.realServers) this.cli(rs, 'realserver', 'setup', '--vip', VIP4, '--vip', VIP6);
    await this.topo.startHttpServers();
    fs.writeFileSync(this.configFile, config);
    return this.startDaemon(surveyMs);
  }

  /** Removes everything setUp made (also after a failure part way); the daemon goes with its namespace. */
  tearDown(): void {
    this.topo.destroy();
    fs.rmSync(this.pinBase, { recursive: true, force: true });
    fs.rmSync(path.dirname(this.configFile), { recursive: true, force: true });
  }

  /** The daemon's metrics page, fetched from inside its namespace. */
  scrape(): string {
    const js = `require('http').get('http://${this.metrics}/metrics',r=>{let b='';r.on('data',d=>b+=d);r.on('end',()=>process.stdout.write(b))})`;
    return this.topo.exec(this.topo.lb.ns, process.execPath, ['-e', js]);
  }
}

/** A stuck step fails its test instead of holding up the whole run. */
export const BOUND = { timeout: 90_000 };

/** The first log line whose msg matches. */
export function logged(d: Daemon, msg: RegExp): Record<string, unknown> | undefined {
  for (const l of d.log) {
    const j = JSON.parse(l);
    if (msg.test(j.msg)) return j;
  }
  return undefined;
}

/** A metric's value on a metrics page, for the series with these labels. */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.split(' ').pop());
  }
  return undefined;
}

/** Polls cond every 50 ms; throws what() after ms. */
export async function until(cond: () => boolean, ms: number, what: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(what());
    await new Promise((r) => setTimeout(r, 50));
  }
}
