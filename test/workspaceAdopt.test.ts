/**
 * Preparing a workspace (issue 18) and who a sandbox runs as: `user: "workspace-owner"`, `Sandbox.adoptWorkspace`
 * against the shared lock every sandboxed run holds, and the paths adoption and `makeWorkspace` refuse. A refusal is
 * checked with a stand-in `chown` that records its arguments (`chownPath`): were the refusal missing, the stand-in
 * would be called, and nothing of the host would change. Gated like escape.test.ts.
 */
import { afterEach, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import { spawn, spawnSync } from "node:child_process"
import { chmodSync, chownSync, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, symlinkSync } from "node:fs"
import * as path from "node:path"
import type { Errors, Exec } from "../src/index.js"
import { NativeRunner, Sandbox } from "../src/index.js"
import { dirOf, fileOf, inCI, mixedTree, nobody, preparedWorkspace, scratch, snapshot, unusable } from "./helpers/attacks.js"
import { onCleanup, pidsWithArgv, randomDigits, runCleanups, text, waitUntil } from "./helpers/escape.js"

if (unusable.length > 0 && !inCI) console.warn(`workspace-preparation tests not run: ${unusable.join(" ")}`)

const sandboxed = (policy: Sandbox.Policy) =>
  NativeRunner.layerNode({ killGrace: "2 seconds", timeout: "30 seconds", sandbox: { policy } })
const run = (policy: Sandbox.Policy, input: Exec.ExecInput) =>
  Effect.either(NativeRunner.exec(input).pipe(Effect.provide(sandboxed(policy))))

/** A failure as one line (`Tag Reason: message`), or what happened instead. */
const failureOf = (outcome: Either.Either<unknown, Errors.NativeRunnerError | Errors.WorkspaceError>): string =>
  Either.isRight(outcome)
    ? "succeeded"
    : `${outcome.left._tag}${"reason" in outcome.left ? ` ${outcome.left.reason}` : ""}: ${outcome.left.message}`

/** A stand-in `chown` that appends its arguments to a file: `calls()` lists every call. */
const fakeChown = () => {
  const dir = scratch("chown-")
  chmodSync(dir, 0o755)
  const log = path.join(dir, "calls")
  const file = fileOf(path.join(dir, "chown"), { uid: 0, gid: 0 }, 0o755, `#!/bin/sh\necho "$*" >> ${log}\n`)
  return { file, calls: () => (existsSync(log) ? readFileSync(log, "utf8").split("\n").filter((l) => l !== "") : []) }
}

/** `adoptWorkspace(dir)` with the stand-in chown: the outcome, and whether it would have changed any owner. */
const adoptWithFake = (dir: string) =>
  Effect.gen(function*() {
    const chown = fakeChown()
    const outcome = yield* Effect.either(Sandbox.adoptWorkspace(dir, { chownPath: chown.file }))
    return { outcome: failureOf(outcome), calls: chown.calls() }
  })

/** A root-owned tree to adopt: `<parent, root 0755>/ws`, root's, with a root file in it. */
const rootTree = () => {
  const parent = scratch("adopt-")
  chmodSync(parent, 0o755)
  const ws = dirOf(path.join(parent, "ws"), { uid: 0, gid: 0 }, 0o700)
  fileOf(path.join(ws, "file"), { uid: 0, gid: 0 }, 0o644)
  return { parent, ws }
}

afterEach(runCleanups)

describe("workspace preparation: preflight", () => {
  it.runIf(inCI)("bubblewrap is usable and the runner is root (required in CI)", () => {
    expect(unusable).toEqual([])
  })
})

describe.runIf(unusable.length === 0 || inCI)("workspace preparation (root host)", () => {
  describe("user: \"workspace-owner\"", () => {
    it.live("runs as the workspace's owner (4242:4242, no account), and what it makes is that owner's", () =>
      Effect.gen(function*() {
        const ws = preparedWorkspace({ uid: 4242, gid: 4242 })
        const outcome = yield* run({ workspace: ws, user: "workspace-owner" }, {
          argv: ["sh", "-c", "id -u; id -g; touch /workspace/made"]
        })
        expect(Either.isRight(outcome) && text(outcome.right.stdout)).toBe("4242\n4242\n")
        expect(snapshot(ws)["made"]).toBe("4242:4242 644 f")
      }))

    it.live("takes the owner's own group, never the directory's: an account's primary group, or refused", () =>
      Effect.gen(function*() {
        // nobody's account says nogroup (65534); the directory's group (e.g. from a set-gid parent) is another one.
        const ws = preparedWorkspace({ uid: 65534, gid: 4343 })
        const outcome = yield* run({ workspace: ws, user: "workspace-owner" }, { argv: ["sh", "-c", "id -u; id -g"] })
        expect(Either.isRight(outcome) && text(outcome.right.stdout)).toBe("65534\n65534\n")
        // No account for 4242, and a group that is not its uid: nothing to trust.
        const unknown = preparedWorkspace({ uid: 4242, gid: 4343 })
        const failure = failureOf(yield* run({ workspace: unknown, user: "workspace-owner" }, { argv: ["touch", "/workspace/ran"] }))
        expect(failure).toMatch(/^SandboxUnavailable: .*the owner 4242 .* has no account/)
        expect(existsSync(path.join(unknown, "ran"))).toBe(false)
      }))

    it.live("a root-owned workspace: the layer fails with SandboxUnavailable; nothing ran", () =>
      Effect.gen(function*() {
        const ws = scratch("root-ws-")
        const failure = failureOf(yield* run({ workspace: ws, user: "workspace-owner" }, {
          argv: ["touch", "/workspace/ran"]
        }))
        expect(failure).toMatch(/^SandboxUnavailable: /)
        expect(failure).toContain(`${ws} is owned by 0:0`)
        expect(existsSync(path.join(ws, "ran")), "the workload ran").toBe(false)
      }))
  })

  describe("adoption and runs exclude each other (flock on the workspace)", () => {
    it.live("adoption while a run holds the workspace fails with InUse and changes nothing; after it, the lock is free", () =>
      Effect.gen(function*() {
        const ws = preparedWorkspace()
        mixedTree(ws)
        const before = snapshot(ws)
        const sleep = ["sleep", `2.${randomDigits()}`]
        const fiber = yield* Effect.fork(run({ workspace: ws }, { argv: sleep }))
        expect(yield* waitUntil(() => pidsWithArgv(sleep).length > 0, 15_000), "the sandboxed sleep started").toBe(true)
        const during = failureOf(yield* Effect.either(Sandbox.adoptWorkspace(ws)))
        expect(during).toMatch(/^WorkspaceError InUse: /)
        expect(snapshot(ws)).toEqual(before)
        expect(failureOf(yield* Fiber.join(fiber))).toBe("succeeded")
        // The lock is released with the run: adoption now gets past it, to the checks (a tree the sandbox user may
        // write is never adopted), and still changes nothing.
        expect(failureOf(yield* Effect.either(Sandbox.adoptWorkspace(ws))))
          .toMatch(/^WorkspaceError Refused: .* is a directory someone other than root may write/)
        expect(snapshot(ws)).toEqual(before)
      }))

    it.live("a run while adoption holds the lock fails with SandboxSetup; nothing ran", () =>
      Effect.gen(function*() {
        const ws = preparedWorkspace()
        // What adoptWorkspace holds while chown runs: flock --exclusive on the workspace.
        const holder = spawn("flock", ["--exclusive", ws, "sh", "-c", "echo locked; exec sleep 20"], {
          detached: true,
          stdio: ["ignore", "pipe", "ignore"]
        })
        onCleanup(() => process.kill(-(holder.pid ?? 0), "SIGKILL"))
        let locked = false
        holder.stdout.on("data", () => (locked = true))
        expect(yield* waitUntil(() => locked, 10_000), "the lock is held").toBe(true)
        const failure = failureOf(yield* run({ workspace: ws }, { argv: ["touch", "/workspace/ran"] }))
        expect(failure).toMatch(/^SpawnError SandboxSetup: .*lock is held exclusively by another process/)
        expect(existsSync(path.join(ws, "ran")), "the workload ran").toBe(false)
      }))
  })

  describe("adoptWorkspace refuses", () => {
    it.live("control: a root-owned tree in a root 0755 parent is adopted (the stand-in chown is called)", () =>
      Effect.gen(function*() {
        const { ws } = rootTree()
        expect(yield* adoptWithFake(ws)).toEqual({ outcome: "succeeded", calls: [`-R --no-dereference 65534:65534 ${ws}`] })
      }))

    it.live("a tree with a directory another user may write (a hard link could be put in while chown runs)", () =>
      Effect.gen(function*() {
        const { ws } = rootTree()
        dirOf(path.join(ws, "shared"), { uid: 4242, gid: 4242 }, 0o755)
        const { outcome, calls } = yield* adoptWithFake(ws)
        expect(outcome).toMatch(/^WorkspaceError Refused: .*shared is a directory someone other than root may write/)
        expect(calls).toEqual([])
        const group = rootTree()
        dirOf(path.join(group.ws, "group-writable"), { uid: 0, gid: 4242 }, 0o775)
        expect((yield* adoptWithFake(group.ws)).outcome).toMatch(/group-writable is a directory someone other than root/)
      }))

    it.live("a tree below a directory another user may write (it could swap the tree while it is adopted)", () =>
      Effect.gen(function*() {
        const top = scratch("above-")
        chmodSync(top, 0o755)
        const theirs = dirOf(path.join(top, "theirs"), { uid: 4242, gid: 4242 }, 0o755)
        const ws = dirOf(path.join(theirs, "ws"), { uid: 0, gid: 0 }, 0o755)
        const { outcome, calls } = yield* adoptWithFake(ws)
        expect(outcome).toMatch(/^WorkspaceError Refused: .*theirs \(owner 4242:4242, mode 755\) could be changed by a user other than root/)
        expect(calls).toEqual([])
        const made = failureOf(yield* Effect.either(Sandbox.makeWorkspace(theirs)))
        expect(made).toMatch(/^WorkspaceError Refused: .*could be changed by a user other than root/)
        expect(readdirSync(theirs)).toEqual(["ws"])
      }))

    it.live("/, /etc and /tmp", () =>
      Effect.gen(function*() {
        for (const dir of ["/", "/etc", "/tmp"]) {
          const { outcome, calls } = yield* adoptWithFake(dir)
          expect({ dir, outcome, calls }).toEqual({
            dir,
            outcome: `WorkspaceError Refused: ${dir} is not adopted: ${dir} is a system or shared directory`,
            calls: []
          })
        }
      }))

    it.live("a path with a symbolic link in it", () =>
      Effect.gen(function*() {
        const { parent, ws } = rootTree()
        symlinkSync(ws, path.join(parent, "link"))
        const { outcome, calls } = yield* adoptWithFake(path.join(parent, "link"))
        expect(outcome).toMatch(/^WorkspaceError Refused: .*symbolic link/)
        expect(calls).toEqual([])
      }))

    it.live("a directory whose parent the sandbox user can write", () =>
      Effect.gen(function*() {
        const { parent, ws } = rootTree()
        chownSync(parent, nobody.uid, nobody.gid)
        const { outcome, calls } = yield* adoptWithFake(ws)
        expect(outcome).toMatch(/^WorkspaceError Refused: .*writable by 65534:65534/)
        expect(calls).toEqual([])
      }))

    it.live("a tree holding a hard link to a root 0600 file outside it", () =>
      Effect.gen(function*() {
        const { ws } = rootTree()
        const outside = fileOf(path.join(scratch("victim-"), "secret"), { uid: 0, gid: 0 }, 0o600, "root's\n")
        linkSync(outside, path.join(ws, "alias"))
        const { outcome, calls } = yield* adoptWithFake(ws)
        expect(outcome).toMatch(/^WorkspaceError Refused: .*alias has several hard links/)
        expect(calls).toEqual([])
        expect(snapshot(path.dirname(outside))["secret"]).toBe("0:0 600 f")
      }))

    it.live("a tree with a mount point inside", (ctx) =>
      Effect.gen(function*() {
        const { ws } = rootTree()
        const point = path.join(ws, "mnt")
        mkdirSync(point)
        const mounted = spawnSync("mount", ["--bind", scratch("victim-"), point], { encoding: "utf8" })
        if (mounted.status !== 0) {
          // In CI (root) a bind mount must work: the case fails there rather than skip.
          expect(inCI, `mount --bind failed: ${mounted.stderr.trim()}`).toBe(false)
          console.warn(`mount point case skipped: mount --bind failed: ${mounted.stderr.trim()}`)
          return ctx.skip()
        }
        onCleanup(() => spawnSync("umount", [point]))
        const { outcome, calls } = yield* adoptWithFake(ws)
        expect(outcome).toMatch(/^WorkspaceError Refused: .*mnt, below it, is a mount point/)
        expect(calls).toEqual([])
      }))
  })

  describe("makeWorkspace", () => {
    it.live("control: in a root 0755 parent it makes a 0700 directory of 65534", () =>
      Effect.gen(function*() {
        const parent = scratch("parent-")
        chmodSync(parent, 0o755)
        const made = yield* Sandbox.makeWorkspace(parent)
        expect(path.dirname(made.path)).toBe(parent)
        expect(snapshot(made.path)).toEqual({ "": "65534:65534 700 d" })
      }))

    it.live("refuses a parent the sandbox user can write, and makes nothing there", () =>
      Effect.gen(function*() {
        const parent = scratch("parent-")
        chownSync(parent, nobody.uid, nobody.gid)
        chmodSync(parent, 0o755)
        const failure = failureOf(yield* Effect.either(Sandbox.makeWorkspace(parent)))
        expect(failure).toMatch(/^WorkspaceError Refused: .*writable by 65534:65534/)
        expect(readdirSync(parent)).toEqual([])
      }))
  })
})
