import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  type Config,
  ConfigError,
  type ValidateOptions,
  loadConfigFile,
  parseConfig,
  serviceName,
} from '../../loader/src/config';

const EXAMPLE = path.resolve(__dirname, '../../../examples/lb.yaml');

const OPTS: ValidateOptions = {
  interfaceExists: (n) => ['eth0', 'eth1', 'lo'].includes(n),
  limits: { maxServices: 4, maxBackends: 8 },
};

function parseError(yaml: string, opts: ValidateOptions = OPTS): ConfigError {
  try {
    parseConfig(yaml, opts);
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
    return e;
  }
  assert.fail('expected a ConfigError, but the config was accepted');
}

// A valid file around the given services block, so each bad case changes one thing.
function withServices(services: string, head = 'interfaces:\n  - name: eth0\n'): string {
  return `${head}services:\n${services}`;
}

const WEB = `  - vip: 10.0.0.100
    port: 80
    protocol: tcp
    backends:
      - address: 10.0.0.11
`;

function svc(lines: string, backends = '      - address: 10.0.0.11\n'): string {
  return `  - vip: 10.0.0.100\n${lines}    backends:\n${backends}`;
}

const TCP80 = '    port: 80\n    protocol: tcp\n';

function backend(lines: string): string {
  return svc(TCP80, `      - address: 10.0.0.11\n${lines}`);
}

function check(lines: string, port = '    port: 80\n'): string {
  return svc(`${port}    protocol: tcp\n    health_check:\n${lines}`);
}

function manyServices(n: number): string {
  let out = '';
  for (let i = 0; i < n; i++) out += `  - vip: 10.0.1.${i + 1}\n    port: 80\n    protocol: tcp\n`;
  return out;
}

interface BadCase {
  name: string;
  yaml: string;
  path: string;
  message: RegExp;
}

