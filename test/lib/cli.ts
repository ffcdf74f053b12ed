// A lab for CLI tests: a load-balancer namespace and a real-server namespace joined by veth pairs, and the real
// xdp-dr command run inside the LB namespace (nsenter --net) with its pins under a base of its own, so a test
// never touches a real deployment. cleanup() removes namespaces and pins whatever happened.
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { addNetns, delNetns, sweepStaleNetns, nsName, nsPath, vethPair, ipJson } from './netns';
import { Dataplane, BPFFS } from '../../loader/src/dataplane/dataplane';
import { stateDigest } from './dataplane';

const MAIN = path.resolve(__dirname, '../../loader/src/cli/main.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export class CliLab {
  readonly lb: string;
  readonly rs: string;
  readonly pinBase: string;
  /** The real server's MACs on the two segments. */
  rsMac = '';
  rsMac2 = '';

  constructor(tag: string) {
    this.lb = nsName(`${tag}lb`);
    this.rs = nsName(`${tag}rs`);
    this.pinBase = path.join(BPFFS, `xdp-dr-test-${process.pid}-${tag}`);
  }

  /** lb0 (10.77.0.1, fd77::1) <-> rs0 (10.77.0.11, fd77::11); lb1 (10.78.0.1) <-> rs1 (10.78.0.11). */
  setup(): this {
    sweepStaleNetns();
    addNetns(this.lb);
    addNetns(this.rs);
    vethPair(this.lb, 'lb0', this.rs, 'rs0', { a: ['10.77.0.1/24', 'fd77::1/64'], b: ['10.77.0.11/24', 'fd77::11/64'] });
    vethPair(this.lb, 'lb1', this.rs, 'rs1', { a: ['10.78.0.1/24'], b: ['10.78.0.11/24'] });
    this.rsMac = ipJson<{ address: string }[]>(this.rs, 'link', 'show', 'dev', 'rs0')[0].address;
    this.rsMac2 = ipJson<{ address: string }[]>(this.rs, 'link', 'show', 'dev', 'rs1')[0].address;
    return this;
  }

  run(...args: string[]): CliResult {
    const r = spawnSync('nsenter', [`--net=${nsPath(this.lb)}`, '--', process.execPath, MAIN, ...args], {
      encoding: 'utf8',
      env: { ...process.env, XDP_DR_PIN_BASE: this.pinBase },
      timeout: 60_000,
    });
    if (r.error) throw r.error;
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  }

  /** Runs and insists on exit code 0, showing stderr otherwise. */
  ok(...args: string[]): string {
    const r = this.run(...args);
    if (r.code !== 0) throw new Error(`xdp-dr ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
    return r.stdout;
  }

  pinDir(iface = 'lb0'): string {
    return path.join(this.pinBase, iface);
  }

  /** Every map of the load balancer on iface, plus the program the interface runs. */
  digest(iface = 'lb0'): Record<string, unknown> {
    const dp = Dataplane.open(this.pinDir(iface));
    try {
      return { ...stateDigest(dp, { withTableIds: true }), xdp: this.xdpProg(iface) };
    } finally {
      dp.close();
    }
  }

  xdpProg(iface = 'lb0'): number | undefined {
    const [link] = ipJson<{ xdp?: { prog?: { id: number }; mode?: number } }[]>(this.lb, '-d', 'link', 'show', 'dev', iface);
    return link.xdp?.prog?.id;
  }

  writeConfig(name: string, text: string): string {
    const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'xdp-dr-cli-'));
    const file = path.join(dir, name);
    fs.writeFileSync(file, text);
    return file;
  }

  cleanup(): void {
    delNetns(this.lb); // takes the veths, and with them the XDP attachments
    delNetns(this.rs);
    fs.rmSync(this.pinBase, { recursive: true, force: true });
  }
}
