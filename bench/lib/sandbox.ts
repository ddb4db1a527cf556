/**
 * The sandboxed per-exec contenders, when the runner has a bubblewrap sandbox and bwrap works on this host:
 * ours with `sandbox: { policy }` vs raw spawn of the very command `Bubblewrap.wrap` produces for the same policy and
 * the same host facts (setpriv identity as root, seccomp program, masks), its descriptors written as ours writes them.
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { chownSync, mkdtempSync } from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Bubblewrap from "../../src/Bubblewrap.js"
import { resolveSandboxHost } from "../../src/internal/sandboxHost.js"
import * as NativeRunner from "../../src/NativeRunner.js"
import { type Contender, ours, raw } from "./contenders.js"

export type SandboxContenders =
  | { readonly _tag: "Unavailable"; readonly reason: string }
  | { readonly _tag: "Available"; readonly bare: Contender; readonly ours: Contender; readonly bareArgv: ReadonlyArray<string> }

export const sandboxContenders = async (): Promise<SandboxContenders> => {
  const workspace = mkdtempSync(path.join(os.tmpdir(), "bench-sandbox-"))
  const policy = { workspace }
  const host = await Effect.runPromise(Effect.either(resolveSandboxHost(policy, {})))
  if (Either.isLeft(host)) return { _tag: "Unavailable", reason: `sandbox not available: ${host.left.message}` }
  const facts = host.right
  // The bare baseline gets no hand-over: give the workspace to the sandbox user once.
  if (facts.identity !== undefined) chownSync(workspace, facts.identity.uid, facts.identity.gid)
  const wrapped = Bubblewrap.wrap(policy, { argv: ["/bin/true"], cwd: workspace, env: { PATH: process.env["PATH"] ?? "" } }, {
    bwrapPath: facts.bwrap,
    setprivPath: facts.setpriv,
    identity: facts.identity,
    masks: facts.masks,
    seccomp: facts.seccomp?.program
  })
  if (Either.isLeft(wrapped)) return { _tag: "Unavailable", reason: `sandbox not available: ${wrapped.left.message}` }
  const sandboxed = ours("ours sandboxed (bwrap)", NativeRunner.layerNode({ sandbox: { policy } }))
  try {
    const report = await sandboxed.run({ argv: ["/bin/true"], maxStdoutBytes: 1024, maxStderrBytes: 1024 })
    if (report.exitCode !== 0) throw new Error(`exit ${String(report.exitCode)}`)
  } catch (error) {
    await sandboxed.dispose().catch(() => undefined)
    return { _tag: "Unavailable", reason: `sandbox not available: ${String(error)}` }
  }
  const { argv: bareArgv, cwd, env, extraFds = [] } = wrapped.right
  const inputs = extraFds.flatMap((fd) => (fd._tag === "Input" ? [fd.bytes] : []))
  const bare = raw("bare bwrap ... /bin/true (raw spawn)", (spec) => ({
    ...spec,
    // bwrap's argv ends with the wrapped command: replace it with this run's command.
    argv: [bareArgv[0], ...bareArgv.slice(1, -1), ...spec.argv],
    cwd,
    env,
    inputs
  }))
  return { _tag: "Available", bare, ours: sandboxed, bareArgv }
}
