// Bad input never changes a running load balancer: every malformed config file or argument below gets exit
// code 2 and a message that names the field and the reason, and afterwards every map (entries, live tables,
// which inner tables are live) and the interface's program are exactly as before.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { CliLab } from '../lib/cli';

const lab = new CliLab('b');

const GOOD = `hash_seed: 5
interfaces:
  - name: lb0
services:
  - vip: 10.77.0.100
    port: 80
    protocol: tcp
    backends:
      - address: 10.77.0.11
        mac: "02:00:00:00:00:11"
      - address: 10.77.0.12
        mac: "02:00:00:00:00:12"
        weight: 2
  - vip: fd77::100
    port: 443
    protocol: tcp
    backends:
      - address: fd77::11
        mac: "02:00:00:00:00:11"
`;

before(() => {
  lab.setup();
  lab.ok('attach', 'lb0', '-c', lab.writeConfig('good.yaml', GOOD));
});
after(() => lab.cleanup());

/** The good file with one service's lines replaced. */
const svc = (lines: string) => `hash_seed: 5\ninterfaces:\n  - name: lb0\nservices:\n${lines}`;
const web = (backends: string, head = '  - vip: 10.77.0.100\n    port: 80\n    protocol: tcp\n') => svc(`${head}    backends:\n${backends}`);
const one = '      - address: 10.77.0.11\n        mac: "02:00:00:00:00:11"\n';

function many(n: number, backendsEach: number): string {
  let out = '';
  for (let i = 0; i < n; i++) {
    out += `  - vip: 10.${100 + (i >> 8)}.${i & 255}.1\n    port: 80\n    protocol: tcp\n    backends:${backendsEach ? '\n' : ' []\n'}`;
    for (let j = 0; j < backendsEach; j++) out += `      - address: 10.${100 + (i >> 8)}.${i & 255}.${10 + j}\n        mac: "02:00:00:00:00:11"\n`;
  }
  return svc(out);
}

