// xdp-dr simulate: which real server a flow goes to, answered by the running program itself (one
// BPF_PROG_TEST_RUN of a SYN/datagram through the pinned program), so it cannot disagree with the data path.
import { Command } from 'commander';
import { serviceName } from '../../config';
import { UsageError } from '../../errors';
import { testRun, XDP_ACTION_NAME } from '../../libbpf';
import { buildFrame, macToString, TCP_FLAGS } from '../../packet';
import { chooseInterface, openLb, requireLink } from '../../lb/instance';
import { readState } from '../../lb/state';
import { linkByIndex } from '../../lb/netif';
import { addLbOption, examples, out, parseEndpoint, parseServiceSpec, sameService } from '../common';

interface Opts {
  lb?: string;
  json?: boolean;
}

export function simulateCommand(): Command {
  return examples(
    addLbOption(new Command('simulate'))
      .description(
        'show which real server a flow goes to, by running one packet of it through the loaded program ' +
          '(BPF_PROG_TEST_RUN). That packet counts in the statistics, and on a service with a connection table it ' +
          'is recorded like any SYN, so an existing record for the flow is what answers',
      )
      .argument('<client>', 'client ADDRESS:PORT, e.g. 198.51.100.7:40000')
      .argument('<service>', 'VIP:PORT/PROTO, e.g. 10.0.0.100:80/tcp')
      .option('--json', 'print the answer as JSON')
      .action((clientText: string, specText: string, o: Opts) => {
        const client = parseEndpoint(clientText, 'client');
        const spec = parseServiceSpec(specText);
        if (client.family !== spec.family)
          throw new UsageError(`client ${client.ip} is IPv${client.family} but ${serviceName(spec)} is IPv${spec.family}`);
        const iface = chooseInterface(o.lb);
        const dp = openLb(iface);
        try {
          if (dp.progFd === undefined) throw new Error(`${dp.pinDir}/prog is missing: detach and attach ${iface} again`);
          const lbMac = requireLink(iface).mac;
          const frame = buildFrame({
            srcMac: '02:00:00:00:00:01', dstMac: lbMac, src: client.ip, dst: spec.vip, sport: client.port,
            dport: spec.port, proto: spec.protocol, ...(spec.protocol === 'tcp' ? { tcpFlags: TCP_FLAGS.SYN } : {}),
          });
          const r = testRun(dp.progFd, { data: frame });
          const action = XDP_ACTION_NAME[r.retval] ?? `action ${r.retval}`;
          const svc = readState(dp).services.find((s) => sameService(s, spec));
          const answer: Record<string, unknown> = { client: clientText, service: serviceName(spec), action };
          if (action === 'XDP_TX' || action === 'XDP_REDIRECT') {
            const dst = macToString(r.data, 0);
            const hits = svc?.backends.filter((b) => b.mac === dst) ?? [];
            answer.mac = dst;
            answer.backends = hits.map((b) => ({
              address: b.address, id: b.id, weight: b.weight,
              interface: b.ifindex ? (linkByIndex(b.ifindex)?.name ?? `ifindex ${b.ifindex}`) : iface,
            }));
          } else {
            answer.reason = !svc
              ? `no service ${serviceName(spec)} (nor one on port 0 of that VIP): the kernel gets the packet`
              : svc.backends.every((b) => b.weight === 0)
                ? `${serviceName(spec)} has no backend with weight > 0: the kernel gets the packet`
                : 'the program passed it to the kernel';
          }
          if (o.json) {
            out(JSON.stringify(answer));
            return;
          }
          const bs = (answer.backends as { address: string; interface: string }[] | undefined) ?? [];
          if (bs.length)
            out(`${clientText} -> ${serviceName(spec)}: ${action} to ${bs.map((b) => b.address).join(' or ')} (mac ${answer.mac}, out of ${bs[0].interface})`);
          else if (answer.mac) out(`${clientText} -> ${serviceName(spec)}: ${action} to mac ${answer.mac} (no backend of this service has it)`);
          else out(`${clientText} -> ${serviceName(spec)}: ${action}: ${answer.reason}`);
        } finally {
          dp.close();
        }
      }),
    ['xdp-dr simulate 198.51.100.7:40000 10.0.0.100:80/tcp', 'xdp-dr simulate [2001:db8::7]:5353 [2001:db8::100]:53/udp --json'],
  );
}
