// xdp-dr bench as a user runs it: the --json lines and the results file, pktgen's dry run, and arguments refused
// before anything is made.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { CLI } from '../lib/daemonlab';

const run = (...args: string[]) => spawnSync(process.execPath, [CLI, 'bench', ...args], { encoding: 'utf8' });

test('bench --json prints one result object per line, the same as the results file it names', () => {
  const r = run('maglev', '--backends', '10', '--json');
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.length, 3);
  for (const o of lines) {
    assert.deepEqual(Object.keys(o).sort(), ['name', 'params', 'ratio', 'reference', 'reference_value', 'unit', 'value']);
    assert.equal(o.ratio, o.value / o.reference_value, o.name);
  }
  const file = /results written to (\S+\.json)/.exec(r.stderr)?.[1];
  assert.ok(file && fs.existsSync(file), r.stderr);
  try {
    const saved = JSON.parse(fs.readFileSync(file, 'utf8'));
    assert.deepEqual(saved.results, lines);
    for (const k of ['date', 'kernel', 'cpu_model']) assert.ok(saved.machine[k], `the file names the ${k}`);
  } finally {
    fs.rmSync(file, { force: true });
  }
});

test('bench pktgen --dry-run prints the writes, reset first and start last, and needs no pktgen', () => {
  const r = run('pktgen', '--dry-run', '--iface', 'eth1', '--vip', '10.0.0.100:53', '--dst-mac', '02:00:00:00:00:01', '--threads', '2');
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines[0], "echo 'reset' > /proc/net/pktgen/pgctrl");
  assert.match(lines[lines.length - 1], /^echo start > \/proc\/net\/pktgen\/pgctrl/);
  for (const l of lines.slice(0, -1)) assert.match(l, /^echo '[^']+' > \/proc\/net\/pktgen\/(pgctrl|kpktgend_[01]|eth1@[01])$/);
  assert.ok(lines.includes("echo 'udp_src_max 10016' > /proc/net/pktgen/eth1@1"), 'both threads get the ranges');
});

test('bench arguments that cannot work are refused with what to do, before anything is made', () => {
  const cases: [string[], RegExp][] = [
    [['pktgen', '--dry-run', '--iface', 'eth1', '--vip', '10.0.0.100:53', '--dst-mac', '02:00:00:00:00:01', '--flows', '999983'], /use 999982/],
    [['pktgen', '--dry-run', '--iface', 'eth1', '--vip', '10.0.0.100', '--dst-mac', '02:00:00:00:00:01'], /IPv4:PORT/],
    [['live', '--cpus', '1000'], /this machine has \d+ CPUs/],
    [['live', '--seconds', '61'], /must be a number in 0.1..60/],
    [['live', '--conn-table', '--proto', 'udp'], /--conn-table tracks TCP flows/],
  ];
  for (const [args, msg] of cases) {
    const r = run(...args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, msg, args.join(' '));
    assert.equal(fs.existsSync(`/run/netns/xdrb-${r.pid}`), false);
  }
});
