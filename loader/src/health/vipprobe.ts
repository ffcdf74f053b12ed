// The `target: vip` probe: a TCP SYN to VIP:port sent straight to one real server's MAC, as the load balancer
// forwards client packets, so that it proves this real server accepts connections on the VIP. The load balancer
// holds the VIP itself, so no ordinary socket can send there; the SYN goes out through a packet socket on the
// load balancer's interface, from its own address, and the answer (SYN-ACK: up; RST: refused) comes back to that
// address like any reply. The kernel then resets the half-open connection, since no socket of its own made it.
import { randomInt } from 'node:crypto';
import { fn } from '../libbpf/ffi';
import { buildFrame, ipToBytes, parseFrame, TCP_FLAGS } from '../packet';
import type { ProbeResult } from './probes';

export interface VipRoute {
  vip: string;
  /** Load balancer interface, its MAC and an address of its own (not the VIP) in the VIP's family. */
  ifindex: number;
  lbMac: string;
  source: string;
  /** The real server's MAC: where the SYN goes. */
  realMac: string;
}

const AF_PACKET = 17;
const SOCK_RAW = 3;
const SOL_SOCKET = 1;
const SO_RCVTIMEO = 20;
const ETH_P_ALL = 0x0003;

function sockaddrLl(ifindex: number): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt16LE(AF_PACKET, 0);
  b.writeUInt16BE(ETH_P_ALL, 2);
  b.writeInt32LE(ifindex, 4);
  return b;
}

/** One SYN, then frames until its answer or the timeout; runs the blocking receive off the event loop. */
export async function vipSynProbe(route: VipRoute, port: number, timeoutMs: number): Promise<ProbeResult> {
  const t0 = Date.now();
  const done = (ok: boolean, detail: string): ProbeResult => ({ ok, durationMs: Date.now() - t0, detail });
  const fd = fn.socket(AF_PACKET, SOCK_RAW, ((ETH_P_ALL & 0xff) << 8) | (ETH_P_ALL >> 8));
  if (fd < 0) return done(false, 'cannot open a packet socket (needs CAP_NET_RAW)');
  try {
    if (fn.bind(fd, sockaddrLl(route.ifindex), 20) < 0) return done(false, `cannot bind a packet socket to ifindex ${route.ifindex}`);
    const sport = randomInt(49152, 65535);
    const syn = buildFrame({
      srcMac: route.lbMac, dstMac: route.realMac, src: route.source, dst: route.vip, sport, dport: port,
      proto: 'tcp', tcpFlags: TCP_FLAGS.SYN, seq: randomInt(0, 2 ** 32 - 1),
    });
    if (Number(fn.send(fd, syn, syn.length, 0)) !== syn.length) return done(false, 'sending the SYN failed');
    const vip = ipToBytes(route.vip);
    const buf = Buffer.alloc(2048);
    for (;;) {
      const left = timeoutMs - (Date.now() - t0);
      if (left <= 0) return done(false, `timed out after ${timeoutMs} ms waiting for a SYN-ACK from the VIP`);
      const tv = Buffer.alloc(16);
      tv.writeBigInt64LE(BigInt(Math.floor(left / 1000)), 0);
      tv.writeBigInt64LE(BigInt((left % 1000) * 1000), 8);
      fn.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16);
      const n = Number(await new Promise<number>((resolve) => fn.recv.async(fd, buf, buf.length, 0, (_e: unknown, r: number) => resolve(r))));
      if (n <= 0) continue; // timed out or interrupted: the loop checks the clock
      const frame = buf.subarray(0, n);
      const f = parseFrame(frame);
      if (f.proto !== 6 || f.sport !== port || f.dport !== sport || !f.src || !ipToBytes(f.src).equals(vip) || f.fragment) continue;
      // The TCP header follows the IP header (no IPv6 extension headers in a reply like this one).
      const l4 = f.l3Offset + (f.version === 4 ? (frame[f.l3Offset] & 0xf) * 4 : 40);
      const flags = frame[l4 + 13] ?? 0;
      if ((flags & (TCP_FLAGS.SYN | TCP_FLAGS.ACK)) === (TCP_FLAGS.SYN | TCP_FLAGS.ACK)) return done(true, 'SYN-ACK from the VIP');
      if (flags & TCP_FLAGS.RST) return done(false, 'connection refused on the VIP');
    }
  } finally {
    fn.close(fd);
  }
}
