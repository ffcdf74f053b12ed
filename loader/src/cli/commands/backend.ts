// xdp-dr backend add|edit|del|drain: what ipvsadm -a/-e/-d do (always -g, direct routing), on the running
// load balancer.
import { Command } from 'commander';
import { fields, serviceName } from '../../config';
import { UsageError } from '../../errors';
import { RawBackend, RawConfig } from '../../lb/desired';
import {
  addLbOption, changeRunning, cliValue, examples, findService, parseServiceSpec, GlobalOptions, ServiceSpec,
} from '../common';

interface Opts extends GlobalOptions {
  mac?: string;
  weight?: string;
  iface?: string;
}

function realServer(text: string, spec: ServiceSpec): string {
  const a = cliValue<{ address: string; family: 4 | 6 }>(fields.backendAddress, text, `real server '${text}'`);
  if (a.family !== spec.family)
    throw new UsageError(
      `real server ${a.address} is IPv${a.family} but ${serviceName(spec)} is IPv${spec.family}: direct routing leaves ` +
        "the IP header alone, so a service's real servers are the VIP's family",
    );
  return a.address;
}

function findBackend(raw: RawConfig, spec: ServiceSpec, address: string): RawBackend {
  const s = findService(raw, spec);
  const b = s.backends.find((x) => x.address === address);
  if (!b)
    throw new UsageError(
      `${serviceName(spec)} has no backend ${address}` +
        (s.backends.length ? ` (backends: ${s.backends.map((x) => x.address).join(', ')})` : ' (it has no backends)'),
    );
  return b;
}

function withOptions(cmd: Command): Command {
  return addLbOption(cmd)
    .argument('<service>', 'VIP:PORT/PROTO, e.g. 10.0.0.100:80/tcp')
    .argument('<real-ip>', "the real server's own address (it holds the VIP on lo)")
    .option('--mac <mac>', 'its MAC; default: looked up in the neighbour table (ARP/ND), and an error if nobody answers')
    .option('--weight <w>', 'relative share 0..65535 (default 1; 0 = drained: no new flows)')
    .option('--iface <iface>', 'interface it sits behind when not the one the load balancer runs on (XDP_REDIRECT)')
    .option('--dry-run', 'show the change without making it');
}

export function backendCommand(): Command {
  const cmd = new Command('backend').description('add, change, drain or remove a real server of a service');

  const add = examples(
    withOptions(new Command('add'))
      .description('add a real server to a service; it gets about weight/sum(weights) of new flows')
      .action(async (specText: string, ip: string, o: Opts) => {
        const spec = parseServiceSpec(specText);
        const address = realServer(ip, spec);
        const mac = o.mac === undefined ? undefined : cliValue<string>(fields.mac, o.mac, '--mac');
        const weight = cliValue<number>(fields.weight, o.weight ?? '1', '--weight');
        const iface = o.iface === undefined ? undefined : cliValue<string>(fields.interfaceName, o.iface, '--iface');
        await changeRunning(o, (raw) => {
          const s = findService(raw, spec);
          if (s.backends.some((b) => b.address === address))
            throw new UsageError(`${serviceName(spec)} already has backend ${address}; change it with 'xdp-dr backend edit'`);
          s.backends.push({ address, weight, ...(mac ? { mac } : {}), ...(iface ? { interface: iface } : {}) });
        });
      }),
    [
      'xdp-dr backend add 10.0.0.100:80/tcp 10.0.0.11',
      'xdp-dr backend add 10.0.0.100:80/tcp 10.0.0.12 --mac 02:00:00:00:00:12 --weight 2',
      'xdp-dr backend add [2001:db8::100]:443/tcp 2001:db8::11 --iface eth1',
    ],
  );

  const edit = examples(
    withOptions(new Command('edit'))
      .description("change a real server's weight, MAC or interface; only the flows that must move do")
      .action(async (specText: string, ip: string, o: Opts) => {
        const spec = parseServiceSpec(specText);
        const address = realServer(ip, spec);
        if (o.mac === undefined && o.weight === undefined && o.iface === undefined)
          throw new UsageError('backend edit: nothing to change; give --weight, --mac or --iface');
        const mac = o.mac === undefined ? undefined : cliValue<string>(fields.mac, o.mac, '--mac');
        const weight = o.weight === undefined ? undefined : cliValue<number>(fields.weight, o.weight, '--weight');
        const iface = o.iface === undefined ? undefined : cliValue<string>(fields.interfaceName, o.iface, '--iface');
        await changeRunning(o, (raw) => {
          const b = findBackend(raw, spec, address);
          if (weight !== undefined) b.weight = weight;
          if (mac !== undefined) {
            // A real server has one MAC: say it once, for every service that uses it.
            for (const s of raw.services) for (const x of s.backends) if (x.address === address) x.mac = mac;
          }
          if (iface !== undefined) b.interface = iface;
        });
      }),
    ['xdp-dr backend edit 10.0.0.100:80/tcp 10.0.0.12 --weight 3', 'xdp-dr backend edit 10.0.0.100:80/tcp 10.0.0.12 --mac 02:00:00:00:00:99'],
  );

  const drain = examples(
    addLbOption(new Command('drain'))
      .description('set weight 0: the real server gets no new flows and stays listed (undo with backend edit --weight)')
      .argument('<service>', 'VIP:PORT/PROTO')
      .argument('<real-ip>', "the real server's address")
      .option('--dry-run', 'show the change without making it')
      .action(async (specText: string, ip: string, o: Opts) => {
        const spec = parseServiceSpec(specText);
        const address = realServer(ip, spec);
        await changeRunning(o, (raw) => {
          findBackend(raw, spec, address).weight = 0;
        });
      }),
    ['xdp-dr backend drain 10.0.0.100:80/tcp 10.0.0.12'],
  );

  const del = examples(
    addLbOption(new Command('del'))
      .alias('delete')
      .description("remove a real server from a service; only its flows move to the others")
      .argument('<service>', 'VIP:PORT/PROTO')
      .argument('<real-ip>', "the real server's address")
      .option('--dry-run', 'show the change without making it')
      .action(async (specText: string, ip: string, o: Opts) => {
        const spec = parseServiceSpec(specText);
        const address = realServer(ip, spec);
        await changeRunning(o, (raw) => {
          const s = findService(raw, spec);
          const b = findBackend(raw, spec, address);
          s.backends = s.backends.filter((x) => x !== b);
        });
      }),
    ['xdp-dr backend del 10.0.0.100:80/tcp 10.0.0.12'],
  );

  return cmd.addCommand(add).addCommand(edit).addCommand(drain).addCommand(del);
}
