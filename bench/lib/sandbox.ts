/**
 * The sandboxed per-exec contenders, when the runner has a bubblewrap sandbox and bwrap works on this host:
 * ours with `sandbox: { policy }` vs raw spawn of the very argv `Bubblewrap.wrap` produces for the same policy.
 */
import * as Either from "effect/Either"
import { mkdtempSync } from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Bubblewrap from "../../src/Bubblewrap.js"
import * as NativeRunner from "../../src/NativeRunner.js"
import { type Contender, ours, raw } from "./contenders.js"

export type SandboxContenders =
  | { readonly _tag: "Unavailable"; readonly reason: string }
  | { readonly _tag: "Available"; readonly bare: Contender; readonly ours: Contender; readonly bareArgv: ReadonlyArray<string> }

export const sandboxContenders = async (): Promise<SandboxContenders> => {
  const workspace = mkdtempSync(path.join(os.tmpdir(), "bench-sandbox-"))
  const policy = { workspace }
  const wrapped = Bubblewrap.wrap(policy, { argv: ["/bin/true"], cwd: workspace, env: { PATH: process.env["PATH"] ?? "" } })
  if (Either.isLeft(wrapped)) return { _tag: "Unavailable", reason: `sandbox not available: ${wrapped.left.message}` }
  const sandboxed = ours("ours sandboxed (bwrap)", NativeRunner.layerNode({ sandbox: { policy } }))
  try {
    const report = await sandboxed.run({ argv: ["/bin/true"], maxStdoutBytes: 1024, maxStderrBytes: 1024 })
    if (report.exitCode !== 0) throw new Error(`exit ${String(report.exitCode)}`)
  } catch (error) {
    await sandboxed.dispose().catch(() => undefined)
    return { _tag: "Unavailable", reason: `sandbox not available: ${String(error)}` }
  }
  const { argv: bareArgv, cwd, env } = wrapped.right
  const bare = raw("bare bwrap ... /bin/true (raw spawn)", (spec) => ({
    ...spec,
    // bwrap's argv ends with the wrapped command: replace it with this run's command.
    argv: [bareArgv[0], ...bareArgv.slice(1, -1), ...spec.argv],
    cwd,
    env
  }))
  return { _tag: "Available", bare, ours: sandboxed, bareArgv }
}
