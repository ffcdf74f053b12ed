// One CPU's worth of the live benchmark's traffic, in a child process of its own (so each generator can be pinned
// to a CPU and block in the kernel without stopping the others): it joins the benchmark's namespace, loads
// bpf/xdp_gen.bpf.c with the flow count and runs it in live-frames mode on the template frame for as many
// frames as the parent asks, then reports how many frames it offered.
import { BpfObject, testRun, xdpContext, ifindexOf } from '../libbpf';
import { ensureObject } from '../dataplane/build';
import { setns, pinToCpu, dieWithParent } from './netns';

export interface GenSetup {
  /** The benchmark's process: a generator must not outlive it (it may be in a call of minutes). */
  parent: number;
  nsPath: string;
  cpu: number;
  iface: string;
  flows: number;
  srcBase: number;
  frame: string; // base64
  batch: number;
}

/** go: frames to send in one kernel call. The parent ends a generator by killing it, in a call or between calls. */
export type ToGen = { go: number };
export type FromGen = { ready: true } | { sent: number; secs: number } | { error: string };

function serve(setup: GenSetup): void {
  const send = (m: FromGen) => process.send!(m);
  let obj: BpfObject;
  let progFd: number;
  let ctx: Buffer;
  const frame = Buffer.from(setup.frame, 'base64');
  try {
    dieWithParent(setup.parent);
    setns(setup.nsPath);
    pinToCpu(setup.cpu);
    obj = BpfObject.open(ensureObject('xdp_gen'), { constants: { flows: setup.flows, src_base: setup.srcBase } });
    obj.load();
    progFd = obj.programFd('xdp_gen');
    ctx = xdpContext(frame.length, ifindexOf(setup.iface));
  } catch (e) {
    send({ error: (e as Error).message });
    return;
  }
  process.on('message', (m: ToGen) => {
    try {
      // One call: each live-mode call first sets up its page pool (~20 ms here), which the parent's
      // measuring window leaves out.
      const t0 = process.hrtime.bigint();
      testRun(progFd, { data: frame, ctx, live: true, repeat: m.go, batchSize: setup.batch });
      send({ sent: m.go, secs: Number(process.hrtime.bigint() - t0) / 1e9 });
    } catch (e) {
      send({ error: (e as Error).message });
    }
  });
  send({ ready: true });
}

if (require.main === module) {
  process.once('message', (setup: GenSetup) => serve(setup));
}