const CONFIGS: { name: string; yaml: string; message: RegExp }[] = [
  { name: 'bad VIP address', yaml: web(one, '  - vip: 10.0.0.300\n    port: 80\n    protocol: tcp\n'), message: /services\[0\]\.vip: .*10\.0\.0\.300/ },
  { name: 'VIP with a prefix length', yaml: web(one, '  - vip: 10.77.0.100/32\n    port: 80\n    protocol: tcp\n'), message: /services\[0\]\.vip/ },
  { name: 'VIP missing', yaml: web(one, '  - port: 80\n    protocol: tcp\n'), message: /services\[0\]\.vip: missing/ },
  { name: 'IPv4 backend in an IPv6 service', yaml: web(one, '  - vip: fd77::100\n    port: 80\n    protocol: tcp\n'), message: /services\[0\]\.backends\[0\]\.address: 10\.77\.0\.11 is IPv4 but the VIP fd77::100 is IPv6/ },
  { name: 'IPv6 backend in an IPv4 service', yaml: web('      - address: fd77::11\n'), message: /services\[0\]\.backends\[0\]\.address: fd77::11 is IPv6 but the VIP 10\.77\.0\.100 is IPv4/ },
  { name: 'port above 65535', yaml: web(one, '  - vip: 10.77.0.100\n    port: 70000\n    protocol: tcp\n'), message: /services\[0\]\.port: 70000 is out of range/ },
  { name: 'negative port', yaml: web(one, '  - vip: 10.77.0.100\n    port: -1\n    protocol: tcp\n'), message: /services\[0\]\.port: -1 is out of range/ },
  { name: 'port as a quoted string', yaml: web(one, '  - vip: 10.77.0.100\n    port: "80"\n    protocol: tcp\n'), message: /services\[0\]\.port: must be a number.*remove the quotes/ },
  { name: 'unknown protocol', yaml: web(one, '  - vip: 10.77.0.100\n    port: 80\n    protocol: icmp\n'), message: /services\[0\]\.protocol: 'icmp' is not tcp \| udp/ },
  { name: 'unknown hash mode', yaml: web(one, '  - vip: 10.77.0.100\n    port: 80\n    protocol: tcp\n    hash: l7\n'), message: /services\[0\]\.hash: 'l7'/ },
  { name: 'duplicate service', yaml: svc(`  - vip: 10.77.0.100\n    port: 80\n    protocol: tcp\n    backends: []\n  - vip: 10.77.0.100\n    port: 80\n    protocol: tcp\n    backends: []\n`), message: /services\[1\]: duplicate service 10\.77\.0\.100:80\/tcp: already defined at services\[0\]/ },
  { name: 'duplicate backend', yaml: web(one + one), message: /services\[0\]\.backends\[1\]\.address: duplicate backend 10\.77\.0\.11/ },
  { name: 'backend is the VIP', yaml: web('      - address: 10.77.0.100\n'), message: /is the VIP itself/ },
  { name: 'negative weight', yaml: web('      - address: 10.77.0.11\n        weight: -1\n'), message: /services\[0\]\.backends\[0\]\.weight: -1 is out of range: must be an integer 0\.\.65535/ },
  { name: 'weight not a number', yaml: web('      - address: 10.77.0.11\n        weight: heavy\n'), message: /services\[0\]\.backends\[0\]\.weight: must be an integer 0\.\.65535, got the string "heavy"/ },
  { name: 'fractional weight', yaml: web('      - address: 10.77.0.11\n        weight: 1.5\n'), message: /weight: must be an integer 0\.\.65535, got 1\.5/ },
  { name: 'weight too large', yaml: web('      - address: 10.77.0.11\n        weight: 70000\n'), message: /weight: 70000 is out of range/ },
  { name: 'MAC too short', yaml: web('      - address: 10.77.0.11\n        mac: "02:00:00:00:00"\n'), message: /services\[0\]\.backends\[0\]\.mac: '02:00:00:00:00' is not a MAC address/ },
  { name: 'MAC with bad hex', yaml: web('      - address: 10.77.0.11\n        mac: "zz:00:00:00:00:11"\n'), message: /backends\[0\]\.mac: 'zz:00:00:00:00:11' is not a MAC address/ },
  { name: 'multicast MAC', yaml: web('      - address: 10.77.0.11\n        mac: "01:00:5e:00:00:11"\n'), message: /backends\[0\]\.mac: 01:00:5e:00:00:11 is a multicast address/ },
  { name: 'one real server, two MACs', yaml: svc(`  - vip: 10.77.0.100\n    port: 80\n    protocol: tcp\n    backends:\n${one}  - vip: 10.77.0.101\n    port: 80\n    protocol: tcp\n    backends:\n      - address: 10.77.0.11\n        mac: "02:00:00:00:00:99"\n`), message: /services\[1\]\.backends\[0\]\.mac: 10\.77\.0\.11 has mac 02:00:00:00:00:11 .* but 02:00:00:00:00:99 here; a real server has one MAC/ },
  { name: 'unknown interface to attach', yaml: `hash_seed: 5\ninterfaces:\n  - name: nosuch0\nservices: []\n`, message: /interfaces\[0\]\.name: no interface named 'nosuch0' on this host/ },
  { name: 'unknown backend interface', yaml: web('      - address: 10.77.0.11\n        interface: nosuch1\n'), message: /services\[0\]\.backends\[0\]\.interface: no interface named 'nosuch1' on this host/ },
  { name: 'interface listed twice', yaml: `hash_seed: 5\ninterfaces:\n  - name: lb0\n  - name: lb0\nservices: []\n`, message: /interfaces\[1\]\.name: 'lb0' is already listed/ },
  { name: 'unknown XDP mode', yaml: `hash_seed: 5\ninterfaces:\n  - name: lb0\n    mode: turbo\nservices: []\n`, message: /interfaces\[0\]\.mode: 'turbo'/ },
  { name: 'misspelt key', yaml: web(one, '  - vip: 10.77.0.100\n    prot: 80\n    protocol: tcp\n'), message: /services\[0\]\.prot: unknown key.*port/ },
  { name: 'backends not a list', yaml: svc('  - vip: 10.77.0.100\n    port: 80\n    protocol: tcp\n    backends: 10.77.0.11\n'), message: /services\[0\]\.backends: must be a list/ },
  { name: 'negative hash seed', yaml: `hash_seed: -5\ninterfaces:\n  - name: lb0\nservices: []\n`, message: /hash_seed: -5 is out of range/ },
  { name: 'health check timeout not shorter than interval', yaml: web(one, '  - vip: 10.77.0.100\n    port: 80\n    protocol: tcp\n    health_check:\n      type: tcp\n      interval: 1s\n      timeout: 2s\n'), message: /health_check\.timeout: 2s must be shorter than interval \(1s\)/ },
  { name: 'YAML syntax error', yaml: 'services:\n  - vip: [10.0.0.1\n', message: /YAML syntax error at line \d+/ },
  { name: 'empty file', yaml: '', message: /the file is empty/ },
  { name: 'more services than MAX_SERVICES', yaml: many(1025, 0), message: /services: 1025 services, but the data plane holds at most 1024 \(MAX_SERVICES\)/ },
  { name: 'more backends than MAX_BACKENDS', yaml: many(410, 10), message: /services: 4100 backends over all services, but the data plane holds at most 4095/ },
  { name: 'hash seed differs from the running program', yaml: GOOD.replace('hash_seed: 5', 'hash_seed: 6'), message: /lb0 runs with hash seed 5, not 6: the seed is built into the loaded program/ },
  { name: 'XDP mode differs from the running one', yaml: GOOD.replace('  - name: lb0\n', '  - name: lb0\n    mode: generic\n'), message: /lb0 runs in native mode, not generic/ },
];

