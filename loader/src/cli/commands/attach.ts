// xdp-dr attach / detach: put the load balancer on a NIC (optionally with its services) and take it off.
import { Command } from 'commander';
import { fields, loadConfigFile, type Config, type XdpMode } from '../../config';
import { UsageError } from '../../errors';
import { attach, detach, interfaceExists } from '../../lb/instance';
import { ensureObject } from '../../dataplane/build';
import { objectLimits } from '../../dataplane/dataplane';
import { prepare, apply } from '../../lb/change';
import { Journal } from '../../lb/apply';
import { planIsEmpty } from '../../lb/plan';
import { addLbOption, cliValue, examples, out, printPrepared } from '../common';
import { withChangeLock } from '../../lb/lock';

interface AttachOpts {
  mode?: string;
  config?: string;
  hashSeed?: string;
}

export function attachCommand(): Command {
  return examples(
    new Command('attach')
      .description(
        'load the XDP program and attach it to a NIC; it keeps running after this command exits ' +
          '(state pinned under /sys/fs/bpf/xdp-dr/<iface>/). Attaching the same build again changes nothing.',
      )
      .argument('<iface>', 'the NIC that receives traffic for the VIPs')
      .option('--mode <mode>', 'native (driver XDP, default) | generic (any NIC, slower) | offload')
      .option('-c, --config <file>', 'also apply the services of this config file (as xdp-dr apply does)')
      .option('--hash-seed <n>', 'flow hash seed; every LB node of a cluster needs the same (default 0, or hash_seed of -c)')
      .action(async (iface: string, o: AttachOpts) => {
        cliValue<string>(fields.interfaceName, iface, 'interface');
        if (!interfaceExists(iface)) throw new UsageError(`no interface named '${iface}' on this host (see 'ip link')`);
        let cfg: Config | undefined;
        if (o.config) cfg = loadConfigFile(o.config, { limits: objectLimits(ensureObject('xdp_dr')), interfaceExists });
        const mode = cliValue<XdpMode>(fields.xdpMode, o.mode ?? cfg?.interfaces.find((i) => i.name === iface)?.mode ?? 'native', '--mode');
        const seedOpt = o.hashSeed === undefined ? undefined : cliValue<number>(fields.hashSeed, o.hashSeed, '--hash-seed');
        if (cfg && seedOpt !== undefined && seedOpt !== cfg.hashSeed)
          throw new UsageError(`--hash-seed ${seedOpt} contradicts hash_seed ${cfg.hashSeed} of ${o.config}: give one`);
        const seed = seedOpt ?? cfg?.hashSeed ?? 0;

        await withChangeLock(async () => {
          const { dp, attached } = attach(iface, mode, seed);
          try {
            out(attached ? `attached xdp-dr to ${iface} (${mode} mode, hash seed ${seed})` : `${iface} already runs this build of xdp-dr: nothing to do`);
            if (!cfg) return;
            try {
              const prepared = await prepare({ iface, dp }, cfg.services);
              printPrepared(prepared, false);
              if (!planIsEmpty(prepared.plan)) apply(prepared, new Journal());
            } catch (e) {
              // The services could not be applied: leave the NIC as it was before this command.
              if (attached) {
                dp.close();
                detach(iface);
                process.stderr.write(`xdp-dr: ${iface} detached again, as it was\n`);
              }
              throw e;
            }
          } finally {
            dp.close();
          }
        });
      }),
    ['xdp-dr attach eth0', 'xdp-dr attach eth0 -c /etc/xdp-dr/lb.yaml', 'xdp-dr attach veth0 --mode generic'],
  );
}

export function detachCommand(): Command {
  return examples(
    new Command('detach')
      .description('detach the program from a NIC and remove its pinned state; VIP traffic then goes to the kernel')
      .argument('<iface>', 'the NIC')
      .action(async (iface: string) => {
        if (!(await withChangeLock(() => detach(iface)))) throw new UsageError(`xdp-dr is not attached to ${iface}: nothing to detach`);
        out(`detached xdp-dr from ${iface}`);
      }),
    ['xdp-dr detach eth0'],
  );
}

export { addLbOption };
