// The data path's flow hash (bpf/hash.h, flow_hash in bpf/xdp_dr.bpf.c) computed again here: the control plane
// finds connection records with it, and the packet tests predict each flow's backend with it and hold the program
// to that.
import { ipToBytes } from '../packet';

const M64 = (1n << 64n) - 1n;
const K = [0x9e3779b97f4a7c15n, 0xc2b2ae3d27d4eb4fn, 0x165667b19e3779f9n, 0x27d4eb2f165667c5n];
const K_PORTS = 0xff51afd7ed558ccdn;

const hashWord = (w: bigint, seed: bigint, k: bigint) => ((w ^ seed) * k) & M64;
const seed64 = (seed: number) => BigInt(seed >>> 0) * 0x100000001n;
const pair = (lo: number, hi: number) => BigInt(lo >>> 0) | (BigInt(hi >>> 0) << 32n);

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
  const s64 = seed64(seed);
  let h: bigint;
  if (src.length === 1) {
    h = hashWord(pair(src[0], l3Only ? dst[0] : ports), s64, K[0]);
  } else {
    h = hashWord(pair(src[0], src[1]), s64, K[0]) + hashWord(pair(src[2], src[3]), s64, K[1]);
    h += l3Only
      ? hashWord(pair(dst[0], dst[1]), s64, K[2]) + hashWord(pair(dst[2], dst[3]), s64, K[3])
      : hashWord(BigInt(ports >>> 0), s64, K_PORTS);
  }
  return Number(((h & M64) >> 32n) & 0xffffffffn);
}

export interface FlowTuple { src: string; dst: string; sport: number; dport: number; proto: number }

export function flowHash(seed: number, f: FlowTuple, l3Only: boolean): number {
  return flowHashWords(seed, addressWords(ipToBytes(f.src)), addressWords(ipToBytes(f.dst)), portsWord(f.sport, f.dport), l3Only);
}

/** The table slot of a flow hash: hash * M / 2^32 (bpf/xdp_dr.bpf.c maglev_pick). */
export function maglevSlot(hash: number, size: number): number {
  return Number((BigInt(hash >>> 0) * BigInt(size)) >> 32n);
}

/** A flow's second bucket lies among this many around its first (one 4 KB page of buckets): CONN_GROUP_BUCKETS. */
export const CONN_GROUP_BUCKETS = 64;

/** The two buckets, out of n, that may hold the record of a flow with 5-tuple hash h (conn_bucket1/2, bpf/hash.h). */
export function connBuckets(h: number, seed: number, n: number): [number, number] {
  const first = Number((BigInt(h >>> 0) * BigInt(n)) >> 32n);
  const d = 1 + Number(((hashWord(BigInt(h >>> 0), seed64(seed), K[3]) >> 32n) * BigInt(CONN_GROUP_BUCKETS - 1)) >> 32n);
  return [first, ((first ^ d) >>> 0) % n];
}

/** The check word of a connection record (conn_check, bpf/hash.h): h is the record's 5-tuple hash. */
export function connCheck(h: number, backend: number, gen: number, service: number, seed: number): number {
  const s64 = seed64(seed);
  const sum = hashWord(pair(backend, gen), s64, K[1]) + hashWord(pair(service, h), s64, K[2]);
  return Number(((sum & M64) >> 32n) & 0xffffffffn);
}
