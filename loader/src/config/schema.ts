// Shape of the declarative config file (YAML) and of the normalised Config the
// rest of the control plane consumes.
//
// Leaves are z.unknown().transform(...) with hand-written checks rather than
// z.string()/z.number() chains: an operator reading "must be an integer 0..65535,
// got the string "80" (remove the quotes)" fixes the file faster than one reading
// "Expected number, received string". Cross-field rules (duplicates, families,
// limits, interfaces on this host) live in index.ts because they must run even
// when zod rejects some unrelated field.

import { z } from 'zod';
import { bytesToIp, ipToBytes, macToBytes } from '../packet';

export const XDP_MODES = ['native', 'generic', 'offload'] as const;
export const PROTOCOLS = ['tcp', 'udp'] as const;
export const HASHES = ['l4', 'l3'] as const;
export const CHECK_TYPES = ['tcp', 'http', 'none'] as const;
export const CHECK_TARGETS = ['real', 'vip'] as const;

export type XdpMode = (typeof XDP_MODES)[number];
export type Protocol = (typeof PROTOCOLS)[number];
export type HashMode = (typeof HASHES)[number];
export type CheckType = (typeof CHECK_TYPES)[number];
export type CheckTarget = (typeof CHECK_TARGETS)[number];

export const DEFAULTS = {
  hashSeed: 0,
  mode: 'native' as XdpMode,
  hash: 'l4' as HashMode,
  weight: 1,
  intervalMs: 2000,
  rise: 2,
  fall: 3,
  httpPath: '/',
  expectStatus: 200,
  target: 'real' as CheckTarget,
};

/** Half the interval, at most 1s: leaves room for the probe to finish before the next one. */
export function defaultTimeoutMs(intervalMs: number): number {
  return Math.max(1, Math.min(1000, Math.floor(intervalMs / 2)));
}

// Node's timers fire at once beyond 2^31-1 ms, so a later daemon could not honour
// longer durations; a day is already far beyond any sensible probe interval.
export const MAX_DURATION_MS = 24 * 3600 * 1000;

const U32_MAX = 0xffffffff;
// Linux IFNAMSIZ is 16 including the terminating NUL.
const IFNAME_MAX = 15;

// ---------------------------------------------------------------------------
// Normalised config (what parseConfig returns)

export interface Interface {
  name: string;
  mode: XdpMode;
}

export interface HealthCheck {
  type: CheckType;
  intervalMs: number;
  timeoutMs: number;
  rise: number;
  fall: number;
  /** Probe port: the configured one, else the service port (0 only for type none on a port-0 service). */
  port: number;
  target: CheckTarget;
  /** http only (defaults filled). */
  path?: string;
  host?: string;
  expectStatus?: number;
}

export interface Backend {
  /** Canonical text (RFC 5952 for IPv6). */
  address: string;
  /** Lowercase aa:bb:cc:dd:ee:ff; absent = resolved from the neighbour table at apply time. */
  mac?: string;
  weight: number;
  /** Egress interface (XDP_REDIRECT); absent = out of the ingress interface (XDP_TX). */
  interface?: string;
}

export interface Service {
  /** Canonical text (RFC 5952 for IPv6). */
  vip: string;
  family: 4 | 6;
  /** 0 = every port of the VIP. */
  port: number;
  protocol: Protocol;
  hash: HashMode;
  /** TCP flows keep their backend through table changes (the connection table). */
  connTable: boolean;
  healthCheck?: HealthCheck;
  backends: Backend[];
}

export interface Config {
  hashSeed: number;
  interfaces: Interface[];
  services: Service[];
}

export interface IpAddr {
  address: string;
  family: 4 | 6;
}

// ---------------------------------------------------------------------------
// Leaf validation

class Invalid extends Error {}

function fail(message: string): never {
  throw new Invalid(message);
}

/** How a YAML value reads back to the operator, for "got ..." in messages. */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'an empty value';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'string') return `the string ${JSON.stringify(v)}`;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (typeof v === 'object') return 'a mapping';
  return typeof v;
}

