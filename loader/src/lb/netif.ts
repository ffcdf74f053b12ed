// Interfaces and real-server MACs as the kernel sees them, read through iproute2's JSON output. Everything goes
// through netlink (never /sys/class/net, which belongs to the mount namespace), so it is also right when the
// process was moved into another network namespace with `nsenter --net`.
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import dgram from 'node:dgram';
import { ipToBytes } from '../packet';
import { fn } from '../libbpf/ffi';

export interface LinkInfo {
  name: string;
  ifindex: number;
  /** Lowercase aa:bb:cc:dd:ee:ff; '' for links without a hardware address (tun, wireguard). */
  mac: string;
  /** Administratively up and with carrier (flags UP and LOWER_UP): it can pass traffic now. */
  up: boolean;
  mtu: number;
}

export class NetifError extends Error {
  override name = 'NetifError';
}

export interface MacRequest {
  /** Canonical IPv4 or IPv6 text. */
  address: string;
  /** The interface the real server must be reached through. */
  iface: string;
}

export interface MacAnswer {
  mac?: string;
  /** A full sentence naming the address and interface and what to do. */
  error?: string;
}

interface IpLink { ifindex: number; ifname: string; flags: string[]; mtu: number; address?: string; link_type?: string }
interface IpRoute { type?: string; dst: string; dev?: string; gateway?: string }
interface IpNeigh { dst: string; dev?: string; lladdr?: string; state?: string[]; confirmed?: number }

const IP_TIMEOUT_MS = 5000; // one `ip` call; it answers in milliseconds unless the system is wedged
const CONCURRENCY = 16; // `ip` processes in flight at once, so hundreds of backends do not fork-bomb the host
const GOOD_STATES = new Set(['REACHABLE', 'STALE', 'DELAY', 'PROBE', 'PERMANENT']);
const UNICAST_MAC = /^[0-9a-f][02468ace](:[0-9a-f]{2}){5}$/; // group bit clear: no multicast/broadcast answers

const noIp = () => new NetifError("the 'ip' command was not found: install iproute2 (it is how xdp-dr reads interfaces and neighbours)");
const stderrOf = (e: unknown): string =>
  String((e as { stderr?: string }).stderr ?? (e as Error).message ?? e).trim().replace(/^RTNETLINK answers: /, '');

function ipSync(args: string[]): unknown {
  try {
    const out = execFileSync('ip', ['-j', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: IP_TIMEOUT_MS });
    return out.trim() ? JSON.parse(out) : [];
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw noIp();
    throw Object.assign(new Error(stderrOf(e)), { stderr: stderrOf(e) });
  }
}

const execFileP = promisify(execFile);
async function ipAsync(args: string[]): Promise<{ json?: unknown; err?: string }> {
  try {
    const { stdout } = await execFileP('ip', ['-j', ...args], { timeout: IP_TIMEOUT_MS });
    return { json: stdout.trim() ? JSON.parse(stdout) : [] };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw noIp();
    return { err: stderrOf(e) };
  }
}

const toLinkInfo = (l: IpLink): LinkInfo => ({
  name: l.ifname,
  ifindex: l.ifindex,
  mac: (l.address ?? '').toLowerCase(),
  up: l.flags.includes('UP') && l.flags.includes('LOWER_UP'),
  mtu: l.mtu,
});

function rawLink(name: string): IpLink {
  const missing = new NetifError(`no interface named '${name}' on this host (see 'ip link')`);
  // Linux names are 1-15 bytes without '/' or whitespace; anything else cannot exist (and is not passed to ip).
  if (!/^[^\s/]{1,15}$/.test(name)) throw missing;
  let links: IpLink[];
  try {
    links = ipSync(['link', 'show', 'dev', name]) as IpLink[];
  } catch (e) {
    if (e instanceof NetifError) throw e;
    if (/does not exist/.test((e as Error).message)) throw missing;
    throw new NetifError(`cannot read interface '${name}': ${(e as Error).message}`);
  }
  if (!links[0]) throw missing;
  return links[0];
}

