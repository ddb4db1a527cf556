/**
 * Resource limits (src/internal/resourceLimits.ts): the prlimit prefix, the limit read from how a run ended and the
 * cgroup entry, as pure functions; then on real processes. Spawned with `spawnSync` (with a SIGKILL timeout), or, for
 * bwrap (which reads its flags from descriptor 3), through the engine and the Node spawner, since the runner is built
 * separately; each test stays well under five seconds and leaves no process or cgroup behind.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Bubblewrap from "../../src/Bubblewrap.js"
import { runProcess } from "../../src/internal/engine.js"
import { makeNodeSpawner } from "../../src/internal/nodeSpawner.js"
import type { PreparedCommand } from "../../src/internal/prepared.js"
import { enterCgroup, limitExceeded, pidsCgroup, prlimitArgv, processLimitRoute } from "../../src/internal/resourceLimits.js"
import type * as Sandbox from "../../src/Sandbox.js"

const env = { PATH: "/usr/bin:/bin" }

interface Spawnable {
  readonly argv: ReadonlyArray<string>
  readonly cwd: string
  readonly env: Readonly<Record<string, string>>
}

const runSync = ({ argv: [file, ...args], cwd, env }: Spawnable) => {
  if (file === undefined) throw new Error("empty argv")
  const out = spawnSync(file, args, { cwd, env, encoding: "utf8", timeout: 5_000, killSignal: "SIGKILL" })
  return { exitCode: out.status, signal: out.signal ?? undefined, stdout: out.stdout, stderr: out.stderr }
}

/** Like `runSync`, for a command with extra descriptors: the Node spawner writes them, the engine kills at 5 s. */
const runWithFds = (command: PreparedCommand) =>
  Effect.map(
    Effect.orDie(runProcess(makeNodeSpawner(), command, undefined, {
      maxStdoutBytes: 1 << 20,
      maxStderrBytes: 1 << 20,
      timeout: Duration.seconds(5),
      killGrace: Duration.zero,
      drainTimeout: Duration.seconds(1)
    })),
    (outcome) => {
      const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes)
      return { exitCode: outcome.exitCode, stdout: text(outcome.stdout.bytes()), stderr: text(outcome.stderr.bytes()) }
    }
  )

const withWorkspace = <A, E, R>(body: (dir: string) => Effect.Effect<A, E, R>) =>
  Effect.acquireUseRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "enr-limits-"))),
    body,
    (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
  )

describe("prlimitArgv", () => {
  it("sets every limit, CPU hard one second above soft", () => {
    expect(
      prlimitArgv({ maxCpuSeconds: 2, maxFileSizeBytes: 10, maxMemoryBytes: 1 << 30, maxOpenFiles: 64, maxProcesses: 20 })
    ).toEqual(["prlimit", "--cpu=2:3", "--fsize=10", `--as=${1 << 30}`, "--nofile=64", "--nproc=20", "--"])
  })

  it("is empty without limits and uses prlimitPath", () => {
    expect(prlimitArgv({})).toEqual([])
    expect(prlimitArgv({ maxOpenFiles: 8 }, { prlimitPath: "/usr/bin/prlimit" })).toEqual([
      "/usr/bin/prlimit",
      "--nofile=8",
      "--"
    ])
  })
})

describe("limitExceeded", () => {
  const all: Sandbox.ResourceLimits = {
    maxCpuSeconds: 1,
    maxFileSizeBytes: 1,
    maxMemoryBytes: 1,
    maxOpenFiles: 1,
    maxProcesses: 1
  }

  it("maps SIGXCPU, as a signal or as exit 152, to cpu when a CPU limit was set", () => {
    expect(limitExceeded(all, { exitCode: null, signal: "SIGXCPU" })).toBe("cpu")
    expect(limitExceeded(all, { exitCode: 152 })).toBe("cpu")
    expect(limitExceeded({ maxFileSizeBytes: 1 }, { exitCode: null, signal: "SIGXCPU" })).toBeUndefined()
  })

  it("maps SIGXFSZ, as a signal or as exit 153, to fileSize when a file size limit was set", () => {
    expect(limitExceeded(all, { exitCode: null, signal: "SIGXFSZ" })).toBe("fileSize")
    expect(limitExceeded(all, { exitCode: 153, signal: undefined })).toBe("fileSize")
    expect(limitExceeded({ maxCpuSeconds: 1 }, { exitCode: 153 })).toBeUndefined()
  })

  it("maps refused forks to processes when a process limit was set", () => {
    expect(limitExceeded(all, { exitCode: 0, refusedForks: 3 })).toBe("processes")
    expect(limitExceeded(all, { exitCode: 2, refusedForks: 0 })).toBeUndefined()
    expect(limitExceeded({ maxCpuSeconds: 1 }, { exitCode: 2, refusedForks: 3 })).toBeUndefined()
    // The signal that ended the run comes first.
    expect(limitExceeded(all, { exitCode: 153, refusedForks: 3 })).toBe("fileSize")
  })

  it("does not guess from other outcomes", () => {
    for (const outcome of [{ exitCode: 0 }, { exitCode: 1 }, { exitCode: 137 }, { exitCode: null, signal: "SIGKILL" }]) {
      expect(limitExceeded(all, outcome)).toBeUndefined()
    }
  })
})