const BAD: BadCase[] = [
  // --- file and top level
  { name: 'empty file', yaml: '', path: '(root)', message: /file is empty/ },
  { name: 'root is a list', yaml: '- eth0\n', path: '(root)', message: /must be a mapping.*got a list/ },
  { name: 'unknown top-level key', yaml: withServices(WEB) + 'servics: []\n', path: 'servics', message: /unknown key 'servics' \(did you mean 'services'\?\)/ },
  { name: 'camelCase key', yaml: 'hashSeed: 1\n' + withServices(WEB), path: 'hashSeed', message: /did you mean 'hash_seed'/ },
  { name: 'hash_seed negative', yaml: 'hash_seed: -1\n' + withServices(WEB), path: 'hash_seed', message: /out of range.*0\.\.4294967295/ },
  { name: 'hash_seed above u32', yaml: 'hash_seed: 4294967296\n' + withServices(WEB), path: 'hash_seed', message: /out of range/ },
  { name: 'hash_seed not a number', yaml: 'hash_seed: abc\n' + withServices(WEB), path: 'hash_seed', message: /must be an integer.*"abc"/ },
  { name: 'services not a list', yaml: 'interfaces:\n  - name: eth0\nservices:\n  vip: 10.0.0.100\n', path: 'services', message: /must be a list, got a mapping/ },
  { name: 'services missing', yaml: 'interfaces:\n  - name: eth0\n', path: 'services', message: /missing/ },

  // --- interfaces
  { name: 'no interfaces', yaml: withServices(WEB, 'interfaces: []\n'), path: 'interfaces', message: /at least one interface/ },
  { name: 'interfaces missing', yaml: withServices(WEB, ''), path: 'interfaces', message: /missing/ },
  { name: 'interface as bare string', yaml: withServices(WEB, 'interfaces:\n  - eth0\n'), path: 'interfaces[0]', message: /must be a mapping.*- name: eth0/ },
  { name: 'interface not on host', yaml: withServices(WEB, 'interfaces:\n  - name: eth9\n'), path: 'interfaces[0].name', message: /no interface named 'eth9'/ },
  { name: 'duplicate interface', yaml: withServices(WEB, 'interfaces:\n  - name: eth0\n  - name: eth1\n  - name: eth0\n'), path: 'interfaces[2].name', message: /'eth0' is already listed at interfaces\[0\]/ },
  { name: 'interface mode invalid', yaml: withServices(WEB, 'interfaces:\n  - name: eth0\n    mode: skb\n'), path: 'interfaces[0].mode', message: /'skb' is not native \| generic \| offload/ },
  { name: 'interface name too long', yaml: withServices(WEB, 'interfaces:\n  - name: averyveryverylongname\n'), path: 'interfaces[0].name', message: /longer than 15/ },

  // --- service fields
  { name: 'vip missing', yaml: withServices('  - port: 80\n    protocol: tcp\n'), path: 'services[0].vip', message: /missing/ },
  { name: 'vip malformed', yaml: withServices('  - vip: 10.0.0.300\n' + TCP80), path: 'services[0].vip', message: /'10\.0\.0\.300' is not an IPv4 or IPv6 address/ },
  { name: 'vip is a prefix', yaml: withServices('  - vip: 10.0.0.0/24\n' + TCP80), path: 'services[0].vip', message: /prefix.*drop the \/24/ },
  { name: 'vip IPv4-mapped', yaml: withServices('  - vip: "::ffff:10.0.0.1"\n' + TCP80), path: 'services[0].vip', message: /IPv4-mapped.*10\.0\.0\.1/ },
  { name: 'vip multicast', yaml: withServices('  - vip: 239.1.1.1\n' + TCP80), path: 'services[0].vip', message: /multicast/ },
  { name: 'port out of range', yaml: withServices(svc('    port: 70000\n    protocol: tcp\n')), path: 'services[0].port', message: /70000 is out of range.*0\.\.65535/ },
  { name: 'port not an integer', yaml: withServices(svc('    port: 80.5\n    protocol: tcp\n')), path: 'services[0].port', message: /must be an integer 0\.\.65535, got 80\.5/ },
  { name: 'port quoted', yaml: withServices(svc('    port: "80"\n    protocol: tcp\n')), path: 'services[0].port', message: /remove the quotes/ },
  { name: 'port negative', yaml: withServices(svc('    port: -1\n    protocol: tcp\n')), path: 'services[0].port', message: /out of range/ },
  { name: 'protocol invalid', yaml: withServices(svc('    port: 80\n    protocol: sctp\n')), path: 'services[0].protocol', message: /'sctp' is not tcp \| udp/ },
  { name: 'protocol typo', yaml: withServices(svc('    port: 80\n    protocol: tpc\n')), path: 'services[0].protocol', message: /'tpc' is not tcp \| udp \(did you mean 'tcp'\?\)/ },
  { name: 'protocol upper case', yaml: withServices(svc('    port: 80\n    protocol: TCP\n')), path: 'services[0].protocol', message: /lower case: tcp/ },
  { name: 'hash invalid', yaml: withServices(svc(TCP80 + '    hash: l7\n')), path: 'services[0].hash', message: /'l7' is not l4 .*\| l3/ },
  { name: 'misspelt service key', yaml: withServices(svc('    prot: 80\n    protocol: tcp\n')), path: 'services[0].prot', message: /unknown key 'prot' \(did you mean 'port'\?\)/ },
  { name: 'keepalived real_server', yaml: withServices('  - vip: 10.0.0.100\n' + TCP80 + '    real_server:\n      - address: 10.0.0.11\n'), path: 'services[0].real_server', message: /did you mean 'backends'/ },
  { name: 'keepalived lb_algo', yaml: withServices(svc(TCP80 + '    lb_algo: wrr\n')), path: 'services[0].lb_algo', message: /always Maglev/ },
  {
    name: 'duplicate service (same IPv6 written two ways)',
    yaml: withServices('  - vip: 2001:db8::1\n' + TCP80 + '  - vip: 2001:db8:0::1\n' + TCP80),
    path: 'services[1]',
    message: /duplicate service \[2001:db8::1\]:80\/tcp.*services\[0\]/,
  },
  { name: 'too many services', yaml: withServices(manyServices(5)), path: 'services', message: /5 services.*at most 4/ },

  // --- backends
  { name: 'backends not a list', yaml: withServices('  - vip: 10.0.0.100\n' + TCP80 + '    backends: 10.0.0.11\n'), path: 'services[0].backends', message: /must be a list/ },
  { name: 'backend as bare string', yaml: withServices(svc(TCP80, '      - 10.0.0.11\n')), path: 'services[0].backends[0]', message: /must be a mapping.*- address:/ },
  { name: 'backend address malformed', yaml: withServices(svc(TCP80, '      - address: web-1\n')), path: 'services[0].backends[0].address', message: /'web-1' is not an IPv4 or IPv6 address/ },
  { name: 'backend address missing', yaml: withServices(svc(TCP80, '      - weight: 1\n')), path: 'services[0].backends[0].address', message: /missing/ },
  { name: 'backend family differs from VIP', yaml: withServices(svc(TCP80, '      - address: 2001:db8::11\n')), path: 'services[0].backends[0].address', message: /2001:db8::11 is IPv6 but the VIP 10\.0\.0\.100 is IPv4/ },
  { name: 'backend is the VIP', yaml: withServices(svc(TCP80, '      - address: 10.0.0.100\n')), path: 'services[0].backends[0].address', message: /is the VIP itself/ },
  {
    name: 'duplicate backend',
    yaml: withServices(svc(TCP80, '      - address: 10.0.0.11\n      - address: 10.0.0.12\n      - address: 10.0.0.11\n')),
    path: 'services[0].backends[2].address',
    message: /duplicate backend 10\.0\.0\.11.*backends\[0\]/,
  },
  { name: 'weight negative', yaml: withServices(backend('        weight: -1\n')), path: 'services[0].backends[0].weight', message: /-1 is out of range.*0\.\.65535/ },
  { name: 'weight too large', yaml: withServices(backend('        weight: 65536\n')), path: 'services[0].backends[0].weight', message: /65536 is out of range/ },
  { name: 'weight non-numeric', yaml: withServices(backend('        weight: heavy\n')), path: 'services[0].backends[0].weight', message: /must be an integer 0\.\.65535, got the string "heavy"/ },
  { name: 'weight fractional', yaml: withServices(backend('        weight: 1.5\n')), path: 'services[0].backends[0].weight', message: /must be an integer.*got 1\.5/ },
  { name: 'misspelt backend key', yaml: withServices(backend('        weigth: 2\n')), path: 'services[0].backends[0].weigth', message: /did you mean 'weight'/ },
  { name: 'mac malformed', yaml: withServices(backend('        mac: "02:00:00:00:11"\n')), path: 'services[0].backends[0].mac', message: /not a MAC address/ },
  { name: 'mac with dashes', yaml: withServices(backend('        mac: 02-00-00-00-00-11\n')), path: 'services[0].backends[0].mac', message: /separate the bytes with ':'/ },
  { name: 'mac multicast', yaml: withServices(backend('        mac: "01:00:5e:00:00:01"\n')), path: 'services[0].backends[0].mac', message: /multicast/ },
  { name: 'mac broadcast', yaml: withServices(backend('        mac: "ff:ff:ff:ff:ff:ff"\n')), path: 'services[0].backends[0].mac', message: /broadcast/ },
  { name: 'mac all zero', yaml: withServices(backend('        mac: "00:00:00:00:00:00"\n')), path: 'services[0].backends[0].mac', message: /all zeros/ },
  { name: 'backend interface not on host', yaml: withServices(backend('        interface: eth7\n')), path: 'services[0].backends[0].interface', message: /no interface named 'eth7'/ },
  {
    name: 'shared backend with two MACs',
    yaml: withServices(
      backend('        mac: "02:00:00:00:00:11"\n') +
        '  - vip: 10.0.0.101\n' + TCP80 + '    backends:\n      - address: 10.0.0.11\n        mac: "02:00:00:00:00:99"\n',
    ),
    path: 'services[1].backends[0].mac',
    message: /has mac 02:00:00:00:00:11 at services\[0\]\.backends\[0\]/,
  },
  {
    name: 'shared backend with two egress interfaces',
    yaml: withServices(
      backend('        interface: eth1\n') + '  - vip: 10.0.0.101\n' + TCP80 + '    backends:\n      - address: 10.0.0.11\n',
    ),
    path: 'services[1].backends[0].interface',
    message: /has interface eth1 at services\[0\]\.backends\[0\] but no interface/,
  },
  {
    // 8 (service, real server) pairs, one real server in both services, but only ids 1..7 exist.
    name: 'too many backends in total',
    yaml: withServices(
      svc(TCP80, [11, 12, 13, 14].map((n) => `      - address: 10.0.0.${n}\n`).join('')) +
        '  - vip: 10.0.0.101\n' + TCP80 + '    backends:\n' +
        [11, 15, 16, 17].map((n) => `      - address: 10.0.0.${n}\n`).join(''),
    ),
    path: 'services',
    message: /8 backends over all services.*at most 7/,
  },

  // --- health checks
  { name: 'health check type invalid', yaml: withServices(check('      type: icmp\n')), path: 'services[0].health_check.type', message: /'icmp' is not tcp \| http \| none/ },
  { name: 'health check type missing', yaml: withServices(check('      interval: 2s\n')), path: 'services[0].health_check.type', message: /missing/ },
  { name: 'timeout equals interval', yaml: withServices(check('      type: tcp\n      interval: 1s\n      timeout: 1000ms\n')), path: 'services[0].health_check.timeout', message: /1s must be shorter than interval \(1s\)/ },
  { name: 'timeout above default interval', yaml: withServices(check('      type: tcp\n      timeout: 5s\n')), path: 'services[0].health_check.timeout', message: /shorter than interval \(2s, the default\)/ },
  { name: 'rise zero', yaml: withServices(check('      type: tcp\n      rise: 0\n')), path: 'services[0].health_check.rise', message: /out of range.*>= 1/ },
  { name: 'fall negative', yaml: withServices(check('      type: tcp\n      fall: -3\n')), path: 'services[0].health_check.fall', message: /out of range.*>= 1/ },
  { name: 'duration with space', yaml: withServices(check('      type: tcp\n      interval: 2 s\n')), path: 'services[0].health_check.interval', message: /has a space.*2s/ },
  { name: 'duration negative', yaml: withServices(check('      type: tcp\n      interval: -1s\n')), path: 'services[0].health_check.interval', message: /negative/ },
  { name: 'duration garbage', yaml: withServices(check('      type: tcp\n      interval: abc\n')), path: 'services[0].health_check.interval', message: /'abc' is not a duration/ },
  { name: 'duration unknown unit', yaml: withServices(check('      type: tcp\n      timeout: 1h\n')), path: 'services[0].health_check.timeout', message: /not a duration/ },
  { name: 'duration zero', yaml: withServices(check('      type: tcp\n      timeout: 0ms\n')), path: 'services[0].health_check.timeout', message: /zero/ },
  { name: 'http path without /', yaml: withServices(check('      type: http\n      path: healthz\n')), path: 'services[0].health_check.path', message: /must start with '\/'/ },
  { name: 'expect_status out of range', yaml: withServices(check('      type: http\n      expect_status: 600\n')), path: 'services[0].health_check.expect_status', message: /600 is out of range.*100\.\.599/ },
  { name: 'http field on tcp check', yaml: withServices(check('      type: tcp\n      host: www.example.com\n')), path: 'services[0].health_check.host', message: /only for http checks/ },
  { name: 'probe port needed for port 0', yaml: withServices(check('      type: tcp\n', '    port: 0\n')), path: 'services[0].health_check.port', message: /service port is 0/ },
  { name: 'probe port 0', yaml: withServices(check('      type: tcp\n      port: 0\n')), path: 'services[0].health_check.port', message: /out of range.*1\.\.65535/ },
  { name: 'target invalid', yaml: withServices(check('      type: tcp\n      target: backend\n')), path: 'services[0].health_check.target', message: /'backend' is not real \| vip/ },
  { name: 'keepalived delay_loop', yaml: withServices(check('      type: tcp\n      delay_loop: 6\n')), path: 'services[0].health_check.delay_loop', message: /did you mean 'interval'/ },
];