/**
 * An interface as the kernel sees it in this process's network namespace. Ethernet and loopback links are read
 * with four ioctls on a socket (a socket belongs to the namespace, as netlink does), which costs microseconds
 * where an `ip` process costs milliseconds on every change; other links through `ip`. Throws NetifError when
 * there is no such interface.
 */
export function linkInfo(name: string): LinkInfo {
  if (!/^[^\s/]{1,15}$/.test(name)) return toLinkInfo(rawLink(name));
  const fd = fn.socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) return toLinkInfo(rawLink(name));
  try {
    const ask = (req: number): Buffer | undefined => {
      const ifr = Buffer.alloc(40);
      ifr.write(name, 0, 'latin1');
      return fn.ioctl(fd, req, ifr) === 0 ? ifr : undefined;
    };
    const index = ask(SIOCGIFINDEX);
    if (!index) return toLinkInfo(rawLink(name)); // says why: missing, or something else
    const hw = ask(SIOCGIFHWADDR);
    const flags = ask(SIOCGIFFLAGS);
    const mtu = ask(SIOCGIFMTU);
    const family = hw?.readUInt16LE(16);
    if (!hw || !flags || !mtu || (family !== ARPHRD_ETHER && family !== ARPHRD_LOOPBACK)) return toLinkInfo(rawLink(name));
    const f = flags.readUInt16LE(16);
    return {
      name,
      ifindex: index.readInt32LE(16),
      mac: [...hw.subarray(18, 24)].map((b) => b.toString(16).padStart(2, '0')).join(':'),
      // RUNNING is the operational state: up with carrier (what LOWER_UP says in `ip link`).
      up: !!(f & IFF_UP) && !!(f & IFF_RUNNING),
      mtu: mtu.readInt32LE(16),
    };
  } finally {
    fn.close(fd);
  }
}

const AF_INET = 2;
const SOCK_DGRAM = 2;
const SIOCGIFFLAGS = 0x8913;
const SIOCGIFMTU = 0x8921;
const SIOCGIFHWADDR = 0x8927;
const SIOCGIFINDEX = 0x8933;
const IFF_UP = 0x1;
const IFF_RUNNING = 0x40;
const ARPHRD_ETHER = 1;
const ARPHRD_LOOPBACK = 772;

export function linkByIndex(ifindex: number): LinkInfo | undefined {
  const l = (ipSync(['link', 'show']) as IpLink[]).find((x) => x.ifindex === ifindex);
  return l && toLinkInfo(l);
}

async function eachLimit<T>(items: T[], fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, items.length) }, worker));
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));

interface Pending { key: string; address: string; iface: string; dev: string; v6: boolean; linkLocal: boolean; nkey: string }

/** Why the interface cannot reach real servers at all, or undefined when it can. */
function linkProblem(l: IpLink): string | undefined {
  const name = l.ifname;
  if (l.link_type !== 'ether')
    return `${name} is not an Ethernet interface (link type ${l.link_type ?? 'unknown'}), and direct routing rewrites Ethernet MACs: reach the real servers through an Ethernet interface`;
  if (l.flags.includes('NOARP'))
    return `${name} does not use ARP or neighbour discovery (NOARP): give the real servers' MACs with --mac or mac: in the config`;
  if (!l.flags.includes('UP')) return `${name} is down: bring it up with 'ip link set dev ${name} up'`;
  if (!l.flags.includes('LOWER_UP')) return `${name} has no carrier: check its cable, switch port or peer`;
  return undefined;
}

/** Is the address on a network directly connected to dev? Undefined when yes, otherwise the reason. */
async function routeProblem(p: Pending): Promise<string | undefined> {
  const notConnected = (why: string) =>
    `${p.address} is not on a network directly connected to ${p.iface} (${why}): ` +
    'in direct routing the real servers must share an L2 segment with the load balancer';
  // Only link-local IPv6 needs oif (fe80::/64 exists on every interface). For IPv4, `route get ... oif`
  // pretends any address is on-link through that interface when no route matches, so it is never used there.
  const r = await ipAsync(['route', 'get', p.address, ...(p.linkLocal ? ['oif', p.dev] : [])]);
  if (r.err !== undefined) return notConnected(`there is no route to it: ${r.err}`);
  const route = (r.json as IpRoute[])[0];
  if (!route) return notConnected('the kernel returned no route for it');
  if (route.type === 'local') return `${p.address} is an address of this host itself, not of a real server behind ${p.iface}`;
  if (route.type && route.type !== 'unicast')
    return `${p.address} is a ${route.type} address, not a real server's: give the real server's own unicast address`;
  if (route.gateway) return notConnected(`the route goes via ${route.gateway} on ${route.dev}`);
  if (route.dev !== p.dev) return notConnected(`the route leaves through ${route.dev}`);
  return undefined;
}

