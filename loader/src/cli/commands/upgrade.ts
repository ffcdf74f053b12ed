// xdp-dr upgrade: a new build takes over a running load balancer without a lost packet.
import { Command } from 'commander';
import { ensureObject, BuildOptions, BENCH_ONLY_OPTIONS } from '../../dataplane/build';
import { UsageError } from '../../errors';
import { chooseInterface, upgrade } from '../../lb/instance';
import { examples, out } from '../common';
import { withChangeLock } from '../../lb/lock';

interface Opts {
  lb?: string;
  define: string[];
}

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

export function upgradeCommand(): Command {
  return examples(
    new Command('upgrade')
      .description(
        'replace the running program with the current build (after `make`), keeping every map, service, table and ' +
          'connection record: one atomic swap on the existing XDP link. A build whose maps differ is refused, ' +
          'with the migration path.',
      )
      .option('--lb <iface>', 'the interface whose load balancer to upgrade (needed when xdp-dr runs on several)')
      .option('-D, --define <NAME=VALUE>', 'build option for the new program, e.g. CONN_IDLE_TIMEOUT_S=300 (repeatable)', collect, [])
      .action(async (o: Opts) => {
        const defines: Record<string, number> = {};
        for (const d of o.define) {
          const m = /^([A-Z_]+)=(\d+)$/.exec(d);
          if (!m) throw new UsageError(`--define '${d}' must be NAME=NUMBER, e.g. CONN_IDLE_TIMEOUT_S=300`);
          if (BENCH_ONLY_OPTIONS.includes(m[1]))
            throw new UsageError(`--define ${m[1]} builds a program for benchmarks that cuts the data path short; it cannot run on an interface`);
          defines[m[1]] = Number(m[2]);
        }
        const iface = chooseInterface(o.lb);
        let objPath: string;
        try {
          objPath = ensureObject('xdp_dr', defines as BuildOptions);
        } catch (e) {
          throw new UsageError((e as Error).message);
        }
        const r = await withChangeLock(() => upgrade(iface, objPath));
        out(r.upgraded ? `${iface}: build ${r.from.slice(0, 12)} replaced by ${r.to.slice(0, 12)}, maps kept` : `${iface} already runs build ${r.to.slice(0, 12)}: nothing to do`);
      }),
    ['xdp-dr upgrade', 'xdp-dr upgrade --lb eth0 -D CONN_IDLE_TIMEOUT_S=300'],
  );
}