const ARGS: { name: string; args: string[]; message: RegExp }[] = [
  { name: 'service without protocol', args: ['service', 'add', '10.77.0.1:80'], message: /service '10\.77\.0\.1:80' is not a service: write it as VIP:PORT\/PROTO/ },
  { name: 'IPv6 service without brackets', args: ['service', 'add', 'fd77::1:80/tcp'], message: /put an IPv6 VIP in brackets/ },
  { name: 'service port out of range', args: ['service', 'add', '10.77.0.1:99999/tcp'], message: /service '10\.77\.0\.1:99999\/tcp': port: 99999 is out of range/ },
  { name: 'service with a bad address', args: ['service', 'add', '10.77.0.256:80/tcp'], message: /VIP: .*10\.77\.0\.256/ },
  { name: 'unknown protocol', args: ['service', 'add', '10.77.0.1:80/sctp'], message: /protocol: 'sctp' is not tcp \| udp/ },
  { name: 'unknown hash', args: ['service', 'add', '10.77.0.1:80/tcp', '--hash', 'l5'], message: /--hash: 'l5'/ },
  { name: 'service that exists', args: ['service', 'add', '10.77.0.100:80/tcp'], message: /service 10\.77\.0\.100:80\/tcp already exists; change it with 'xdp-dr service edit'/ },
  { name: 'edit of a missing service', args: ['service', 'edit', '10.77.0.9:80/tcp', '--hash', 'l3'], message: /no service 10\.77\.0\.9:80\/tcp \(services: 10\.77\.0\.100:80\/tcp, \[fd77::100\]:443\/tcp\)/ },
  { name: 'service edit with nothing to change', args: ['service', 'edit', '10.77.0.100:80/tcp'], message: /nothing to change; give --hash/ },
  { name: 'negative weight', args: ['backend', 'add', '10.77.0.100:80/tcp', '10.77.0.13', '--weight', '-5', '--mac', '02:00:00:00:00:13'], message: /--weight: -5 is out of range: must be an integer 0\.\.65535/ },
  { name: 'weight not a number', args: ['backend', 'add', '10.77.0.100:80/tcp', '10.77.0.13', '--weight', 'lots', '--mac', '02:00:00:00:00:13'], message: /--weight: must be an integer 0\.\.65535, got the string "lots"/ },
  { name: 'malformed MAC', args: ['backend', 'add', '10.77.0.100:80/tcp', '10.77.0.13', '--mac', '1:2:3'], message: /--mac: '1:2:3' is not a MAC address/ },
  { name: 'backend of the other family', args: ['backend', 'add', '10.77.0.100:80/tcp', 'fd77::13'], message: /real server fd77::13 is IPv6 but 10\.77\.0\.100:80\/tcp is IPv4/ },
  { name: 'backend address malformed', args: ['backend', 'add', '10.77.0.100:80/tcp', '10.77.0'], message: /real server '10\.77\.0'/ },
  { name: 'duplicate backend', args: ['backend', 'add', '10.77.0.100:80/tcp', '10.77.0.11'], message: /already has backend 10\.77\.0\.11; change it with 'xdp-dr backend edit'/ },
  { name: 'backend of a missing service', args: ['backend', 'add', '10.77.0.9:80/tcp', '10.77.0.11'], message: /no service 10\.77\.0\.9:80\/tcp/ },
  { name: 'edit of a missing backend', args: ['backend', 'edit', '10.77.0.100:80/tcp', '10.77.0.99', '--weight', '3'], message: /10\.77\.0\.100:80\/tcp has no backend 10\.77\.0\.99 \(backends: 10\.77\.0\.11, 10\.77\.0\.12\)/ },
  { name: 'backend edit with nothing to change', args: ['backend', 'edit', '10.77.0.100:80/tcp', '10.77.0.11'], message: /nothing to change; give --weight, --mac or --iface/ },
  { name: 'drain of a missing backend', args: ['backend', 'drain', '10.77.0.100:80/tcp', '10.77.0.77'], message: /10\.77\.0\.100:80\/tcp has no backend 10\.77\.0\.77/ },
  { name: 'backend interface unknown', args: ['backend', 'add', '10.77.0.100:80/tcp', '10.77.0.13', '--mac', '02:00:00:00:00:13', '--iface', 'nosuch2'], message: /10\.77\.0\.100:80\/tcp backend 10\.77\.0\.13: interface: no interface named 'nosuch2' on this host/ },
  { name: 'load balancer not attached there', args: ['list', '--lb', 'lb1'], message: /xdp-dr is not attached to lb1 \(it runs on lb0\): attach it first/ },
  { name: 'attach to an unknown interface', args: ['attach', 'nosuch0'], message: /no interface named 'nosuch0' on this host/ },
  { name: 'attach with an unknown mode', args: ['attach', 'lb1', '--mode', 'fast'], message: /--mode: 'fast' is not native \| generic \| offload/ },
  { name: 'unknown option', args: ['list', '--frobnicate'], message: /unknown option '--frobnicate'/ },
  { name: 'unknown command', args: ['frobnicate'], message: /unknown command 'frobnicate'/ },
  { name: 'missing argument', args: ['backend', 'add', '10.77.0.100:80/tcp'], message: /missing required argument 'real-ip'/ },
  { name: 'rate interval of zero', args: ['list', '--rate', '--interval', '0'], message: /--interval: must be a number of seconds in \(0, 3600\]/ },
  { name: 'simulate across families', args: ['simulate', '[2001:db8::1]:1000', '10.77.0.100:80/tcp'], message: /client 2001:db8::1 is IPv6 but 10\.77\.0\.100:80\/tcp is IPv4/ },
  { name: 'apply without a file', args: ['apply', '-c', '/nonexistent/lb.yaml'], message: /config file not found: \/nonexistent\/lb\.yaml/ },
];