const addrKey = (dev: string, address: string) => `${dev}/${ipToBytes(address).toString('hex')}`;

async function neighbours(stats = false): Promise<Map<string, IpNeigh>> {
  // One dump of all families; without a dev filter so every entry carries its dev.
  const r = await ipAsync([...(stats ? ['-s'] : []), 'neigh', 'show']);
  if (r.err !== undefined) throw new NetifError(`cannot read the kernel neighbour table ('ip neigh show'): ${r.err}`);
  const table = new Map<string, IpNeigh>();
  for (const n of r.json as IpNeigh[]) {
    if (!n.dev) continue;
    try {
      table.set(addrKey(n.dev, n.dst), n);
    } catch {
      // not an IP neighbour (cannot happen with ip neigh, but never let one odd line fail the lookup)
    }
  }
  return table;
}

const goodMac = (n: IpNeigh | undefined): string | undefined => {
  const mac = n?.lladdr?.toLowerCase();
  return mac && UNICAST_MAC.test(mac) && mac !== '00:00:00:00:00:00' && n!.state?.some((s) => GOOD_STATES.has(s)) ? mac : undefined;
};

/** Makes the kernel (re)start ARP / neighbour solicitation for p. */
async function trigger(p: Pending): Promise<void> {
  // NTF_USE: the kernel creates the entry if needed and probes exactly as for an outgoing packet, without sending
  // one. Needs CAP_NET_ADMIN, which the load balancer has anyway.
  if ((await ipAsync(['neigh', 'replace', p.address, 'dev', p.dev, 'use'])).err === undefined) return;
  // Fallback: one empty datagram to the discard port; the kernel has to resolve the neighbour to send it.
  await new Promise<void>((resolve) => {
    const s = dgram.createSocket(p.v6 ? 'udp6' : 'udp4');
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      s.close();
      resolve();
    };
    s.on('error', finish);
    s.send(Buffer.alloc(0), 9, p.linkLocal ? `${p.address}%${p.dev}` : p.address, finish);
  });
}

/**
 * Resolves real-server MACs from the kernel neighbour table (ARP / IPv6 ND), triggering resolution for entries
 * that are missing or failed, and waits up to timeoutMs (default 3000) in total. Keys: `${iface}/${address}`.
 * One bad request gets an error in its answer; only a missing interface throws (NetifError).
 */
