// Loading the declarative config: YAML -> zod shape checks -> cross-field checks
// -> normalised Config. Every problem found is reported at once, each with the
// path in the file, so an operator fixes a file in one pass rather than one
// error per run.

import { readFileSync } from 'node:fs';
import { LineCounter, isMap, isScalar, isSeq, parseDocument, type Node } from 'yaml';
import { bytesToIp, ipToBytes } from '../packet';
import {
  DEFAULTS,
  defaultTimeoutMs,
  fields,
  configFileSchema,
  type Config,
  type ConfigFile,
  type HealthCheck,
  type Service,
} from './schema';

export * from './schema';

export interface ConfigIssue {
  /** e.g. services[1].backends[0].mac; "(root)" for the file as a whole. */
  path: string;
  message: string;
  /** 1-based position in the file, when the path can be found in it. */
  line?: number;
  column?: number;
}

export class ConfigError extends Error {
  override name = 'ConfigError';

  constructor(
    readonly issues: ConfigIssue[],
    readonly file?: string,
  ) {
    super(formatIssues(issues, file));
  }
}

export interface ValidateOptions {
  /** Data plane capacities (MAX_SERVICES, MAX_BACKENDS of the loaded program). */
  limits?: { maxServices: number; maxBackends: number };
  /** Whether a network interface exists on this host; without it names are only checked for form. */
  interfaceExists?: (name: string) => boolean;
  /** Used to prefix messages. */
  file?: string;
}

type PathSeg = string | number;
interface RawIssue {
  path: PathSeg[];
  message: string;
  line?: number;
  column?: number;
}

export function formatPath(path: readonly PathSeg[]): string {
  if (path.length === 0) return '(root)';
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

function formatIssues(issues: ConfigIssue[], file?: string): string {
  return issues
    .map((i) => {
      // Syntax errors already say where they are.
      const where = i.line !== undefined && !/\bline \d+/.test(i.message) ? ` (line ${i.line})` : '';
      return `${file !== undefined ? `${file}: ` : ''}${i.path}: ${i.message}${where}`;
    })
    .join('\n');
}

/** `10.0.0.100:80/tcp`, `[2001:db8::1]:80/tcp`: the name used in logs and the CLI. */
export function serviceName(s: { vip: string; port: number; protocol: string }): string {
  let vip = s.vip;
  try {
    vip = bytesToIp(ipToBytes(s.vip));
  } catch {
    // Not an address: show it as given rather than hide the service.
  }
  return `${vip.includes(':') ? `[${vip}]` : vip}:${s.port}/${s.protocol}`;
}

export function loadConfigFile(file: string, opts: ValidateOptions = {}): Config {
  const label = opts.file ?? file;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const reason =
      code === 'ENOENT'
        ? `config file not found: ${file}`
        : code === 'EISDIR'
          ? `${file} is a directory, not a config file`
          : code === 'EACCES'
            ? `permission denied reading ${file}`
            : `cannot read ${file}: ${(e as Error).message}`;
    throw new ConfigError([{ path: '(root)', message: reason }], label);
  }
  return parseConfig(text, { ...opts, file: label });
}

export function parseConfig(text: string, opts: ValidateOptions = {}): Config {
  const lineCounter = new LineCounter();
  // merge: true lets operators share settings between services with YAML's << key.
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, merge: true, uniqueKeys: true });

  // Warnings (e.g. an unknown !tag) are errors here: the value would silently be read as something else.
  const yamlProblems = [...doc.errors, ...doc.warnings];
  if (yamlProblems.length > 0) {
    throw new ConfigError(
      yamlProblems.map((e) => {
        const { line, col } = lineCounter.linePos(e.pos[0]);
        const kind = e.name === 'YAMLParseError' ? 'YAML syntax error' : 'YAML problem';
        return {
          path: '(root)',
          message: `${kind} at line ${line}, column ${col}: ${e.message}`,
          line,
          column: col,
        };
      }),
      opts.file,
    );
  }

  let raw: unknown;
  try {
    raw = doc.toJS(); // its default alias limit guards against billion-laughs files
  } catch (e) {
    throw new ConfigError([{ path: '(root)', message: `YAML error: ${(e as Error).message}` }], opts.file);
  }
  if (raw === null || raw === undefined) {
    throw new ConfigError(
      [{ path: '(root)', message: 'the file is empty; it needs at least interfaces and services' }],
      opts.file,
    );
  }
  return validate(raw, opts, (issues) => finish(issues, doc.contents, lineCounter));
}

