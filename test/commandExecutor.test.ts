/**
 * `NativeRunner.layerCommandExecutor`: `Command` code run by the runner. Where a guarantee is ours and not the
 * platform's (caps, timeouts, tree kill of pipelines, env policy), the same program is also run against
 * `NodeCommandExecutor`, to show the assertion is one the platform's executor fails.
 */
import * as Command from "@effect/platform/Command"
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import type { PlatformError } from "@effect/platform/Error"
import * as NodeCommandExecutor from "@effect/platform-node/NodeCommandExecutor"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { afterAll, afterEach, describe, expect, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import { rmSync } from "node:fs"
import { Audit, NativeRunner } from "../src/index.js"
import { sandboxPreflight } from "./helpers/bin.js"
import { pidsWithCmdlineContaining, randomDigits, runCleanups, waitUntil } from "./helpers/escape.js"
import { makeTestWorkspace } from "./helpers/workspace.js"

afterEach(runCleanups)

const ours = (options: NativeRunner.CommandExecutorOptions = {}) => NativeRunner.layerCommandExecutor({ killGrace: "300 millis", ...options })
const platform = NodeCommandExecutor.layer.pipe(Layer.provide(NodeFileSystem.layer))

/** A `sleep` whose command line carries a marker, so the test can find it on the host (sleep takes fractions). */
const marker = () => `30.${randomDigits()}`

const run = <A, E, LE>(
  program: Effect.Effect<A, E, CommandExecutor.CommandExecutor>,
  layer: Layer.Layer<CommandExecutor.CommandExecutor, LE>
) => Effect.provide(program, layer)

describe("layerCommandExecutor: caps", () => {
  const big = Command.make("head", "-c", String(3 * 1024 * 1024), "/dev/zero")

  it.live("Command.string keeps the first maxStdoutBytes bytes, byte-exact; the platform's keeps all 3 MiB", () =>
    Effect.gen(function*() {
      const counted = Command.make("sh", "-c", "i=0; while [ $i -lt 20000 ]; do printf '%08d' $i; i=$((i+1)); done")
      const capped = yield* run(Command.string(counted), ours({ maxStdoutBytes: 1000 }))
      expect(capped).toBe(Array.from({ length: 125 }, (_, i) => String(i).padStart(8, "0")).join(""))
      expect((yield* run(Command.string(big), ours({ maxStdoutBytes: 1 << 20 }))).length).toBe(1 << 20)
      expect((yield* run(Command.string(big), platform)).length).toBe(3 * 1024 * 1024)
    }))

  it.live("overflow: \"fail\" fails the stream past the cap with InvalidData, ours in cause; under the cap it is as before", () =>
    Effect.gen(function*() {
      const failed = yield* Effect.flip(run(Command.string(big), ours({ maxStdoutBytes: 1024, overflow: "fail" })))
      expect(failed).toMatchObject({ _tag: "SystemError", reason: "InvalidData", module: "Command" })
      expect(yield* run(Command.string(Command.make("echo", "-n", "small")), ours({ maxStdoutBytes: 1024, overflow: "fail" }))).toBe("small")
    }))

  it.live("stderr is capped too, and a reader that never reads it holds at most the cap", () =>
    Effect.gen(function*() {
      const lines = yield* run(
        Effect.scoped(Effect.gen(function*() {
          const proc = yield* Command.start(Command.make("sh", "-c", "head -c 5000000 /dev/zero >&2; echo done"))
          const out = yield* Command.lines(Command.make("true"))
          const stderr = yield* Stream.runFold(proc.stderr, 0, (n, chunk) => n + chunk.length)
          return [out, stderr, yield* proc.exitCode]
        })),
        ours({ maxStderrBytes: 4096 })
      )
      expect(lines).toStrictEqual([[], 4096, 0])
    }))
})

describe("layerCommandExecutor: timeouts and kills", () => {
  it.live("a command past the timeout fails Command.string with TimedOut and its tree is gone; the platform's waits", () =>
    Effect.gen(function*() {
      const mark = marker()
      const command = Command.make("sh", "-c", `sleep ${mark} & sleep ${mark}; echo never`)
      const started = Date.now()
      const failed = yield* Effect.flip(run(Command.string(command), ours({ timeout: "500 millis" })))
      expect(failed).toMatchObject({ _tag: "SystemError", reason: "TimedOut" })
      expect(Date.now() - started).toBeLessThan(10_000)
      expect(pidsWithCmdlineContaining(mark)).toStrictEqual([])
      // The platform's executor has no timeout: after the same 500 ms the run is still going.
      const theirs = yield* run(Effect.fork(Command.string(command)), platform)
      expect(yield* Effect.sleep("1 second").pipe(Effect.zipRight(Fiber.poll(theirs)))).toStrictEqual(expect.objectContaining({ _tag: "None" }))
      yield* Fiber.interrupt(theirs)
    }))

  it.live("exitCode after a timeout fails with TimedOut (not a plain exit code)", () =>
    Effect.gen(function*() {
      const failed = yield* Effect.flip(run(Command.exitCode(Command.make("sleep", "5")), ours({ timeout: "300 millis" })))
      expect(failed).toMatchObject({ _tag: "SystemError", reason: "TimedOut", method: "exitCode" })
    }))

  it.live("Process.kill on a TERM-ignorer: TERM, the grace, then KILL; the tree is gone and exitCode says SIGKILL ended it", () =>
    Effect.gen(function*() {
      const mark = marker()
      const outcome = yield* run(
        Effect.scoped(Effect.gen(function*() {
          const proc = yield* Command.start(Command.make("sh", "-c", `trap '' TERM; sleep ${mark} & wait; wait`))
          yield* waitUntil(() => pidsWithCmdlineContaining(mark).length > 0, 5_000)
          const before = Date.now()
          yield* proc.kill()
          const took = Date.now() - before
          return { took, running: yield* proc.isRunning, exit: yield* Effect.flip(proc.exitCode) }
        })),
        ours({ killGrace: "300 millis" })
      )
      expect(outcome.running).toBe(false)
      expect(outcome.took).toBeGreaterThanOrEqual(250)
      // TERM was ignored: what ended it was the KILL after the grace, and the exit says so.
      expect(outcome.exit.message).toContain("Process interrupted due to receipt of signal: SIGKILL")
      expect(pidsWithCmdlineContaining(mark)).toStrictEqual([])
    }))

  it.live("Process.kill with a signal the runner does not send fails with BadArgument and the run goes on", () =>
    Effect.gen(function*() {
      const outcome = yield* run(
        Effect.scoped(Effect.gen(function*() {
          const proc = yield* Command.start(Command.make("sleep", "5"))
          const refused = yield* Effect.flip(proc.kill("SIGUSR1"))
          return [refused._tag, yield* proc.isRunning]
        })),
        ours()
      )
      expect(outcome).toStrictEqual(["BadArgument", true])
    }))
})

describe("layerCommandExecutor: pipelines", () => {
  it.live("a pipeline whose first stage outlives the timeout is killed as a whole: TimedOut, no stage left", () =>
    Effect.gen(function*() {
      const mark = marker()
      const pipeline = Command.make("sh", "-c", `echo start; exec sleep ${mark}`).pipe(
        Command.pipeTo(Command.make("cat")),
        Command.pipeTo(Command.make("sh", "-c", `cat; exec sleep ${mark}`))
      )
      const failed = yield* Effect.flip(run(Command.lines(pipeline), ours({ timeout: "700 millis" })))
      expect(failed).toMatchObject({ _tag: "SystemError", reason: "TimedOut" })
      expect(yield* waitUntil(() => pidsWithCmdlineContaining(mark).length === 0, 3_000)).toBe(true)
    }))

  it.live("interrupting a pipeline run leaves no stage behind", () =>
    Effect.gen(function*() {
      const mark = marker()
      const pipeline = Command.make("sleep", mark).pipe(Command.pipeTo(Command.make("sh", "-c", `cat; sleep ${mark}`)))
      const [running, exit, left] = yield* run(
        Effect.gen(function*() {
          const fiber = yield* Effect.fork(Command.string(pipeline))
          yield* waitUntil(() => pidsWithCmdlineContaining(mark).length >= 2, 5_000)
          const running = pidsWithCmdlineContaining(mark).length
          const exit = yield* Fiber.interrupt(fiber)
          // Checked before the layer closes: the interruption itself killed the stages, not the layer's end.
          return [running, exit, pidsWithCmdlineContaining(mark)] as const
        }),
        ours()
      )
      expect(running).toBeGreaterThanOrEqual(2)
      expect(Exit.isInterrupted(exit)).toBe(true)
      expect(left).toStrictEqual([])
    }))

  it.live("killing the pipeline's process kills every stage", () =>
    Effect.gen(function*() {
      const mark = marker()
      const left = yield* run(
        Effect.scoped(Effect.gen(function*() {
          const proc = yield* Command.start(Command.make("sleep", mark).pipe(Command.pipeTo(Command.make("sleep", `${mark}1`))))
          yield* waitUntil(() => pidsWithCmdlineContaining(mark).length >= 2, 5_000)
          yield* proc.kill()
          return pidsWithCmdlineContaining(mark)
        })),
        ours()
      )
      expect(left).toStrictEqual([])
    }))
})

describe("layerCommandExecutor: pipelines and slots", () => {
  it.live("the pipeline's Process.stdin writes the first stage, and ending it ends the pipeline", () =>
    Effect.gen(function*() {
      const out = yield* run(
        Effect.scoped(Effect.gen(function*() {
          const proc = yield* Command.start(Command.make("cat").pipe(Command.pipeTo(Command.make("tr", "a-z", "A-Z"))))
          yield* Stream.run(Stream.make(new TextEncoder().encode("piped in")), proc.stdin)
          return new TextDecoder().decode(Buffer.concat(Chunk.toReadonlyArray(yield* Stream.runCollect(proc.stdout))))
        })),
        ours({ timeout: "10 seconds" })
      )
      expect(out).toBe("PIPED IN")
    }))

  it.live("a pipeline takes a slot per stage, all at once: no stage waits on another (yes | head, two at a time)", () =>
    Effect.gen(function*() {
      const pipeline = Command.make("yes").pipe(Command.pipeTo(Command.make("head", "-n", "1")))
      const started = Date.now()
      const both = yield* run(Effect.all([Command.string(pipeline), Command.string(pipeline)], { concurrency: 2 }), ours({ maxConcurrent: 2, timeout: "20 seconds" }))
      expect(both).toStrictEqual(["y\n", "y\n"])
      expect(Date.now() - started).toBeLessThan(10_000)
      const refused = yield* run(Effect.flip(Command.string(pipeline)), ours({ maxConcurrent: 1 }))
      expect(refused).toMatchObject({ _tag: "BadArgument", method: "spawn" })
    }))
})

describe("layerCommandExecutor: pipelines, cut and failed starts (review)", () => {
  it.live("a stage's stdout past the cap on its way to the next fails the pipeline with InvalidData, never a wrong answer", () =>
    Effect.gen(function*() {
      const count = (bytes: number) => Command.make("head", "-c", String(bytes), "/dev/zero").pipe(Command.pipeTo(Command.make("wc", "-c")))
      const layer = ours({ maxStdoutBytes: 1 << 20 })
      const cut = yield* run(Effect.flip(Command.string(count(3 << 20))), layer)
      expect(cut).toMatchObject({ _tag: "SystemError", reason: "InvalidData" })
      expect(cut.message).toContain("head -c 3145728 /dev/zero")
      expect((yield* run(Command.string(count(1 << 20)), layer)).trim()).toBe(String(1 << 20))
    }))

  it.live("a stage that cannot start fails the start, and the stages already started are gone at once", () =>
    Effect.gen(function*() {
      const mark = marker()
      const outcome = yield* run(
        Effect.scoped(Effect.gen(function*() {
          const failed = yield* Effect.flip(Command.start(Command.make("sleep", mark).pipe(Command.pipeTo(Command.make("enr-no-such-program")))))
          // Still in the caller's scope: nothing of the pipeline may run on in it.
          return { reason: failed._tag === "SystemError" ? failed.reason : failed._tag, left: pidsWithCmdlineContaining(mark) }
        })),
        ours()
      )
      expect(outcome).toStrictEqual({ reason: "NotFound", left: [] })
    }))
})

describe("layerCommandExecutor: stdin", () => {
  it.live("a 100 MiB stdin stream goes through, pulled as the child reads (no 64 MiB collect)", () =>
    Effect.gen(function*() {
      const mib = new Uint8Array(1024 * 1024).fill(97)
      const stdin = Stream.range(1, 100).pipe(Stream.map(() => mib))
      const counted = yield* run(Command.string(Command.make("wc", "-c").pipe(Command.stdin(stdin))), ours())
      expect(counted.trim()).toBe(String(100 * 1024 * 1024))
    }))

  it.live("backpressure: a child that reads one byte and exits stops the pull (an endless stream is not read on)", () =>
    Effect.gen(function*() {
      let pulled = 0
      const stdin = Stream.repeatEffect(Effect.sync(() => {
        pulled++
        return new Uint8Array(64 * 1024)
      }))
      const out = yield* run(Command.string(Command.make("head", "-c", "1").pipe(Command.stdin(stdin))), ours())
      expect(out.length).toBe(1)
      // The kernel's pipe (64 KiB) and one chunk in flight; a collect-first executor would never return.
      expect(pulled).toBeLessThan(64)
    }))

  it.live("Command.start: Process.stdin writes the child's stdin and ends it when the sink completes", () =>
    Effect.gen(function*() {
      const out = yield* run(
        Effect.scoped(Effect.gen(function*() {
          const proc = yield* Command.start(Command.make("tr", "a-z", "A-Z"))
          yield* Stream.run(Stream.make(new TextEncoder().encode("hello "), new TextEncoder().encode("world")), proc.stdin)
          const bytes = yield* Stream.runCollect(proc.stdout)
          return new TextDecoder().decode(Buffer.concat(Chunk.toReadonlyArray(bytes)))
        })),
        ours()
      )
      expect(out).toBe("HELLO WORLD")
    }))

  it.live("Command.string of a stdin reader gets EOF, not a pipe nobody can write (the platform's waits for ever)", () =>
    Effect.gen(function*() {
      expect(yield* run(Command.string(Command.make("cat")), ours())).toBe("")
    }))
})

describe("layerCommandExecutor: env, errors, audit", () => {
  it.live("a secret-looking host variable is not inherited (the layer's inheritEnv), explicit env is; the platform passes it", () =>
    Effect.gen(function*() {
      process.env["ENR_TEST_API_TOKEN"] = "s3cret"
      try {
        const command = Command.make("sh", "-c", "echo \"${ENR_TEST_API_TOKEN:-unset} $GREETING\"").pipe(Command.env({ GREETING: "hi" }))
        expect(yield* run(Command.string(command), ours())).toBe("unset hi\n")
        expect(yield* run(Command.string(command), platform)).toBe("s3cret hi\n")
      } finally {
        delete process.env["ENR_TEST_API_TOKEN"]
      }
    }))

  it.live("NotFound and a missing cwd are the platform's SystemError shapes, with the runner's SpawnError as cause", () =>
    Effect.gen(function*() {
      const missing: PlatformError = yield* run(Effect.flip(Command.string(Command.make("enr-no-such-program"))), ours())
      expect(missing).toMatchObject({ _tag: "SystemError", reason: "NotFound", syscall: "spawn enr-no-such-program" })
      expect(missing.cause).toMatchObject({ _tag: "SpawnError", reason: "NotFound" })
      const badCwd: PlatformError = yield* run(Effect.flip(Command.string(Command.make("ls").pipe(Command.workingDirectory("/enr/no/such")))), ours())
      expect(badCwd).toMatchObject({ _tag: "SystemError", reason: "NotFound", module: "FileSystem", method: "access" })
      expect(badCwd.cause).toMatchObject({ _tag: "SpawnError", reason: "CwdNotFound" })
    }))

  it.live("every Command run is audited like an exec", () =>
    Effect.gen(function*() {
      const records = yield* Effect.gen(function*() {
        yield* Command.string(Command.make("echo", "audited"))
        return yield* Effect.flatMap(Audit.AuditMemory, (memory) => memory.records)
      }).pipe(Effect.provide(Layer.provideMerge(ours(), Audit.layerMemory)))
      expect(records).toHaveLength(1)
      expect(records[0]).toMatchObject({ cmd: "echo", argv: ["echo", "audited"], exitCode: 0, stdoutBytes: 8 })
    }))
})

const sandbox = await sandboxPreflight("layerCommandExecutor sandbox tests")

describe.skipIf(!sandbox.usable && !sandbox.inCI)("layerCommandExecutor: sandboxed", () => {
  const made = makeTestWorkspace("enr-cmdexec-")
  afterAll(() => rmSync(made.parent, { recursive: true, force: true }))

  it.live("with a sandbox the same Command code runs inside it: unprivileged, in the workspace, host files hidden", () =>
    Effect.gen(function*() {
      const layer = ours({ sandbox: { policy: { workspace: made.ws } } })
      const out = yield* run(Command.string(Command.make("sh", "-c", "id -u; pwd; cat /etc/shadow 2>/dev/null || echo hidden")), layer)
      expect(out.split("\n").slice(0, 3)).toStrictEqual([expect.not.stringMatching(/^0$/), "/workspace", "hidden"])
      // Streamed stdin reaches a sandboxed child too.
      const fed = yield* run(Command.string(Command.make("cat").pipe(Command.feed("into the sandbox"))), layer)
      expect(fed).toBe("into the sandbox")
      // A pipeline: every stage sandboxed, the bytes between them streamed from one sandbox into the next.
      const piped = yield* run(
        Command.lines(Command.make("sh", "-c", "id -u; echo b; echo a").pipe(Command.pipeTo(Command.make("sort")))),
        layer
      )
      const uid = String(process.getuid?.() === 0 ? 65534 : process.getuid?.())
      expect(piped).toStrictEqual([uid, "a", "b"])
    }))
})
