/** Byte sizes as people write them, for the CLI's options and the layer's environment variables. */
import * as Either from "effect/Either"

// GNU coreutils' convention: K = KiB = 1024, KB = 1000 (units are case-insensitive here).
const SIZE_UNITS: Readonly<Record<string, number>> = {
  "": 1,
  b: 1,
  k: 1024,
  kib: 1024,
  kb: 1000,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  mb: 1000 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  gb: 1000 ** 3
}

/**
 * Parses a byte size: `1000`, `64KiB`, `1MiB`, `1.5K`, `2MB`. The result is a whole number of bytes.
 *
 * @example
 * parseSize("64KiB") // Either.right(65536)
 */
export const parseSize = (text: string): Either.Either<number, string> => {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim())
  const factor = match?.[2] === undefined ? undefined : SIZE_UNITS[match[2].toLowerCase()]
  if (match?.[1] === undefined || factor === undefined) {
    return Either.left(`bad size '${text}' (use e.g. 1000, 64KiB, 1MiB, 2GB)`)
  }
  const bytes = Number(match[1]) * factor
  return Number.isSafeInteger(bytes)
    ? Either.right(bytes)
    : Either.left(`size '${text}' is not a whole number of bytes`)
}