describe("enterCgroup", () => {
  const command: PreparedCommand = { argv: ["make", "-j2"], cwd: "/srv/job", env: { PATH: "/usr/bin:/bin", LANG: "C" } }

  it("joins the cgroup in a shell that then execs the unchanged command", () => {
    const entered = enterCgroup("/sys/fs/cgroup/pids/run-1", command)
    expect(entered.argv).toEqual([
      "/bin/sh",
      "-c",
      'echo $$ > "$1" && shift && exec "$@"',
      "sh",
      "/sys/fs/cgroup/pids/run-1/cgroup.procs",
      "make",
      "-j2"
    ])
    expect(entered.cwd).toBe(command.cwd)
    expect(entered.env).toBe(command.env)
  })
})

describe("prlimit without a sandbox", () => {
  it.live("a file size limit stops the write with SIGXFSZ and leaves the file at the limit", () =>
    withWorkspace((dir) =>
      Effect.sync(() => {
        const limits: Sandbox.ResourceLimits = { maxFileSizeBytes: 1_000_000 }
        const out = runSync({
          argv: [...prlimitArgv(limits), "/bin/sh", "-c", "head -c 10000000 /dev/zero > file"],
          cwd: dir,
          env
        })
        // The shell reports its child's SIGXFSZ as 128 + 25.
        expect(out.exitCode).toBe(153)
        expect(fs.statSync(path.join(dir, "file")).size).toBe(1_000_000)
        expect(limitExceeded(limits, out)).toBe("fileSize")
      })
    ))

  it.live("a CPU limit ends a busy loop with SIGXCPU, not SIGKILL", () =>
    Effect.sync(() => {
      const limits: Sandbox.ResourceLimits = { maxCpuSeconds: 1 }
      const started = Date.now()
      const out = runSync({ argv: [...prlimitArgv(limits), "/bin/sh", "-c", "while :; do :; done"], cwd: "/", env })
      expect(out.signal).toBe("SIGXCPU")
      expect(limitExceeded(limits, out)).toBe("cpu")
      // One CPU second; wall time stretches on a loaded 2-core machine, so only bound it generously.
      expect(Date.now() - started).toBeLessThan(20_000)
    }), { timeout: 30_000 })
})

describe("maxProcesses inside bwrap", () => {
  // Each iteration starts a `sleep 1` in the background and prints how many are running; dash stops at the
  // first refused fork ("Cannot fork"). The sleeps die with the sandbox's PID namespace when the shell exits.
  const forkLoop = "n=0; while [ $n -lt 60 ]; do sleep 1 & n=$((n+1)); echo $n; done"
  const started = (stdout: string) => Number(stdout.trim().split("\n").at(-1) ?? 0)

  const sandboxed = (dir: string, limits?: Sandbox.ResourceLimits) =>
    Either.getOrThrow(
      Bubblewrap.wrap(
        limits === undefined ? { workspace: dir } : { workspace: dir, limits },
        { argv: ["/bin/sh", "-c", forkLoop], cwd: dir, env }
      )
    )

  it.live("without a limit, all 60 forks start (the loop is a real fork bomb)", () =>
    withWorkspace((dir) =>
      Effect.gen(function* () {
        const out = yield* runWithFds(sandboxed(dir))
        expect(out.exitCode).toBe(0)
        expect(started(out.stdout)).toBe(60)
      })
    ))

  it.live("maxProcesses 20 holds the loop, by the route this host needs", () =>
    withWorkspace((dir) =>
      Effect.scoped(
        Effect.gen(function* () {
          const limits: Sandbox.ResourceLimits = { maxProcesses: 20 }
          const route = yield* processLimitRoute
          // As root, RLIMIT_NPROC (also in the argv) is inert: the pids cgroup is what holds.
          const cgroup = route === "cgroup" ? yield* pidsCgroup(20) : undefined
          const command = sandboxed(dir, limits)
          const out = yield* runWithFds(cgroup === undefined ? command : cgroup.enter(command))
          expect(out.stderr).toContain("Cannot fork")
          expect(started(out.stdout)).toBeGreaterThan(0)
          expect(started(out.stdout)).toBeLessThan(20)
          if (cgroup !== undefined) {
            const refusedForks = yield* cgroup.refusedForks
            expect(refusedForks).toBeGreaterThan(0)
            expect(limitExceeded(limits, { exitCode: out.exitCode, refusedForks })).toBe("processes")
          }
        })
      )
    ))

  const asRoot = process.getuid?.() === 0
  it.live.runIf(asRoot)("the pids cgroup is removed, and what is left in it killed, when its scope closes", () =>
    Effect.gen(function* () {
      const { child, dir } = yield* Effect.scoped(
        Effect.gen(function* () {
          const cgroup = yield* pidsCgroup(5)
          const command = cgroup.enter({ argv: ["sleep", "30"], cwd: "/", env })
          const [file, ...args] = command.argv
          const child = spawn(file, args, { cwd: command.cwd, env: command.env, stdio: "ignore" })
          // Wait until the shell has joined the cgroup and exec'd sleep.
          const procs = path.join(cgroup.path, "cgroup.procs")
          yield* Effect.promise(async () => {
            while (!fs.readFileSync(procs, "utf8").includes(String(child.pid))) {
              await new Promise((resolve) => setTimeout(resolve, 5))
            }
          })
          return { child, dir: cgroup.path }
        })
      )
      expect(fs.existsSync(dir)).toBe(false)
      const signal = yield* Effect.promise(() =>
        new Promise((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) resolve(child.signalCode)
          else child.once("exit", (_code, sig) => resolve(sig))
        })
      )
      expect(signal).toBe("SIGKILL")
    }))
})
