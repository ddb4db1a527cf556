/**
 * Soak (`npm run soak`, compiled like the benchmarks; `SOAK_COUNT=1000 npm run soak` for a short one): 10,000 execs, 16 in flight, mixing normal,
 * truncated, failing, timed-out (honouring and ignoring SIGTERM), interrupted and failing-to-spawn runs, through one
 * `NativeRunner.layerNode` runtime. Afterwards it checks, from /proc rather than the runner's own word:
 *
 * - no child of this process remains (zombies included),
 * - no process remains in any process group the runs created (each shell run appends its pid, its group id,
 *   to a file first), nor any process carrying the soak's env marker (which survives setsid and reparenting),
 * - the open fd count, RSS and the JS heap (after GC) are back within a small margin of where they were after the
 *   warm-up,
 * - every run returned a result or a typed error of the kind its scenario expects (interrupts only where we
 *   interrupted, no defects).
 *
 * Exits 1 when any check fails.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as ManagedRuntime from "effect/ManagedRuntime"
import { randomUUID } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import type { ExecInput, ExecResult } from "../src/Exec.js"
import * as NativeRunner from "../src/NativeRunner.js"
import { childrenOf, describeFds, inGroups, openFds, rssBytes, waitUntilEmpty, withEnvMarker } from "./lib/procs.js"
import { fmt, MiB, quantile, table } from "./lib/stats.js"

v8.setFlagsFromString("--expose-gc")
const collect: unknown = vm.runInNewContext("gc")
const gc = () => {
  if (typeof collect === "function") {
    collect()
    collect()
  }
}

const count = Math.max(1, Math.round(Number(process.env["SOAK_COUNT"] ?? "10000")))
const inFlight = 16
const fdMargin = 2
const rssMarginBytes = 32 * MiB
const heapMarginBytes = 8 * MiB
const MARK = "SOAK_MARK"
const mark = `${process.pid}-${randomUUID()}`
const dir = mkdtempSync(path.join(os.tmpdir(), "enr-soak-"))
const pgidFile = path.join(dir, "pgids")

type Kind =
  | "normal"
  | "truncated"
  | "nonZero"
  | "timeoutTerm"
  | "timeoutIgnoreTerm"
  | "interrupted"
  | "interruptedTree"
  | "notFound"
  | "badCwd"
  | "stdin"

/** The mix, in 20ths: half plain runs, the rest spread over the faults. */
const mix: ReadonlyArray<readonly [Kind, number]> = [
  ["normal", 7],
  ["stdin", 1],
  ["truncated", 3],
  ["nonZero", 1],
  ["timeoutTerm", 1],
  ["timeoutIgnoreTerm", 1],
  ["interrupted", 2],
  ["interruptedTree", 1],
  ["notFound", 2],
  ["badCwd", 1]
]
const wheel: ReadonlyArray<Kind> = mix.flatMap(([kind, weight]) => Array.from({ length: weight }, () => kind))

/** A shell command that first records its pid (= its process group) and then becomes `rest`. */
const shell = (rest: string): Array<string> => ["sh", "-c", `echo $$ >> '${pgidFile}'; ${rest}`]
const env = { [MARK]: mark }

const inputOf = (kind: Kind, i: number): ExecInput => {
  switch (kind) {
    case "normal":
      return { argv: shell(`echo hello-${i}`), env }
    case "stdin":
      return { argv: shell("exec cat"), env, stdin: new Uint8Array(70_000).fill(97) }
    case "truncated":
      return { argv: shell("exec head -c 300000 /dev/zero"), env, limits: { maxStdoutBytes: 1000 } }
    case "nonZero":
      return { argv: shell("echo oops >&2; exit 3"), env }
    case "timeoutTerm":
      return { argv: shell("exec sleep 30"), env, timeout: "100 millis" }
    case "timeoutIgnoreTerm":
      return { argv: shell("trap '' TERM; exec sleep 30"), env, timeout: "100 millis", killGrace: "100 millis" }
    case "interrupted":
      return { argv: shell("exec sleep 30"), env }
    case "interruptedTree":
      return { argv: shell("sleep 30 & trap '' TERM; sleep 30"), env, killGrace: "100 millis" }
    case "notFound":
      return { argv: ["/nonexistent/soak-program"], env }
    case "badCwd":
      return { argv: shell("true"), env, cwd: path.join(dir, "missing") }
  }
}