test('the bad-config corpus is large enough', () => {
  assert.ok(BAD.length >= 35, `${BAD.length} cases`);
  assert.equal(new Set(BAD.map((c) => c.name)).size, BAD.length, 'case names are unique');
});

for (const c of BAD) {
  test(`bad config: ${c.name}`, () => {
    const err = parseError(c.yaml);
    const hit = err.issues.find((i) => i.path === c.path && c.message.test(i.message));
    assert.ok(hit, `no issue at ${c.path} matching ${c.message}; got:\n${err.message}`);
    // The one-line-per-issue message carries the same text.
    assert.ok(err.message.split('\n').some((l) => l.startsWith(`${c.path}: `) && c.message.test(l)));
  });
}

test('the example file parses and normalises', () => {
  const cfg = loadConfigFile(EXAMPLE, OPTS);
  const expected: Config = {
    hashSeed: 2024,
    interfaces: [{ name: 'eth0', mode: 'native' }],
    services: [
      {
        vip: '10.0.0.100',
        family: 4,
        port: 80,
        protocol: 'tcp',
        hash: 'l4',
        connTable: true,
        healthCheck: {
          type: 'http',
          intervalMs: 2000,
          timeoutMs: 1000,
          rise: 2,
          fall: 3,
          port: 8080,
          target: 'real',
          path: '/healthz',
          host: 'www.example.com',
          expectStatus: 200,
        },
        backends: [
          { address: '10.0.0.11', mac: '02:00:00:00:00:11', weight: 1 },
          { address: '10.0.0.12', mac: '02:00:00:00:00:12', weight: 2 },
          { address: '10.0.0.13', weight: 0 },
        ],
      },
      {
        vip: '2001:db8::100',
        family: 6,
        port: 443,
        protocol: 'tcp',
        hash: 'l3',
        connTable: true,
        healthCheck: { type: 'tcp', intervalMs: 5000, timeoutMs: 500, rise: 1, fall: 2, port: 443, target: 'real' },
        backends: [
          { address: '2001:db8::11', weight: 1 },
          { address: '2001:db8::12', weight: 1, interface: 'eth1' },
        ],
      },
      {
        vip: '10.0.0.53',
        family: 4,
        port: 0,
        protocol: 'udp',
        hash: 'l4',
        connTable: false,
        healthCheck: { type: 'tcp', intervalMs: 2000, timeoutMs: 1000, rise: 2, fall: 3, port: 53, target: 'vip' },
        backends: [{ address: '10.0.0.11', mac: '02:00:00:00:00:11', weight: 1 }],
      },
      { vip: '10.0.0.200', family: 4, port: 8080, protocol: 'tcp', hash: 'l4', connTable: true, backends: [] },
    ],
  };
  assert.deepEqual(cfg, expected);
  assert.deepEqual(cfg.services.map(serviceName), [
    '10.0.0.100:80/tcp',
    '[2001:db8::100]:443/tcp',
    '10.0.0.53:0/udp',
    '10.0.0.200:8080/tcp',
  ]);
});

