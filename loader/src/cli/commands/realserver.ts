// xdp-dr realserver setup|teardown|check: prepares a real server for direct routing and says what is wrong on one.
import { Command } from 'commander';
import { UsageError } from '../../errors';
import { check, setupSteps, teardownSteps, Step } from '../../realserver';
import { examples, out } from '../common';

interface Opts {
  vip: string[];
  dryRun?: boolean;
  lb?: string;
  json?: boolean;
}

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

function runSteps(steps: Step[], dryRun: boolean, nothing: string): void {
  if (!steps.length) return out(nothing);
  for (const s of steps) {
    out(`${dryRun ? '(dry run) ' : ''}${s.command}`);
    if (!dryRun) s.run();
  }
}

function vips(o: Opts): string[] {
  if (!o.vip?.length) throw new UsageError('give the VIP with --vip <address> (repeat it for several)');
  return o.vip;
}

export function realserverCommand(): Command {
  const setup = examples(
    new Command('setup')
      .description("put the VIP on lo (/32 or /128) and keep this host from answering ARP for it (arp_ignore=1, arp_announce=2)")
      .requiredOption('--vip <address>', 'a VIP this host serves (repeatable)', collect)
      .option('--dry-run', 'print the changes without making them')
      .action((o: Opts) => runSteps(setupSteps(vips(o)), !!o.dryRun, 'nothing to do: this host is set up for these VIPs')),
    ['xdp-dr realserver setup --vip 10.0.0.100', 'xdp-dr realserver setup --vip 10.0.0.100 --vip 2001:db8::100 --dry-run'],
  );
  const teardown = examples(
    new Command('teardown')
      .description('take the VIP off lo again (the ARP settings stay: they are harmless and other VIPs may need them)')
      .requiredOption('--vip <address>', 'a VIP (repeatable)', collect)
      .option('--dry-run', 'print the changes without making them')
      .action((o: Opts) => runSteps(teardownSteps(vips(o)), !!o.dryRun, 'nothing to do: the VIPs are not on lo')),
    ['xdp-dr realserver teardown --vip 10.0.0.100'],
  );
  const chk = examples(
    new Command('check')
      .description('report what is wrong on this host for direct routing; exit code 1 when anything is')
      .requiredOption('--vip <address>', 'a VIP (repeatable)', collect)
      .option('--lb <address>', "the load balancer's address, to check that replies do not route back through it")
      .option('--json', 'findings as JSON')
      .action((o: Opts) => {
        const findings = check(vips(o), o.lb);
        if (o.json) out(JSON.stringify(findings));
        else for (const f of findings) out(`${f.ok ? 'ok     ' : 'problem'}  ${f.text}`);
        if (findings.some((f) => !f.ok)) process.exitCode = 1;
      }),
    ['xdp-dr realserver check --vip 10.0.0.100 --lb 10.0.0.2'],
  );
  return new Command('realserver')
    .description('set up a real server for direct routing (VIP on lo, no ARP for it), or check one')
    .addCommand(setup)
    .addCommand(teardown)
    .addCommand(chk);
}
