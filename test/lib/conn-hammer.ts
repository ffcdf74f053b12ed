// A process that sends tracked TCP packets through a pinned load balancer from one CPU, for the test of the
// connection table under writers on several CPUs. Usage:
//   node conn-hammer.js <pinDir> <cpu> <vip> <flows JSON: [{src, sport, mac}]> <packets>
// Each packet belongs to a random flow and must leave for that flow's expected backend (the table never changes,
// so its record and its Maglev pick agree). Prints one JSON line: {sent, wrong}.
import fs from 'node:fs';
import { Dataplane } from '../../loader/src/dataplane/dataplane';
import { testRun } from '../../loader/src/libbpf';
import { buildFrame, macToString, TCP_FLAGS } from '../../loader/src/packet';
import { pinToCpu } from '../../loader/src/bench/netns';

const [pinDir, cpu, vip, json, count] = process.argv.slice(2);
pinToCpu(Number(cpu));
const dp = Dataplane.open(pinDir);
const flows = JSON.parse(json) as { src: string; sport: number; mac: string }[];
const frames = flows.map((f) => buildFrame({ src: f.src, dst: vip, sport: f.sport, dport: 80, proto: 'tcp', tcpFlags: TCP_FLAGS.ACK }));
let seed = Number(cpu) * 7919 + 1;
let wrong = 0;
const n = Number(count);
for (let i = 0; i < n; i++) {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  const k = seed % flows.length;
  if (macToString(testRun(dp.progFd!, { data: frames[k] }).data, 0) !== flows[k].mac) wrong++;
}
fs.writeSync(1, `${JSON.stringify({ sent: n, wrong })}\n`);
dp.close();
