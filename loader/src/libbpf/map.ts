// Maps by file descriptor: a raw layer that checks every buffer against the kernel's key/value sizes,
// and typed layers over codecs. lookup() answers undefined for "no such key" and throws for anything else.
import { fn, koffi, BatchOpts, MAP_TYPE, BPF_ANY } from './ffi';
import { check } from './errors';
import { Codec, roundUp } from './codec';

const ENOENT = 2;
const MAP_INFO_SIZE = 88;
const PERCPU_TYPES = new Set<number>([MAP_TYPE.PERCPU_ARRAY, MAP_TYPE.PERCPU_HASH, MAP_TYPE.LRU_PERCPU_HASH]);

export interface MapInfo {
  type: number;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  name: string;
  /** BTF object the map was created with (0: none), e.g. to read the program's enums back from the kernel. */
  btfId: number;
}

export function mapInfoByFd(fd: number, what: string): MapInfo {
  const buf = Buffer.alloc(MAP_INFO_SIZE);
  const len = [MAP_INFO_SIZE];
  check(fn.bpf_obj_get_info_by_fd(fd, buf, len), 'bpf_obj_get_info_by_fd', what);
  return {
    type: buf.readUInt32LE(0),
    id: buf.readUInt32LE(4),
    keySize: buf.readUInt32LE(8),
    valueSize: buf.readUInt32LE(12),
    maxEntries: buf.readUInt32LE(16),
    flags: buf.readUInt32LE(20),
    name: buf.subarray(24, 40).toString('latin1').replace(/\0.*$/s, ''),
    btfId: buf.readUInt32LE(64),
  };
}

let cachedCpus = 0;
export function possibleCpus(): number {
  if (!cachedCpus) cachedCpus = check(fn.libbpf_num_possible_cpus(), 'libbpf_num_possible_cpus');
  return cachedCpus;
}

export class RawMap {
  readonly info: MapInfo;
  /** Bytes one value occupies in user space: per-CPU maps hand out one 8-byte-aligned slot per possible CPU. */
  readonly valueBytes: number;
  readonly perCpu: boolean;
  private closed = false;

  constructor(readonly fd: number, readonly label: string, private readonly ownsFd = true) {
    this.info = mapInfoByFd(fd, label);
    this.perCpu = PERCPU_TYPES.has(this.info.type);
    this.valueBytes = this.perCpu ? roundUp(this.info.valueSize, 8) * possibleCpus() : this.info.valueSize;
  }

  /** Opens a pinned map, e.g. /sys/fs/bpf/xdp-dr/eth0/services. */
  static fromPin(path: string, label = path): RawMap {
    const fd = check(fn.bpf_obj_get(path), 'bpf_obj_get', `${label} at ${path}`);
    return new RawMap(fd, label);
  }

  static fromId(id: number, label: string): RawMap {
    const fd = check(fn.bpf_map_get_fd_by_id(id), 'bpf_map_get_fd_by_id', `${label} (map id ${id})`);
    return new RawMap(fd, label);
  }

  close(): void {
    if (!this.closed && this.ownsFd) fn.close(this.fd);
    this.closed = true;
  }

  private what(): string {
    return `map '${this.label}'`;
  }

  private checkKey(key: Buffer): void {
    if (key.length !== this.info.keySize)
      throw new RangeError(`${this.what()}: key is ${key.length} bytes, the kernel map takes ${this.info.keySize}`);
  }

  private checkValue(value: Buffer): void {
    if (value.length !== this.valueBytes)
      throw new RangeError(`${this.what()}: value is ${value.length} bytes, the kernel map takes ${this.valueBytes}`);
  }

  lookup(key: Buffer): Buffer | undefined {
    this.checkKey(key);
    const out = Buffer.alloc(this.valueBytes);
    const ret = fn.bpf_map_lookup_elem(this.fd, key, out);
    if (ret === -ENOENT) return undefined;
    check(ret, 'bpf_map_lookup_elem', this.what());
    return out;
  }

  update(key: Buffer, value: Buffer, flags = BPF_ANY): void {
    this.checkKey(key);
    this.checkValue(value);
    check(fn.bpf_map_update_elem(this.fd, key, value, flags), 'bpf_map_update_elem', this.what());
  }

  /** Returns false when the key was not there. */
  delete(key: Buffer): boolean {
    this.checkKey(key);
    const ret = fn.bpf_map_delete_elem(this.fd, key);
    if (ret === -ENOENT) return false;
    check(ret, 'bpf_map_delete_elem', this.what());
    return true;
  }