export async function resolveMacs(reqs: MacRequest[], opts: { timeoutMs?: number } = {}): Promise<Map<string, MacAnswer>> {
  const timeoutMs = opts.timeoutMs ?? 3000;
  const deadline = Date.now() + timeoutMs;
  const out = new Map<string, MacAnswer>();
  const links = new Map<string, IpLink>();
  for (const r of reqs) if (!links.has(r.iface)) links.set(r.iface, rawLink(r.iface));

  const candidates: Pending[] = [];
  const seen = new Set<string>();
  for (const { address, iface } of reqs) {
    const key = `${iface}/${address}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const link = links.get(iface)!;
    let bytes: Buffer;
    try {
      bytes = ipToBytes(address);
    } catch {
      out.set(key, { error: `'${address}' (for ${iface}) is not an IPv4 or IPv6 address: give the real server's address without a prefix length or zone` });
      continue;
    }
    const problem = linkProblem(link);
    if (problem) {
      out.set(key, { error: `no MAC for ${address} on ${iface}: ${problem}` });
      continue;
    }
    const v6 = bytes.length === 16;
    const dev = link.ifname; // the real name, should iface be an altname
    candidates.push({ key, address, iface, dev, v6, linkLocal: v6 && bytes[0] === 0xfe && (bytes[1] & 0xc0) === 0x80, nkey: addrKey(dev, address) });
  }

  let pending: Pending[] = [];
  await eachLimit(candidates, async (p) => {
    const problem = await routeProblem(p);
    if (problem) out.set(p.key, { error: problem });
    else pending.push(p);
  });

  // Poll with growing pauses (20 ms .. 200 ms); the round cap is a second bound besides the deadline.
  let table = await neighbours();
  const maxRounds = Math.ceil(timeoutMs / 20) + 2;
  for (let round = 0, pause = 20; round < maxRounds; round++, pause = Math.min(pause * 2, 200)) {
    pending = pending.filter((p) => {
      const mac = goodMac(table.get(p.nkey));
      if (mac) out.set(p.key, { mac });
      return !mac;
    });
    if (!pending.length || Date.now() >= deadline) break;
    // INCOMPLETE means the kernel is already probing; missing or FAILED entries need a (new) start.
    await eachLimit(pending.filter((p) => !table.get(p.nkey)?.state?.includes('INCOMPLETE')), trigger);
    await sleep(Math.min(pause, deadline - Date.now()));
    table = await neighbours();
  }

  const secs = `${+(timeoutMs / 1000).toFixed(1)} s`;
  for (const p of pending)
    out.set(p.key, {
      error: `no MAC for ${p.address} on ${p.iface}: nobody answered ${p.v6 ? 'neighbour solicitation' : 'ARP'} within ${secs} ` +
        '(is the real server up and on this segment?); give its MAC with --mac or mac: in the config',
    });
  return new Map([...seen].map((k) => [k, out.get(k)!])); // in request order
}

/** States in which the kernel holds a MAC it may re-confirm: it was learnt, not set by hand, and no probe runs. */
const CONFIRMABLE = new Set(['REACHABLE', 'STALE', 'DELAY']);

/**
 * Has the kernel re-confirm the neighbour entries of these real servers now, rather than when its own traffic
 * next needs them (which can be a minute away): each learnt entry goes to PROBE, a unicast ARP / neighbour
 * solicitation to the MAC it holds. The server answers and the entry is REACHABLE again; if that MAC is gone,
 * the entry is FAILED after ucast_solicit x retrans_time (3 x 1 s by default), and resolveMacs then asks the
 * whole segment. Entries confirmed within the last second are left alone, so that a short survey interval does
 * not become an ARP stream; PERMANENT and NOARP entries (set by hand) are never touched.
 */
export async function confirmNeighbours(reqs: MacRequest[]): Promise<void> {
  const devs = new Map<string, string | undefined>();
  for (const { iface } of reqs)
    if (!devs.has(iface)) {
      try {
        devs.set(iface, rawLink(iface).ifname);
      } catch (e) {
        if (!(e instanceof NetifError)) throw e;
        devs.set(iface, undefined); // a missing interface is the survey's to report
      }
    }
  const table = await neighbours(true);
  const due: { address: string; dev: string }[] = [];
  for (const { address, iface } of reqs) {
    const dev = devs.get(iface);
    if (!dev) continue;
    let n: IpNeigh | undefined;
    try {
      n = table.get(addrKey(dev, address));
    } catch {
      continue; // not an address; resolveMacs says so
    }
    if (n?.lladdr && n.state?.some((s) => CONFIRMABLE.has(s)) && (n.confirmed ?? 1) >= 1) due.push({ address, dev });
  }
  // `change` never creates an entry; the lladdr stays, only the state moves (the kernel resets its probe count).
  // One `ip -batch` for all of them: a survey every few seconds must not fork a process per real server.
  if (!due.length) return;
  await new Promise<void>((resolve) => {
    const child = execFile('ip', ['-force', '-batch', '-'], { timeout: IP_TIMEOUT_MS }, () => resolve());
    child.stdin?.end(due.map(({ address, dev }) => `neigh change ${address} dev ${dev} nud probe\n`).join(''));
  });
}
