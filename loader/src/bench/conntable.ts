// What the connection table is for, measured: of many established flows, how many change backend when one
// backend is added to ten, with the table and without it (the same flows, the same change, in the same run).
// The reference is Maglev's own disruption, the ideal 1/(N+1) of a consistent hash.
import { testRun } from '../libbpf';
import { Dataplane } from '../dataplane/dataplane';
import { benchPinDir } from './scratch';
import { validateConfig } from '../config';
import { prepare, apply } from '../lb/change';
import { Journal } from '../lb/apply';
import type { RawService } from '../lb/desired';
import { buildFrame, macToString, TCP_FLAGS } from '../packet';
import { XDP_DR_EVENT } from '../dataplane/layout';
import { BenchResult, result } from './result';

export interface ConnTableOptions {
  flows: number;
  backends: number;
  log?: (line: string) => void;
}

export const CONNTABLE_DEFAULTS: ConnTableOptions = { flows: 100_000, backends: 10 };

const mac = (n: number) => `02:00:00:00:${((n >> 8) & 255).toString(16).padStart(2, '0')}:${(n & 255).toString(16).padStart(2, '0')}`;

export async function runConnTable(opts: Partial<ConnTableOptions> = {}): Promise<BenchResult[]> {
  const o = { ...CONNTABLE_DEFAULTS, ...opts };
  const dp = Dataplane.load({ pinDir: benchPinDir('conntable'), hashSeed: 1 });
  try {
    // Bound to lo without attaching: changes go through the real plan and journal.
    dp.lbInfo.update(0, { ...dp.lbInfo.lookup(0)!, ifindex: 1, mode: 1 });
    const backends = (n: number) => Array.from({ length: n }, (_, i) => ({ address: `10.1.${i >> 8}.${(i & 255) + 1}`, mac: mac(i + 1), weight: 1 }));
    const services = (n: number): RawService[] => [
      { vip: '10.0.0.80', port: 80, protocol: 'tcp', hash: 'l4', conn_table: true, backends: backends(n) },
      { vip: '10.0.0.81', port: 80, protocol: 'tcp', hash: 'l4', conn_table: false, backends: backends(n) },
    ];
    const change = async (n: number) =>
      apply(await prepare({ iface: 'lo', dp }, validateConfig({ hash_seed: 1, interfaces: [{ name: 'lo' }], services: services(n) }, { limits: dp.limits }).services), new Journal());
    await change(o.backends);
    const flow = (i: number) => ({ src: `198.${18 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`, sport: 1024 + (i % 50000) });
    const send = (vip: string, i: number, flags: number) =>
      macToString(testRun(dp.progFd!, { data: buildFrame({ ...flow(i), dst: vip, dport: 80, proto: 'tcp', tcpFlags: flags }) }).data, 0);
    const before = { on: [] as string[], off: [] as string[] };
    for (let i = 0; i < o.flows; i++) {
      before.on.push(send('10.0.0.80', i, TCP_FLAGS.SYN));
      before.off.push(send('10.0.0.81', i, TCP_FLAGS.SYN));
    }
    // A flow without a record (its two buckets full) would follow Maglev: count them, not just the moves.
    const recorded = dp.conns.all().length;
    const evicted = dp.eventCount(XDP_DR_EVENT.XDP_DR_EV_CONN_EVICTED);
    o.log?.(`  ${o.flows} flows opened on ${o.backends} backends; ${recorded} records held, in a table of ${dp.conns.capacity}; ${evicted} live records evicted`);
    await change(o.backends + 1);
    let movedOn = 0;
    let movedOff = 0;
    for (let i = 0; i < o.flows; i++) {
      if (send('10.0.0.80', i, TCP_FLAGS.ACK) !== before.on[i]) movedOn++;
      if (send('10.0.0.81', i, TCP_FLAGS.ACK) !== before.off[i]) movedOff++;
    }
    const ideal = 1 / (o.backends + 1);
    const params = { flows: o.flows, backends_before: o.backends, backends_after: o.backends + 1 };
    return [
      result(`established flows moved by adding 1 backend to ${o.backends}, connection table on`, movedOn / o.flows, 'fraction',
        { ...params, moved: movedOn, records: recorded, evicted, table_capacity: dp.conns.capacity }, { name: 'Maglev alone, ideal 1/(N+1)', value: ideal }),
      result(`established flows moved by adding 1 backend to ${o.backends}, connection table off`, movedOff / o.flows, 'fraction',
        { ...params, moved: movedOff }, { name: 'Maglev alone, ideal 1/(N+1)', value: ideal }),
    ];
  } finally {
    dp.discard();
  }
}