  *keys(): Generator<Buffer> {
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(this.info.keySize);
      const ret = fn.bpf_map_get_next_key(this.fd, prev, next);
      if (ret === -ENOENT) return;
      check(ret, 'bpf_map_get_next_key', this.what());
      yield next;
      prev = next;
    }
  }

  /** Writes count entries laid end to end in keys and values, in one syscall. */
  updateBatch(keys: Buffer, values: Buffer, flags = BPF_ANY): void {
    const count = keys.length / this.info.keySize;
    if (!Number.isInteger(count) || values.length !== count * this.valueBytes)
      throw new RangeError(`${this.what()}: batch of ${keys.length} key bytes and ${values.length} value bytes does not match the map's sizes`);
    if (count === 0) return;
    const n = [count];
    const ret = fn.bpf_map_update_batch(this.fd, keys, values, n, { sz: koffi.sizeof(BatchOpts), elem_flags: flags, flags: 0 });
    check(ret, 'bpf_map_update_batch', `${this.what()}, ${n[0]} of ${count} entries written`);
  }

  /** Deletes count keys laid end to end, in one syscall; every key must exist. */
  deleteBatch(keys: Buffer): void {
    const count = keys.length / this.info.keySize;
    if (!Number.isInteger(count)) throw new RangeError(`${this.what()}: ${keys.length} key bytes is not a whole number of keys`);
    if (count === 0) return;
    const n = [count];
    const ret = fn.bpf_map_delete_batch(this.fd, keys, n, { sz: koffi.sizeof(BatchOpts), elem_flags: 0, flags: 0 });
    check(ret, 'bpf_map_delete_batch', `${this.what()}, ${n[0]} of ${count} keys deleted`);
  }

  /**
   * Reads indexes first..first+count-1 of an array map with one batch call: the batch cursor of an array is the
   * last index read, so a read that starts at `first` passes first - 1.
   */
  lookupRange(first: number, count: number): { keys: Buffer; values: Buffer; count: number } {
    let inBatch: Buffer | null = null;
    if (first > 0) {
      inBatch = Buffer.alloc(Math.max(8, this.info.keySize));
      inBatch.writeUInt32LE(first - 1, 0);
    }
    const outBatch = Buffer.alloc(Math.max(8, this.info.keySize));
    const keys = Buffer.alloc(count * this.info.keySize);
    const values = Buffer.alloc(count * this.valueBytes);
    const n = [count];
    const ret = fn.bpf_map_lookup_batch(this.fd, inBatch, outBatch, keys, values, n, { sz: koffi.sizeof(BatchOpts), elem_flags: 0, flags: 0 });
    if (ret < 0 && ret !== -ENOENT) check(ret, 'bpf_map_lookup_batch', this.what());
    return { keys: keys.subarray(0, n[0] * this.info.keySize), values: values.subarray(0, n[0] * this.valueBytes), count: n[0] };
  }

  /** Reads the whole map in batches; arrays and hashes alike. */
  lookupAll(chunk = 4096): { keys: Buffer; values: Buffer; count: number } {
    const ks: Buffer[] = [];
    const vs: Buffer[] = [];
    let total = 0;
    let inBatch: Buffer | null = null;
    // The batch cursor is opaque: 4 bytes for arrays, key-sized for hashes (8 covers both here).
    const outBatch = Buffer.alloc(Math.max(8, this.info.keySize));
    for (;;) {
      const keys = Buffer.alloc(chunk * this.info.keySize);
      const values = Buffer.alloc(chunk * this.valueBytes);
      const n = [chunk];
      const ret = fn.bpf_map_lookup_batch(this.fd, inBatch, outBatch, keys, values, n, { sz: koffi.sizeof(BatchOpts), elem_flags: 0, flags: 0 });
      if (ret < 0 && ret !== -ENOENT) check(ret, 'bpf_map_lookup_batch', this.what());
      ks.push(keys.subarray(0, n[0] * this.info.keySize));
      vs.push(values.subarray(0, n[0] * this.valueBytes));
      total += n[0];
      if (ret === -ENOENT) break;
      inBatch = Buffer.from(outBatch);
    }
    return { keys: Buffer.concat(ks), values: Buffer.concat(vs), count: total };
  }
}

/** A plain byte loop: most entries of an array map are unused, and a Buffer.compare call per entry costs more. */
function allZero(buf: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (buf[i] !== 0) return false;
  return true;
}

/** A map seen through codecs; construction fails when the codecs disagree with the kernel's sizes. */
export class TypedMap<K, V> {
  constructor(readonly raw: RawMap, readonly key: Codec<K>, readonly value: Codec<V>) {
    const valueSize = raw.info.valueSize;
    if (key.size !== raw.info.keySize || value.size !== valueSize)
      throw new Error(
        `map '${raw.label}' holds ${raw.info.keySize}-byte keys and ${valueSize}-byte values but this build expects ` +
          `${key.size} and ${value.size}: the running program comes from a different build; detach and attach again ` +
          `(xdp-dr detach <iface> && xdp-dr attach <iface>)`,
      );
  }

  encodeKey(k: K): Buffer {
    const b = Buffer.alloc(this.key.size);
    this.key.encode(k, b, 0);
    return b;
  }

