/**
 * The sandbox end to end, with the real bubblewrap. In CI (CI=true) these must run: a missing bwrap fails them.
 * Elsewhere, without a usable bwrap, the suite is not registered and the reason is printed.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { chmodSync, chownSync, existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { Bubblewrap, NativeRunner, type Sandbox } from "../src/index.js"
import { makeTestWorkspace } from "./helpers/workspace.js"

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes)
const isRoot = process.getuid?.() === 0

/** Temp dirs made by this file, removed after it. */
const created: Array<string> = []
const tempDir = (prefix: string) => {
  const dir = mkdtempSync(path.join(tmpdir(), prefix))
  created.push(dir)
  return dir
}
/** A workspace the sandbox user (as root: 65534, or `user`) can write; the runner never changes owners for a run. */
const workspace = (user?: { readonly uid: number; readonly gid: number }) => {
  const made = makeTestWorkspace("enr-ws-", user)
  created.push(made.parent)
  return made.ws
}
afterAll(() => {
  for (const dir of created) rmSync(dir, { recursive: true, force: true })
})

const preflight = await Effect.runPromise(Effect.either(Bubblewrap.preflight()))
const inCI = process.env["CI"] === "true"

const sandboxed = (policy: Sandbox.Policy, options: NativeRunner.Options = {}) =>
  NativeRunner.layerNode({ killGrace: "300 millis", ...options, sandbox: { policy } })

/** Host processes whose command line is exactly `argv`. */
const hostProcesses = (argv: ReadonlyArray<string>): Array<number> =>
  readdirSync("/proc").filter((entry) => /^\d+$/.test(entry)).flatMap((pid) => {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter((s) => s !== "")
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
      const zombie = stat.slice(stat.lastIndexOf(")") + 2)[0] === "Z"
      return !zombie && cmdline.join(" ") === argv.join(" ") ? [Number(pid)] : []
    } catch {
      return []
    }
  })

if (Either.isLeft(preflight) && !inCI) {
  console.warn(`sandbox end-to-end tests not run: ${preflight.left.message} Fix: ${preflight.left.fix}`)
}

describe("sandbox preflight", () => {
  it.runIf(inCI)("bubblewrap is usable on this host (required in CI)", () => {
    expect(Either.isLeft(preflight) ? `${preflight.left.message} Fix: ${preflight.left.fix}` : "usable").toBe("usable")
  })

  it.scopedLive("fails the layer with SandboxUnavailable when bwrap is missing, saying how to fix it", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(NativeRunner.makeNode({
        sandbox: { policy: { workspace: workspace() }, bwrapPath: "/nonexistent/bwrap" }
      }))
      expect(error._tag).toBe("SandboxUnavailable")
      expect(error.message).toContain("/nonexistent/bwrap")
      expect(error._tag === "SandboxUnavailable" && error.fix).toContain("apt-get install -y bubblewrap")
    }))

  it.scopedLive("runs unsandboxed only when that fallback is asked for", () =>
    Effect.gen(function*() {
      const runner = yield* NativeRunner.makeNode({
        sandbox: { policy: { workspace: workspace() }, bwrapPath: "/nonexistent/bwrap", fallback: "unsandboxed" }
      })
      const result = yield* runner.exec({ argv: ["true"] })
      expect(result.exitCode).toBe(0)
      expect(result.audits[0]?.sandbox).toBe("none")
    }))

  it.live("a CommandExecutor runner cannot sandbox: SandboxUnavailable pointing at layerNode, unless it may fall back", () =>
    Effect.gen(function*() {
      // The installed bwrap: what refuses here is the executor, which cannot pass bwrap's descriptors.
      const policy = { workspace: workspace() }
      const error = yield* Effect.flip(NativeRunner.make({ sandbox: { policy } }))
      expect(error._tag).toBe("SandboxUnavailable")
      expect(error._tag === "SandboxUnavailable" && error.backend).toBe("bwrap")
      expect(error.message).toContain("CommandExecutor")
      expect(error._tag === "SandboxUnavailable" && error.fix).toContain("layerNode")
      const runner = yield* NativeRunner.make({ sandbox: { policy, fallback: "unsandboxed" } })
      const result = yield* runner.exec({ argv: ["pwd"], cwd: policy.workspace })
      expect(result.exitCode).toBe(0)
      // Run on the host: the real path, not /workspace.
      expect(text(result.stdout)).toBe(`${policy.workspace}\n`)
      expect(result.audits[0]?.sandbox).toBe("none")
    }).pipe(Effect.provide(NodeContext.layer)))
})