for (const c of CONFIGS) {
  test(`config: ${c.name} -> exit 2, named, nothing changed`, () => {
    const before = lab.digest();
    const r = lab.run('apply', '-c', lab.writeConfig('bad.yaml', c.yaml));
    assert.equal(r.code, 2, `exit code (stderr: ${r.stderr})`);
    assert.match(r.stderr, c.message);
    assert.deepEqual(lab.digest(), before, 'maps and program unchanged');
  });
}

for (const c of ARGS) {
  test(`arguments: ${c.name} -> exit 2, named, nothing changed`, () => {
    const before = lab.digest();
    const r = lab.run(...c.args);
    assert.equal(r.code, 2, `exit code (stderr: ${r.stderr})`);
    assert.match(r.stderr, c.message);
    assert.deepEqual(lab.digest(), before, 'maps and program unchanged');
  });
}

test('a backend whose MAC nobody answers for is an error that says so (exit 1), and nothing changes', () => {
  const before = lab.digest();
  const r = lab.run('backend', 'add', '10.77.0.100:80/tcp', '10.77.0.99');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no MAC for 10\.77\.0\.99 on lb0: nobody answered ARP within 3 s .*give its MAC with --mac/);
  assert.deepEqual(lab.digest(), before);
});

test('the corpus is large enough to mean something', () => {
  assert.ok(CONFIGS.length >= 30, `${CONFIGS.length} bad configs`);
});

test('attach refuses an interface that runs another XDP program, and leaves that program alone', () => {
  const obj = require('node:path').resolve(__dirname, '../../../build/xdp_min.bpf.o');
  require('node:child_process').execFileSync('ip', ['-n', lab.lb, 'link', 'set', 'dev', 'lb1', 'xdpgeneric', 'obj', obj, 'sec', 'xdp']);
  try {
    const other = lab.xdpProg('lb1');
    assert.ok(other);
    const r = lab.run('attach', 'lb1');
    assert.equal(r.code, 2);
    assert.match(r.stderr, new RegExp(`lb1 already runs another XDP program \\(id ${other}, generic mode\\): remove it first`));
    assert.equal(lab.xdpProg('lb1'), other);
    assert.ok(!require('node:fs').existsSync(lab.pinDir('lb1')), 'nothing pinned for lb1');
  } finally {
    require('node:child_process').execFileSync('ip', ['-n', lab.lb, 'link', 'set', 'dev', 'lb1', 'xdpgeneric', 'off']);
  }
});

test('attach -c whose services cannot be applied leaves the interface as it was', () => {
  const file = lab.writeConfig('unresolvable.yaml', 'interfaces:\n  - name: lb1\nservices:\n  - vip: 10.78.0.100\n    port: 80\n    protocol: tcp\n    backends:\n      - address: 10.78.0.99\n');
  const r = lab.run('attach', 'lb1', '-c', file);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no MAC for 10\.78\.0\.99 on lb1/);
  assert.match(r.stderr, /lb1 detached again, as it was/);
  assert.equal(lab.xdpProg('lb1'), undefined);
  assert.ok(!require('node:fs').existsSync(lab.pinDir('lb1')));
});

test('-v shows what libbpf says', () => {
  const r = lab.run('-v', 'attach', 'lb1');
  try {
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^debug +libbpf: loading object from .*xdp_dr\.bpf\.o$/m);
  } finally {
    lab.ok('detach', 'lb1');
  }
});
