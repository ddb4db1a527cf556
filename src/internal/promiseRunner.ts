/**
 * The Promise bridge: the seed's `NativeRunner` over a runner layer, for code outside Effect. Every exec runs as a
 * fiber of one `ManagedRuntime`; `dispose` interrupts those still running (their trees are killed by then) before the
 * layer is released. Unless `cleanup: false`, a SIGTERM, SIGINT or SIGHUP to the host, or the host's event loop
 * running dry (`beforeExit`), disposes first: a plain Node app stopped with a signal leaves no command running.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import type { NativeRunnerError } from "../Errors.js"
import type { ExecInput, ExecResult } from "../Exec.js"
import type * as Types from "../types.js"
import { ExecInterrupted } from "./errors.js"

/** Options of `toPromiseRunner`. */
export interface PromiseRunnerOptions {
  /**
   * Kill every command still running when the host gets SIGTERM, SIGINT or SIGHUP, or is about to exit; then the
   * signal takes its default course (the host dies of it) unless something else handles it. Default `true`.
   */
  readonly cleanup?: boolean | undefined
}

/**
 * What a Promise runner's `exec` takes: the whole input of the Effect API (the seed's `NativeExecInput` and more:
 * `timeout`, `killGrace` and `idleTimeout` as any `Duration.DurationInput`, `"10 seconds"` included, `keep`, `spill`).
 */
export type PromiseExecInput = ExecInput

/** Per-call options of a Promise runner's `exec`. */
export interface PromiseExecOptions {
  /**
   * Aborting it stops the run as an interruption does: TERM to the process tree, KILL after the kill grace; the
   * promise rejects with `ExecInterrupted` (`reason: "Aborted"`) once the tree is gone. An aborted signal spawns
   * nothing.
   */
  readonly signal?: AbortSignal | undefined
}

/** A Promise runner backed by a layer, for code outside Effect. Call `dispose` to release the layer. */
export interface PromiseRunner extends Types.NativeRunner {
  /**
   * Runs one command. Rejects with the typed error (`InvalidInput`, `SpawnError`, `SandboxUnavailable`) on failure,
   * and with `ExecInterrupted` when it was aborted or the runner disposed.
   */
  readonly exec: (input: PromiseExecInput, options?: PromiseExecOptions) => Promise<ExecResult>
  /** Interrupts execs still running, resolving once their process trees are gone, then releases the layer. */
  readonly dispose: () => Promise<void>
}

const SIGNALS = ["SIGTERM", "SIGINT", "SIGHUP"] as const

export const toPromiseRunner = <R, E>(
  runnerLayer: Layer.Layer<R, E>,
  exec: (input: ExecInput) => Effect.Effect<ExecResult, NativeRunnerError, R>,
  options: PromiseRunnerOptions = {}
): PromiseRunner => {
  const runtime = ManagedRuntime.make(runnerLayer)
  const running = new Set<Fiber.RuntimeFiber<ExecResult, NativeRunnerError | E>>()
  let disposing: Promise<void> | undefined

  const dispose = (): Promise<void> => {
    disposing ??= (async () => {
      for (const signal of SIGNALS) process.off(signal, onSignal)
      process.off("beforeExit", onBeforeExit)
      await Effect.runPromise(Fiber.interruptAll(running))
      await runtime.dispose()
    })()
    return disposing
  }
  const onSignal = (signal: NodeJS.Signals) => {
    void dispose().then(() => {
      // Ours was the only handler: die of the signal, as the host would have without us.
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal)
    })
  }
  const onBeforeExit = () => void dispose()
  if (options.cleanup !== false) {
    for (const signal of SIGNALS) process.once(signal, onSignal)
    process.once("beforeExit", onBeforeExit)
  }

  const disposed = () => new ExecInterrupted({ reason: "Disposed", message: "the runner was disposed; the run was stopped" })
  const aborted = () => new ExecInterrupted({ reason: "Aborted", message: "the exec's signal was aborted; the run was stopped" })
  return {
    exec: (input, execOptions = {}) => {
      const signal = execOptions.signal
      if (disposing !== undefined) return Promise.reject(disposed())
      if (signal?.aborted === true) return Promise.reject(aborted())
      const fiber = runtime.runFork(exec(input))
      running.add(fiber)
      let abortedHere = false
      const onAbort = () => {
        abortedHere = true
        fiber.unsafeInterruptAsFork(fiber.id())
      }
      signal?.addEventListener("abort", onAbort, { once: true })
      return Effect.runPromise(Fiber.await(fiber)).then((exit) => {
        running.delete(fiber)
        signal?.removeEventListener("abort", onAbort)
        if (Exit.isSuccess(exit)) return exit.value
        if (Cause.isInterruptedOnly(exit.cause)) throw abortedHere ? aborted() : disposed()
        throw Cause.squash(exit.cause)
      })
    },
    dispose
  }
}
