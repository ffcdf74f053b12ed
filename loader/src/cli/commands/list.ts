// xdp-dr list: the running services and real servers, laid out like `ipvsadm -L -n` (--stats, --rate), or the
// connection table, like `ipvsadm -L -c` (--connections).
import { Command } from 'commander';
import { Dataplane } from '../../dataplane/dataplane';
import { Counter } from '../../dataplane/layout';
import { serviceName } from '../../config';
import { UsageError } from '../../errors';
import { attachedInterfaces, chooseInterface, openLb } from '../../lb/instance';
import { readState, LbState } from '../../lb/state';
import { readConnections, ConnectionRow } from '../../lb/connections';
import { linkByIndex } from '../../lb/netif';
import { addLbOption, examples, out } from '../common';

interface Opts {
  lb?: string;
  stats?: boolean;
  rate?: boolean;
  interval?: string;
  json?: boolean;
  connections?: boolean;
}

interface Sample {
  services: Map<number, Counter>;
  backends: Map<number, Counter>;
  global: Map<number, Counter>;
  at: bigint;
}

function sample(dp: Dataplane): Sample {
  const sum = (m: Map<number, Counter[]>) => new Map([...m].map(([k, v]) => [k, Dataplane.sum(v)]));
  return { services: sum(dp.serviceStats.all()), backends: sum(dp.backendStats.all()), global: sum(dp.stats.all()), at: process.hrtime.bigint() };
}

const ZERO: Counter = { packets: 0n, bytes: 0n };

function figures(id: number, which: 'services' | 'backends', a: Sample, b?: Sample) {
  const now = (b ?? a)[which].get(id) ?? ZERO;
  const out: { packets: number; bytes: number; pps?: number; bps?: number } = { packets: Number(now.packets), bytes: Number(now.bytes) };
  if (b) {
    const secs = Number(b.at - a.at) / 1e9;
    const was = a[which].get(id) ?? ZERO;
    out.pps = Math.round(Number(now.packets - was.packets) / secs);
    out.bps = Math.round((8 * Number(now.bytes - was.bytes)) / secs);
  }
  return out;
}

function lbView(iface: string, dp: Dataplane, st: LbState, a: Sample, b?: Sample) {
  const names = [...dp.statIds].sort((x, y) => x[1] - y[1]);
  const last = b ?? a;
  return {
    interface: iface,
    mode: st.mode ?? 'unknown',
    hash_seed: st.hashSeed,
    table_size: st.tableSize,
    build: st.buildId.slice(0, 12),
    services: st.services.map((s) => ({
      service: serviceName(s),
      vip: s.vip,
      port: s.port,
      protocol: s.protocol,
      hash: s.hash,
      conn_table: s.connTable,
      id: s.id,
      table: s.hasTable,
      ...figures(s.id, 'services', a, b),
      backends: s.backends.map((be) => ({
        address: be.address,
        id: be.id,
        mac: be.mac,
        mac_source: be.macResolved ? 'neighbour' : 'given',
        interface: be.ifindex ? (linkByIndex(be.ifindex)?.name ?? `ifindex ${be.ifindex}`) : iface,
        forward: be.ifindex ? 'redirect' : 'tx',
        weight: be.weight,
        state: be.weight > 0 ? 'active' : 'drained',
        ...figures(be.id, 'backends', a, b),
      })),
    })),
    counters: Object.fromEntries(
      names.map(([name, id]) => {
        const c = last.global.get(id) ?? ZERO;
        return [name, { packets: Number(c.packets), bytes: Number(c.bytes) }];
      }),
    ),
  };
}

type View = ReturnType<typeof lbView>;

