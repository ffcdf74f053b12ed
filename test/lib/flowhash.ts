// An independent model of the data path's flow hash (bpf/hash.h, flow_hash in bpf/xdp_dr.bpf.c), used as a test
// oracle: the packet tests predict the backend of each flow with it and compare with what the program chose.
import { ipToBytes } from '../../loader/src/packet';

const rotl = (x: number, r: number) => ((x << r) | (x >>> (32 - r))) >>> 0;

function mixWord(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51) >>> 0;
  k = rotl(k, 15);
  k = Math.imul(k, 0x1b873593) >>> 0;
  h = (h ^ k) >>> 0;
  h = rotl(h, 13);
  return (Math.imul(h, 5) + 0xe6546b64) >>> 0;
}

function finish(h: number, len: number): number {
  h = (h ^ len) >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h = (h ^ (h >>> 13)) >>> 0;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

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
  let h = seed >>> 0;
  for (let i = 0; i < s.length; i++) {
    h = mixWord(h, s[i]);
    h = mixWord(h, d[i]);
  }
  let len = s.length === 1 ? 8 : 32;
  if (!l3Only) {
    // Ports are loaded as network-order 16-bit values and combined as (sport << 16) | dport on a little-endian CPU.
    const swap = (p: number) => ((p & 0xff) << 8) | (p >>> 8);
    h = mixWord(h, ((swap(f.sport) << 16) | swap(f.dport)) >>> 0);
    h = mixWord(h, f.proto);
    len += 8;
  }
  return finish(h, len);
}

/** The table slot of a flow hash: hash * M / 2^32 (bpf/xdp_dr.bpf.c maglev_pick). */
export function maglevSlot(hash: number, size: number): number {
  return Number((BigInt(hash >>> 0) * BigInt(size)) >> 32n);
}
