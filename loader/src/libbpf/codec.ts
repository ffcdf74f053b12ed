// Fixed-size binary codecs for map keys and values. Field offsets follow C's alignment rules,
// and a test holds every struct codec against the BTF of the compiled object.
export interface Codec<T> {
  readonly size: number;
  readonly align: number;
  encode(value: T, buf: Buffer, offset: number): void;
  decode(buf: Buffer, offset: number): T;
}

function scalar<T>(size: number, encode: Codec<T>['encode'], decode: Codec<T>['decode']): Codec<T> {
  return { size, align: size, encode, decode };
}

export const u8 = scalar<number>(1, (v, b, o) => void b.writeUInt8(v, o), (b, o) => b.readUInt8(o));
export const u16 = scalar<number>(2, (v, b, o) => void b.writeUInt16LE(v, o), (b, o) => b.readUInt16LE(o));
export const be16 = scalar<number>(2, (v, b, o) => void b.writeUInt16BE(v, o), (b, o) => b.readUInt16BE(o));
export const u32 = scalar<number>(4, (v, b, o) => void b.writeUInt32LE(v >>> 0, o), (b, o) => b.readUInt32LE(o));
export const u64 = scalar<bigint>(8, (v, b, o) => void b.writeBigUInt64LE(v, o), (b, o) => b.readBigUInt64LE(o));

export function bytes(n: number): Codec<Buffer> {
  return {
    size: n,
    align: 1,
    encode(v, b, o) {
      if (v.length !== n) throw new RangeError(`expected ${n} bytes, got ${v.length}`);
      v.copy(b, o);
    },
    decode: (b, o) => Buffer.from(b.subarray(o, o + n)),
  };
}

/** A C array of n elements of one codec. */
export function array<T>(of: Codec<T>, n: number): Codec<T[]> {
  return {
    size: of.size * n,
    align: of.align,
    encode(v, b, o) {
      if (v.length !== n) throw new RangeError(`expected ${n} elements, got ${v.length}`);
      v.forEach((e, i) => of.encode(e, b, o + i * of.size));
    },
    decode: (b, o) => Array.from({ length: n }, (_, i) => of.decode(b, o + i * of.size)),
  };
}

export interface FieldLayout { name: string; offset: number; size: number }

export interface StructCodec<T> extends Codec<T> {
  readonly cName: string;
  readonly fields: readonly FieldLayout[];
  toBuffer(value: T): Buffer;
  fromBuffer(buf: Buffer): T;
}

type FieldSpec = readonly [string, Codec<any>];
type FromSpecs<F extends readonly FieldSpec[]> = { [E in F[number] as E[0]]: E[1] extends Codec<infer V> ? V : never };

export function struct<const F extends readonly FieldSpec[]>(cName: string, specs: F): StructCodec<FromSpecs<F>> {
  let offset = 0;
  let align = 1;
  const placed = specs.map(([name, codec]) => {
    offset = roundUp(offset, codec.align);
    const at = offset;
    offset += codec.size;
    align = Math.max(align, codec.align);
    return { name, codec, offset: at };
  });
  const size = roundUp(offset, align);
  const self: StructCodec<FromSpecs<F>> = {
    cName,
    size,
    align,
    fields: placed.map((p) => ({ name: p.name, offset: p.offset, size: p.codec.size })),
    encode(value, buf, base) {
      for (const p of placed) p.codec.encode((value as Record<string, unknown>)[p.name], buf, base + p.offset);
    },
    decode(buf, base) {
      const out: Record<string, unknown> = {};
      for (const p of placed) out[p.name] = p.codec.decode(buf, base + p.offset);
      return out as FromSpecs<F>;
    },
    toBuffer(value) {
      const b = Buffer.alloc(size);
      self.encode(value, b, 0);
      return b;
    },
    fromBuffer: (buf) => self.decode(buf, 0),
  };
  return self;
}

export function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}
