/**
 * Properties of everything that slices bytes or decodes input: capture alone, the same capture seen end to end
 * through the test layer (the shared engine path), input decoding, and binary stdin through a real `cat`.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as fc from "fast-check"
import { type ExecInput, type Keep, MAX_BYTES_CAP, MAX_TIMEOUT_MS } from "../src/Exec.js"
import { makeCapture } from "../src/internal/capture.js"
import * as NativeRunner from "../src/NativeRunner.js"
import * as NativeRunnerTest from "../src/NativeRunnerTest.js"

/** Bytes cut at arbitrary points (empty chunks included), with a cap anywhere from 0 to past the end. */
const chunkedBytes = fc
  .record({
    bytes: fc.uint8Array({ maxLength: 3000 }),
    cuts: fc.array(fc.nat({ max: 3000 }), { maxLength: 12 }),
    capSeed: fc.nat({ max: 3200 })
  })
  .map(({ bytes, cuts, capSeed }) => {
    const points = [0, ...cuts.map((c) => c % (bytes.length + 1)).sort((a, b) => a - b), bytes.length]
    const chunks = points.slice(1).map((end, i) => bytes.subarray(points[i] ?? 0, end))
    // Bias a third of the caps to the interesting edge: exactly the length, and one either side.
    const cap = capSeed % 3 === 0 ? Math.max(0, bytes.length + (capSeed % 9) / 3 - 1) : capSeed
    return { bytes, chunks, cap }
  })

const prefixOf = (bytes: Uint8Array, cap: number) => Array.from(bytes.subarray(0, Math.min(cap, bytes.length)))

const keeps: ReadonlyArray<Keep> = ["head", "tail", "both"]

/** The reference: all the bytes at once, then the slices the mode keeps. */
const keptOf = (bytes: Uint8Array, cap: number, keep: Keep): Uint8Array => {
  if (bytes.length <= cap) return bytes
  const headLength = keep === "head" ? cap : keep === "tail" ? 0 : Math.floor(cap / 2)
  return Buffer.concat([bytes.subarray(0, headLength), bytes.subarray(bytes.length - (cap - headLength))])
}
const omittedOf = (length: number, cap: number, keep: Keep) =>
  length <= cap
    ? undefined
    : { offset: keep === "head" ? cap : keep === "tail" ? 0 : Math.floor(cap / 2), bytes: length - cap }

/** Pushes `chunks`, checking after each one chosen by `peeks` that the bytes so far match the reference. */
const checkCapture = (
  bytes: Uint8Array,
  chunks: ReadonlyArray<Uint8Array>,
  cap: number,
  keep: Keep,
  peeks: ReadonlyArray<boolean>
) => {
  const capture = makeCapture(cap, keep)
  let seen = 0
  chunks.forEach((chunk, i) => {
    capture.push(chunk)
    seen += chunk.length
    // Looking in the middle assembles the kept bytes early; later pushes must carry on from there.
    if (peeks[i] === true) expect(Buffer.compare(capture.bytes(), keptOf(bytes.subarray(0, seen), cap, keep))).toBe(0)
  })
  const expected = keptOf(bytes, cap, keep)
  expect(Buffer.compare(capture.bytes(), expected)).toBe(0)
  expect(Buffer.compare(capture.bytes(), expected)).toBe(0)
  expect(capture.kept()).toBe(expected.length)
  expect(capture.kept()).toBe(Math.min(cap, bytes.length))
  expect(capture.total()).toBe(bytes.length)
  expect(capture.truncated()).toBe(bytes.length > cap)
  expect(capture.omitted()).toEqual(omittedOf(bytes.length, cap, keep))
  expect(capture.readError()).toBeUndefined()
}

/** Small streams in small chunks, caps biased to 0 and 1 and to both sides of the length. */
const smallCase = fc.record({
  stream: chunkedBytes,
  edgeCap: fc.option(fc.constantFrom(0, 1, 2, 3), { freq: 4 }),
  keep: fc.constantFrom(...keeps),
  peeks: fc.array(fc.boolean(), { maxLength: 13 })
})

/** Deterministic pseudo-random bytes: big streams without generating them byte by byte. */
const noise = (length: number, seed: number): Uint8Array => {
  const bytes = new Uint8Array(length)
  let x = seed >>> 0
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    bytes[i] = x >>> 24
  }
  return bytes
}

