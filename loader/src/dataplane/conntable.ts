// The connection table as the control plane sees it: an array of buckets of CONN_WAYS records (struct conn_bucket),
// a flow's record in one of the two buckets its 5-tuple hash names (conn_bucket1/2 in bpf/hash.h).
import { RawMap, TypedMap } from '../libbpf';
import { u32 } from '../libbpf/codec';
import { connBucket, connKey, ConnBucket, ConnKey, ConnValue, CONN_WAYS } from './layout';
import { addressWords, connBuckets, connCheck, flowHashWords } from './flowhash';

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
  private hashOf(key: ConnKey): number {
    const words = (a: Buffer) => addressWords(key.family === 4 ? a.subarray(0, 4) : a);
    // The ports word as the program loads it: bytes 32..35 of the key.
    const ports = connKey.toBuffer(key).readUInt32LE(32);
    return flowHashWords(this.seed(), words(key.src), words(key.dst), ports, false);
  }

  /** The two buckets a flow's record may sit in. */
  bucketsOf(key: ConnKey): [number, number] {
    return connBuckets(this.hashOf(key), this.seed(), this.raw.info.maxEntries);
  }

  /** Whether a record is whole, as the program tells (a record two writes mixed is no record). */
  private whole(e: ConnBucket['way'][number]): boolean {
    return e.key.family !== 0 && e.check === connCheck(this.hashOf(e.key), e.value.backend, e.value.gen, e.value.service, this.seed());
  }

  /** A flow's record, whatever its age: the program decides whether it still binds. */
  lookup(key: ConnKey): ConnValue | undefined {
    const want = connKey.toBuffer(key);
    for (const b of new Set(this.bucketsOf(key))) {
      const bucket = this.buckets.lookup(b);
      const hit = bucket?.way.find((e) => e.key.family !== 0 && connKey.toBuffer(e.key).equals(want));
      if (hit) return this.whole(hit) ? hit.value : undefined;
    }
    return undefined;
  }

  /** Every whole record held, in bucket order. */
  all(): [ConnKey, ConnValue][] {
    const out: [ConnKey, ConnValue][] = [];
    for (const [, bucket] of this.buckets.all({ skipZero: true }))
      for (const e of bucket.way) if (this.whole(e)) out.push([e.key, e.value]);
    return out;
  }

  /** Forgets every record (test set-ups; the program refills the table as flows come). */
  clear(): void {
    const { keys, values, count } = this.raw.lookupAll();
    const size = this.raw.valueBytes;
    const used: number[] = [];
    for (let i = 0; i < count; i++) if (values.subarray(i * size, (i + 1) * size).some((b) => b !== 0)) used.push(keys.readUInt32LE(4 * i));
    if (!used.length) return;
    const k = Buffer.alloc(4 * used.length);
    used.forEach((v, i) => k.writeUInt32LE(v, 4 * i));
    this.raw.updateBatch(k, Buffer.alloc(used.length * size));
  }
}