/** Why a run's exit does not match its scenario, or undefined when it does. */
const verdict = (kind: Kind, i: number, exit: Exit.Exit<ExecResult, unknown>): string | undefined => {
  if (Exit.isFailure(exit)) {
    if (Cause.isInterruptedOnly(exit.cause)) {
      return kind === "interrupted" || kind === "interruptedTree" ? undefined : "interrupted unexpectedly"
    }
    const failure = Cause.failureOption(exit.cause)
    if (failure._tag === "None") return `defect: ${Cause.pretty(exit.cause).split("\n")[0]}`
    const error = failure.value
    const tag = typeof error === "object" && error !== null ? Reflect.get(error, "_tag") : undefined
    const reason = typeof error === "object" && error !== null ? Reflect.get(error, "reason") : undefined
    if (kind === "notFound") return tag === "SpawnError" && reason === "NotFound" ? undefined : `wrong error ${String(tag)}/${String(reason)}`
    if (kind === "badCwd") return tag === "SpawnError" && reason === "CwdNotFound" ? undefined : `wrong error ${String(tag)}/${String(reason)}`
    return `unexpected error ${String(tag)}: ${String(Reflect.get(Object(error), "message"))}`
  }
  const r = exit.value
  const out = new TextDecoder().decode(r.stdout)
  switch (kind) {
    case "normal":
      return r.exitCode === 0 && out === `hello-${i}\n` ? undefined : `bad result ${r.exitCode} ${JSON.stringify(out)}`
    case "stdin":
      return r.exitCode === 0 && r.stdoutBytes === 70_000 ? undefined : `bad stdin echo ${r.exitCode} ${r.stdoutBytes}`
    case "truncated":
      return r.exitCode === 0 && r.truncatedStdout && r.stdout.length === 1000 && r.stdoutBytes === 300_000
        ? undefined
        : `bad truncation ${r.stdout.length}/${r.stdoutBytes}`
    case "nonZero":
      return r.exitCode === 3 && new TextDecoder().decode(r.stderr) === "oops\n" ? undefined : `bad failure ${r.exitCode}`
    case "timeoutTerm":
    case "timeoutIgnoreTerm":
      return r.timedOut && r.exitCode === 124 ? undefined : `not timed out: ${r.exitCode}`
    case "interrupted":
    case "interruptedTree":
      return `finished although interrupted (exit ${r.exitCode})`
    case "notFound":
    case "badCwd":
      return `spawned (exit ${r.exitCode})`
  }
}

const runOne = (kind: Kind, i: number): Effect.Effect<Exit.Exit<ExecResult, unknown>, never, NativeRunner.NativeRunner> => {
  const exec = NativeRunner.exec(inputOf(kind, i))
  if (kind !== "interrupted" && kind !== "interruptedTree") return Effect.exit(exec)
  return Effect.gen(function*() {
    const fiber = yield* Effect.fork(exec)
    // From before the spawn to well into the run (the timeouts above are 100 ms).
    yield* Effect.sleep(`${Math.floor(Math.random() * 80)} millis`)
    yield* Fiber.interrupt(fiber)
    return yield* Fiber.await(fiber)
  })
}

const readPgids = (): Set<number> => {
  try {
    return new Set(readFileSync(pgidFile, "utf8").split("\n").filter((l) => l !== "").map(Number))
  } catch {
    return new Set()
  }
}

/** Open fds, RSS and JS heap after garbage collection and `settleMs` for the runtime to let go of what it can. */
const settledUsage = async (settleMs: number) => {
  gc()
  await new Promise((resolve) => setTimeout(resolve, settleMs))
  gc()
  return { fds: openFds(), rss: rssBytes(), heap: process.memoryUsage().heapUsed }
}