/**
 * Streams of up to a few MiB in chunks from 0 to 100 KiB, so long chunks kept as they came, short ones copied into
 * blocks (reused once dropped) and chunks that are views of a larger buffer (copied) all meet; caps odd and even,
 * around a block, or a fraction of the length.
 */
const largeCase = fc
  .record({
    chunks: fc.oneof(
      fc.array(
        fc.record({
          length: fc.oneof(
            fc.nat({ max: 100_000 }),
            fc.nat({ max: 5_000 }),
            fc.nat({ max: 70 }),
            fc.constantFrom(16_383, 16_384, 65_536)
          ),
          view: fc.boolean(),
          peek: fc.boolean()
        }),
        { maxLength: 40, size: "max" }
      ),
      // Only short chunks: the window moves over many blocks.
      fc.array(
        fc.record({ length: fc.nat({ max: 8_000 }), view: fc.boolean(), peek: fc.nat({ max: 20 }).map((n) => n === 0) }),
        { maxLength: 300, size: "max" }
      )
    ),
    seed: fc.nat(),
    cap: fc.oneof(
      fc.constantFrom(0, 1, 2, 3, 65_535, 65_536, 65_537, 131_071),
      fc.double({ min: 0, max: 1.1, noNaN: true }),
      fc.nat({ max: 1_600_000 })
    ),
    keep: fc.constantFrom(...keeps)
  })
  .map(({ chunks, seed, cap, keep }) => {
    const bytes = noise(chunks.reduce((sum, { length }) => sum + length, 0), seed)
    let offset = 0
    return {
      bytes,
      chunks: chunks.map(({ length, view }) => {
        const part = bytes.subarray(offset, (offset += length))
        // As a pipe hands them over (a buffer of its own), or as a view into the whole stream's buffer.
        return view ? part : part.slice()
      }),
      cap: Number.isInteger(cap) ? cap : Math.floor(cap * bytes.length),
      keep,
      peeks: chunks.map(({ peek }) => peek)
    }
  })

describe("capture (src/internal/capture.ts)", () => {
  it("keeps exactly the first cap bytes; truncated iff length > cap; total is the length", () => {
    fc.assert(
      fc.property(chunkedBytes, ({ bytes, chunks, cap }) => {
        const capture = makeCapture(cap)
        for (const chunk of chunks) capture.push(chunk)
        expect(Array.from(capture.bytes())).toEqual(prefixOf(bytes, cap))
        expect(capture.truncated()).toBe(bytes.length > cap)
        expect(capture.total()).toBe(bytes.length)
      }),
      { numRuns: 1000 }
    )
  })

  it("every keep mode keeps what slicing the whole stream keeps (head / tail / head + tail), omitted says where the gap is", () => {
    fc.assert(
      fc.property(smallCase, ({ stream: { bytes, chunks, cap }, edgeCap, keep, peeks }) => {
        checkCapture(bytes, chunks, edgeCap ?? cap, keep, peeks)
      }),
      { numRuns: 3000 }
    )
  })

  it("the same for large streams in chunks around the sizes the tail keeps as they came or copies", () => {
    fc.assert(
      fc.property(largeCase, ({ bytes, chunks, cap, keep, peeks }) => {
        checkCapture(bytes, chunks, cap, keep, peeks)
      }),
      { numRuns: 300 }
    )
  })
})

describe("capture end to end through layerTest (the shared engine path)", () => {
  it("for interleaved stdout/stderr chunks and any caps, the result keeps each stream's first cap bytes", async () => {
    await fc.assert(
      fc.asyncProperty(chunkedBytes, chunkedBytes, fc.array(fc.boolean(), { maxLength: 30 }), async (out, err, order) => {
        // Interleave the two streams' chunks in an arbitrary order, each stream's own order kept.
        const steps: Array<NativeRunnerTest.Step> = []
        let o = 0
        let e = 0
        for (const stdoutFirst of order) {
          const next = stdoutFirst ? out.chunks[o++] : err.chunks[e++]
          if (next !== undefined) steps.push(stdoutFirst ? NativeRunnerTest.stdout(next) : NativeRunnerTest.stderr(next))
        }
        steps.push(...out.chunks.slice(o).map(NativeRunnerTest.stdout), ...err.chunks.slice(e).map(NativeRunnerTest.stderr))
        const result = await Effect.runPromise(
          NativeRunner.exec({ argv: ["emit"], limits: { maxStdoutBytes: out.cap, maxStderrBytes: err.cap } }).pipe(
            Effect.provide(NativeRunnerTest.layerTest([NativeRunnerTest.exact(["emit"], { output: steps })]))
          )
        )
        expect(Array.from(result.stdout)).toEqual(prefixOf(out.bytes, out.cap))
        expect(Array.from(result.stderr)).toEqual(prefixOf(err.bytes, err.cap))
        expect(result).toMatchObject({
          exitCode: 0,
          truncatedStdout: out.bytes.length > out.cap,
          truncatedStderr: err.bytes.length > err.cap,
          stdoutBytes: out.bytes.length,
          stderrBytes: err.bytes.length
        })
        expect(result.audits[0]).toMatchObject({
          stdoutBytes: out.bytes.length,
          truncatedStdout: out.bytes.length > out.cap
        })
      }),
      { numRuns: 200 }
    )
  })
})

