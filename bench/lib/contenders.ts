/**
 * The contenders the benchmarks compare, behind one Promise interface so the harness treats them alike:
 * raw `child_process.spawn`, `@effect/platform` `Command`, `execa`, and our `NativeRunner` (runtime built once).
 * Each keeps at most `maxStdoutBytes` / `maxStderrBytes` of output and drains the rest, as ours does.
 */
import * as Command from "@effect/platform/Command"
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Stream from "effect/Stream"
import { execa } from "execa"
import { spawn } from "node:child_process"
import type { ExecEvent, ExecInput, ExecResult } from "../../src/Exec.js"
import * as NativeRunner from "../../src/NativeRunner.js"

/** One command to run, with the limits every contender applies in its own way. */
export interface RunSpec {
  readonly argv: readonly [string, ...Array<string>]
  readonly maxStdoutBytes: number
  readonly maxStderrBytes: number
  /** Wall-clock limit; on expiry SIGTERM to the group, SIGKILL after `graceMs`. */
  readonly timeoutMs?: number
  readonly graceMs?: number
  /** Only the raw contender honours these (for the bare-bwrap baseline). */
  readonly cwd?: string
  readonly env?: Readonly<Record<string, string>>
  /** Bytes for descriptors 3, 4, ...: each written, then closed (bwrap's `--args` and `--seccomp`). */
  readonly inputs?: ReadonlyArray<Uint8Array>
}

/** What a contender reports about one run; enough to check that it really ran the command. */
export interface RunReport {
  readonly exitCode: number | null
  readonly stdoutBytes: number
  readonly keptStdoutBytes: number
  readonly timedOut: boolean
}

export interface Contender {
  readonly name: string
  readonly run: (spec: RunSpec) => Promise<RunReport>
  readonly dispose: () => Promise<void>
}

/** Keeps the first `cap` bytes of a stream of chunks, counts all; `bytes()` concatenates once at the end. */
export const keeper = (cap: number) => {
  const kept: Array<Uint8Array> = []
  let keptBytes = 0
  let total = 0
  return {
    push: (chunk: Uint8Array) => {
      total += chunk.length
      const room = cap - keptBytes
      if (room <= 0) return
      const part = chunk.length <= room ? chunk : chunk.subarray(0, room)
      kept.push(part)
      keptBytes += part.length
    },
    total: () => total,
    kept: () => keptBytes,
    bytes: () => Buffer.concat(kept, keptBytes)
  }
}

/** `child_process.spawn`, draining both pipes, resolving on "close"; the baseline every ratio is against. */
export const raw = (name = "raw spawn", prepare: (spec: RunSpec) => RunSpec = (spec) => spec): Contender => ({
  name,
  run: (original) =>
    new Promise((resolve, reject) => {
      const spec = prepare(original)
      const [file, ...args] = spec.argv
      const inputs = spec.inputs ?? []
      const child = spawn(file, args, {
        stdio: ["ignore", "pipe", "pipe", ...inputs.map(() => "pipe" as const)],
        detached: true,
        ...(spec.cwd === undefined ? {} : { cwd: spec.cwd }),
        ...(spec.env === undefined ? {} : { env: spec.env })
      })
      const out = keeper(spec.maxStdoutBytes)
      const err = keeper(spec.maxStderrBytes)
      let timedOut = false
      let timer: NodeJS.Timeout | undefined
      let killTimer: NodeJS.Timeout | undefined
      const killGroup = (signal: NodeJS.Signals) => {
        try {
          if (child.pid !== undefined) process.kill(-child.pid, signal)
        } catch {
          // group already gone
        }
      }
      if (spec.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          timedOut = true
          killGroup("SIGTERM")
          killTimer = setTimeout(() => killGroup("SIGKILL"), spec.graceMs ?? 2000)
        }, spec.timeoutMs)
      }
      inputs.forEach((bytes, i) => {
        const fd = child.stdio[3 + i]
        if (fd !== null && fd !== undefined && "end" in fd) {
          fd.on("error", () => undefined)
          fd.end(bytes)
        }
      })
      child.stdout?.on("data", out.push)
      child.stderr?.on("data", err.push)
      child.on("error", reject)
      child.on("close", (code) => {
        clearTimeout(timer)
        clearTimeout(killTimer)
        out.bytes()
        resolve({ exitCode: code, stdoutBytes: out.total(), keptStdoutBytes: out.kept(), timedOut })
      })
    }),
  dispose: async () => {}
})

/** `Command.start`, both streams drained with `Stream.runForEachChunk`, then `exitCode` (as in FINDINGS). */
export const command = (): Contender => {
  const runtime = ManagedRuntime.make(NodeContext.layer)
  return {
    name: "@effect/platform Command",
    run: (spec) => {
      const [file, ...args] = spec.argv
      const program = Effect.scoped(Effect.gen(function*() {
        const proc = yield* Command.start(Command.make(file, ...args))
        const out = keeper(spec.maxStdoutBytes)
        const err = keeper(spec.maxStderrBytes)
        const keep = (k: ReturnType<typeof keeper>) => (chunk: Iterable<Uint8Array>) =>
          Effect.sync(() => {
            for (const bytes of chunk) k.push(bytes)
          })
        yield* Effect.all([
          Stream.runForEachChunk(proc.stdout, keep(out)),
          Stream.runForEachChunk(proc.stderr, keep(err))
        ], { concurrency: 2, discard: true })
        const exitCode = yield* proc.exitCode
        out.bytes()
        return { exitCode, stdoutBytes: out.total(), keptStdoutBytes: out.kept(), timedOut: false }
      }))
      return runtime.runPromise(program)
    },
    dispose: () => runtime.dispose()
  }
}

