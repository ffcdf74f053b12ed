// Runs in a child process: sends many flows through a pinned program with BPF_PROG_TEST_RUN until told to
// stop (or a bound is hit) and reports what the program did with them.
import { fn, check, testRun, XDP_ACTION_NAME } from '../../loader/src/libbpf';
import { buildFrame, macToString } from '../../loader/src/packet';

const [progPin, vip, portStr, maxRoundsStr] = process.argv.slice(2);
const fd = check(fn.bpf_obj_get(progPin), 'bpf_obj_get', progPin);
const frames = Array.from({ length: 256 }, (_, i) =>
  buildFrame({ src: `198.51.${i >> 4}.${i & 15}`, dst: vip, sport: 10000 + i * 7, dport: Number(portStr), proto: 'tcp' }),
);
const actions: Record<string, number> = {};
const macs: Record<string, number> = {};
let stop = false;
process.on('message', () => (stop = true));
let rounds = 0;
const maxRounds = Number(maxRoundsStr);

function loop(): void {
  for (let k = 0; k < 20 && rounds < maxRounds; k++, rounds++)
    for (const f of frames) {
      const r = testRun(fd, { data: f });
      const a = XDP_ACTION_NAME[r.retval];
      actions[a] = (actions[a] ?? 0) + 1;
      if (a === 'XDP_TX') {
        const m = macToString(r.data, 0);
        macs[m] = (macs[m] ?? 0) + 1;
      }
    }
  if (stop || rounds >= maxRounds) {
    process.send!({ actions, macs, rounds }, () => process.exit(0));
    return;
  }
  setImmediate(loop);
}
process.send!({ ready: true });
loop();