test('minimal config: defaults filled, canonical addresses, lowercase MAC', () => {
  const cfg = parseConfig(
    withServices(
      '  - vip: 2001:DB8:0:0:0:0:0:1\n    port: 53\n    protocol: udp\n    health_check:\n      type: http\n      interval: 0.5\n' +
        '    backends:\n      - address: 2001:db8:0::a\n        mac: "02:AB:CD:00:00:01"\n',
    ),
  );
  assert.deepEqual(cfg, {
    hashSeed: 0,
    interfaces: [{ name: 'eth0', mode: 'native' }],
    services: [
      {
        vip: '2001:db8::1',
        family: 6,
        port: 53,
        protocol: 'udp',
        hash: 'l4',
        connTable: false,
        healthCheck: {
          type: 'http',
          intervalMs: 500,
          timeoutMs: 250,
          rise: 2,
          fall: 3,
          port: 53,
          target: 'real',
          path: '/',
          expectStatus: 200,
        },
        backends: [{ address: '2001:db8::a', mac: '02:ab:cd:00:00:01', weight: 1 }],
      },
    ],
  });
});

test('a service without backends is accepted silently', () => {
  for (const backends of ['    backends: []\n', '    backends:\n', '']) {
    const cfg = parseConfig(withServices(`  - vip: 10.0.0.100\n${TCP80}${backends}`), OPTS);
    assert.deepEqual(cfg.services[0].backends, []);
  }
});

