/**
 * Run cgroups on the real host: every escape from the process group (setsid, double fork, setpgid) dies with the
 * run; signals reach what is in the cgroup and nothing else, even a process that took a reaped child's pid; the
 * directories go with their scopes; a dead host's are swept at layer start; the host never stays in a run's cgroup.
 * Root only (making cgroups, forcing pid reuse): in CI (CI=true) these run and fail when not root or when no
 * cgroup can be made; elsewhere they are skipped, saying why.
 */
import { afterEach, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { spawn } from "node:child_process"
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import * as path from "node:path"
import { killAll } from "../../bench/lib/procs.js"
import { makeCapture } from "../../src/internal/capture.js"
import { makeNodeSpawner } from "../../src/internal/nodeSpawner.js"
import type { PreparedCommand } from "../../src/internal/prepared.js"
import { makeRunCgroups, type RunCgroup } from "../../src/internal/runCgroup.js"
import * as NativeRunner from "../../src/NativeRunner.js"
import {
  fileHolds,
  isAlive,
  onCleanup,
  pidsWithCmdlineContaining,
  randomDigits,
  runCleanups,
  tempDir,
  text,
  waitUntil
} from "../helpers/escape.js"
import { bareRunner } from "../helpers/runner.js"
import { cgroupPids, cgroupToRemove, inCI, isRoot, ownCgroups, runsAsRoot, startTimeOf, takePid } from "../helpers/processes.js"

/** Run cgroups in the current scope; fails the test when this host cannot make them (it is root here). */
const runCgroups = Effect.flatMap(makeRunCgroups, (cgroups) =>
  cgroups === undefined ? Effect.dieMessage("makeRunCgroups made none here (it needs root or a delegated cgroup v2 subtree)") : Effect.succeed(cgroups))

const command = (script: string, cgroup: RunCgroup, ...args: Array<string>): PreparedCommand => ({
  argv: ["sh", "-c", script, "sh", ...args],
  cwd: "/",
  env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin" },
  cgroup: cgroup.join
})

/** Kills, after the test, every process with `marker` in its argv. */
const killMarked = (marker: string) =>
  onCleanup(() => killAll(pidsWithCmdlineContaining(marker).map((pid) => ({ pid }))))

/**
 * Three ways out of the process group, each writing its pid (once out) to `$1/<name>`; the script exits only when
 * all three have. `$2`: a marker in each sleep's argv. Double fork: `( ... &)` reparents it to init.
 */
const ESCAPES = `
setsid sh -c 'echo $$ > "$0/setsid"; exec sleep "30.$1"' "$1" "$2" &
(sh -c 'echo $$ > "$0/double-fork"; exec sleep "31.$1"' "$1" "$2" &)
perl -e 'setpgrp(0, 0); open(my $f, ">", "$ARGV[0]/setpgid") or die; print $f $$; close $f; exec "sleep", "32.$ARGV[1]"' "$1" "$2" &
while [ ! -s "$1/setsid" ] || [ ! -s "$1/double-fork" ] || [ ! -s "$1/setpgid" ]; do sleep 0.01; done
exit 0`

const runEscapes = Effect.gen(function*() {
  const dir = tempDir("cgroup-")
  const marker = randomDigits()
  killMarked(marker)
  const result = yield* NativeRunner.exec({ argv: ["sh", "-c", ESCAPES, "sh", dir, marker], timeout: "20 seconds" })
  expect([result.exitCode, text(result.stderr)]).toEqual([0, ""])
  const pidOf = (name: string) => Number(readFileSync(path.join(dir, name), "utf8"))
  return { setsid: pidOf("setsid"), doubleFork: pidOf("double-fork"), setpgid: pidOf("setpgid") }
})

afterEach(runCleanups)

describe.runIf(runsAsRoot("run cgroup tests"))("run cgroups (root)", () => {
  it.runIf(inCI)("runs as root (required in CI)", () => {
    expect(isRoot).toBe(true)
  })

  it.live("a run cgroup holds every escape: setsid, double fork and setpgid die when the run ends", () =>
    Effect.gen(function*() {
      const pids = yield* runEscapes
      const alive = () => Object.values(pids).filter(isAlive)
      expect(yield* waitUntil(() => alive().length === 0, 2_000)).toBe(true)
    }).pipe(Effect.provide(NativeRunner.layerNode())))

  it.live("control: without run cgroups, the setsid and setpgid escapes outlive the run", () =>
    Effect.gen(function*() {
      const pids = yield* runEscapes
      yield* Effect.sleep("300 millis")
      expect({ setsid: isAlive(pids.setsid), setpgid: isAlive(pids.setpgid) }).toEqual({ setsid: true, setpgid: true })
      // A double fork alone keeps the process group (sh -c has no job control): the group kill at exit takes it.
      expect(isAlive(pids.doubleFork)).toBe(false)
    }).pipe(Effect.provide(Layer.effect(NativeRunner.NativeRunner, bareRunner(makeNodeSpawner())))))

  it.live("signals only what is in the cgroup, even after the child's pid was reused", () =>
    Effect.scoped(Effect.gen(function*() {
      const cgroup = yield* Effect.flatMap(runCgroups, (cgroups) => cgroups.make)
      const proc = yield* makeNodeSpawner().spawn(command("echo $$; exit 3", cgroup), undefined)
      const stdout = makeCapture(1024)
      yield* proc.output(stdout, makeCapture(1024))
      expect(yield* proc.exit).toEqual({ code: 3, signal: null })
      const pid = Number(text(stdout.bytes()))
      const unrelated = takePid(pid)
      yield* cgroup.signal("SIGKILL")
      yield* cgroup.signal("SIGTERM")
      yield* Effect.sleep("200 millis")
      expect([isAlive(pid), unrelated.signalCode]).toEqual([true, null])
    })))

  it.live("TERM then KILL reach the processes in the cgroup: a TERM handler runs, a TERM-ignorer dies on KILL", () =>
    Effect.scoped(Effect.gen(function*() {
      const dir = tempDir("cgroup-")
      const cgroup = yield* Effect.flatMap(runCgroups, (cgroups) => cgroups.make)
      const spawner = makeNodeSpawner()
      const handler = yield* spawner.spawn(
        command(`trap 'echo term > "$1/term"; exit 0' TERM; echo ready > "$1/handler"; while :; do sleep 0.05; done`, cgroup, dir),
        undefined
      )
      const ignorer = yield* spawner.spawn(command(`trap '' TERM; echo ready > "$1/ignorer"; exec sleep 30`, cgroup, dir), undefined)
      const ready = () => fileHolds(path.join(dir, "handler"), "ready") && fileHolds(path.join(dir, "ignorer"), "ready")
      expect(yield* waitUntil(ready, 5_000)).toBe(true)
      yield* cgroup.signal("SIGTERM")
      expect(yield* handler.exit.pipe(Effect.timeout("5 seconds"))).toEqual({ code: 0, signal: null })
      expect(fileHolds(path.join(dir, "term"), "term")).toBe(true)
      const stillRunning = yield* Effect.fork(ignorer.exit)
      yield* Effect.sleep("300 millis")
      expect(Option.isNone(yield* Fiber.poll(stillRunning))).toBe(true)
      yield* cgroup.signal("SIGKILL")
      expect(yield* Fiber.join(stillRunning).pipe(Effect.timeout("5 seconds"))).toEqual({ code: null, signal: "SIGKILL" })
    })))

  it.live("the run and layer directories exist while in use (the child born inside) and are removed with the scope", () =>
    Effect.gen(function*() {
      const dirs = yield* Effect.scoped(Effect.gen(function*() {
        const cgroups = yield* runCgroups
        const cgroup = yield* cgroups.make
        const proc = yield* makeNodeSpawner().spawn(command("echo $$; exec sleep 30", cgroup), undefined)
        const stdout = makeCapture(1024)
        yield* Effect.forkScoped(proc.output(stdout, makeCapture(1024)))
        expect(yield* waitUntil(() => stdout.total() > 0, 5_000)).toBe(true)
        const runDir = path.dirname(cgroup.join.procs)
        expect(cgroupPids(runDir)).toEqual([Number(text(stdout.bytes()))])
        expect(path.dirname(runDir)).toBe(cgroups.dir)
        return { layer: cgroups.dir, run: runDir }
      }))
      expect({ layer: existsSync(dirs.layer), run: existsSync(dirs.run) }).toEqual({ layer: false, run: false })
    }))

  it.live("stale layer directories of dead hosts are swept at layer start; a live host's are left alone", () =>
    Effect.gen(function*() {
      const layerDir = yield* Effect.scoped(Effect.map(runCgroups, (cgroups) => cgroups.dir))
      const own = path.dirname(layerDir)
      // effect-native-runner-<pid namespace>-<pid>-<start time>-<thread>-<n>
      const namespace = /effect-native-runner-(\d+)-/.exec(layerDir)?.[1]
      // Above pid_max: no host can be alive with this pid.
      const deadPid = Number(readFileSync("/proc/sys/kernel/pid_max", "utf8")) + 1
      const stale = cgroupToRemove(path.join(own, `effect-native-runner-${namespace}-${deadPid}-123-0-1`))
      const live = cgroupToRemove(
        path.join(own, `effect-native-runner-${namespace}-${process.pid}-${startTimeOf(process.pid)}-0-999999`)
      )
      // Another PID namespace's host, whatever its pid: not ours to judge.
      const foreign = cgroupToRemove(path.join(own, `effect-native-runner-1-${deadPid}-123-0-1`))
      mkdirSync(path.join(stale, "1", "nested"), { recursive: true })
      mkdirSync(foreign)
      mkdirSync(live)
      const marker = randomDigits()
      killMarked(marker)
      const orphan = spawn("sleep", [`60.${marker}`], { stdio: "ignore" })
      onCleanup(() => orphan.kill("SIGKILL"))
      writeFileSync(path.join(stale, "1", "cgroup.procs"), String(orphan.pid))
      expect(cgroupPids(path.join(stale, "1"))).toEqual([orphan.pid])
      yield* Effect.scoped(runCgroups)
      // At once: another host starting a layer meanwhile would sweep it too, so leave it no time to.
      expect({ stale: existsSync(stale), live: existsSync(live), foreign: existsSync(foreign) })
        .toEqual({ stale: false, live: true, foreign: true })
      expect(yield* waitUntil(() => orphan.signalCode !== null, 2_000)).toBe(true)
      expect(orphan.signalCode).toBe("SIGKILL")
    }))

  it.live("the host itself is never seen inside a run cgroup, during or after many concurrent runs", () =>
    Effect.gen(function*() {
      const before = ownCgroups()
      const seen = new Set<string>()
      const sampler = yield* Effect.fork(Effect.forever(Effect.zipRight(
        Effect.sync(() => seen.add(ownCgroups())),
        Effect.sleep("2 millis")
      )))
      const results = yield* Effect.forEach(
        Array.from({ length: 60 }, (_, i) => i),
        (i) =>
          NativeRunner.exec(
            i % 3 === 0
              ? { argv: ["sh", "-c", "trap '' TERM; sleep 5"], timeout: "200 millis", killGrace: "100 millis" }
              : { argv: ["sh", "-c", "sleep 0.1 & sleep 0.1; cat /proc/self/cgroup"] }
          ),
        { concurrency: 12 }
      )
      yield* Fiber.interrupt(sampler)
      expect(results.filter((r) => r.timedOut).length).toBe(20)
      // Not vacuous: every run that printed its cgroups was in one of its own.
      const inRunCgroup = results.filter((r) => !r.timedOut).map((r) => text(r.stdout).includes("/effect-native-runner-"))
      expect(inRunCgroup).toEqual(Array(40).fill(true))
      expect([...seen].filter((cgroups) => cgroups !== before)).toEqual([])
      expect(ownCgroups()).toBe(before)
    }).pipe(Effect.provide(NativeRunner.layerNode())))
})