const main = async () => {
  // Children this process had before any run (none expected; a loader's helper process would be one): not ours.
  const runtime = ManagedRuntime.make(NativeRunner.layerNode({ killGrace: "200 millis" }))
  // The layer first: its spawn helper is a child of ours for the layer's whole life, not something a run left.
  await runtime.runtime()
  const preexisting = new Set(childrenOf(process.pid).map((p) => p.pid))
  console.log(`soak: ${count} execs, ${inFlight} in flight, node ${process.version}, ${os.cpus().length} cpus, load ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}`)

  // Warm-up: one of each kind a few times, so baselines include what the runtime keeps for good.
  await runtime.runPromise(Effect.forEach(Array.from({ length: 60 }, (_, i) => i), (i) => runOne(wheel[i % wheel.length] ?? "normal", i), { concurrency: inFlight }))
  const { fds: fdsBefore, rss: rssBefore, heap: heapBefore } = await settledUsage(300)

  const started = performance.now()
  const byKind = new Map<Kind, { runs: number; bad: number; ms: Array<number>; interrupted: number; errors: number }>()
  const problems: Array<string> = []
  let done = 0
  await runtime.runPromise(Effect.forEach(
    Array.from({ length: count }, (_, i) => i),
    (i) =>
      Effect.gen(function*() {
        const kind = wheel[(i * 7) % wheel.length] ?? "normal"
        const t0 = performance.now()
        const exit = yield* runOne(kind, i)
        const ms = performance.now() - t0
        const stats = byKind.get(kind) ?? { runs: 0, bad: 0, ms: [], interrupted: 0, errors: 0 }
        stats.runs++
        stats.ms.push(ms)
        if (Exit.isFailure(exit)) {
          if (Cause.isInterruptedOnly(exit.cause)) stats.interrupted++
          else stats.errors++
        }
        const why = verdict(kind, i, exit)
        if (why !== undefined) {
          stats.bad++
          if (problems.length < 20) problems.push(`run ${i} (${kind}): ${why}`)
        }
        byKind.set(kind, stats)
        done++
        if (done % 1000 === 0) console.log(`  ${done}/${count} runs, ${fmt((performance.now() - started) / 1000, 1)} s`)
      }),
    { concurrency: inFlight, discard: true }
  ))
  const wallMs = performance.now() - started

  // Every run has returned: whatever is still around now was left behind. Give the kernel a moment to reap.
  const pgids = readPgids()
  const childrenLeft = await waitUntilEmpty(() => childrenOf(process.pid).filter((p) => !preexisting.has(p.pid)), 2_000)
  const groupLeft = await waitUntilEmpty(() => inGroups(pgids), 2_000)
  const markedLeft = await waitUntilEmpty(() => withEnvMarker(MARK, mark), 2_000)
  await runtime.dispose()
  const { fds: fdsAfter, rss: rssAfter, heap: heapAfter } = await settledUsage(500)

  console.log(`\n${count} runs in ${fmt(wallMs / 1000, 1)} s (${fmt(count / (wallMs / 1000), 0)} runs/s)`)
  console.log(table(
    ["kind", "runs", "interrupted", "typed errors", "mismatches", "p50 ms", "p99 ms", "max ms"],
    [...byKind.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([kind, s]) => [
      kind,
      String(s.runs),
      String(s.interrupted),
      String(s.errors),
      String(s.bad),
      fmt(quantile(s.ms, 0.5), 1),
      fmt(quantile(s.ms, 0.99), 1),
      fmt(Math.max(...s.ms), 1)
    ])
  ))
  const total = [...byKind.values()].reduce((n, s) => n + s.runs, 0)
  const checks: Array<readonly [string, boolean, string]> = [
    ["every run returned a result or the typed error its scenario expects", problems.length === 0 && total === count, `${total}/${count} accounted, ${[...byKind.values()].reduce((n, s) => n + s.bad, 0)} mismatches`],
    ["no child process of ours remains (zombies included)", childrenLeft.length === 0, childrenLeft.map((p) => `${p.pid}:${p.comm}:${p.state}`).join(", ") || "none"],
    [`no process remains in the ${pgids.size} process groups the runs created`, groupLeft.length === 0, groupLeft.map((p) => `${p.pid}:${p.comm}:${p.state}`).join(", ") || "none"],
    ["no process carries the soak's env marker", markedLeft.length === 0, markedLeft.map((p) => `${p.pid}:${p.comm}:${p.state}`).join(", ") || "none"],
    [`open fds back within ${fdMargin}`, fdsAfter <= fdsBefore + fdMargin, `${fdsBefore} -> ${fdsAfter}`],
    [`RSS back within ${rssMarginBytes / MiB} MiB`, rssAfter <= rssBefore + rssMarginBytes, `${fmt(rssBefore / MiB, 1)} MiB -> ${fmt(rssAfter / MiB, 1)} MiB`],
    [
      `JS heap after GC back within ${heapMarginBytes / MiB} MiB`,
      heapAfter <= heapBefore + heapMarginBytes,
      `${fmt(heapBefore / MiB, 1)} MiB -> ${fmt(heapAfter / MiB, 1)} MiB (${fmt((heapAfter - heapBefore) / count / 1024, 1)} KiB per exec)`
    ]
  ]
  console.log("")
  for (const [what, ok, detail] of checks) console.log(`${ok ? "PASS" : "FAIL"}  ${what}: ${detail}`)
  for (const p of problems) console.log(`  ${p}`)
  if (fdsAfter > fdsBefore + fdMargin) console.log(`  open fds now:\n    ${describeFds().join("\n    ")}`)
  rmSync(dir, { recursive: true, force: true })
  if (checks.some(([, ok]) => !ok)) process.exitCode = 1
}

await main()
