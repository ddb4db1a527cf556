/**
 * Looking up a sandboxed command's program never walks, on the host, a place the workload can write. The old lookup
 * resolved `/workspace/probe` to the host workspace and followed a symlink the workload planted there, as root: a
 * host file outside the sandbox gave `PermissionDenied` (it exists, not executable) and a missing one `NotFound`, an
 * oracle for any host path. Now the sandbox itself looks the program up: both are `NotFound`, as seen from inside.
 * The same held for a cwd (a stat() as root through the workload's symlink): now bwrap's --chdir finds it inside.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { chownSync, lchownSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as NativeRunner from "../src/NativeRunner.js"
import { sandboxPreflight } from "./helpers/bin.js"
import { makeTestWorkspace } from "./helpers/workspace.js"

const { usable, inCI } = await sandboxPreflight("program lookup tests")
const isRoot = process.getuid?.() === 0

describe.runIf(usable || inCI)("a sandboxed command's program, looked up", () => {
  it.live("through a symlink the workload planted to a host path outside the sandbox: NotFound whether it exists or not", () => {
    const { ws, remove } = makeTestWorkspace("enr-lookup-")
    // A host file only this process can read, outside everything the sandbox binds.
    const secretDir = mkdtempSync(path.join(os.homedir(), ".enr-lookup-secret-"))
    const secret = path.join(secretDir, "exists")
    writeFileSync(secret, "host secret\n", { mode: 0o600 })
    for (const [name, target] of [["probe-exists", secret], ["probe-missing", path.join(secretDir, "missing")]]) {
      symlinkSync(target!, path.join(ws, name!))
      if (isRoot) lchownSync(path.join(ws, name!), 65534, 65534)
    }
    const layer = NativeRunner.layerNode({ sandbox: { policy: { workspace: ws } } })
    return Effect.gen(function*() {
      const answers = []
      for (const probe of ["probe-exists", "probe-missing"]) {
        const failed = yield* Effect.flip(NativeRunner.exec({ argv: [`/workspace/${probe}`] }))
        answers.push(failed._tag === "SpawnError" ? [failed.reason, failed.message] : [failed._tag])
      }
      expect(answers).toStrictEqual([
        ["NotFound", "command not found: /workspace/probe-exists"],
        ["NotFound", "command not found: /workspace/probe-missing"]
      ])
    }).pipe(
      Effect.provide(layer),
      Effect.ensuring(Effect.sync(() => {
        remove()
        rmSync(secretDir, { recursive: true, force: true })
      }))
    )
  }, 30_000)

  it.live("in the workspace: a missing one is NotFound, one not executable PermissionDenied, one that is runs", () => {
    const { ws, remove } = makeTestWorkspace("enr-lookup-")
    writeFileSync(path.join(ws, "plain"), "not a program\n", { mode: 0o644 })
    writeFileSync(path.join(ws, "tool.sh"), "#!/bin/sh\necho tool ran\n", { mode: 0o755 })
    if (isRoot) for (const file of ["plain", "tool.sh"]) chownSync(path.join(ws, file), 65534, 65534)
    return Effect.gen(function*() {
      const missing = yield* Effect.flip(NativeRunner.exec({ argv: ["/workspace/none"] }))
      expect(missing._tag === "SpawnError" && missing.reason).toBe("NotFound")
      const plain = yield* Effect.flip(NativeRunner.exec({ argv: ["./plain"] }))
      expect(plain._tag === "SpawnError" && [plain.reason, plain.message]).toStrictEqual(["PermissionDenied", "permission denied: ./plain"])
      const tool = yield* NativeRunner.exec({ argv: ["./tool.sh"] })
      expect([tool.exitCode, new TextDecoder().decode(tool.stdout)]).toStrictEqual([0, "tool ran\n"])
      // A program that writes what a failed exec looks like is still its own run, not a spawn failure.
      const impostor = yield* NativeRunner.exec({ argv: ["sh", "-c", "echo 'bwrap: execvp sh: No such file or directory' >&2; exit 1"] })
      expect(impostor.exitCode).toBe(1)
    }).pipe(
      Effect.provide(NativeRunner.layerNode({ sandbox: { policy: { workspace: ws } } })),
      Effect.ensuring(Effect.sync(remove))
    )
  }, 30_000)

  it.live("a cwd through a symlink the workload planted to a host directory: CwdNotFound whether it exists or not", () => {
    const { ws, remove } = makeTestWorkspace("enr-lookup-cwd-")
    const secretDir = mkdtempSync(path.join(os.homedir(), ".enr-lookup-secret-"))
    for (const [name, target] of [["cwd-exists", secretDir], ["cwd-missing", path.join(secretDir, "missing")]]) {
      symlinkSync(target!, path.join(ws, name!))
      if (isRoot) lchownSync(path.join(ws, name!), 65534, 65534)
    }
    return Effect.gen(function*() {
      const answers = []
      for (const name of ["cwd-exists", "cwd-missing"]) {
        const failed = yield* Effect.flip(NativeRunner.exec({ argv: ["pwd"], cwd: path.join(ws, name) }))
        answers.push(failed._tag === "SpawnError" ? failed.reason : failed._tag)
      }
      expect(answers).toStrictEqual(["CwdNotFound", "CwdNotFound"])
      // A real directory in the workspace is the program's cwd, as seen inside.
      const sub = path.join(ws, "sub")
      yield* Effect.sync(() => {
        mkdirSync(sub)
        if (isRoot) chownSync(sub, 65534, 65534)
      })
      const ran = yield* NativeRunner.exec({ argv: ["pwd"], cwd: sub })
      expect(new TextDecoder().decode(ran.stdout)).toBe("/workspace/sub\n")
    }).pipe(
      Effect.provide(NativeRunner.layerNode({ sandbox: { policy: { workspace: ws } } })),
      Effect.ensuring(Effect.sync(() => {
        remove()
        rmSync(secretDir, { recursive: true, force: true })
      }))
    )
  }, 30_000)
})