/**
 * Checks a config given as data (the CLI builds one from the running state plus a change) with exactly the
 * rules a file gets.
 */
export function validateConfig(raw: unknown, opts: ValidateOptions = {}): Config {
  return validate(raw, opts, (issues) => finish(issues, undefined, new LineCounter()));
}

function validate(raw: unknown, opts: ValidateOptions, place: (issues: RawIssue[]) => ConfigIssue[]): Config {
  const issues: RawIssue[] = [];
  const result = configFileSchema.safeParse(raw);
  if (!result.success) {
    for (const i of result.error.issues) issues.push({ path: i.path, message: i.message });
  }
  issues.push(...crossCheck(raw, opts));

  if (issues.length > 0 || !result.success) {
    throw new ConfigError(place(issues), opts.file);
  }
  return normalise(result.data);
}

// ---------------------------------------------------------------------------
// Issue positions

/** Where a path starts in the file: the key for mapping entries, the item for list entries. */
function locate(root: unknown, path: readonly PathSeg[]): number | undefined {
  let node = root;
  let pos = (root as Node | null)?.range?.[0];
  for (const seg of path) {
    if (isMap(node)) {
      const pair = node.items.find((p) => (isScalar(p.key) ? p.key.value : p.key) === seg);
      if (!pair) break;
      pos = isScalar(pair.key) ? pair.key.range?.[0] ?? pos : pos;
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number' && seg < node.items.length) {
      node = node.items[seg];
      pos = (node as Node | null)?.range?.[0] ?? pos;
    } else {
      break; // aliases and merged keys: the nearest ancestor is the best we can say
    }
  }
  return pos;
}

