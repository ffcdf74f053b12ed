// xdp-dr apply -c lb.yaml: make the load balancers run what the file says. Everything that can fail for a
// reason outside the maps (the file, interfaces, MACs, ids) fails before the first write; the writes of all
// interfaces then form one transaction that is undone as a whole if any of them fails.
import { Command } from 'commander';
import { loadConfigFile, serviceName, type Config } from '../../config';
import { ensureObject } from '../../dataplane/build';
import { Dataplane, objectLimits } from '../../dataplane/dataplane';
import { attach, attachedInterfaces, detach, interfaceExists } from '../../lb/instance';
import { prepare, apply, Prepared } from '../../lb/change';
import { Journal } from '../../lb/apply';
import { planIsEmpty } from '../../lb/plan';
import { examples, out, printPrepared } from '../common';
import { withChangeLock } from '../../lb/lock';

interface Opts {
  config: string;
  dryRun?: boolean;
}

export function applyCommand(): Command {
  return examples(
    new Command('apply')
      .description(
        'show the difference between what runs and what the config file wants, then apply it as one transaction ' +
          '(interfaces the file lists but that do not run xdp-dr yet are attached)',
      )
      .requiredOption('-c, --config <file>', 'the config file (see examples/lb.yaml)')
      .option('--dry-run', 'only show the difference')
      .action(async (o: Opts) => {
        const cfg: Config = loadConfigFile(o.config, { limits: objectLimits(ensureObject('xdp_dr')), interfaceExists });
        await withChangeLock(async () => {
          const running = new Set(attachedInterfaces());
          const journal = new Journal();
          const lbs: { iface: string; dp: Dataplane }[] = [];
          try {
            for (const { name, mode } of cfg.interfaces) {
              if (!running.has(name) && o.dryRun) {
                out(`${name}: (dry run) + attach in ${mode} mode, hash seed ${cfg.hashSeed}`);
                for (const s of cfg.services) out(`  + service ${serviceName(s)}  (${s.backends.length} backend(s))`);
                continue;
              }
              // Pinned state of any build is taken as it is: a config change needs compatible maps, not the same object.
              let got: ReturnType<typeof attach> | undefined;
              journal.run(
                `attach ${name}`,
                () => {
                  got = attach(name, mode, cfg.hashSeed, { sameBuild: false });
                  if (got.attached) out(`${name}: attached in ${mode} mode, hash seed ${cfg.hashSeed}`);
                },
                () => {
                  if (got?.attached) {
                    got.dp.close();
                    detach(name);
                  }
                },
              );
              lbs.push({ iface: name, dp: got!.dp });
            }
            const prepared: Prepared[] = [];
            try {
              for (const lb of lbs) prepared.push(await prepare(lb, cfg.services));
            } catch (e) {
              throw journal.rollback(e, 'preparing the change');
            }
            for (const p of prepared) printPrepared(p, !!o.dryRun);
            if (!o.dryRun) for (const p of prepared) if (!planIsEmpty(p.plan)) apply(p, journal);
            for (const other of running)
              if (!cfg.interfaces.some((i) => i.name === other))
                out(`note: xdp-dr also runs on ${other}, which ${o.config} does not list: left as it is ('xdp-dr detach ${other}' removes it)`);
          } finally {
            for (const lb of lbs) lb.dp.close();
          }
        });
      }),
    ['xdp-dr apply -c /etc/xdp-dr/lb.yaml --dry-run', 'xdp-dr apply -c /etc/xdp-dr/lb.yaml'],
  );
}