test('each (service, real server) pair takes one backend id: 7 pairs fit maxBackends 8', () => {
  // One real server in two services has a weight and counters in each, so it takes an id in each.
  const addrs = (ns: number[]): string => ns.map((n) => `      - address: 10.0.0.${n}\n`).join('');
  const yaml = withServices(
    svc(TCP80, addrs([11, 12, 13, 14])) + '  - vip: 10.0.0.101\n' + TCP80 + '    backends:\n' + addrs([11, 15, 16]),
  );
  assert.equal(parseConfig(yaml, OPTS).services.length, 2);
});

test('a backend interface need not be attached, only exist', () => {
  const cfg = parseConfig(withServices(backend('        interface: lo\n')), OPTS);
  assert.equal(cfg.services[0].backends[0].interface, 'lo');
});

test('every issue in a file is reported, in file order', () => {
  const yaml = [
    'hash_seed: -5',
    'interfaces:',
    '  - name: eth0',
    '    mode: turbo',
    'services:',
    '  - vip: 10.0.0.100',
    '    port: 99999',
    '    protocol: tcp',
    '    backends:',
    '      - address: 10.0.0.11',
    '        mac: "01:00:00:00:00:01"',
    '      - address: 10.0.0.11',
    '        weight: -2',
    '  - vip: 10.0.0.100',
    '    port: 80',
    '    protocol: tcp',
    '  - vip: 10.0.0.100',
    '    port: 80',
    '    protocol: tcp',
    '',
  ].join('\n');
  const err = parseError(yaml);
  assert.deepEqual(
    err.issues.map((i) => [i.path, i.line]),
    [
      ['hash_seed', 1],
      ['interfaces[0].mode', 4],
      ['services[0].port', 7],
      ['services[0].backends[0].mac', 11],
      ['services[0].backends[1].address', 12],
      ['services[0].backends[1].weight', 13],
      ['services[2]', 17],
    ],
  );
  assert.equal(err.message.split('\n').length, err.issues.length);
});

