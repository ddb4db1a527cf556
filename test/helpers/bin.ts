/**
 * The real `native-runner` bin for tests: built from src/ by bench/build-bin.mjs into a temporary directory of the
 * test file's own (removed after it), and the sandbox preflight the live layer makes for `--sandbox bwrap`.
 */
import { afterAll } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { execFileSync } from "node:child_process"
import { chmodSync, mkdtempSync, rmSync } from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as Bubblewrap from "../../src/Bubblewrap.js"

const ROOT = fileURLToPath(new URL("../..", import.meta.url))

/** A temporary directory (0755: as root, the sandbox user must reach workspaces made in it) with the bin built in it. */
export const builtBin = (prefix: string): { readonly tmp: string; readonly bin: string } => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), prefix))
  chmodSync(tmp, 0o755)
  afterAll(() => rmSync(tmp, { recursive: true, force: true }))
  execFileSync(process.execPath, [path.join(ROOT, "bench", "build-bin.mjs"), "--outdir", path.join(tmp, "dist")])
  return { tmp, bin: path.join(tmp, "dist", "bin.js") }
}

/** Whether `--sandbox bwrap` can run here; outside CI a reason to skip is printed, in CI (CI=true) nothing is skipped. */
export const sandboxPreflight = async (what: string) => {
  const preflight = await Effect.runPromise(
    Effect.either(Effect.flatMap(Bubblewrap.hostMasks(), (masks) => Bubblewrap.preflight({ masks })))
  )
  const inCI = process.env["CI"] === "true"
  if (Either.isLeft(preflight) && !inCI) {
    console.warn(`${what} not run: ${preflight.left.message} Fix: ${preflight.left.fix}`)
  }
  return { usable: Either.isRight(preflight), inCI, preflight }
}