describe.runIf(Either.isRight(preflight) || inCI)("sandboxed runs (bwrap)", () => {
  it.live("denies the network unless network is host", () =>
    Effect.gen(function*() {
      let connections = 0
      const server = createServer((socket) => {
        connections++
        socket.end()
      })
      const port = yield* Effect.async<number>((resume) => {
        server.listen(0, "127.0.0.1", () => {
          const address = server.address()
          resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : 0))
        })
      })
      const probe = ["bash", "-c", `echo hi > /dev/tcp/127.0.0.1/${port} && echo connected`]
      const ws = workspace()
      const denied = yield* NativeRunner.exec({ argv: probe }).pipe(
        Effect.provide(sandboxed({ workspace: ws, network: "none" }))
      )
      expect(text(denied.stdout)).not.toContain("connected")
      expect(denied.exitCode).not.toBe(0)
      expect(denied.audits[0]?.network).toBe("none")
      expect(connections).toBe(0)
      const allowed = yield* NativeRunner.exec({ argv: probe }).pipe(
        Effect.provide(sandboxed({ workspace: ws, network: "host" }))
      )
      expect(text(allowed.stdout)).toBe("connected\n")
      expect(allowed.audits[0]?.network).toBe("host")
      server.close()
      expect(connections).toBe(1)
    }))

  it.live("hides the host, confines writes to /workspace and a private /tmp", () =>
    Effect.gen(function*() {
      const ws = workspace()
      // Readable by anyone on the host: only the sandbox's view can keep it out, whatever uid the program has.
      const secretDir = tempDir("enr-secret-")
      chmodSync(secretDir, 0o755)
      const hostSecret = path.join(secretDir, "secret")
      writeFileSync(hostSecret, "host secret", { mode: 0o644 })
      // Owned by the program's own uid (65534 as root), so only the read-only bind stops a write.
      const readOnly = tempDir("enr-ro-")
      if (isRoot) chownSync(readOnly, 65534, 65534)
      chmodSync(readOnly, 0o755)
      const hostTmpMarker = `enr-private-${process.pid}-${Date.now()}`
      const script = [
        `cat ${hostSecret} 2>/dev/null && echo SAW-HOST-FILE`,
        "test -e /root && echo SAW-ROOT",
        "touch /usr/escape 2>/dev/null && echo WROTE-USR",
        "touch /etc/escape 2>/dev/null && echo WROTE-ETC",
        "touch /escape 2>/dev/null && echo WROTE-ROOTFS",
        "touch /ro/escape 2>/dev/null && echo WROTE-RO-BIND",
        "cat /etc/shadow 2>/dev/null | grep -q . && echo READ-SHADOW",
        "echo landed > /workspace/out.txt",
        `echo tmp > /tmp/${hostTmpMarker} && echo tmp-ok`
      ].join("; ")
      const result = yield* NativeRunner.exec({ argv: ["sh", "-c", script] }).pipe(
        Effect.provide(sandboxed({ workspace: ws, readOnlyBinds: [{ host: readOnly, sandbox: "/ro" }] }))
      )
      expect(text(result.stdout)).toBe("tmp-ok\n")
      expect(readFileSync(path.join(ws, "out.txt"), "utf8")).toBe("landed\n")
      expect(readdirSync(readOnly)).toEqual([])
      expect(existsSync(path.join("/tmp", hostTmpMarker))).toBe(false)
      const again = yield* NativeRunner.exec({ argv: ["sh", "-c", `test -e /tmp/${hostTmpMarker} && echo kept`] }).pipe(
        Effect.provide(sandboxed({ workspace: ws }))
      )
      expect(text(again.stdout)).toBe("")
    }))

  it.live.runIf(isRoot)("as root, runs the program as the sandbox user and changes no owner or mode on the host", () =>
    Effect.gen(function*() {
      const ws = workspace()
      // A file of the host's in the workspace: the sandbox user may read it, never write it (nothing is handed over).
      writeFileSync(path.join(ws, "input"), "from the host\n", { mode: 0o644 })
      const script = "id -u; id -g; id -G; echo made > /workspace/made; cat /workspace/input; " +
        "echo more >> /workspace/input 2>/dev/null || echo refused"
      const result = yield* NativeRunner.exec({ argv: ["sh", "-c", script] }).pipe(
        Effect.provide(sandboxed({ workspace: ws }))
      )
      expect(text(result.stdout)).toBe("65534\n65534\n65534\nfrom the host\nrefused\n")
      expect(readFileSync(path.join(ws, "input"), "utf8")).toBe("from the host\n")
      const owners = [ws, path.join(ws, "input"), path.join(ws, "made")].map((entry) => {
        const stats = lstatSync(entry)
        return [entry, stats.uid, stats.gid, (stats.mode & 0o7777).toString(8)]
      })
      expect(owners).toEqual([
        [ws, 65534, 65534, "700"],
        [path.join(ws, "input"), 0, 0, "644"],
        [path.join(ws, "made"), 65534, 65534, "644"]
      ])
      const custom = workspace({ uid: 4242, gid: 4343 })
      const other = yield* NativeRunner.exec({ argv: ["sh", "-c", "id -u; id -g; id -G; touch /workspace/custom"] }).pipe(
        Effect.provide(sandboxed({ workspace: custom, user: { uid: 4242, gid: 4343 } }))
      )
      expect(text(other.stdout)).toBe("4242\n4343\n4343\n")
      expect([lstatSync(path.join(custom, "custom")).uid, lstatSync(custom).uid]).toEqual([4242, 4242])
      // The 65534 workspace is not 4242's to write: refused before anything runs, and left as it was.
      const refused = yield* Effect.flip(NativeRunner.exec({ argv: ["touch", "/workspace/nope"] }).pipe(
        Effect.provide(sandboxed({ workspace: ws, user: { uid: 4242, gid: 4343 } }))
      ))
      expect(refused._tag === "SpawnError" && refused.reason).toBe("SandboxSetup")
      expect(refused.message).toContain(`the sandbox user 4242:4343 cannot write the workspace ${ws} (owner 65534:65534, mode 700)`)
      expect(existsSync(path.join(ws, "nope"))).toBe(false)
    }))

  it.live("maps a cwd under the workspace and rejects one outside it", () =>
    Effect.gen(function*() {
      const ws = workspace()
      yield* Effect.promise(() => import("node:fs/promises").then((fs) => fs.mkdir(path.join(ws, "a", "b"), { recursive: true })))
      const inside = yield* NativeRunner.exec({ argv: ["pwd"], cwd: path.join(ws, "a", "b") }).pipe(
        Effect.provide(sandboxed({ workspace: ws }))
      )
      expect(text(inside.stdout)).toBe("/workspace/a/b\n")
      const outside = yield* Effect.flip(NativeRunner.exec({ argv: ["pwd"], cwd: "/etc" }).pipe(
        Effect.provide(sandboxed({ workspace: ws }))
      ))
      expect(outside._tag).toBe("InvalidInput")
      const missing = yield* Effect.flip(NativeRunner.exec({ argv: ["no-such-program-xyz"] }).pipe(
        Effect.provide(sandboxed({ workspace: ws }))
      ))
      expect(missing._tag === "SpawnError" && missing.reason).toBe("NotFound")
    }))

  it.live("sees only its own processes, and a timed-out run leaves nothing on the host", () =>
    Effect.gen(function*() {
      const ws = workspace()
      const count = yield* NativeRunner.exec({ argv: ["sh", "-c", "ls /proc | grep -c '^[0-9]'"] }).pipe(
        Effect.provide(sandboxed({ workspace: ws }))
      )
      // bwrap's init, sh, ls and grep at most.
      expect(Number(text(count.stdout).trim())).toBeLessThanOrEqual(5)
      const marker = ["sleep", "4321"]
      const started = Date.now()
      const result = yield* NativeRunner.exec({
        argv: ["sh", "-c", "setsid sleep 4321 & trap '' TERM; sleep 4321"],
        timeout: "300 millis"
      }).pipe(Effect.provide(sandboxed({ workspace: ws })))
      expect(result.timedOut).toBe(true)
      expect(result.exitCode).toBe(124)
      expect(Date.now() - started).toBeLessThan(300 + 300 + 5000)
      // The PID namespace dies with its init, setsid'd grandchild included.
      const deadline = Date.now() + 3000
      while (hostProcesses(marker).length > 0 && Date.now() < deadline) yield* Effect.sleep("20 millis")
      expect(hostProcesses(marker)).toEqual([])
    }))

  it.live("passes no host variable unless given", () =>
    Effect.gen(function*() {
      process.env["ENR_SANDBOX_PROBE"] = "host-value"
      const result = yield* NativeRunner.exec({ argv: ["env"], env: { GIVEN: "yes" } }).pipe(
        Effect.provide(sandboxed({ workspace: workspace(), env: { FROM_POLICY: "p" } }))
      )
      const names = text(result.stdout).trim().split("\n").map((line) => line.split("=")[0]).sort()
      expect(names).toEqual(["FROM_POLICY", "GIVEN", "HOME", "PATH", "PWD", "TMPDIR"])
      expect(text(result.stdout)).not.toContain("host-value")
    }))

  it.live("holds a fork bomb with the process limit and stops a big write with the file-size limit", () =>
    Effect.gen(function*() {
      const ws = workspace()
      const bomb = yield* NativeRunner.exec({
        argv: ["sh", "-c", "for i in $(seq 1 60); do sleep 2 & done; wait"],
        timeout: "20 seconds"
      }).pipe(Effect.provide(sandboxed({ workspace: ws, limits: { maxProcesses: 20 } })))
      expect(text(bomb.stderr)).toMatch(/Cannot fork|Resource temporarily unavailable/)
      expect(bomb.limitExceeded).toBe("processes")
      expect(bomb.audits[0]?.limitExceeded).toBe("processes")
      const big = yield* NativeRunner.exec({
        argv: ["sh", "-c", "head -c 10000000 /dev/zero > /workspace/big"]
      }).pipe(Effect.provide(sandboxed({ workspace: ws, limits: { maxFileSizeBytes: 1_000_000 } })))
      expect(big.exitCode).not.toBe(0)
      expect(big.limitExceeded).toBe("fileSize")
      expect(readFileSync(path.join(ws, "big")).length).toBe(1_000_000)
    }), { timeout: 60_000 })

  it.live("applies resource limits without a sandbox too", () =>
    Effect.gen(function*() {
      const ws = workspace()
      const big = yield* NativeRunner.exec({ argv: ["sh", "-c", "head -c 5000000 /dev/zero > big"], cwd: ws }).pipe(
        Effect.provide(NativeRunner.layerNode({ resourceLimits: { maxFileSizeBytes: 100_000 } }))
      )
      expect(big.limitExceeded).toBe("fileSize")
      expect(big.audits[0]?.sandbox).toBe("none")
      expect(readFileSync(path.join(ws, "big")).length).toBe(100_000)
    }))

  it.live("a program's stderr never becomes a SpawnError: lines that look like a wrapper's keep the program's exit", () =>
    Effect.gen(function*() {
      const ws = workspace()
      const layers = {
        sandboxed: sandboxed({ workspace: ws }),
        "sandboxed with limits (prlimit inside)": sandboxed({ workspace: ws, limits: { maxOpenFiles: 512 } }),
        "unsandboxed with limits (prlimit in front)": NativeRunner.layerNode({ resourceLimits: { maxOpenFiles: 512 } }),
        "unsandboxed, direct (setpriv in front as root)": NativeRunner.layerNode({ spawnHelper: "off" })
      }
      const fakes = [
        ["bwrap: execvp make: No such file or directory", 1],
        ["bwrap: Can't find source path /nonexistent: No such file or directory", 1],
        ["prlimit: failed to execute make: No such file or directory", 127],
        ["prlimit: failed to execute make: Permission denied", 126],
        ["setpriv: failed to execute make: No such file or directory", 127],
        ["sh: 1: exec: make: not found", 127]
      ] as const
      const seen: Array<string> = []
      for (const [name, layer] of Object.entries(layers)) {
        for (const [line, code] of fakes) {
          const outcome = yield* Effect.either(NativeRunner.exec({ argv: ["sh", "-c", 'echo "$1" >&2; exit "$2"', "sh", line, String(code)], cwd: ws })
            .pipe(Effect.provide(layer)))
          seen.push(`${name}: ${Either.isRight(outcome) ? `exit ${outcome.right.exitCode} ${text(outcome.right.stderr).trim() === line}` : `${outcome.left._tag} ${outcome.left.message}`}`)
        }
        // The control: a program that is really missing is still the SpawnError a direct spawn gives.
        const missing = yield* Effect.flip(NativeRunner.exec({ argv: ["no-such-program-xyz"], cwd: ws }).pipe(Effect.provide(layer)))
        expect([name, missing._tag === "SpawnError" && missing.reason]).toEqual([name, "NotFound"])
      }
      expect(seen).toEqual(Object.keys(layers).flatMap((name) => fakes.map(([, code]) => `${name}: exit ${code} true`)))
    }))

  it.live("keeps truncation, timeouts and audits as unsandboxed", () =>
    Effect.gen(function*() {
      const result = yield* NativeRunner.exec({
        argv: ["sh", "-c", "head -c 300000 /dev/zero; sleep 30"],
        limits: { maxStdoutBytes: 1000, timeoutMs: 500 }
      }).pipe(Effect.provide(sandboxed({ workspace: workspace() })))
      expect(result.timedOut).toBe(true)
      expect(result.stdout.length).toBe(1000)
      expect(result.stdoutBytes).toBe(300_000)
      expect(result.truncatedStdout).toBe(true)
      expect(result.audits[0]?.sandbox).toBe("bwrap")
    }))
})