test('YAML syntax errors give line and column', () => {
  const err = parseError('interfaces:\n  - name: eth0\nservices: [\n  {vip: 10.0.0.1\n');
  assert.equal(err.issues[0].path, '(root)');
  assert.match(err.message, /YAML syntax error at line \d+, column \d+/);
  assert.equal(typeof err.issues[0].line, 'number');
  assert.equal(typeof err.issues[0].column, 'number');

  const tab = parseError('interfaces:\n  - name: eth0\n\tmode: native\n');
  assert.match(tab.message, /at line 3, column 1/);
  assert.deepEqual([tab.issues[0].line, tab.issues[0].column], [3, 1]);
});

test('a key repeated in one mapping is a YAML error, not a silent override', () => {
  const err = parseError(withServices('  - vip: 10.0.0.100\n    port: 80\n    port: 81\n    protocol: tcp\n'));
  assert.match(err.message, /line 6, column 5: Map keys must be unique/);
});

test('the file name prefixes every line of the message', () => {
  const err = parseError(withServices(svc('    port: x\n    protocol: y\n')), { file: 'lb.yaml' });
  const lines = err.message.split('\n');
  assert.equal(lines.length, 2);
  for (const l of lines) assert.match(l, /^lb\.yaml: services\[0\]\.(port|protocol): .*\(line [56]\)$/);
});

test('loadConfigFile: a missing file is a ConfigError that says so', () => {
  const missing = path.join(os.tmpdir(), `xdp-dr-no-such-${process.pid}.yaml`);
  assert.throws(
    () => loadConfigFile(missing),
    (e: unknown) => e instanceof ConfigError && /not found/.test(e.message) && e.message.startsWith(missing),
  );
});

test('loadConfigFile: problems are prefixed with the file name', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xdp-dr-config-'));
  const file = path.join(dir, 'lb.yaml');
  try {
    fs.writeFileSync(file, withServices(svc(TCP80 + '    hash: l9\n')));
    assert.throws(
      () => loadConfigFile(file, OPTS),
      (e: unknown) => e instanceof ConfigError && e.message === `${file}: services[0].hash: 'l9' is not l4 (5-tuple) | l3 (source-IP persistence) (line 7)`,
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('serviceName brackets IPv6 and canonicalises', () => {
  assert.equal(serviceName({ vip: '10.0.0.100', port: 80, protocol: 'tcp' }), '10.0.0.100:80/tcp');
  assert.equal(serviceName({ vip: '2001:db8:0::1', port: 80, protocol: 'tcp' }), '[2001:db8::1]:80/tcp');
});

test('conn_table: on by default for TCP, off for UDP, and only TCP can have it', () => {
  const one = (extra: string, proto = 'tcp') => withServices(`  - vip: 10.0.0.100\n    port: 80\n    protocol: ${proto}\n${extra}    backends: []\n`);
  assert.equal(parseConfig(one('')).services[0].connTable, true);
  assert.equal(parseConfig(one('', 'udp')).services[0].connTable, false);
  assert.equal(parseConfig(one('    conn_table: false\n')).services[0].connTable, false);
  assert.throws(() => parseConfig(one('    conn_table: true\n', 'udp')), /services\[0\]\.conn_table: the connection table tracks TCP only/);
  assert.throws(() => parseConfig(one('    conn_table: yes please\n')), /services\[0\]\.conn_table: must be true or false, got the string "yes please"/);
});
