/**
 * The fleet's wire Schemas: bytes travel as base64 through Node's Buffer (Effect's `Uint8ArrayFromBase64` took 1.3 s
 * to encode a 10 MB stdin), and what is not base64 is refused rather than skipped.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import { randomBytes } from "node:crypto"
import { WireInput } from "../src/cluster/protocol.js"

const encode = Schema.encodeSync(WireInput)
const decode = Schema.decodeUnknownEither(WireInput)

describe("the fleet's bytes on the wire", () => {
  it("round-trip byte-exact at every length mod 3, and match Buffer's base64", () => {
    for (const length of [0, 1, 2, 3, 4, 5, 1000, 65_537]) {
      const stdin = new Uint8Array(randomBytes(length))
      const wire = encode({ argv: ["cat"], stdin })
      expect(wire.stdin).toBe(Buffer.from(stdin).toString("base64"))
      const back = decode(wire)
      expect(Either.isRight(back) && Buffer.from(back.right.stdin!).equals(Buffer.from(stdin))).toBe(true)
    }
  })

  it("refuse a string that is not base64 (Buffer alone would drop the bad characters)", () => {
    for (const stdin of ["aGk*", "aGk", "aGk=aGk=", "a===", "aG k", "\u00e9\u00e9\u00e9\u00e9"]) {
      expect([stdin, Either.isLeft(decode({ argv: ["cat"], stdin }))]).toEqual([stdin, true])
    }
    expect(Either.isRight(decode({ argv: ["cat"], stdin: "aGk=" }))).toBe(true)
  })
})
