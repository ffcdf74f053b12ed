// What the commands share: argument parsing with the config's own field rules, the interface to act on, and
// the one path every change takes (running config + edit -> validate -> plan -> show -> apply).
import { Command } from 'commander';
import { ConfigError, fields, validateConfig, serviceName, type Protocol } from '../config';
import { UsageError } from '../errors';
import { ipToBytes } from '../packet';
import { chooseInterface, openLb, interfaceExists } from '../lb/instance';
import { readState } from '../lb/state';
import { rawFromState, RawConfig, RawService } from '../lb/desired';
import { prepare, apply, Prepared } from '../lb/change';
import { formatPlan, planIsEmpty } from '../lb/plan';
import { Journal } from '../lb/apply';
import { withChangeLock } from '../lb/lock';

type Field = { safeParse(v: unknown): { success: true; data: unknown } | { success: false; error: { issues: { message: string }[] } } };

/** A command-line value through a config field rule; numbers typed on a command line are numbers. */
export function cliValue<T>(field: Field, raw: string, label: string): T {
  const v = /^\s*[+-]?\d+(\.\d*)?\s*$/.test(raw) ? Number(raw) : raw;
  const r = field.safeParse(v);
  if (!r.success) throw new UsageError(`${label}: ${r.error.issues[0]?.message ?? 'invalid'}`);
  return r.data as T;
}

export interface ServiceSpec {
  vip: string;
  family: 4 | 6;
  port: number;
  protocol: Protocol;
}

const SPEC_HELP = 'write it as VIP:PORT/PROTO, e.g. 10.0.0.100:80/tcp or [2001:db8::1]:443/tcp (port 0 = every port)';

/** `10.0.0.100:80/tcp`, `[2001:db8::1]:80/udp`. */
export function parseServiceSpec(text: string, label = 'service'): ServiceSpec {
  const t = text.trim();
  // Without brackets the port of an IPv6 VIP cannot be told from its last group.
  if (!t.startsWith('[') && (t.split('/')[0].match(/:/g) ?? []).length > 1)
    throw new UsageError(`${label} '${text}': put an IPv6 VIP in brackets, e.g. [2001:db8::1]:80/tcp`);
  const m = /^(?:\[([^\]]+)\]|([^:/[\]]+)):([^/]*)\/(.*)$/.exec(t);
  if (!m) throw new UsageError(`${label} '${text}' is not a service: ${SPEC_HELP}`);
  const vip = cliValue<{ address: string; family: 4 | 6 }>(fields.vip, m[1] ?? m[2], `${label} '${text}': VIP`);
  const port = cliValue<number>(fields.port, m[3], `${label} '${text}': port`);
  const protocol = cliValue<Protocol>(fields.protocol, m[4], `${label} '${text}': protocol`);
  return { vip: vip.address, family: vip.family, port, protocol };
}

/** `198.51.100.7:40000`, `[2001:db8::7]:40000`. */
export function parseEndpoint(text: string, label: string): { ip: string; family: 4 | 6; port: number } {
  const t = text.trim();
  if (!t.startsWith('[') && (t.match(/:/g) ?? []).length > 1)
    throw new UsageError(`${label} '${text}': put an IPv6 address in brackets, e.g. [2001:db8::7]:40000`);
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(.*)$/.exec(t);
  if (!m) throw new UsageError(`${label} '${text}' must be ADDRESS:PORT, e.g. 198.51.100.7:40000 or [2001:db8::7]:40000`);
  const ip = cliValue<{ address: string; family: 4 | 6 }>(fields.backendAddress, m[1] ?? m[2], `${label} '${text}': address`);
  const port = cliValue<number>(fields.port, m[3], `${label} '${text}': port`);
  return { ip: ip.address, family: ip.family, port };
}

export function sameService(a: { vip: string; port: number; protocol: string }, b: ServiceSpec): boolean {
  return Buffer.compare(ipToBytes(a.vip), ipToBytes(b.vip)) === 0 && a.port === b.port && a.protocol === b.protocol;
}

export function findService(raw: RawConfig, spec: ServiceSpec): RawService {
  const s = raw.services.find((x) => sameService(x, spec));
  if (!s) {
    const have = raw.services.map((x) => serviceName(x));
    throw new UsageError(
      `no service ${serviceName(spec)}` + (have.length ? ` (services: ${have.join(', ')})` : ' (no services yet)') +
        `; add it with 'xdp-dr service add ${serviceName(spec)}'`,
    );
  }
  return s;
}

/** Issue paths of a config built from the running state, said in the CLI's terms. */
function cliIssues(e: ConfigError, raw: RawConfig): string {
  return e.issues
    .map((i) => {
      const path = i.path.replace(/^services\[(\d+)\](?:\.backends\[(\d+)\])?\.?/, (_m, si: string, bi?: string) => {
        const s = raw.services[Number(si)];
        if (!s) return '';
        const b = bi !== undefined ? s.backends[Number(bi)] : undefined;
        return `${serviceName(s)}${b ? ` backend ${b.address}` : ''}: `;
      });
      return `${path}${path.endsWith(': ') ? '' : ': '}${i.message}`.replace(/^: /, '');
    })
    .join('\n');
}

export interface GlobalOptions {
  /** The interface whose load balancer a command acts on. */
  lb?: string;
  dryRun?: boolean;
}

export const out = (line = ''): void => void process.stdout.write(line + '\n');

export function printPrepared(p: Prepared, dryRun: boolean): void {
  for (const w of p.warnings) process.stderr.write(`xdp-dr: warning: ${w}\n`);
  const lines = formatPlan(p.plan);
  if (!lines.length) {
    out(`${p.target.iface}: nothing to change`);
    return;
  }
  out(`${p.target.iface}:${dryRun ? ' (dry run: nothing is written)' : ''}`);
  for (const l of lines) out(`  ${l}`);
}

/** Edits the running config of one load balancer with `edit`, then applies the result as one transaction. */
export async function changeRunning(opts: GlobalOptions, edit: (raw: RawConfig) => void): Promise<void> {
  await withChangeLock(() => changeRunningLocked(opts, edit));
}

async function changeRunningLocked(opts: GlobalOptions, edit: (raw: RawConfig) => void): Promise<void> {
  const iface = chooseInterface(opts.lb);
  const dp = openLb(iface);
  try {
    const { raw, resolved } = rawFromState(iface, readState(dp));
    edit(raw);
    let cfg;
    try {
      cfg = validateConfig(raw, { limits: dp.limits, interfaceExists });
    } catch (e) {
      if (e instanceof ConfigError) throw new UsageError(cliIssues(e, raw));
      throw e;
    }
    const prepared = await prepare({ iface, dp }, cfg.services, { resolvedMacs: resolved });
    printPrepared(prepared, !!opts.dryRun);
    if (!opts.dryRun && !planIsEmpty(prepared.plan)) apply(prepared, new Journal());
  } finally {
    dp.close();
  }
}

export function addLbOption(cmd: Command): Command {
  return cmd.option('--lb <iface>', 'the interface whose load balancer to act on (needed when xdp-dr runs on several)');
}

export function examples(cmd: Command, lines: string[]): Command {
  return cmd.addHelpText('after', `\nExamples:\n${lines.map((l) => `  $ ${l}`).join('\n')}\n`);
}
