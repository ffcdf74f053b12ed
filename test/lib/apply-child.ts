// A process that applies one change to a pinned load balancer, for tests that kill it part way. Usage:
//   node apply-child.js <pinDir> <services JSON> [stop-before-write]
// Prints "ready", then "write <n> <what>" before each write; at the stop write it waits (for its SIGKILL).
// Prints "done <writes> <ms>" when the change is applied. Every line is written synchronously, so a line the
// parent reads is a point the child has reached.
import fs from 'node:fs';
import { Dataplane } from '../../loader/src/dataplane/dataplane';
import { prepare, apply } from '../../loader/src/lb/change';
import { Journal } from '../../loader/src/lb/apply';
import { servicesOf } from './dataplane';

async function main(): Promise<void> {
  const [pinDir, json, stop] = process.argv.slice(2);
  const stopAt = stop === undefined ? -1 : Number(stop);
  const say = (line: string) => fs.writeSync(1, `${line}\n`);
  const dp = Dataplane.open(pinDir);
  const services = servicesOf(JSON.parse(json));
  say('ready');
  const t0 = process.hrtime.bigint();
  const journal = new Journal(undefined, (n, what) => {
    say(`write ${n} ${what}`);
    if (n === stopAt) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60_000);
  });
  apply(await prepare({ iface: 'lo', dp }, services), journal);
  say(`done ${journal.count} ${Number(process.hrtime.bigint() - t0) / 1e6}`);
  dp.close();
}

main().catch((e) => {
  fs.writeSync(2, `${(e as Error).stack}\n`);
  process.exit(1);
});