// ---------------------------------------------------------------------------------------------------------------
// Input decoding
// ---------------------------------------------------------------------------------------------------------------

const noNul = fc.string({ maxLength: 12 }).filter((s) => !s.includes("\u0000"))
const nonEmptyNoNul = noNul.filter((s) => s.length > 0)
// "__proto__" is rejected on purpose (it cannot round-trip through a plain object); see its corruption below.
const envName = nonEmptyNoNul.filter((s) => !s.includes("=") && s !== "__proto__")
const durationInput = fc.oneof(
  fc.integer({ min: 1, max: 10_000_000 }),
  fc.integer({ min: 1, max: 100_000 }).map((n) => `${n} millis` as const),
  fc.integer({ min: 1, max: 1000 }).map((n) => `${n} seconds` as const)
)

/** Valid exec inputs, optional fields present or absent. */
const validInput: fc.Arbitrary<ExecInput> = fc.record(
  {
    argv: fc.tuple(nonEmptyNoNul, fc.array(noNul, { maxLength: 5 })).map(([program, args]) => [program, ...args]),
    cwd: nonEmptyNoNul,
    env: fc.dictionary(envName, noNul, { maxKeys: 4 }),
    stdin: fc.uint8Array({ maxLength: 64 }),
    limits: fc.record(
      {
        maxStdoutBytes: fc.nat({ max: MAX_BYTES_CAP }),
        maxStderrBytes: fc.nat({ max: MAX_BYTES_CAP }),
        // Whole milliseconds: a fractional timeoutMs is refused (see the invalid cases).
        timeoutMs: fc.integer({ min: 1, max: MAX_TIMEOUT_MS })
      },
      { requiredKeys: [] }
    ),
    timeout: durationInput,
    killGrace: fc.oneof(fc.constant(0), durationInput)
  },
  { requiredKeys: ["argv"] }
)

type Corruption = (input: ExecInput) => unknown
/** Ways to make a valid input invalid, each one on its own enough for a rejection. */
const corruptions: ReadonlyArray<readonly [string, Corruption]> = [
  ["empty argv", (i) => ({ ...i, argv: [] })],
  ["empty program", (i) => ({ ...i, argv: ["", ...i.argv.slice(1)] })],
  ["NUL in argv", (i) => ({ ...i, argv: [...i.argv, "x\u0000y"] })],
  ["argv not strings", (i) => ({ ...i, argv: [...i.argv, 7] })],
  ["argv not an array", (i) => ({ ...i, argv: i.argv.join(" ") })],
  ["missing argv", ({ argv: _argv, ...rest }) => rest],
  ["empty cwd", (i) => ({ ...i, cwd: "" })],
  ["NUL in cwd", (i) => ({ ...i, cwd: "/tmp/\u0000" })],
  ["env name with =", (i) => ({ ...i, env: { ...i.env, "A=B": "v" } })],
  ["empty env name", (i) => ({ ...i, env: { ...i.env, "": "v" } })],
  ["NUL in env value", (i) => ({ ...i, env: { ...i.env, OK: "a\u0000" } })],
  ["negative cap", (i) => ({ ...i, limits: { ...i.limits, maxStdoutBytes: -1 } })],
  ["fractional cap", (i) => ({ ...i, limits: { ...i.limits, maxStderrBytes: 0.5 } })],
  ["cap above 4 GiB", (i) => ({ ...i, limits: { ...i.limits, maxStdoutBytes: MAX_BYTES_CAP + 1 } })],
  ["NaN cap", (i) => ({ ...i, limits: { ...i.limits, maxStdoutBytes: Number.NaN } })],
  ["zero timeoutMs", (i) => ({ ...i, limits: { ...i.limits, timeoutMs: 0 } })],
  ["fractional timeoutMs", (i) => ({ ...i, limits: { ...i.limits, timeoutMs: 1.5 } })],
  ["infinite timeoutMs", (i) => ({ ...i, limits: { ...i.limits, timeoutMs: Number.POSITIVE_INFINITY } })],
  ["timeoutMs too large", (i) => ({ ...i, limits: { ...i.limits, timeoutMs: MAX_TIMEOUT_MS + 1 } })],
  ["zero timeout", (i) => ({ ...i, timeout: 0 })],
  ["negative timeout", (i) => ({ ...i, timeout: -5 })],
  ["nonsense timeout", (i) => ({ ...i, timeout: "soon" })],
  ["negative killGrace", (i) => ({ ...i, killGrace: -1 })],
  ["negative killGrace text", (i) => ({ ...i, killGrace: "-1 millis" })],
  ["env named __proto__", (i) => ({ ...i, env: { ...i.env, ...JSON.parse("{\"__proto__\":\"x\"}") } })],
  ["env value not a string", (i) => ({ ...i, env: { ...i.env, N: 1 } })],
  ["infinite killGrace", (i) => ({ ...i, killGrace: "Infinity" })],
  ["stdin as text", (i) => ({ ...i, stdin: "text" })],
  ["stdin as numbers", (i) => ({ ...i, stdin: [1, 2, 3] })],
  ["unknown property", (i) => ({ ...i, shell: true })],
  ["unknown limit", (i) => ({ ...i, limits: { ...i.limits, maxMemory: 1 } })]
]