/**
 * Optimal-string-alignment distance: Levenshtein plus adjacent transposition,
 * so the classic 'prot' for 'port' typo costs 1, not 2.
 */
export function editDistance(a: string, b: string): number {
  const d: number[][] = [];
  for (let i = 0; i <= a.length; i++) d.push([i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 0; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.length][b.length];
}

/** The closest candidate, if close enough to be a plausible typo. */
export function suggest(word: string, candidates: readonly string[], maxDistance?: number): string | undefined {
  // Case, '-' and '_' differences (hashSeed, hash-seed) are not typos but habits.
  const fold = (s: string): string => s.toLowerCase().replace(/[-_\s]/g, '');
  const w = fold(word);
  let best: string | undefined;
  let bestDist = Infinity;
  let tie = false;
  for (const c of candidates) {
    const dist = editDistance(w, fold(c));
    if (dist < bestDist) {
      best = c;
      bestDist = dist;
      tie = false;
    } else if (dist === bestDist) {
      tie = true;
    }
  }
  // Two equally close candidates ('l9': l4 or l3?) make a guess misleading.
  const allowed = maxDistance ?? (w.length <= 3 ? 1 : w.length <= 6 ? 2 : 3);
  return bestDist <= allowed && !tie ? best : undefined;
}

// Names an ipvsadm/keepalived user reaches for first; each maps to our key or to advice.
const KEY_ALIASES: Record<string, string> = {
  virtual_server: 'services',
  virtual_servers: 'services',
  real_server: 'backends',
  real_servers: 'backends',
  realservers: 'backends',
  servers: 'backends',
  delay_loop: 'interval',
  connect_timeout: 'timeout',
  connect_port: 'port',
  status_code: 'expect_status',
  url: 'path',
  ip: 'address',
  interface: 'interfaces',
  seed: 'hash_seed',
};
const KEY_ADVICE: Record<string, string> = {
  lb_algo: 'the scheduler is always Maglev; choose what is hashed with hash: l4 | l3',
  scheduler: 'the scheduler is always Maglev; choose what is hashed with hash: l4 | l3',
  lb_kind: 'direct routing is the only forwarding method; remove it',
  persistence_timeout: 'for source-IP persistence use hash: l3 (it has no timeout: a client stays on its real server while the backend set is unchanged)',
  inhibit_on_failure: 'a failed real server is taken out by the health checker; use weight: 0 to drain one by hand',
};

function unknownKeyMessage(key: string, known: readonly string[]): string {
  const alias = KEY_ALIASES[key.toLowerCase()];
  let hint = alias !== undefined && known.includes(alias) ? alias : suggest(key, known);
  if (hint === key) hint = undefined;
  if (hint !== undefined) return `unknown key '${key}' (did you mean '${hint}'?)`;
  const advice = KEY_ADVICE[key.toLowerCase()];
  if (advice !== undefined) return `unknown key '${key}': ${advice}`;
  return `unknown key '${key}'; expected one of: ${known.join(', ')}`;
}

function field<T>(check: (v: unknown) => T) {
  return z.unknown().transform((v, ctx): T => {
    try {
      return check(v);
    } catch (e) {
      if (!(e instanceof Invalid)) throw e;
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: e.message });
      return z.NEVER;
    }
  });
}

const REQUIRED = 'missing; this field is required';

function integer(v: unknown, min: number, max = Infinity): number {
  const range = max === Infinity ? `>= ${min}` : `${min}..${max}`;
  if (v === undefined) fail(REQUIRED);
  if (typeof v === 'string' && /^\s*-?\d+(\.\d*)?\s*$/.test(v)) {
    fail(`must be a number, not ${describeValue(v)} (remove the quotes)`);
  }
  if (typeof v !== 'number') fail(`must be an integer ${range}, got ${describeValue(v)}`);
  if (!Number.isInteger(v)) fail(`must be an integer ${range}, got ${v}`);
  if (v < min || v > max) fail(`${v} is out of range: must be an integer ${range}`);
  return v + 0; // folds -0, which YAML happily produces, into 0
}

