// What a real server needs for direct routing, the part LVS-DR users most often get wrong: the VIP on `lo`
// (so the server accepts packets for it and answers from it) without answering ARP for it (arp_ignore=1: answer
// only for addresses on the asking interface; arp_announce=2: never use the VIP as ARP source). For IPv6 the
// kernel already answers neighbour solicitations only for addresses on the receiving interface, so the VIP on
// `lo` is enough. Everything is read and written through `ip` and /proc/sys/net, which follow the network
// namespace of the process.
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { ipToBytes, bytesToIp } from './packet';
import { UsageError } from './errors';

export interface Step {
  /** The equivalent shell command, shown by --dry-run and as the record of what was done. */
  command: string;
  run: () => void;
}

export interface Finding {
  ok: boolean;
  text: string;
}

interface IpAddr { ifname: string; flags?: string[]; addr_info: { family: string; local: string; prefixlen: number }[] }
interface IpRoute { dst: string; gateway?: string; dev?: string }

function ip(args: string[]): string {
  try {
    return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    throw new Error(`ip ${args.join(' ')} failed: ${String((e as { stderr?: string }).stderr ?? (e as Error).message).trim()}`);
  }
}

const SYSCTL = '/proc/sys/net/ipv4/conf';
const sysctl = (iface: string, name: string): number => Number(fs.readFileSync(`${SYSCTL}/${iface}/${name}`, 'utf8').trim());

/** Canonical VIP text and its family; a usage error for anything else. */
export function parseVip(text: string): { vip: string; family: 4 | 6 } {
  let b: Buffer;
  try {
    b = ipToBytes(text.trim());
  } catch {
    throw new UsageError(`--vip '${text}' is not an IPv4 or IPv6 address (give the address alone, without /prefix)`);
  }
  return { vip: bytesToIp(b), family: b.length === 4 ? 4 : 6 };
}

function addresses(): IpAddr[] {
  return JSON.parse(ip(['-j', 'addr', 'show'])) as IpAddr[];
}

function holders(vip: string): { ifname: string; prefixlen: number }[] {
  const want = ipToBytes(vip);
  const out: { ifname: string; prefixlen: number }[] = [];
  for (const l of addresses())
    for (const a of l.addr_info ?? []) {
      try {
        if (ipToBytes(a.local).equals(want)) out.push({ ifname: l.ifname, prefixlen: a.prefixlen });
      } catch {
        /* an address form we do not parse is not the VIP */
      }
    }
  return out;
}

/** The interfaces ARP can arrive on: everything but lo, and "default" for interfaces yet to come. */
function arpInterfaces(): string[] {
  return fs.readdirSync(SYSCTL).filter((n) => n !== 'all' && n !== 'lo');
}

/** Steps that make this host a real server for the VIPs; empty when it already is one. */
export function setupSteps(vips: string[]): Step[] {
  const steps: Step[] = [];
  const parsed = vips.map(parseVip);
  for (const { vip, family } of parsed) {
    const len = family === 4 ? 32 : 128;
    if (!holders(vip).some((h) => h.ifname === 'lo' && h.prefixlen === len))
      steps.push({ command: `ip addr add ${vip}/${len} dev lo`, run: () => void ip(['addr', 'add', `${vip}/${len}`, 'dev', 'lo']) });
  }
  if (parsed.some((p) => p.family === 4)) {
    for (const [name, want] of [['arp_ignore', 1], ['arp_announce', 2]] as const) {
      if (sysctl('all', name) < want)
        steps.push({
          command: `sysctl -w net.ipv4.conf.all.${name}=${want}`,
          run: () => fs.writeFileSync(`${SYSCTL}/all/${name}`, `${want}\n`),
        });
    }
  }
  return steps;
}

/** Steps that take the VIPs off lo again. The ARP sysctls stay: they are harmless, and other VIPs may need them. */
export function teardownSteps(vips: string[]): Step[] {
  const steps: Step[] = [];
  for (const { vip } of vips.map(parseVip))
    for (const h of holders(vip).filter((x) => x.ifname === 'lo'))
      steps.push({ command: `ip addr del ${vip}/${h.prefixlen} dev lo`, run: () => void ip(['addr', 'del', `${vip}/${h.prefixlen}`, 'dev', 'lo']) });
  return steps;
}

/** What is right and wrong on this host for the VIPs; lbAddress lets it check that replies do not go back through the LB. */
export function check(vips: string[], lbAddress?: string): Finding[] {
  const out: Finding[] = [];
  const parsed = vips.map(parseVip);
  for (const { vip, family } of parsed) {
    const len = family === 4 ? 32 : 128;
    const on = holders(vip);
    const onLo = on.find((h) => h.ifname === 'lo');
    if (!onLo) out.push({ ok: false, text: `${vip} is not on lo: packets for the VIP would be dropped here (xdp-dr realserver setup --vip ${vip})` });
    else if (onLo.prefixlen !== len)
      out.push({ ok: false, text: `${vip} is on lo as /${onLo.prefixlen}: it must be /${len}, or this host takes the whole prefix for itself` });
    else out.push({ ok: true, text: `${vip}/${len} is on lo` });
    for (const h of on.filter((x) => x.ifname !== 'lo'))
      out.push({
        ok: false,
        text: `${vip} is also on ${h.ifname}: this host would answer ${family === 4 ? 'ARP' : 'neighbour solicitations'} for it and take the ` +
          `VIP's traffic from the load balancer (ip addr del ${vip}/${h.prefixlen} dev ${h.ifname})`,
      });
  }
  if (parsed.some((p) => p.family === 4)) {
    // The kernel uses the larger of the "all" value and the interface's own.
    for (const [name, want, why] of [
      ['arp_ignore', 1, 'answers ARP for the VIP on lo'],
      ['arp_announce', 2, 'may use the VIP as the source of its ARP requests, teaching neighbours the wrong MAC for it'],
    ] as const) {
      const low = arpInterfaces().filter((i) => Math.max(sysctl('all', name), sysctl(i, name)) < want);
      out.push(
        low.length
          ? {
              ok: false,
              text: `${name} is below ${want} on ${low.map((i) => (i === 'default' ? 'interfaces created from now on' : i)).join(', ')}: ` +
                `this host ${why} (sysctl -w net.ipv4.conf.all.${name}=${want})`,
            }
          : { ok: true, text: `${name} >= ${want} on every interface` },
      );
    }
  }
  if (lbAddress !== undefined) {
    const lb = parseVip(lbAddress).vip;
    for (const fam of ['-4', '-6']) {
      const routes = JSON.parse(ip(['-j', fam, 'route', 'show', 'default'])) as IpRoute[];
      const via = routes.find((r) => r.gateway && Buffer.compare(ipToBytes(r.gateway), ipToBytes(lb)) === 0);
      if (via)
        out.push({
          ok: false,
          text: `the default route goes through the load balancer (${lb}): in direct routing replies go straight to the ` +
            'client, so route through your router instead',
        });
    }
    if (!out.some((f) => f.text.startsWith('the default route'))) out.push({ ok: true, text: `the default route does not go through ${lb}` });
  }
  return out;
}
