// Arbitraries of raw protobuf bytes for the wire fuzzers: hand-encoded fields of any wire type
// (so a string can sit where a uint64 is expected, a varint can run past 10 bytes, a length can
// point past the end, a group can be left open), and mutations of valid encodings (bit flips,
// truncation, inserted/overwritten bytes).
import fc from 'fast-check';

export function varint(v: bigint): Buffer {
  const out: number[] = [];
  let x = BigInt.asUintN(64, v);
  do {
    let b = Number(x & 0x7fn);
    x >>= 7n;
    if (x > 0n) b |= 0x80;
    out.push(b);
  } while (x > 0n);
  return Buffer.from(out);
}

export const tag = (field: number, wireType: number): Buffer => varint((BigInt(field) << 3n) | BigInt(wireType & 7));

export type RawField =
  | { field: number; wt: 0; value: bigint; overlong: number; unterminated: boolean }
  | { field: number; wt: 1 | 5; bytes: Uint8Array }
  | { field: number; wt: 2; body: Uint8Array; lengthDelta: number }
  | { field: number; wt: 3 | 4 | 6 | 7 };

export function encodeField(f: RawField): Buffer {
  const t = tag(f.field, f.wt);
  switch (f.wt) {
    case 0: {
      if (f.unterminated) return Buffer.concat([t, Buffer.alloc(Math.max(1, f.overlong), 0xff)]); // continuation bit to the end
      if (f.overlong > 0) return Buffer.concat([t, Buffer.alloc(10 + f.overlong, 0x80), Buffer.from([0x01])]); // > 10 bytes
      return Buffer.concat([t, varint(f.value)]);
    }
    case 1:
    case 5:
      return Buffer.concat([t, Buffer.from(f.bytes)]); // possibly short of 8 / 4 bytes
    case 2: {
      const len = BigInt(f.body.length + f.lengthDelta);
      return Buffer.concat([t, varint(len), Buffer.from(f.body)]);
    }
    default:
      return t; // group start/end, or the invalid wire types 6 and 7
  }
}

/** Field numbers: mostly the ones the schema knows (1..17), some unknown, some invalid (0, > 2^29). */
const fieldNo = fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 1, max: 17 }) }, { weight: 1, arbitrary: fc.constantFrom(0, 18, 99, 19000, 2 ** 29 - 1, 2 ** 29, 2 ** 31) });

const lenBody = (nested: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> =>
  fc.oneof(
    { weight: 3, arbitrary: fc.uint8Array({ maxLength: 64 }) },
    { weight: 2, arbitrary: fc.string({ maxLength: 40 }).map((s) => new Uint8Array(Buffer.from(s, 'utf8'))) },
    { weight: 1, arbitrary: fc.constantFrom(new Uint8Array([0xc3, 0x28]), new Uint8Array([0xff, 0xfe, 0xfd]), new Uint8Array(Buffer.alloc(70_000, 0x41))) }, // invalid UTF-8, a long string
    { weight: 3, arbitrary: nested },
  );

function rawFieldArb(nested: fc.Arbitrary<Uint8Array>): fc.Arbitrary<RawField> {
  return fc.oneof(
    fc.record({ field: fieldNo, wt: fc.constant(0 as const), value: fc.oneof(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.constantFrom(0n, 1n, (1n << 53n) + 1n, (1n << 63n), (1n << 64n) - 1n)), overlong: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 12 }) }), unterminated: fc.oneof({ weight: 5, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }) }),
    fc.record({ field: fieldNo, wt: fc.constantFrom(1 as const, 5 as const), bytes: fc.uint8Array({ minLength: 0, maxLength: 8 }) }),
    fc.record({ field: fieldNo, wt: fc.constant(2 as const), body: lenBody(nested), lengthDelta: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -3, max: 1 << 20 }) }) }),
    fc.record({ field: fieldNo, wt: fc.constantFrom(3 as const, 4 as const, 6 as const, 7 as const) }),
  ) as fc.Arbitrary<RawField>;
}

/** A message made of 0..n hand-encoded fields (one level of nesting inside length-delimited fields). */
export function protoGarbage(maxFields = 8): fc.Arbitrary<Buffer> {
  const inner = fc.array(rawFieldArb(fc.uint8Array({ maxLength: 32 })), { maxLength: 6 }).map((fs) => new Uint8Array(Buffer.concat(fs.map(encodeField))));
  return fc.array(rawFieldArb(inner), { maxLength: maxFields }).map((fs) => Buffer.concat(fs.map(encodeField)));
}

export type Mutation = { op: 'flip'; at: number; bit: number } | { op: 'truncate'; at: number } | { op: 'insert'; at: number; bytes: Uint8Array } | { op: 'overwrite'; at: number; bytes: Uint8Array };

export const mutations: fc.Arbitrary<Mutation[]> = fc.array(
  fc.oneof(
    { weight: 4, arbitrary: fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('overwrite' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 4 }) }) },
  ),
  { minLength: 1, maxLength: 4 },
);

export function mutate(buf: Buffer, ms: Mutation[]): Buffer {
  let b = Buffer.from(buf);
  for (const m of ms) {
    if (b.length === 0) break;
    const at = m.at % b.length;
    if (m.op === 'flip') b[at] ^= 1 << m.bit;
    else if (m.op === 'truncate') b = b.subarray(0, at);
    else if (m.op === 'insert') b = Buffer.concat([b.subarray(0, at), Buffer.from(m.bytes), b.subarray(at)]);
    else Buffer.from(m.bytes).copy(b, at);
  }
  return b;
}