function finish(issues: RawIssue[], contents: unknown, lc: LineCounter): ConfigIssue[] {
  const seen = new Set<string>();
  const out: ConfigIssue[] = [];
  for (const i of issues) {
    const path = formatPath(i.path);
    const key = `${path}\0${i.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const offset = locate(contents, i.path);
    const pos = offset !== undefined ? lc.linePos(offset) : undefined;
    out.push({ path, message: i.message, ...(pos ? { line: pos.line, column: pos.col } : {}) });
  }
  // File order reads best; sort is stable so issues at one place keep their order.
  return out.sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity));
}

// ---------------------------------------------------------------------------
// Cross-field checks. They read the raw file field by field, so a rule is still
// checked when some unrelated field is broken; a field that is itself invalid
// has already been reported by zod and is skipped here.

function peek<T>(schema: { safeParse(v: unknown): { success: true; data: T } | { success: false } }, v: unknown) {
  const r = schema.safeParse(v);
  return r.success ? r.data : undefined;
}

function asMapping(v: unknown): Record<string, unknown> | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

function asList(v: unknown): unknown[] | undefined {
  if (v === null) return [];
  return Array.isArray(v) ? v : undefined;
}

function ms(n: number): string {
  return n % 60_000 === 0 ? `${n / 60_000}m` : n % 1000 === 0 ? `${n / 1000}s` : `${n}ms`;
}

function crossCheck(raw: unknown, opts: ValidateOptions): RawIssue[] {
  const out: RawIssue[] = [];
  const add = (path: PathSeg[], message: string): void => {
    out.push({ path, message });
  };
  const root = asMapping(raw);
  if (!root) return out;
  const exists = opts.interfaceExists;
  const limits = opts.limits;

  const attached = new Map<string, number>();
  (asList(root.interfaces) ?? []).forEach((it, i) => {
    const name = peek(fields.interfaceName, asMapping(it)?.name);
    if (name === undefined) return;
    const first = attached.get(name);
    if (first !== undefined) {
      add(['interfaces', i, 'name'], `'${name}' is already listed at interfaces[${first}]; an interface is attached once`);
      return;
    }
    attached.set(name, i);
    if (exists && !exists(name)) add(['interfaces', i, 'name'], `no interface named '${name}' on this host`);
  });

  const services = asList(root.services);
  if (!services) return out;
  if (limits && services.length > limits.maxServices) {
    add(
      ['services'],
      `${services.length} services, but the data plane holds at most ${limits.maxServices} (MAX_SERVICES); ` +
        'remove some or rebuild with a larger -DMAX_SERVICES',
    );
  }

  const serviceAt = new Map<string, number>();
  // A real server is one host: whatever services list it, it has one MAC and sits behind one interface.
  let pairs = 0;
  const realServers = new Map<string, { at: string; mac?: string; iface?: string; ifaceKnown: boolean }>();
  const hostHas = new Map<string, boolean>();

  services.forEach((s, i) => {
    const svc = asMapping(s);
    if (!svc) return;
    const vip = peek(fields.vip, svc.vip);
    const port = peek(fields.port, svc.port);
    const protocol = peek(fields.protocol, svc.protocol);

    if (vip && port !== undefined && protocol) {
      const name = serviceName({ vip: vip.address, port, protocol });
      const first = serviceAt.get(name);
      if (first !== undefined) add(['services', i], `duplicate service ${name}: already defined at services[${first}]`);
      else serviceAt.set(name, i);
    }

    const inService = new Map<string, number>();
    (asList(svc.backends) ?? []).forEach((b, j) => {
      const be = asMapping(b);
      if (!be) return;
      const at: PathSeg[] = ['services', i, 'backends', j];
      const iface = peek(fields.optionalInterfaceName, be.interface);
      // Attached interfaces were checked above; others are egress-only ports.
      if (iface !== undefined && exists && !attached.has(iface)) {
        if (!hostHas.has(iface)) hostHas.set(iface, exists(iface));
        if (!hostHas.get(iface)) add([...at, 'interface'], `no interface named '${iface}' on this host`);
      }
      const addr = peek(fields.backendAddress, be.address);
      if (!addr) return;
      if (vip && addr.family !== vip.family) {
        add(
          [...at, 'address'],
          `${addr.address} is IPv${addr.family} but the VIP ${vip.address} is IPv${vip.family}; ` +
            "direct routing leaves the IP header alone, so a service's real servers must be the VIP's family",
        );
        return;
      }
      if (vip && addr.address === vip.address) {
        add(
          [...at, 'address'],
          `${addr.address} is the VIP itself; a real server needs its own address (it holds the VIP on lo)`,
        );
        return;
      }
      const dup = inService.get(addr.address);
      if (dup !== undefined) {
        add([...at, 'address'], `duplicate backend ${addr.address}: already listed at backends[${dup}]`);
        return;
      }
      inService.set(addr.address, j);
      pairs++;

      const mac = peek(fields.mac, be.mac);
      const ifaceKnown = be.interface === undefined || iface !== undefined;
      const first = realServers.get(addr.address);
      if (!first) {
        realServers.set(addr.address, { at: formatPath(at), mac, iface, ifaceKnown });
        return;
      }
      // A MAC given once may be omitted elsewhere; two different ones can't both hold.
      if (mac !== undefined && first.mac !== undefined && mac !== first.mac) {
        add(
          [...at, 'mac'],
          `${addr.address} has mac ${first.mac} at ${first.at} but ${mac} here; a real server has one MAC`,
        );
      }
      if (ifaceKnown && first.ifaceKnown && iface !== first.iface) {
        const show = (n?: string): string => (n === undefined ? 'no interface (the ingress one)' : `interface ${n}`);
        add(
          [...at, 'interface'],
          `${addr.address} has ${show(first.iface)} at ${first.at} but ${show(iface)} here; ` +
            'a real server is reached through one interface',
        );
      }
    });

    if (svc.conn_table === true && protocol === 'udp')
      add(['services', i, 'conn_table'], 'the connection table tracks TCP only; remove it or set it to false for a UDP service');

    const hc = asMapping(svc.health_check);
    if (hc) checkHealth(hc, ['services', i, 'health_check'], port, add);
  });

  // One data-plane backend per (service, real server), so each has its own weight and counters; id 0 marks
  // an empty Maglev slot, so MAX_BACKENDS - 1 ids are usable.
  if (limits && pairs > limits.maxBackends - 1) {
    add(
      ['services'],
      `${pairs} backends over all services, but the data plane holds at most ${limits.maxBackends - 1} ` +
        `(MAX_BACKENDS ${limits.maxBackends}, id 0 is reserved); remove some or rebuild with a larger -DMAX_BACKENDS`,
    );
  }
  return out;
}

function checkHealth(
  hc: Record<string, unknown>,
  at: PathSeg[],
  servicePort: number | undefined,
  add: (path: PathSeg[], message: string) => void,
): void {
  const type = peek(fields.checkType, hc.type);
  const interval = hc.interval === undefined ? DEFAULTS.intervalMs : peek(fields.duration, hc.interval);
  const timeout = peek(fields.duration, hc.timeout);

  if (interval !== undefined) {
    const given = hc.interval === undefined ? ', the default' : '';
    if (hc.timeout !== undefined && timeout !== undefined && timeout >= interval) {
      add(
        [...at, 'timeout'],
        `${ms(timeout)} must be shorter than interval (${ms(interval)}${given}), so a probe ends before the next starts`,
      );
    } else if (hc.timeout === undefined && defaultTimeoutMs(interval) >= interval) {
      add([...at, 'interval'], `${ms(interval)} leaves no room for a probe timeout; use at least 2ms`);
    }
  }

  if (type === 'tcp') {
    for (const key of ['path', 'host', 'expect_status']) {
      if (hc[key] !== undefined) add([...at, key], 'is only for http checks; remove it or set type: http');
    }
  }
  if (type !== undefined && type !== 'none' && hc.port === undefined && servicePort === 0) {
    add([...at, 'port'], 'missing; required because the service port is 0 (every port): say which port to probe');
  }
}

// ---------------------------------------------------------------------------
// Normalisation (only ever sees a fully valid file)

function normalise(f: ConfigFile): Config {
  return {
    hashSeed: f.hash_seed,
    interfaces: f.interfaces.map((i) => ({ name: i.name, mode: i.mode })),
    services: f.services.map((s): Service => {
      const svc: Service = {
        vip: s.vip.address,
        family: s.vip.family,
        port: s.port,
        protocol: s.protocol,
        hash: s.hash,
        connTable: s.conn_table ?? s.protocol === 'tcp',
        backends: s.backends.map((b) => ({
          address: b.address.address,
          ...(b.mac !== undefined ? { mac: b.mac } : {}),
          weight: b.weight,
          ...(b.interface !== undefined ? { interface: b.interface } : {}),
        })),
      };
      const hc = s.health_check;
      if (hc) {
        const intervalMs = hc.interval ?? DEFAULTS.intervalMs;
        const check: HealthCheck = {
          type: hc.type,
          intervalMs,
          timeoutMs: hc.timeout ?? defaultTimeoutMs(intervalMs),
          rise: hc.rise ?? DEFAULTS.rise,
          fall: hc.fall ?? DEFAULTS.fall,
          port: hc.port ?? s.port,
          target: hc.target,
        };
        if (hc.type === 'http') {
          check.path = hc.path ?? DEFAULTS.httpPath;
          if (hc.host !== undefined) check.host = hc.host;
          check.expectStatus = hc.expect_status ?? DEFAULTS.expectStatus;
        }
        svc.healthCheck = check;
      }
      return svc;
    }),
  };
}
