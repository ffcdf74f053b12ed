// xdp-dr service add|edit|del: what ipvsadm -A/-E/-D do, on the running load balancer.
import { Command } from 'commander';
import { fields, serviceName, type HashMode } from '../../config';
import { UsageError } from '../../errors';
import { RawConfig } from '../../lb/desired';
import { addLbOption, changeRunning, cliValue, examples, findService, parseServiceSpec, sameService, GlobalOptions, ServiceSpec } from '../common';

interface Opts extends GlobalOptions {
  hash?: string;
  connTable?: string;
}

interface Settings {
  hash?: HashMode;
  connTable?: boolean;
}

function onOff(v: string | undefined): boolean | undefined {
  if (v === undefined) return undefined;
  if (v === 'on' || v === 'off') return v === 'on';
  throw new UsageError(`--conn-table: '${v}' is not on | off`);
}

function verb(
  name: string,
  description: string,
  hashOption: boolean,
  lines: string[],
  edit: (raw: RawConfig, spec: ServiceSpec, set: Settings) => void,
): Command {
  const cmd = addLbOption(new Command(name))
    .description(description)
    .argument('<service>', 'VIP:PORT/PROTO, e.g. 10.0.0.100:80/tcp or [2001:db8::1]:443/tcp; port 0 = every port');
  if (hashOption)
    cmd
      .option('--hash <mode>', 'l4: 5-tuple (default) | l3: source and destination address (source-IP persistence)')
      .option('--conn-table <on|off>', 'record TCP flows so that backend changes move no open connection (default on for TCP)');
  cmd.option('--dry-run', 'show the change without making it').action(async (text: string, o: Opts) => {
    const spec = parseServiceSpec(text);
    const set: Settings = {
      hash: o.hash === undefined ? undefined : cliValue<HashMode>(fields.hash, o.hash, '--hash'),
      connTable: onOff(o.connTable),
    };
    await changeRunning(o, (raw) => edit(raw, spec, set));
  });
  return examples(cmd, lines);
}

export function serviceCommand(): Command {
  const add = verb(
    'add',
    'add a service; it forwards once it has backends',
    true,
    ['xdp-dr service add 10.0.0.100:80/tcp', 'xdp-dr service add [2001:db8::100]:443/tcp --hash l3', 'xdp-dr service add 10.0.0.53:0/udp'],
    (raw, s, set) => {
      if (raw.services.some((x) => sameService(x, s)))
        throw new UsageError(`service ${serviceName(s)} already exists; change it with 'xdp-dr service edit'`);
      raw.services.push({
        vip: s.vip, port: s.port, protocol: s.protocol, hash: set.hash ?? 'l4',
        ...(set.connTable !== undefined ? { conn_table: set.connTable } : {}), backends: [],
      });
    },
  );
  const edit = verb(
    'edit',
    "change a service's hash mode (flows without a connection record are rehashed) or its connection table",
    true,
    ['xdp-dr service edit 10.0.0.100:80/tcp --hash l3', 'xdp-dr service edit 10.0.0.100:80/tcp --conn-table off'],
    (raw, s, set) => {
      if (set.hash === undefined && set.connTable === undefined)
        throw new UsageError('service edit: nothing to change; give --hash l4|l3 or --conn-table on|off');
      const svc = findService(raw, s);
      if (set.hash !== undefined) svc.hash = set.hash;
      if (set.connTable !== undefined) svc.conn_table = set.connTable;
    },
  );
  const del = verb(
    'del',
    'remove a service and its backends; its packets then go to the kernel',
    false,
    ['xdp-dr service del 10.0.0.100:80/tcp'],
    (raw, s) => {
      const found = findService(raw, s);
      raw.services = raw.services.filter((x) => x !== found);
    },
  ).alias('delete');
  return new Command('service')
    .description('add, change or remove a virtual service (VIP:port/protocol)')
    .addCommand(add)
    .addCommand(edit)
    .addCommand(del);
}
