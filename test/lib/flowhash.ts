// An independent model of the data path's flow hash (bpf/hash.h, flow_hash in bpf/xdp_dr.bpf.c), used as a test
// oracle: the packet tests predict the backend of each flow with it and compare with what the program chose.
import { ipToBytes } from '../../loader/src/packet';

const M64 = (1n << 64n) - 1n;
const K = [0x9e3779b97f4a7c15n, 0xc2b2ae3d27d4eb4fn, 0x165667b19e3779f9n, 0x27d4eb2f165667c5n];
const K_PORTS = 0xff51afd7ed558ccdn;

const hashWord = (w: bigint, seed: bigint, k: bigint) => ((w ^ seed) * k) & M64;

// The program reads addresses as they sit in memory: a little-endian load of network-order bytes.
function words(ip: string): number[] {
  const b = ipToBytes(ip);
  const out: number[] = [];
  for (let i = 0; i < b.length; i += 4) out.push(b.readUInt32LE(i));
  return out;
}

export interface FlowTuple { src: string; dst: string; sport: number; dport: number; proto: number }

export function flowHash(seed: number, f: FlowTuple, l3Only: boolean): number {
  const s = words(f.src);
  const d = words(f.dst);
  const seed64 = BigInt(seed >>> 0) * 0x100000001n;
  const pair = (lo: number, hi: number) => BigInt(lo) | (BigInt(hi) << 32n);
  // The ports as they sit in memory: network-order 16-bit values, sport first, read as one little-endian word.
  const swap = (p: number) => ((p & 0xff) << 8) | (p >>> 8);
  const ports = (swap(f.sport) | (swap(f.dport) << 16)) >>> 0;
  let h: bigint;
  if (s.length === 1) {
    h = hashWord(pair(s[0], l3Only ? d[0] : ports), seed64, K[0]);
  } else {
    h = hashWord(pair(s[0], s[1]), seed64, K[0]) + hashWord(pair(s[2], s[3]), seed64, K[1]);
    h += l3Only
      ? hashWord(pair(d[0], d[1]), seed64, K[2]) + hashWord(pair(d[2], d[3]), seed64, K[3])
      : hashWord(BigInt(ports), seed64, K_PORTS);
  }
  return Number(((h & M64) >> 32n) & 0xffffffffn);
}

/** The table slot of a flow hash: hash * M / 2^32 (bpf/xdp_dr.bpf.c maglev_pick). */
export function maglevSlot(hash: number, size: number): number {
  return Number((BigInt(hash >>> 0) * BigInt(size)) >> 32n);
}
