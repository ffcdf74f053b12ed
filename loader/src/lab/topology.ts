// A small LVS-DR network in namespaces, for the demo and the end-to-end tests: one L2 segment (a bridge in its
// own namespace) joining a client, the load balancer and real servers, each in a namespace of its own with an
// interface called eth0. Nothing outside these namespaces is touched; destroy() removes them all.
import { execFileSync, spawn, ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ensureObject } from '../dataplane/build';

export interface Host {
  name: string;
  ns: string;
  ip4: string;
  ip6: string;
}

export const SUBNET4 = '10.100.0';
export const SUBNET6 = 'fd00:100::';
export const VIP4 = `${SUBNET4}.100`;
export const VIP6 = `${SUBNET6}100`;
const CMD_TIMEOUT_MS = 30_000;

export class Topology {
  readonly sw: string;
  readonly client: Host;
  readonly lb: Host;
  readonly realServers: Host[];
  private readonly children: ChildProcess[] = [];

  /** tag makes the namespace names unique (e.g. the test's pid); realServers is how many to build. */
  constructor(readonly tag: string, realServers = 3) {
    const host = (name: string, n: number): Host => ({ name, ns: `xdr-${tag}-${name}`, ip4: `${SUBNET4}.${n}`, ip6: `${SUBNET6}${n.toString(16)}` });
    this.sw = `xdr-${tag}-sw`;
    this.client = host('client', 10);
    this.lb = host('lb', 2);
    this.realServers = Array.from({ length: realServers }, (_, i) => host(`rs${i + 1}`, 11 + i));
  }

  get hosts(): Host[] {
    return [this.client, this.lb, ...this.realServers];
  }

  /** Runs a command in a namespace (nsenter: only the network namespace changes); returns stdout. */
  exec(ns: string, cmd: string, args: string[] = []): string {
    try {
      return execFileSync('nsenter', [`--net=/run/netns/${ns}`, '--', cmd, ...args], {
        encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: CMD_TIMEOUT_MS,
      });
    } catch (e) {
      const err = String((e as { stderr?: string }).stderr ?? '').trim();
      throw new Error(`in ${ns}: ${cmd} ${args.join(' ')} failed: ${err || (e as Error).message}`);
    }
  }

  /** A long-running process in a namespace, killed by destroy(). */
  spawn(ns: string, cmd: string, args: string[]): ChildProcess {
    const child = spawn('nsenter', [`--net=/run/netns/${ns}`, '--', cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.children.push(child);
    return child;
  }

  create(): this {
    this.destroy(); // leftovers of a run that was killed
    try {
      for (const ns of [this.sw, ...this.hosts.map((h) => h.ns)]) {
        execFileSync('ip', ['netns', 'add', ns]);
        execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      }
      execFileSync('ip', ['-n', this.sw, 'link', 'add', 'br0', 'type', 'bridge']);
      execFileSync('ip', ['-n', this.sw, 'link', 'set', 'br0', 'up']);
      for (const h of this.hosts) this.plug(h);
      // A veth hands frames over with the TCP/UDP checksum left for "hardware" to fill in; a frame that XDP sends
      // back out keeps the hole and the real server drops it. A real NIC delivers complete checksums, so the
      // client (the only sender whose frames cross the load balancer) computes its own, as a host behind a NIC does.
      this.exec(this.client.ns, 'ethtool', ['-K', 'eth0', 'tx', 'off']);
      return this;
    } catch (e) {
      this.destroy();
      throw e;
    }
  }

  /** A host's eth0, cabled to the bridge; the load balancer's also gets the VIPs. */
  private plug(h: Host): void {
    const port = `p-${h.name}`;
    execFileSync('ip', ['link', 'add', 'eth0', 'netns', h.ns, 'type', 'veth', 'peer', 'name', port, 'netns', this.sw]);
    execFileSync('ip', ['-n', this.sw, 'link', 'set', port, 'master', 'br0', 'up']);
    // No duplicate address detection: addresses are usable at once, and nobody else is on this segment.
    this.exec(h.ns, 'sysctl', ['-qw', 'net.ipv6.conf.eth0.accept_dad=0']);
    execFileSync('ip', ['-n', h.ns, 'addr', 'add', `${h.ip4}/24`, 'dev', 'eth0']);
    execFileSync('ip', ['-n', h.ns, 'addr', 'add', `${h.ip6}/64`, 'dev', 'eth0', 'nodad']);
    execFileSync('ip', ['-n', h.ns, 'link', 'set', 'eth0', 'up']);
    if (h !== this.lb) return;
    // A veth delivers the frames the load balancer sends back out (XDP_TX) only to a peer running XDP itself.
    execFileSync('ip', ['-n', this.sw, 'link', 'set', 'dev', port, 'xdpdrv', 'obj', ensureObject('xdp_pass'), 'sec', 'xdp']);
    // The load balancer owns the VIPs on the segment: it is the host that answers ARP and ND for them.
    execFileSync('ip', ['-n', h.ns, 'addr', 'add', `${VIP4}/32`, 'dev', 'eth0']);
    execFileSync('ip', ['-n', h.ns, 'addr', 'add', `${VIP6}/128`, 'dev', 'eth0', 'nodad']);
  }

  /** Deletes a host's eth0 (and its bridge port), as when a NIC or its driver goes away. */
  unplug(h: Host): void {
    execFileSync('ip', ['-n', h.ns, 'link', 'del', 'eth0']);
  }

  /** Creates it again (a new ifindex and MAC). Neighbours learn the new MAC as after a failover. */
  replug(h: Host): void {
    this.plug(h);
    for (const other of this.hosts) if (other !== h) execFileSync('ip', ['-n', other.ns, 'neigh', 'flush', 'dev', 'eth0']);
  }

  private readonly http = new Map<string, ChildProcess>();

  /** An HTTP server on port 80 of every real server, answering with the real server's name. */
  async startHttpServers(): Promise<void> {
    await Promise.all(this.realServers.map((rs) => this.startHttpServer(rs)));
  }

  async startHttpServer(rs: Host): Promise<void> {
    const child = this.spawn(rs.ns, process.execPath, [path.join(__dirname, 'http-server.js'), rs.name]);
    this.http.set(rs.name, child);
    await new Promise<void>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`HTTP server of ${rs.name} exited with ${code}`)));
      child.stdout!.once('data', () => resolve());
    });
  }

  /** Stops a real server's HTTP server (the host stays up: its port now refuses connections). */
  async stopHttpServer(rs: Host): Promise<void> {
    const child = this.http.get(rs.name);
    if (!child || child.exitCode !== null) return;
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await gone;
    this.http.delete(rs.name);
  }

  /** MAC of a host's eth0. */
  mac(h: Host): string {
    return (JSON.parse(this.exec(h.ns, 'ip', ['-j', 'link', 'show', 'dev', 'eth0'])) as { address: string }[])[0].address;
  }

  destroy(): void {
    for (const c of this.children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
    for (const ns of [this.sw, ...this.hosts.map((h) => h.ns)])
      if (fs.existsSync(`/run/netns/${ns}`)) execFileSync('ip', ['netns', 'del', ns]);
  }
}