/** Inputs that cannot be valid: corrupted valid ones, and arbitrary values that have no `argv` at all. */
const invalidInput: fc.Arbitrary<unknown> = fc.oneof(
  fc.tuple(validInput, fc.constantFrom(...corruptions)).map(([input, [, corrupt]]) => corrupt(input)),
  fc.anything().filter((u) => !(typeof u === "object" && u !== null && "argv" in u))
)

/** Hands exec data the type system cannot vouch for, as a JavaScript or JSON caller would. */
const untrusted = (input: unknown): ExecInput => input as ExecInput

// Answers every call at once; `checkCwd: false` because generated cwds do not exist here.
const acceptAll = NativeRunnerTest.layerTest([NativeRunnerTest.when("anything", () => true, {})], {
  cwd: "/virtual",
  checkCwd: false
})

describe("input decoding", () => {
  it("accepts every valid input: it runs once, recorded with the decoded input", async () => {
    await fc.assert(
      fc.asyncProperty(validInput, async (input) => {
        const { calls, result } = await Effect.runPromise(
          Effect.gen(function*() {
            const result = yield* NativeRunner.exec(input)
            return { result, calls: yield* NativeRunnerTest.calls }
          }).pipe(Effect.provide(acceptAll))
        )
        expect(result.exitCode).toBe(0)
        expect(calls).toHaveLength(1)
        expect(calls[0]?.input).toEqual(input)
        expect(calls[0]?.command.argv).toEqual(input.argv)
      }),
      { numRuns: 200 }
    )
  })

  it("rejects invalid input with InvalidInput, and nothing is spawned", async () => {
    await fc.assert(
      fc.asyncProperty(invalidInput, async (input) => {
        const { calls, exit } = await Effect.runPromise(
          Effect.gen(function*() {
            const exit = yield* Effect.exit(NativeRunner.exec(untrusted(input)))
            return { exit, calls: yield* NativeRunnerTest.calls }
          }).pipe(Effect.provide(acceptAll))
        )
        expect(Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error._tag : exit).toBe("InvalidInput")
        expect(calls).toEqual([])
      }),
      { numRuns: 300 }
    )
  })
})

describe("live stdin", () => {
  it("`cat` echoes arbitrary binary stdin unchanged", async () => {
    const runner = NativeRunner.toPromiseRunner(NativeRunner.layerNode())
    try {
      await fc.assert(
        fc.asyncProperty(fc.uint8Array({ maxLength: 200_000 }), async (stdin) => {
          const result = await runner.exec({ argv: ["cat"], stdin, limits: { timeoutMs: 30_000 } })
          expect(result.exitCode).toBe(0)
          expect(Buffer.compare(result.stdout, stdin)).toBe(0)
          expect(result.stdoutBytes).toBe(stdin.length)
        }),
        { numRuns: 25 }
      )
    } finally {
      await runner.dispose()
    }
  })
})