/**
 * `Command.string` as Effect code writes it, through whichever `CommandExecutor` the layer provides: the platform's
 * own `NodeCommandExecutor`, or ours (`NativeRunner.layerCommandExecutor`). Only stdout is returned, no exit code.
 */
export const commandString = (
  name: string,
  layer: Layer.Layer<CommandExecutor.CommandExecutor, unknown>
): Contender => {
  const runtime = ManagedRuntime.make(layer)
  return {
    name,
    run: (spec) => {
      const [file, ...args] = spec.argv
      return runtime.runPromise(Effect.map(Command.string(Command.make(file, ...args)), (out) => {
        const bytes = Buffer.byteLength(out)
        return { exitCode: 0, stdoutBytes: bytes, keptStdoutBytes: bytes, timedOut: false }
      }))
    },
    dispose: () => runtime.dispose()
  }
}

/** `Command.start` awaiting only `exitCode`, streams left to Node: the floor of the platform path (per-exec only). */
export const commandExitOnly = (): Contender => {
  const runtime = ManagedRuntime.make(NodeContext.layer)
  return {
    name: "Command, exitCode only",
    run: (spec) => {
      const [file, ...args] = spec.argv
      return runtime.runPromise(Effect.scoped(Effect.gen(function*() {
        const proc = yield* Command.start(Command.make(file, ...args))
        const exitCode = yield* proc.exitCode
        return { exitCode, stdoutBytes: 0, keptStdoutBytes: 0, timedOut: false }
      })))
    },
    dispose: () => runtime.dispose()
  }
}

/**
 * execa 9 with `reject: false`. Output within the caps is buffered by execa (`maxBuffer` = cap); when a cap is
 * below what the child writes, execa would stop the child at `maxBuffer`, so it streams (`buffer: false`) and keeps
 * the first bytes itself instead.
 */
export const execaContender = (options: { readonly streaming?: boolean } = {}): Contender => ({
  name: "execa",
  run: async (spec) => {
    const [file, ...args] = spec.argv
    const common = {
      stdin: "ignore",
      reject: false,
      encoding: "buffer",
      // Keep the bytes as written, as the others do.
      stripFinalNewline: false,
      ...(spec.timeoutMs === undefined ? {} : { timeout: spec.timeoutMs, forceKillAfterDelay: spec.graceMs ?? 2000 })
    } as const
    if (options.streaming === true) {
      const child = execa(file, args, { ...common, buffer: false })
      const out = keeper(spec.maxStdoutBytes)
      const err = keeper(spec.maxStderrBytes)
      child.stdout.on("data", out.push)
      child.stderr.on("data", err.push)
      const result = await child
      out.bytes()
      return {
        exitCode: result.exitCode ?? null,
        stdoutBytes: out.total(),
        keptStdoutBytes: out.kept(),
        timedOut: result.timedOut
      }
    }
    const result = await execa(file, args, {
      ...common,
      maxBuffer: { stdout: spec.maxStdoutBytes, stderr: spec.maxStderrBytes }
    })
    return {
      exitCode: result.exitCode ?? null,
      stdoutBytes: result.stdout.length,
      keptStdoutBytes: result.stdout.length,
      timedOut: result.timedOut
    }
  },
  dispose: async () => {}
})

/** A run spec as our exec input (both of our contenders send the same). */
const inputOf = (spec: RunSpec): ExecInput => ({
  argv: [...spec.argv],
  limits: { maxStdoutBytes: spec.maxStdoutBytes, maxStderrBytes: spec.maxStderrBytes },
  ...(spec.timeoutMs === undefined ? {} : { timeout: `${spec.timeoutMs} millis` }),
  ...(spec.graceMs === undefined ? {} : { killGrace: `${spec.graceMs} millis` })
})

const reportOf = (result: ExecResult): RunReport => ({
  exitCode: result.exitCode,
  stdoutBytes: result.stdoutBytes,
  keptStdoutBytes: result.stdout.length,
  timedOut: result.timedOut
})

/** Our runner over any layer (default: `NativeRunner.layerNode()`), through a runtime built once. */
export const ours = (
  name = "ours (NativeRunner)",
  layer: Layer.Layer<NativeRunner.NativeRunner, unknown> = NativeRunner.layerNode()
): Contender => {
  const runtime = ManagedRuntime.make(layer)
  return {
    name,
    run: async (spec) => {
      return reportOf(await runtime.runPromise(NativeRunner.exec(inputOf(spec))))
    },
    dispose: () => runtime.dispose()
  }
}

/** Ours through `execStream`, drained: every chunk event consumed (counted), the result taken from `Exit`. */
export const oursStream = (
  name = "ours, execStream drained",
  layer: Layer.Layer<NativeRunner.NativeRunner, unknown> = NativeRunner.layerNode()
): Contender => {
  const runtime = ManagedRuntime.make(layer)
  return {
    name,
    run: async (spec) => {
      let streamed = 0
      let last: ExecEvent | undefined
      // Drained as a throughput-minded consumer would: a chunk of events at a time, no effect per event.
      await runtime.runPromise(NativeRunner.execStream(inputOf(spec)).pipe(
        Stream.runForEachChunk((events) => Effect.sync(() => {
          for (const event of events) {
            if (event._tag === "Stdout" || event._tag === "Stderr") streamed += event.bytes.length
            last = event
          }
        }))
      ))
      if (last === undefined || last._tag !== "Exit") throw new Error(`${name}: the stream ended without Exit`)
      const { result, dropped } = last
      if (streamed + dropped.bytes !== result.stdoutBytes + result.stderrBytes) throw new Error(`${name}: bytes lost`)
      return reportOf(result)
    },
    dispose: () => runtime.dispose()
  }
}