function oneOf<T extends string>(v: unknown, values: readonly T[], meaning: string): T {
  if (v === undefined) fail(`${REQUIRED} (${meaning})`);
  if (typeof v !== 'string') fail(`must be ${meaning}, got ${describeValue(v)}`);
  if ((values as readonly string[]).includes(v)) return v as T;
  const lower = v.toLowerCase();
  if ((values as readonly string[]).includes(lower)) fail(`'${v}' must be written in lower case: ${lower}`);
  // Values are short, so only a one-letter slip is a typo; 'sctp' is not a misspelt 'tcp'.
  const close = suggest(v, values, 1);
  fail(`'${v}' is not ${meaning}${close !== undefined ? ` (did you mean '${close}'?)` : ''}`);
}

function ipAddress(v: unknown, role: string): IpAddr {
  if (v === undefined) fail(REQUIRED);
  if (typeof v !== 'string') fail(`must be an IPv4 or IPv6 address, got ${describeValue(v)}`);
  const text = v.trim();
  if (text.includes('/')) {
    fail(`'${v}' is a prefix; ${role} is one address (drop the /${text.split('/')[1]})`);
  }
  if (text.includes('%')) fail(`'${v}' has a zone id; a zone id only means something on one host, remove it`);
  let bytes: Buffer;
  try {
    bytes = ipToBytes(text);
  } catch {
    fail(`'${v}' is not an IPv4 or IPv6 address`);
  }
  const address = bytesToIp(bytes);
  const why = `${role} must be a unicast address`;
  if (bytes.length === 4) {
    if (bytes[0] === 0) fail(`${address} is in 0.0.0.0/8 (unspecified/"this network"); ${why}`);
    if (bytes[0] === 127) fail(`${address} is a loopback address; ${why} reachable on the wire`);
    if (bytes[0] >= 224 && bytes[0] <= 239) fail(`${address} is a multicast address; ${why}`);
    if (address === '255.255.255.255') fail(`${address} is the broadcast address; ${why}`);
    return { address, family: 4 };
  }
  if (bytes.every((b) => b === 0)) fail(`${address} is the unspecified address; ${why}`);
  if (address === '::1') fail(`${address} is the loopback address; ${why} reachable on the wire`);
  if (bytes[0] === 0xff) fail(`${address} is a multicast address; ${why}`);
  if (address.startsWith('::ffff:') && address.includes('.')) {
    // Such packets arrive as IPv4, so the service would never match.
    fail(`${address} is an IPv4-mapped IPv6 address; write the IPv4 address ${address.slice(7)}`);
  }
  return { address, family: 6 };
}

function macAddress(v: unknown): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string') {
    fail(`must be a MAC address like "02:00:00:00:00:11" (quoted), got ${describeValue(v)}`);
  }
  if (/^[0-9a-f]{2}(-[0-9a-f]{2}){5}$/i.test(v)) fail(`'${v}' uses '-'; separate the bytes with ':'`);
  let bytes: Buffer;
  try {
    bytes = macToBytes(v);
  } catch {
    fail(`'${v}' is not a MAC address; expected six hex bytes separated by ':', like 02:00:00:00:00:11`);
  }
  const mac = v.toLowerCase();
  if (bytes.every((b) => b === 0)) fail(`${mac} is all zeros; that is not a real server's MAC`);
  if (bytes.every((b) => b === 0xff)) fail(`${mac} is the broadcast address; a real server's MAC is unicast`);
  if (bytes[0] & 1) fail(`${mac} is a multicast address (lowest bit of the first byte set); a real server's MAC is unicast`);
  return mac;
}

function interfaceName(v: unknown): string {
  if (v === undefined) fail(REQUIRED);
  if (typeof v !== 'string') fail(`must be an interface name like eth0, got ${describeValue(v)}`);
  if (v.length === 0) fail('is empty; expected an interface name like eth0');
  if (v.length > IFNAME_MAX) fail(`'${v}' is longer than ${IFNAME_MAX} characters, the Linux limit for interface names`);
  if (v === '.' || v === '..' || /[/:\s]/.test(v)) fail(`'${v}' is not a valid Linux interface name`);
  return v;
}

