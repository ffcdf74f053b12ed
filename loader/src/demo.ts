// `make demo`: LVS direct routing through xdp-dr with real TCP traffic, in network namespaces on this machine,
// narrated for someone who has never seen LVS. Everything it builds is removed at the end, also on failure.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BPFFS } from './dataplane/dataplane';
import { Topology, VIP4, VIP6, Host } from './lab/topology';

const CLI = path.join(__dirname, 'cli', 'main.js');
const CLIENT = path.join(__dirname, 'lab', 'client.js');
const PIN_BASE = path.join(BPFFS, 'xdp-dr-demo');
const SVC = `${VIP4}:80/tcp`;

const say = (text = ''): void => console.log(text);
const indent = (text: string, by = '     '): string => text.trimEnd().split('\n').map((l) => by + l).join('\n');

async function main(): Promise<void> {
  const topo = new Topology('demo');
  let port = 20000;
  const run = (h: Host, ...args: string[]): string => {
    say(`  ${h.name}$ xdp-dr ${args.join(' ')}`);
    const out = topo.exec(h.ns, process.execPath, [CLI, ...args]);
    if (out.trim()) say(indent(out));
    return out;
  };
  const requests = (vip: string, n: number): Record<string, number> => {
    const r = JSON.parse(topo.exec(topo.client.ns, process.execPath, [CLIENT, vip, String(n), String(port), '16']));
    port += n;
    if (r.errors.length) throw new Error(`${r.errors.length} of ${n} requests failed, e.g. ${r.errors[0]}`);
    return r.counts;
  };
  const bars = (counts: Record<string, number>, n: number): void => {
    for (const rs of topo.realServers) {
      const c = counts[rs.name] ?? 0;
      say(`     ${rs.name}  ${String(c).padStart(4)}  ${'#'.repeat(Math.round((40 * c) / n))}`);
    }
  };
  const lbCounters = () => JSON.parse(topo.exec(topo.lb.ns, process.execPath, [CLI, 'list', '--json'])).load_balancers[0].counters;
  const rxBytes = (h: Host): number =>
    JSON.parse(topo.exec(h.ns, 'ip', ['-j', '-s', 'link', 'show', 'dev', 'eth0']))[0].stats64.rx.bytes as number;

  process.env.XDP_DR_PIN_BASE = PIN_BASE;
  const cleanup = (): void => {
    topo.destroy();
    fs.rmSync(PIN_BASE, { recursive: true, force: true });
  };
  process.on('SIGINT', () => {
    cleanup();
    process.exit(130);
  });

  try {
    say('xdp-dr demo: LVS direct routing (DR) in XDP, with real TCP traffic between network namespaces.');
    say();
    say('1. The network. One L2 segment (a bridge) joins, each in a network namespace of its own:');
    topo.create();
    say(`     client  ${topo.client.ip4}`);
    say(`     lb      ${topo.lb.ip4}, and the VIP ${VIP4} (it answers ARP for it, like an LVS director)`);
    for (const rs of topo.realServers) say(`     ${rs.name}     ${rs.ip4}`);
    say();
    say('2. The real servers. Each holds the VIP on its loopback, so it accepts packets for the VIP and answers');
    say('   from it, but must never answer ARP for it (only the load balancer may):');
    for (const rs of topo.realServers) run(rs, 'realserver', 'setup', '--vip', VIP4, '--vip', VIP6);
    await topo.startHttpServers();
    say('   Each runs an HTTP server on port 80 that answers with its own name.');
    say();
    say('3. The load balancer: xdp-dr attaches its XDP program to eth0 (native mode, in the veth driver) and');
    say("   installs the web service on the VIP, over IPv4 and IPv6; the real servers' MACs come from ARP and ND:");
    const cfg = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'xdp-dr-demo-')), 'lb.yaml');
    const backends = (fam: 'ip4' | 'ip6') => topo.realServers.map((r) => `      - address: ${r[fam]}\n`).join('');
    fs.writeFileSync(
      cfg,
      `interfaces:\n  - name: eth0\nservices:\n  - vip: ${VIP4}\n    port: 80\n    protocol: tcp\n    backends:\n${backends('ip4')}` +
        `  - vip: ${VIP6}\n    port: 80\n    protocol: tcp\n    backends:\n${backends('ip6')}`,
    );
    run(topo.lb, 'attach', 'eth0', '-c', cfg);
    say();
    say('4. The client opens 300 TCP connections to http://' + VIP4 + '/, each from a new source port:');
    const c0 = lbCounters();
    const rx0 = rxBytes(topo.client);
    const lbRx0 = rxBytes(topo.lb);
    const first = requests(VIP4, 300);
    bars(first, 300);
    const c1 = lbCounters();
    const d = (k: string) => c1[k].packets - c0[k].packets;
    say(`   The load balancer forwarded ${d('TX')} packets (the requests: SYN, GET, ACKs, FIN) and received`);
    say(`   ${rxBytes(topo.lb) - lbRx0} bytes in all; the client received ${rxBytes(topo.client) - rx0} bytes of answers. Not one answer`);
    say(`   crossed the load balancer (it counted ${d('PASS_NO_SERVICE')} packets for non-VIP addresses): each real server sends`);
    say('   its answer from the VIP straight to the client. That is the point of direct routing: the load balancer');
    say('   only rewrites the destination MAC of requests and sends them back out of the same NIC (XDP_TX).');
    say();
    say('   Per service and real server, as ipvsadm -L -n --stats would show it:');
    run(topo.lb, 'list', '--stats');
    say();
    say('5. A live change: rs2 leaves. Only its share of the Maglev table moves; the others keep their flows.');
    run(topo.lb, 'backend', 'del', SVC, topo.realServers[1].ip4);
    const second = requests(VIP4, 300);
    bars(second, 300);
    run(topo.lb, 'backend', 'add', SVC, topo.realServers[1].ip4);
    bars(requests(VIP4, 300), 300);
    say();
    say('6. The same over IPv6 (VIP ' + VIP6 + '), 150 connections:');
    bars(requests(VIP6, 150), 150);
    say();
    say('7. Which real server gets a given flow? The loaded program itself answers (one test run of a SYN):');
    run(topo.lb, 'simulate', '198.51.100.7:40000', SVC);
    say();
    say('Done: removing the namespaces, the program and its pins. Next: `make test`; README.md says how to put');
    say('xdp-dr in front of real servers on a real network.');
  } finally {
    cleanup();
  }
}

main().catch((e) => {
  console.error(`demo failed: ${(e as Error).message}`);
  process.exitCode = 1;
});
