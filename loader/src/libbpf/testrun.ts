// BPF_PROG_TEST_RUN: runs a loaded program on a frame in the kernel, as the data path would.
import { fn, koffi, TestRunOpts, BPF_F_TEST_XDP_LIVE_FRAMES } from './ffi';
import { check } from './errors';

export interface TestRunInput {
  data: Buffer;
  repeat?: number;
  /** Room for the output frame; defaults to the input size plus headroom for growth. */
  outSize?: number;
  /** xdp_md context, e.g. to set ingress_ifindex (24 bytes). */
  ctx?: Buffer;
  /** Live frames: the program's XDP_TX/REDIRECT really transmit (needs ctx with ingress_ifindex). */
  live?: boolean;
  batchSize?: number;
}

export interface TestRunResult {
  retval: number;
  /** Average ns per run as the kernel measured it. */
  duration: number;
  data: Buffer;
}

export function testRun(progFd: number, input: TestRunInput): TestRunResult {
  const out = Buffer.alloc(input.live ? 0 : (input.outSize ?? input.data.length + 256));
  const opts = {
    sz: koffi.sizeof(TestRunOpts),
    data_in: input.data,
    data_out: input.live ? null : out,
    data_size_in: input.data.length,
    data_size_out: out.length,
    ctx_in: input.ctx ?? null,
    ctx_out: null,
    ctx_size_in: input.ctx?.length ?? 0,
    ctx_size_out: 0,
    retval: 0,
    repeat: input.repeat ?? 1,
    duration: 0,
    flags: input.live ? BPF_F_TEST_XDP_LIVE_FRAMES : 0,
    cpu: 0,
    batch_size: input.batchSize ?? 0,
  };
  check(fn.bpf_prog_test_run_opts(progFd, opts), 'bpf_prog_test_run_opts', `program fd ${progFd}`);
  return { retval: opts.retval, duration: opts.duration, data: out.subarray(0, opts.data_size_out) };
}

/**
 * struct xdp_md as the kernel takes it for test runs: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
 * egress_ifindex. The kernel refuses a context whose data_end is not the frame size (data and data_meta are
 * offsets from the frame start there, and there is no metadata in front of it).
 */
export function xdpContext(frameSize: number, ingressIfindex: number, rxQueue = 0): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(frameSize, 4);
  b.writeUInt32LE(ingressIfindex, 12);
  b.writeUInt32LE(rxQueue, 16);
  return b;
}
