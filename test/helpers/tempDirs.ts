/**
 * Temporary directories a test file makes, removed when the file's tests are done. Importing this module registers
 * the `afterAll` on the importing file (vitest loads modules afresh per test file).
 */
import { afterAll } from "@effect/vitest"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"

const made: Array<string> = []
afterAll(() => {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true })
})

/** A new directory under the system's temp dir, named `<prefix>XXXXXX`, removed after this file's tests. */
export const scratchDir = (prefix: string): string => {
  const dir = mkdtempSync(path.join(tmpdir(), prefix))
  made.push(dir)
  return dir
}
