// xdp-dr service add|edit|del: what ipvsadm -A/-E/-D do, on the running load balancer.
import { Command } from 'commander';
import { fields, serviceName, type HashMode } from '../../config';
import { UsageError } from '../../errors';
import { addLbOption, changeRunning, cliValue, examples, findService, parseServiceSpec, sameService, GlobalOptions } from '../common';

interface Opts extends GlobalOptions {
  hash?: string;
}

const hashOf = (v: string | undefined): HashMode | undefined =>
  v === undefined ? undefined : cliValue<HashMode>(fields.hash, v, '--hash');

export function serviceCommand(): Command {
  const cmd = new Command('service').description('add, change or remove a virtual service (VIP:port/protocol)');

  const add = examples(
    addLbOption(new Command('add'))
      .description('add a service; it forwards once it has backends')
      .argument('<service>', 'VIP:PORT/PROTO, e.g. 10.0.0.100:80/tcp or [2001:db8::1]:443/tcp; port 0 = every port')
      .option('--hash <mode>', 'l4: 5-tuple (default) | l3: source and destination address (source-IP persistence)')
      .option('--dry-run', 'show the change without making it')
      .action(async (spec: string, o: Opts) => {
        const s = parseServiceSpec(spec);
        const hash = hashOf(o.hash) ?? 'l4';
        await changeRunning(o, (raw) => {
          if (raw.services.some((x) => sameService(x, s)))
            throw new UsageError(`service ${serviceName(s)} already exists; change it with 'xdp-dr service edit'`);
          raw.services.push({ vip: s.vip, port: s.port, protocol: s.protocol, hash, backends: [] });
        });
      }),
    ['xdp-dr service add 10.0.0.100:80/tcp', 'xdp-dr service add [2001:db8::100]:443/tcp --hash l3', 'xdp-dr service add 10.0.0.53:0/udp'],
  );

  const edit = examples(
    addLbOption(new Command('edit'))
      .description("change a service's hash mode (flows are rehashed: most move to other backends)")
      .argument('<service>', 'VIP:PORT/PROTO')
      .option('--hash <mode>', 'l4 | l3')
      .option('--dry-run', 'show the change without making it')
      .action(async (spec: string, o: Opts) => {
        const s = parseServiceSpec(spec);
        const hash = hashOf(o.hash);
        if (hash === undefined) throw new UsageError('service edit: nothing to change; give --hash l4|l3');
        await changeRunning(o, (raw) => {
          findService(raw, s).hash = hash;
        });
      }),
    ['xdp-dr service edit 10.0.0.100:80/tcp --hash l3'],
  );

  const del = examples(
    addLbOption(new Command('del'))
      .alias('delete')
      .description("remove a service and its backends; its packets then go to the kernel")
      .argument('<service>', 'VIP:PORT/PROTO')
      .option('--dry-run', 'show the change without making it')
      .action(async (spec: string, o: Opts) => {
        const s = parseServiceSpec(spec);
        await changeRunning(o, (raw) => {
          const found = findService(raw, s);
          raw.services = raw.services.filter((x) => x !== found);
        });
      }),
    ['xdp-dr service del 10.0.0.100:80/tcp'],
  );

  return cmd.addCommand(add).addCommand(edit).addCommand(del);
}