  encodeValue(v: V): Buffer {
    const b = Buffer.alloc(this.value.size);
    this.value.encode(v, b, 0);
    return b;
  }

  lookup(k: K): V | undefined {
    const out = this.raw.lookup(this.encodeKey(k));
    return out && this.value.decode(out, 0);
  }

  update(k: K, v: V, flags = BPF_ANY): void {
    this.raw.update(this.encodeKey(k), this.encodeValue(v), flags);
  }

  delete(k: K): boolean {
    return this.raw.delete(this.encodeKey(k));
  }

  *entries(): Generator<[K, V]> {
    for (const kb of this.raw.keys()) {
      const vb = this.raw.lookup(kb);
      if (vb) yield [this.key.decode(kb, 0), this.value.decode(vb, 0)];
    }
  }

  /**
   * Every entry, read in batches (a few syscalls instead of two per key). Arrays have every index; skipZero
   * leaves out the all-zero values (unused slots) before they are decoded; first and count read only that range
   * of an array.
   */
  all(opts: { skipZero?: boolean; first?: number; count?: number } = {}): [K, V][] {
    const { keys, values, count } =
      opts.count === undefined ? this.raw.lookupAll() : this.raw.lookupRange(opts.first ?? 0, opts.count);
    const out: [K, V][] = [];
    const size = this.raw.valueBytes;
    for (let i = 0; i < count; i++) {
      if (opts.skipZero && allZero(values, i * size, (i + 1) * size)) continue;
      out.push([this.key.decode(keys, i * this.key.size), this.value.decode(values, i * size)]);
    }
    return out;
  }

  /**
   * Writes indexes first..first+count-1 of an array map in one batch: the value get() gives, or zero. Encodes only
   * the values that exist, so rewriting a mostly empty range costs little more than the syscall.
   */
  updateRange(first: number, count: number, get: (index: number) => V | undefined): void {
    const keys = Buffer.alloc(4 * count);
    const values = Buffer.alloc(count * this.value.size);
    for (let i = 0; i < count; i++) {
      keys.writeUInt32LE(first + i, 4 * i);
      const v = get(first + i);
      if (v !== undefined) this.value.encode(v, values, i * this.value.size);
    }
    this.raw.updateBatch(keys, values);
  }

  deleteBatch(keys: readonly K[]): void {
    const buf = Buffer.alloc(keys.length * this.key.size);
    keys.forEach((k, i) => this.key.encode(k, buf, i * this.key.size));
    this.raw.deleteBatch(buf);
  }

  updateBatch(entries: readonly (readonly [K, V])[], flags = BPF_ANY): void {
    const keys = Buffer.alloc(entries.length * this.key.size);
    const values = Buffer.alloc(entries.length * this.value.size);
    entries.forEach(([k, v], i) => {
      this.key.encode(k, keys, i * this.key.size);
      this.value.encode(v, values, i * this.value.size);
    });
    this.raw.updateBatch(keys, values, flags);
  }
}

/** A per-CPU map: one value per possible CPU, each in an 8-byte-aligned slot. */
export class PerCpuMap<K, V> {
  private readonly stride: number;

  constructor(readonly raw: RawMap, readonly key: Codec<K>, readonly value: Codec<V>) {
    if (!raw.perCpu) throw new Error(`map '${raw.label}' is not a per-CPU map`);
    if (key.size !== raw.info.keySize || value.size !== raw.info.valueSize)
      throw new Error(
        `map '${raw.label}' holds ${raw.info.keySize}-byte keys and ${raw.info.valueSize}-byte values but this build ` +
          `expects ${key.size} and ${value.size}: the running program comes from a different build`,
      );
    this.stride = roundUp(value.size, 8);
  }

  private split(buf: Buffer, base = 0): V[] {
    const cpus = possibleCpus();
    const out: V[] = [];
    for (let c = 0; c < cpus; c++) out.push(this.value.decode(buf, base + c * this.stride));
    return out;
  }

  lookup(k: K): V[] | undefined {
    const kb = Buffer.alloc(this.key.size);
    this.key.encode(k, kb, 0);
    const out = this.raw.lookup(kb);
    return out && this.split(out);
  }

  /** All entries at once (one batch syscall per few thousand keys). */
  all(): Map<K, V[]> {
    const { keys, values, count } = this.raw.lookupAll();
    const m = new Map<K, V[]>();
    for (let i = 0; i < count; i++)
      m.set(this.key.decode(keys, i * this.key.size), this.split(values, i * this.raw.valueBytes));
    return m;
  }

  /** Sets the same value on every CPU (e.g. zero to reset). */
  fill(k: K, v: V): void {
    const kb = Buffer.alloc(this.key.size);
    this.key.encode(k, kb, 0);
    const vb = Buffer.alloc(this.raw.valueBytes);
    for (let c = 0; c < possibleCpus(); c++) this.value.encode(v, vb, c * this.stride);
    this.raw.update(kb, vb);
  }
}