function human(v: View, o: Opts): void {
  out(`xdp-dr on ${v.interface}: ${v.mode} mode, hash seed ${v.hash_seed}, Maglev table ${v.table_size} slots, build ${v.build}`);
  const num = (n: number | undefined, w: number) => String(n ?? 0).padStart(w);
  if (o.stats || o.rate) {
    const [c1, c2] = o.rate ? ['PPS', 'BPS (bit/s)'] : ['Packets', 'Bytes'];
    out(`${'Prot LocalAddress:Port'.padEnd(34)}${c1.padStart(14)}${c2.padStart(18)}`);
    out(`${'  -> RealServer'.padEnd(34)}${c1.padStart(14)}${c2.padStart(18)}`);
    for (const s of v.services) {
      const [x, y] = o.rate ? [s.pps, s.bps] : [s.packets, s.bytes];
      out(`${`${s.protocol.toUpperCase().padEnd(4)} ${svcText(s)}`.padEnd(34)}${num(x, 14)}${num(y, 18)}`);
      for (const b of s.backends) {
        const [p, q] = o.rate ? [b.pps, b.bps] : [b.packets, b.bytes];
        out(`${`  -> ${b.address}`.padEnd(34)}${num(p, 14)}${num(q, 18)}`);
      }
    }
    if (o.stats) {
      const moved = Object.entries(v.counters).filter(([, c]) => c.packets > 0);
      out(`data path: ${moved.length ? moved.map(([n, c]) => `${n} ${c.packets}`).join(', ') : 'no packets yet'}`);
    }
    return;
  }
  out(`${'Prot LocalAddress:Port'.padEnd(34)}Hash Flags`);
  out(`${'  -> RealServer'.padEnd(34)}${'MAC'.padEnd(19)}${'Forward'.padEnd(18)}${'Weight'.padEnd(8)}State`);
  for (const s of v.services) {
    const flags = [s.hash, ...(s.conn_table ? ['conn-table'] : []), ...(s.table ? [] : ['(no table installed)'])];
    out(`${`${s.protocol.toUpperCase().padEnd(4)} ${svcText(s)}`.padEnd(34)}${flags.join(' ')}`);
    for (const b of s.backends) {
      const fwd = b.forward === 'tx' ? 'Route' : `Route via ${b.interface}`;
      const mac = `${b.mac}${b.mac_source === 'neighbour' ? '*' : ''}`;
      out(`${`  -> ${b.address}`.padEnd(34)}${mac.padEnd(19)}${fwd.padEnd(18)}${String(b.weight).padEnd(8)}${b.state}`);
    }
  }
  if (v.services.some((s) => s.backends.some((b) => b.mac_source === 'neighbour'))) out('(* MAC from the neighbour table)');
}

function svcText(s: { vip: string; port: number }): string {
  return `${s.vip.includes(':') ? `[${s.vip}]` : s.vip}:${s.port}`;
}

function connectionsText(iface: string, rows: ConnectionRow[]): void {
  const mmss = (s: number) => `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
  out(`xdp-dr on ${iface}: ${rows.length} connection record${rows.length === 1 ? '' : 's'}`);
  out(`${'Prot'.padEnd(5)}${'Expires'.padEnd(9)}${'State'.padEnd(9)}${'Client'.padEnd(42)}${'VIP:Port'.padEnd(42)}RealServer`);
  for (const r of rows) {
    const client = svcText({ vip: r.client, port: r.client_port });
    out(`${'TCP'.padEnd(5)}${mmss(r.expires_in_s).padEnd(9)}${r.state.padEnd(9)}${client.padEnd(42)}${svcText(r).padEnd(42)}${r.real_server ?? '(gone: re-picked on its next packet)'}`);
  }
}

export function listCommand(): Command {
  return examples(
    addLbOption(new Command('list'))
      .alias('ls')
      .description('show services, real servers, weights, MACs and state, read from the running load balancer')
      .option('--stats', 'packets and bytes forwarded per service and real server, and the data-path counters')
      .option('--rate', 'packets and bits per second, measured over --interval')
      .option('--interval <seconds>', 'measuring interval for --rate', '1')
      .option('-c, --connections', 'the connection table: each record that still binds its flow, with its real server and expiry')
      .option('--json', 'one JSON document instead of the table')
      .action(async (o: Opts) => {
        if (o.connections && (o.stats || o.rate)) throw new UsageError('--connections lists connection records: use it without --stats or --rate');
        const interval = Number(o.interval);
        if (!(interval > 0 && interval <= 3600)) throw new UsageError(`--interval: must be a number of seconds in (0, 3600], got '${o.interval}'`);
        const ifaces = o.lb !== undefined ? [chooseInterface(o.lb)] : attachedInterfaces();
        if (!ifaces.length) throw new UsageError("xdp-dr is not attached to any interface: start with 'xdp-dr attach <iface>'");
        const lbs = ifaces.map((iface) => ({ iface, dp: openLb(iface) }));
        try {
          if (o.connections) {
            const views = lbs.map(({ iface, dp }) => ({ interface: iface, connections: readConnections(dp, readState(dp)) }));
            if (o.json) out(JSON.stringify({ load_balancers: views }, null, 2));
            else views.forEach((v, i) => (i && out(), connectionsText(v.interface, v.connections)));
            return;
          }
          const first = lbs.map(({ dp }) => sample(dp));
          let second: Sample[] | undefined;
          if (o.rate) {
            await new Promise((r) => setTimeout(r, interval * 1000));
            second = lbs.map(({ dp }) => sample(dp));
          }
          const views = lbs.map(({ iface, dp }, i) => lbView(iface, dp, readState(dp), first[i], second?.[i]));
          if (o.json) out(JSON.stringify({ load_balancers: views, ...(o.rate ? { interval_s: interval } : {}) }, null, 2));
          else views.forEach((v, i) => (i && out(), human(v, o)));
        } finally {
          for (const { dp } of lbs) dp.close();
        }
      }),
    ['xdp-dr list', 'xdp-dr list --stats', 'xdp-dr list --rate --interval 5', 'xdp-dr list -c', 'xdp-dr list --json --lb eth0'],
  );
}