/** Number = seconds; string = number + ms|s|m. Result in whole milliseconds. */
function duration(v: unknown): number | undefined {
  if (v === undefined) return undefined;
  const format = 'a duration such as 500ms, 2s or 1m (a bare number means seconds)';
  let ms: number;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) fail(`must be ${format}, got ${v}`);
    if (v <= 0) fail(`must be positive, got ${v}`);
    ms = v * 1000;
  } else if (typeof v === 'string') {
    const s = v.trim();
    if (/^-/.test(s)) fail(`'${v}' is negative; a duration must be positive`);
    if (/^\d+(\.\d+)?\s+(ms|s|m)$/.test(s)) fail(`'${v}' has a space; write it without one, like ${s.replace(/\s+/g, '')}`);
    if (/^\d+(\.\d+)?$/.test(s)) fail(`'${v}' has no unit; write ${s}s, or ${s} unquoted for seconds`);
    const m = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(s);
    if (!m) fail(`'${v}' is not ${format}`);
    ms = Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] as 'ms' | 's' | 'm'];
    if (ms === 0) fail(`'${v}' is zero; a duration must be positive`);
  } else {
    fail(`must be ${format}, got ${describeValue(v)}`);
  }
  const whole = Math.round(ms);
  // Tolerate binary float noise (1.001 * 1000) but not real fractions of a millisecond.
  if (Math.abs(ms - whole) > 1e-6 || whole === 0) fail(`${describeValue(v)} is not a whole number of milliseconds`);
  if (whole > MAX_DURATION_MS) fail(`${describeValue(v)} is longer than a day`);
  return whole;
}

function optional<T>(check: (v: unknown) => T): (v: unknown) => T | undefined {
  return (v) => (v === undefined ? undefined : check(v));
}

function withDefault<T>(check: (v: unknown) => T, dflt: T): (v: unknown) => T {
  return (v) => (v === undefined ? dflt : check(v));
}

