// xdp-dr backend add|edit|drain|del: what ipvsadm -a/-e/-d do (always -g, direct routing), on the running
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

interface Settings {
  mac?: string;
  weight?: number;
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

/** One verb: its arguments, options and help, and the edit it makes to the running config. */
function verb(
  name: string,
  description: string,
  settings: boolean,
  lines: string[],
  edit: (raw: RawConfig, spec: ServiceSpec, address: string, set: Settings) => void,
): Command {
  const cmd = addLbOption(new Command(name))
    .description(description)
    .argument('<service>', 'VIP:PORT/PROTO, e.g. 10.0.0.100:80/tcp')
    .argument('<real-ip>', "the real server's own address (it holds the VIP on lo)");
  if (settings)
    cmd
      .option('--mac <mac>', 'its MAC; default: looked up in the neighbour table (ARP/ND), and an error if nobody answers')
      .option('--weight <w>', 'relative share 0..65535 (default 1; 0 = drained: no new flows)')
      .option('--iface <iface>', 'interface it sits behind when not the one the load balancer runs on (XDP_REDIRECT)');
  cmd.option('--dry-run', 'show the change without making it').action(async (specText: string, ip: string, o: Opts) => {
    const spec = parseServiceSpec(specText);
    const address = realServer(ip, spec);
    const set: Settings = {
      mac: o.mac === undefined ? undefined : cliValue<string>(fields.mac, o.mac, '--mac'),
      weight: o.weight === undefined ? undefined : cliValue<number>(fields.weight, o.weight, '--weight'),
      iface: o.iface === undefined ? undefined : cliValue<string>(fields.interfaceName, o.iface, '--iface'),
    };
    await changeRunning(o, (raw) => edit(raw, spec, address, set));
  });
  return examples(cmd, lines);
}

export function backendCommand(): Command {
  const add = verb(
    'add',
    'add a real server to a service; it gets about weight/sum(weights) of new flows',
    true,
    [
      'xdp-dr backend add 10.0.0.100:80/tcp 10.0.0.11',
      'xdp-dr backend add 10.0.0.100:80/tcp 10.0.0.12 --mac 02:00:00:00:00:12 --weight 2',
      'xdp-dr backend add [2001:db8::100]:443/tcp 2001:db8::11 --iface eth1',
    ],
    (raw, spec, address, set) => {
      const s = findService(raw, spec);
      if (s.backends.some((b) => b.address === address))
        throw new UsageError(`${serviceName(spec)} already has backend ${address}; change it with 'xdp-dr backend edit'`);
      s.backends.push({ address, weight: set.weight ?? 1, ...(set.mac ? { mac: set.mac } : {}), ...(set.iface ? { interface: set.iface } : {}) });
    },
  );

  const edit = verb(
    'edit',
    "change a real server's weight, MAC or interface; only the flows that must move do",
    true,
    ['xdp-dr backend edit 10.0.0.100:80/tcp 10.0.0.12 --weight 3', 'xdp-dr backend edit 10.0.0.100:80/tcp 10.0.0.12 --mac 02:00:00:00:00:99'],
    (raw, spec, address, set) => {
      if (set.mac === undefined && set.weight === undefined && set.iface === undefined)
        throw new UsageError('backend edit: nothing to change; give --weight, --mac or --iface');
      const b = findBackend(raw, spec, address);
      if (set.weight !== undefined) b.weight = set.weight;
      // A real server has one MAC: say it once, for every service that uses it.
      if (set.mac !== undefined) for (const s of raw.services) for (const x of s.backends) if (x.address === address) x.mac = set.mac;
      if (set.iface !== undefined) b.interface = set.iface;
    },
  );

  const drain = verb(
    'drain',
    'set weight 0: the real server gets no new flows and stays listed (undo with backend edit --weight)',
    false,
    ['xdp-dr backend drain 10.0.0.100:80/tcp 10.0.0.12'],
    (raw, spec, address) => {
      findBackend(raw, spec, address).weight = 0;
    },
  );

  const del = verb(
    'del',
    'remove a real server from a service; only its flows move to the others',
    false,
    ['xdp-dr backend del 10.0.0.100:80/tcp 10.0.0.12'],
    (raw, spec, address) => {
      const s = findService(raw, spec);
      const b = findBackend(raw, spec, address);
      s.backends = s.backends.filter((x) => x !== b);
    },
  ).alias('delete');

  return new Command('backend')
    .description('add, change, drain or remove a real server of a service')
    .addCommand(add)
    .addCommand(edit)
    .addCommand(drain)
    .addCommand(del);
}
