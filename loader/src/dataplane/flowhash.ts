// The data path's flow hash (bpf/hash.h, flow_hash in bpf/xdp_dr.bpf.c) computed again here: the control plane
// finds connection records with it, and the packet tests predict each flow's backend with it and hold the program
// to that.
import { ipToBytes } from '../packet';

// 64-bit words as [low, high] pairs of unsigned 32-bit Numbers: BigInt made reading a large connection table
// (`list -c`) take seconds, most of it in these multiplies.
type U64 = [number, number];

const K: U64[] = [
  [0x7f4a7c15, 0x9e3779b9], [0x27d4eb4f, 0xc2b2ae3d], [0x9e3779f9, 0x165667b1], [0x165667c5, 0x27d4eb2f],
];
const K_PORTS: U64 = [0xed558ccd, 0xff51afd7];
const TWO32 = 2 ** 32;

/** a * b for unsigned 32-bit a and b, exactly, as [low, high]: 16-bit partial products stay within a double's 53 bits. */
function mul32(a: number, b: number): U64 {
  const a0 = a & 0xffff, a1 = a >>> 16, b0 = b & 0xffff, b1 = b >>> 16;
  const p0 = a0 * b0;
  const mid = a1 * b0 + a0 * b1 + Math.floor(p0 / 0x10000);
  const high = a1 * b1 + Math.floor(mid / 0x10000);
  return [((mid % 0x10000) * 0x10000 + (p0 % 0x10000)) >>> 0, high >>> 0];
}

/** hash_word (bpf/hash.h): (w ^ seed) * k, modulo 2^64. */
function hashWord(w: U64, seed: number, k: U64): U64 {
  const lo = (w[0] ^ seed) >>> 0, hi = (w[1] ^ seed) >>> 0;
  const p = mul32(lo, k[0]);
  return [p[0], (p[1] + Math.imul(hi, k[0]) + Math.imul(lo, k[1])) >>> 0];
}

/** The high 32 bits of the sum, modulo 2^64, of 64-bit words. */
function highOfSum(...xs: U64[]): number {
  let lo = 0, hi = 0;
  for (const x of xs) {
    lo += x[0];
    hi += x[1];
  }
  return (hi + Math.floor(lo / TWO32)) >>> 0;
}

/** x * n / 2^32 for unsigned 32-bit x and n: multiply-shift scaling of a hash to [0, n). */
const scale = (x: number, n: number) => mul32(x >>> 0, n >>> 0)[1];

/** An address as the program loads it: little-endian 32-bit words of the network-order bytes (1 or 4 words). */
export function addressWords(addr: Buffer): number[] {
  const out: number[] = [];
  for (let i = 0; i < addr.length; i += 4) out.push(addr.readUInt32LE(i));
  return out;
}

/** Both ports as the program loads them: one little-endian word of the two network-order values, source first. */
export function portsWord(sport: number, dport: number): number {
  const b = Buffer.alloc(4);
  b.writeUInt16BE(sport, 0);
  b.writeUInt16BE(dport, 2);
  return b.readUInt32LE(0);
}

/** flow_hash_v4 / flow_hash_v6 on words (src and dst of one length: 1 word for IPv4, 4 for IPv6). */
export function flowHashWords(seed: number, src: number[], dst: number[], ports: number, l3Only: boolean): number {
  if (src.length === 1) return hashWord([src[0], l3Only ? dst[0] : ports], seed, K[0])[1];
  const terms = [hashWord([src[0], src[1]], seed, K[0]), hashWord([src[2], src[3]], seed, K[1])];
  if (l3Only) terms.push(hashWord([dst[0], dst[1]], seed, K[2]), hashWord([dst[2], dst[3]], seed, K[3]));
  else terms.push(hashWord([ports, 0], seed, K_PORTS));
  return highOfSum(...terms);
}

export interface FlowTuple { src: string; dst: string; sport: number; dport: number; proto: number }

export function flowHash(seed: number, f: FlowTuple, l3Only: boolean): number {
  return flowHashWords(seed, addressWords(ipToBytes(f.src)), addressWords(ipToBytes(f.dst)), portsWord(f.sport, f.dport), l3Only);
}

/** The table slot of a flow hash: hash * M / 2^32 (bpf/xdp_dr.bpf.c maglev_pick). */
export function maglevSlot(hash: number, size: number): number {
  return scale(hash, size);
}

/** A flow's second bucket lies among this many around its first (one 4 KB page of buckets): CONN_GROUP_BUCKETS,
 * held to the program's by test/bpf/layout.test.ts. */
export const CONN_GROUP_BUCKETS = 16;

/** The two buckets, out of n, that may hold the record of a flow with 5-tuple hash h (conn_bucket1/2, bpf/hash.h). */
export function connBuckets(h: number, seed: number, n: number): [number, number] {
  const first = scale(h, n);
  const d = 1 + scale(hashWord([h >>> 0, 0], seed, K[3])[1], CONN_GROUP_BUCKETS - 1);
  return [first, ((first ^ d) >>> 0) % n];
}

/** The check word of a connection record (conn_check, bpf/hash.h): h is the record's 5-tuple hash. */
export function connCheck(h: number, backend: number, gen: number, service: number, seed: number): number {
  return highOfSum(hashWord([backend >>> 0, gen >>> 0], seed, K[1]), hashWord([service >>> 0, h >>> 0], seed, K[2]));
}