// Exported so the cross-field checks can read single fields of a file that failed
// validation elsewhere.
export const fields = {
  hashSeed: field(withDefault((v) => integer(v, 0, U32_MAX), DEFAULTS.hashSeed)),
  interfaceName: field(interfaceName),
  optionalInterfaceName: field(optional(interfaceName)),
  xdpMode: field(withDefault((v) => oneOf(v, XDP_MODES, 'native | generic | offload'), DEFAULTS.mode)),
  vip: field((v) => ipAddress(v, 'a VIP')),
  backendAddress: field((v) => ipAddress(v, 'a real server')),
  port: field((v) => integer(v, 0, 65535)),
  protocol: field((v) => oneOf(v, PROTOCOLS, 'tcp | udp')),
  hash: field(withDefault((v) => oneOf(v, HASHES, 'l4 (5-tuple) | l3 (source-IP persistence)'), DEFAULTS.hash)),
  mac: field(macAddress),
  weight: field(withDefault((v) => integer(v, 0, 65535), DEFAULTS.weight)),
  checkType: field((v) => oneOf(v, CHECK_TYPES, 'tcp | http | none')),
  duration: field(duration),
  count: field(optional((v) => integer(v, 1))),
  probePort: field(optional((v) => integer(v, 1, 65535))),
  httpPath: field(
    optional((v) => {
      if (typeof v !== 'string') fail(`must be a URL path like /healthz, got ${describeValue(v)}`);
      if (!v.startsWith('/')) fail(`'${v}' must start with '/'`);
      if (/[\s\x00-\x1f\x7f]/.test(v)) fail(`'${v}' contains whitespace or control characters; percent-encode them`);
      return v;
    }),
  ),
  httpHost: field(
    optional((v) => {
      if (typeof v !== 'string') fail(`must be a host name like www.example.com, got ${describeValue(v)}`);
      if (/^[a-z]+:\/\//i.test(v)) fail(`'${v}' is a URL; give only the host name (the Host header value)`);
      if (v.length === 0 || /[\s/\x00-\x1f\x7f]/.test(v)) fail(`'${v}' is not a valid Host header value`);
      return v;
    }),
  ),
  expectStatus: field(optional((v) => integer(v, 100, 599))),
  connTable: field(
    optional((v) => {
      if (typeof v !== 'boolean') fail(`must be true or false, got ${describeValue(v)}`);
      return v;
    }),
  ),
  checkTarget: field(withDefault((v) => oneOf(v, CHECK_TARGETS, 'real | vip'), DEFAULTS.target)),
};

// ---------------------------------------------------------------------------
// Structure

function typeErrors(expected: string, hint = ''): z.ZodErrorMap {
  const got: Record<string, string> = {
    null: 'an empty value',
    array: 'a list',
    object: 'a mapping',
    string: 'a string',
    number: 'a number',
    integer: 'a number',
    float: 'a number',
    boolean: 'true/false',
  };
  return (issue, ctx) => {
    if (issue.code !== z.ZodIssueCode.invalid_type) return { message: ctx.defaultError };
    if (issue.received === 'undefined') return { message: REQUIRED };
    return { message: `must be ${expected}, got ${got[issue.received] ?? issue.received}${hint}` };
  };
}

function isMapping(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A mapping that names every unknown key (with a suggestion) instead of dropping it. */
function mapping<S extends z.ZodRawShape>(shape: S, what: string, hint = '') {
  const known = Object.keys(shape);
  return z.preprocess(
    (v, ctx) => {
      if (isMapping(v)) {
        for (const key of Object.keys(v)) {
          if (!known.includes(key)) {
            ctx.addIssue({ code: z.ZodIssueCode.custom, path: [key], message: unknownKeyMessage(key, known) });
          }
        }
      }
      return v;
    },
    z.object(shape, { errorMap: typeErrors(what, hint) }),
  );
}

/** A list where an empty YAML value (every entry commented out) means an empty list. */
function list<T extends z.ZodTypeAny>(item: T) {
  return z.preprocess((v) => (v === null ? [] : v), z.array(item, { errorMap: typeErrors('a list') }));
}

export const interfaceSchema = mapping(
  { name: fields.interfaceName, mode: fields.xdpMode },
  'a mapping with name and mode',
  ' (write "- name: eth0")',
);

export const healthCheckSchema = mapping(
  {
    type: fields.checkType,
    interval: fields.duration,
    timeout: fields.duration,
    rise: fields.count,
    fall: fields.count,
    path: fields.httpPath,
    host: fields.httpHost,
    expect_status: fields.expectStatus,
    port: fields.probePort,
    target: fields.checkTarget,
  },
  'a mapping (type, interval, timeout, ...)',
);

export const backendSchema = mapping(
  {
    address: fields.backendAddress,
    mac: fields.mac,
    weight: fields.weight,
    interface: fields.optionalInterfaceName,
  },
  'a mapping with address and optionally mac, weight, interface',
  ' (write "- address: 10.0.0.11")',
);

export const serviceSchema = mapping(
  {
    vip: fields.vip,
    port: fields.port,
    protocol: fields.protocol,
    hash: fields.hash,
    // Default: on for TCP (a backend change then moves no open connection), off for UDP.
    conn_table: fields.connTable,
    health_check: healthCheckSchema.optional(),
    // Absent = no backend: the service exists and its packets go to the kernel.
    backends: list(backendSchema).optional().transform((b) => b ?? []),
  },
  'a mapping with vip, port, protocol and backends',
);

export const configFileSchema = mapping(
  {
    hash_seed: fields.hashSeed,
    interfaces: z
      .array(interfaceSchema, { errorMap: typeErrors('a list of interfaces') })
      .min(1, { message: 'is empty; list at least one interface to attach the XDP program to' }),
    services: list(serviceSchema),
  },
  'a mapping with interfaces and services',
);

/** The file as validated by zod, before normalisation (snake_case, http fields still optional). */
export type ConfigFile = z.output<typeof configFileSchema>;
export type ServiceFile = z.output<typeof serviceSchema>;
export type HealthCheckFile = z.output<typeof healthCheckSchema>;
export type BackendFile = z.output<typeof backendSchema>;
