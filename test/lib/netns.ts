// Network namespaces for tests: create/delete them, wire veth pairs between them, and run commands or a function
// of a compiled module inside one. Commands go through `nsenter --net=/run/netns/NAME`, which switches only the
// network namespace (`ip netns exec` also remounts /sys); Node itself cannot setns, hence the child processes.
import fs from 'node:fs';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';

const RUN_NETNS = '/run/netns';
const PREFIX = 'xdrn';
const CMD_TIMEOUT_MS = 15_000;

/** A namespace name unique to this test process: `xdrn-<pid>-<tag>`. */
export const nsName = (tag: string): string => `${PREFIX}-${process.pid}-${tag}`;
export const nsPath = (name: string): string => `${RUN_NETNS}/${name}`;

function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: CMD_TIMEOUT_MS });
  } catch (e) {
    const stderr = String((e as { stderr?: string }).stderr ?? '').trim();
    throw new Error(`${cmd} ${args.join(' ')} failed: ${stderr || (e as Error).message}`);
  }
}

/** Creates the namespace with its loopback up. */
export function addNetns(name: string): void {
  run('ip', ['netns', 'add', name]);
  run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
}

/** Deletes the namespace (and with it every interface inside); quiet when it does not exist. */
export function delNetns(name: string): void {
  if (fs.existsSync(nsPath(name))) run('ip', ['netns', 'del', name]);
}

/** Deletes namespaces left behind by test processes that died before their cleanup ran. */
export function sweepStaleNetns(): void {
  const names = fs.existsSync(RUN_NETNS) ? fs.readdirSync(RUN_NETNS) : [];
  for (const name of names) {
    const pid = Number(new RegExp(`^${PREFIX}-(\\d+)-`).exec(name)?.[1]);
    if (!pid || pid === process.pid) continue;
    try {
      process.kill(pid, 0); // still alive: not ours to remove
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') delNetns(name);
    }
  }
}

/** Runs a command inside the namespace; returns its stdout, throws with its stderr. */
export function inNetns(name: string, cmd: string, args: string[] = []): string {
  return run('nsenter', [`--net=${nsPath(name)}`, '--', cmd, ...args]);
}

/** `ip -j ARGS` inside the namespace, parsed. */
export function ipJson<T = unknown>(name: string, ...args: string[]): T {
  const out = inNetns(name, 'ip', ['-j', ...args]);
  return (out.trim() ? JSON.parse(out) : []) as T;
}

/** A veth pair from ifA in nsA to ifB in nsB, both up, with the given addresses (IPv6 without DAD). */
export function vethPair(nsA: string, ifA: string, nsB: string, ifB: string, addrs: { a?: string[]; b?: string[] } = {}): void {
  run('ip', ['link', 'add', ifA, 'netns', nsA, 'type', 'veth', 'peer', 'name', ifB, 'netns', nsB]);
  for (const [ns, dev, list] of [[nsA, ifA, addrs.a ?? []], [nsB, ifB, addrs.b ?? []]] as const) {
    // Before the link goes up, so the link-local address is usable at once instead of tentative for ~1 s.
    inNetns(ns, 'sysctl', ['-qw', `net.ipv6.conf.${dev}.accept_dad=0`]);
    for (const a of list) run('ip', ['-n', ns, 'addr', 'add', a, 'dev', dev, ...(a.includes(':') ? ['nodad'] : [])]);
    run('ip', ['-n', ns, 'link', 'set', dev, 'up']);
  }
}

const CALL_SCRIPT = `
const { modulePath, exportName, args } = JSON.parse(process.env.XDRN_CALL);
const replacer = (_k, v) => (v instanceof Map ? Object.fromEntries(v) : typeof v === 'bigint' ? v.toString() : v);
(async () => {
  try {
    const value = await require(modulePath)[exportName](...args);
    process.stdout.write(JSON.stringify({ value }, replacer));
  } catch (e) {
    process.stdout.write(JSON.stringify({ error: { name: e.name, message: e.message } }));
  }
})();
`;

/**
 * Calls an exported function of a compiled module (absolute path) in a node process inside the namespace, with
 * JSON arguments; resolves to its JSON result (Maps become objects) or rejects with its error's name and message.
 * opts.uid runs it as that user (uid = gid, no capabilities), e.g. 65534 for nobody.
 */
export async function callInNetns<T = unknown>(
  name: string, modulePath: string, exportName: string, args: unknown[] = [], opts: { uid?: number } = {},
): Promise<T> {
  const env = { ...process.env, XDRN_CALL: JSON.stringify({ modulePath, exportName, args }) };
  const user = opts.uid === undefined ? [] : [`--setuid=${opts.uid}`, `--setgid=${opts.uid}`];
  const { stdout } = await promisify(execFile)('nsenter', [`--net=${nsPath(name)}`, ...user, '--', process.execPath, '-e', CALL_SCRIPT], {
    env,
    timeout: CMD_TIMEOUT_MS,
  });
  const res = JSON.parse(stdout) as { value?: T; error?: { name: string; message: string } };
  if (res.error) throw Object.assign(new Error(res.error.message), { name: res.error.name });
  return res.value as T;
}
