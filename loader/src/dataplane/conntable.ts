// The connection table as the control plane sees it: an array of buckets of CONN_WAYS records (struct conn_bucket),
// a flow's record in one of the two buckets its 5-tuple hash names (conn_bucket1/2 in bpf/hash.h).
import { RawMap, TypedMap } from '../libbpf';
import { u32 } from '../libbpf/codec';
import { connBucket, connEntry, connKey, ConnBucket, ConnKey, ConnValue, CONN_WAYS, FAMILY } from './layout';
import { addressWords, connBuckets, connCheck, flowHashWords, portsWord } from './flowhash';

export class ConnTable {
  readonly buckets: TypedMap<number, ConnBucket>;

  /** seed: the program's hash_seed, which places records; read when needed (it is known once the LB is loaded). */
  constructor(readonly raw: RawMap, private readonly seed: () => number) {
    this.buckets = new TypedMap(raw, u32, connBucket);
  }

  /** Records the table can hold. */
  get capacity(): number {
    return this.raw.info.maxEntries * CONN_WAYS;
  }

  /** A flow's 5-tuple hash, which places its record and enters its check word. */
  private hashOf(key: ConnKey, seed: number): number {
    const words = (a: Buffer) => addressWords(key.family === FAMILY.XDP_DR_AF_INET ? a.subarray(0, 4) : a);
    return flowHashWords(seed, words(key.src), words(key.dst), portsWord(key.sport, key.dport), false);
  }

  /** The two buckets a flow's record may sit in. */
  bucketsOf(key: ConnKey): [number, number] {
    const seed = this.seed();
    return connBuckets(this.hashOf(key, seed), seed, this.raw.info.maxEntries);
  }

  /** Whether a record is whole, as the program tells (a record two writes mixed is no record). */
  private whole(e: ConnBucket['way'][number], seed: number): boolean {
    return e.key.family !== 0 && e.check === connCheck(this.hashOf(e.key, seed), e.value.backend, e.value.gen, e.value.service, seed);
  }

  /** A flow's record, whatever its age: the program decides whether it still binds. */
  lookup(key: ConnKey): ConnValue | undefined {
    const want = connKey.toBuffer(key);
    for (const b of new Set(this.bucketsOf(key))) {
      const bucket = this.buckets.lookup(b);
      const hit = bucket?.way.find((e) => e.key.family !== 0 && connKey.toBuffer(e.key).equals(want));
      if (hit) return this.whole(hit, this.seed()) ? hit.value : undefined;
    }
    return undefined;
  }

  /** Every whole record held, in bucket order. */
  all(): [ConnKey, ConnValue][] {
    // The seed is read from a map: once, not twice a record. Records are read raw and only those in use decoded:
    // in a table with room most are empty.
    const seed = this.seed();
    const { values, count } = this.raw.lookupAll();
    const out: [ConnKey, ConnValue][] = [];
    for (let at = 0; at < count * connBucket.size; at += connEntry.size) {
      if (values[at + FAMILY_AT] === 0) continue;
      const e = connEntry.decode(values, at);
      if (this.whole(e, seed)) out.push([e.key, e.value]);
    }
    return out;
  }

  /** Forgets every record (test set-ups; the program refills the table as flows come). */
  clear(): void {
    const used = this.buckets.all({ skipZero: true });
    if (used.length) this.buckets.updateBatch(used.map(([i]) => [i, EMPTY_BUCKET] as const));
  }
}

const EMPTY_BUCKET = connBucket.fromBuffer(Buffer.alloc(connBucket.size));
// A record's family byte (0: empty). all() reads a bucket's records end to end, as struct conn_bucket holds them.
const FAMILY_AT = connKey.fields.find((f) => f.name === 'family')!.offset;
