/**
 * The helper spawner (src/internal/spawnHelper.ts): the runner's behaviour suite with every exec through the helper,
 * extra descriptors, the helper as a program of its own, and the lifecycle: a SIGKILLed host
 * leaves nothing running, a dead or stopped helper ends its execs and is replaced, a closed scope leaves no
 * directory, socket or process behind. Real processes; leftovers are found by reading /proc.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as esbuild from "esbuild"
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { randomInt } from "node:crypto"
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs"
import { connect } from "node:net"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import type { ExecInput } from "../../src/Exec.js"
import { makeCapture } from "../../src/internal/capture.js"
import type { Spawner } from "../../src/internal/engine.js"
import { makeAdaptiveSpawner, makeHelperSpawner, makeHelperSpawnerWith } from "../../src/internal/spawnHelper.js"
import * as NativeRunner from "../../src/NativeRunner.js"
import { runnerBehaviourSuite, SUITE_HOST_ENV } from "../../src/testing.js"
import { liveCommands } from "../helpers/liveCommands.js"
import { bareRunner } from "../helpers/runner.js"

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")
const helperDir = path.join(repoRoot, "src/internal/spawnHelper")
const helperFiles = ["native-runner-spawn-helper.mjs", "helperProgram.mjs"]

// The env scenarios need known variables in the host env the runner inherits from, which is process.env.
Object.assign(process.env, SUITE_HOST_ENV)

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes)
const utf8 = (value: string) => new TextEncoder().encode(value)
const env = { PATH: process.env["PATH"] ?? "/usr/bin:/bin" }

/** A number only this test uses, as the last argument of `sleep` (which sums its arguments): found in /proc. */
const marker = () => `0.00${randomInt(1_000_000_000)}`

const cmdlineOf = (pid: string): Array<string> => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")
  } catch {
    return []
  }
}
const pidsWithArg = (arg: string): Array<number> =>
  readdirSync("/proc").filter((entry) => /^\d+$/.test(entry) && cmdlineOf(entry).includes(arg)).map(Number)

/** Gone, or a zombie nobody has reaped yet (this machine's init may not reap re-parented processes). */
const isGone = (pid: number): boolean => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")
  } catch {
    return true
  }
}

const waitUntil = (condition: () => boolean, timeoutMs: number): Effect.Effect<boolean> =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    while (Date.now() < deadline) {
      if (condition()) return true
      yield* Effect.sleep("50 millis")
    }
    return condition()
  })

/** A runner whose spawns all go through a helper; a spawn after the helper died is a defect, not a silent fallback. */
const helperRunnerWith = (options: NativeRunner.Options) =>
  Effect.gen(function*() {
    const helper = yield* makeHelperSpawner
    const spawner: Spawner = {
      spawn: (command, stdin) =>
        helper.alive() ? helper.spawn(command, stdin) : Effect.dieMessage("the helper is gone: this exec would go direct")
    }
    return { helper, runner: yield* bareRunner(spawner, options) }
  })
const helperRunner = (options: NativeRunner.Options) => Effect.map(helperRunnerWith(options), ({ runner }) => runner)

/**
 * A program that floods the host socket for `seconds`: 16 connections at a time, each with a header naming one of
 * the exec ids 1..200 and `stream` (1 stdout by default, 0 a streamed stdin) and a random token, then "INJECTED". Run as the runner's own child, as a workload would.
 */
const flood = (socketPath: string, seconds: number, stream = 1) => [
  process.execPath,
  "-e",
  `const net = require("node:net"), crypto = require("node:crypto");
  const end = Date.now() + ${seconds * 1000}; let n = 0, sent = 0;
  const one = () => {
    if (Date.now() > end) return;
    const s = net.connect(${JSON.stringify(socketPath)});
    s.on("error", () => {});
    s.on("connect", () => {
      const header = Buffer.alloc(21); header.writeUInt32BE(1 + (n++ % 200), 0); header[4] = ${stream};
      crypto.randomFillSync(header, 5); sent++;
      s.end(Buffer.concat([header, Buffer.from("INJECTED\\n")]));
    });
    s.on("close", one);
  };
  for (let i = 0; i < 16; i++) one();
  setTimeout(() => console.log(sent), ${seconds * 1000 + 200});`
]

runnerBehaviourSuite("runner over the helper spawner (every exec through the helper)", {
  layer: (options) => Layer.scoped(NativeRunner.NativeRunner, helperRunner(options)),
  commands: liveCommands,
  hostEnv: process.env,
  clock: "live",
  timing: { timeout: "400 millis", killGrace: "300 millis", slack: "5 seconds", startup: "750 millis", idle: "300 millis" }
})

describe("helper spawner", () => {
  let dir = ""
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), "nr-helper-test-"))
  })
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it.live("extra descriptors: an Input fd is read by the child, an Output fd's chunks arrive before the exit", () =>
    Effect.scoped(Effect.gen(function*() {
      const helper = yield* makeHelperSpawner
      // More than a pipe holds, so the helper's write must flow while the child reads.
      const input = Uint8Array.from({ length: 300_000 }, (_, i) => (i * 7) % 256)
      const status: Array<Uint8Array> = []
      const proc = yield* helper.spawn({
        argv: ["sh", "-c", "cat <&3; echo status >&4; cat; echo err >&2"],
        cwd: dir,
        env,
        extraFds: [{ _tag: "Input", bytes: input }, { _tag: "Output", onData: (chunk) => status.push(chunk) }]
      }, utf8("from stdin"))
      const stdout = makeCapture(1 << 20)
      const stderr = makeCapture(1 << 20)
      const reading = yield* Effect.fork(proc.output(stdout, stderr))
      const exit = yield* proc.exit
      expect(exit).toEqual({ code: 0, signal: null })
      expect(text(Buffer.concat(status))).toBe("status\n")
      yield* Fiber.join(reading)
      expect(Buffer.from(stdout.bytes()).equals(Buffer.concat([input, utf8("from stdin")]))).toBe(true)
      expect(text(stderr.bytes())).toBe("err\n")
    })))

  it.live("an Output fd held open by a grandchild delays the exit report only briefly", () =>
    Effect.scoped(Effect.gen(function*() {
      const helper = yield* makeHelperSpawner
      const status: Array<Uint8Array> = []
      const proc = yield* helper.spawn({
        argv: ["sh", "-c", "echo status >&3; sleep 30 & exit 0"],
        cwd: dir,
        env,
        extraFds: [{ _tag: "Output", onData: (chunk) => status.push(chunk) }]
      }, undefined)
      const started = Date.now()
      expect(yield* proc.exit.pipe(Effect.timeout(Duration.seconds(5)))).toEqual({ code: 0, signal: null })
      expect(Date.now() - started).toBeLessThan(2000)
      expect(text(Buffer.concat(status))).toBe("status\n")
      // The background sleep is still in the group, holding the descriptor: kill it as the engine would.
      yield* proc.kill("SIGKILL")
    })))

  it.live("a connection that names no exec in flight is closed", () =>
    Effect.scoped(Effect.gen(function*() {
      const helper = yield* makeHelperSpawner
      const closed = yield* Effect.async<boolean>((resume) => {
        const socket = connect(path.join(helper.socketDir, "host.sock"))
        socket.on("error", () => {})
        socket.once("close", () => resume(Effect.succeed(true)))
        // A whole header (id 999999, stdout, a zero token) and some bytes.
        socket.write(Buffer.concat([Buffer.from([0, 0x0f, 0x42, 0x3f, 1]), Buffer.alloc(16), Buffer.from("ab")]))
      }).pipe(Effect.timeout(Duration.seconds(5)))
      expect(closed).toBe(true)
      // And the helper still serves.
      const proc = yield* helper.spawn({ argv: ["true"], cwd: dir, env }, undefined)
      expect(yield* proc.exit).toEqual({ code: 0, signal: null })
    })))

  it.live("many execs at once: each gets its own output (connections routed by their header)", () =>
    Effect.scoped(Effect.gen(function*() {
      const runner = yield* helperRunner({ maxConcurrent: 16 })
      const results = yield* Effect.forEach(
        Array.from({ length: 48 }, (_, i) => i),
        (i) => runner.exec({ argv: ["sh", "-c", `echo out$0; echo err$0 >&2; exit $(($0 % 7))`, String(i)] }),
        { concurrency: "unbounded" }
      )
      results.forEach((result, i) => {
        expect({ out: text(result.stdout), err: text(result.stderr), code: result.exitCode }).toEqual({
          out: `out${i}\n`,
          err: `err${i}\n`,
          code: i % 7
        })
      })
    })))

  /**
   * A run floods the host socket with forged headers naming `stream` while genuine runs (`genuine(tag)`) go on for 3
   * seconds: each must read or write its own bytes, and the host must have dropped every forged connection.
   */
  const floodWhileGenuine = (stream: number, genuine: (tag: string) => ExecInput) =>
    Effect.scoped(Effect.gen(function*() {
      const { helper, runner } = yield* helperRunnerWith({ maxConcurrent: 16 })
      const attack = yield* Effect.fork(runner.exec({ argv: flood(path.join(helper.socketDir, "host.sock"), 3, stream) }))
      const deadline = Date.now() + 3000
      const seen = new Map<string, number>()
      for (let batch = 0; Date.now() < deadline; batch++) {
        const results = yield* Effect.forEach(Array.from({ length: 8 }, (_, i) => `${batch}.${i}`), (tag) =>
          Effect.map(runner.exec(genuine(tag)), (result) =>
            `${result.exitCode} ${text(result.stdout) === `genuine ${tag}\n` ? "own bytes" : JSON.stringify(text(result.stdout))}`), {
          concurrency: "unbounded"
        })
        for (const outcome of results) seen.set(outcome, (seen.get(outcome) ?? 0) + 1)
      }
      const attacker = yield* Fiber.join(attack)
      expect([...seen.keys()]).toEqual(["0 own bytes"])
      expect(seen.get("0 own bytes")).toBeGreaterThan(40)
      // The flood reached the socket (thousands of forged connections), and the host dropped every one of them.
      expect(Number(text(attacker.stdout).trim())).toBeGreaterThan(1000)
      expect(helper.rejectedConnections()).toBeGreaterThan(1000)
    }))

  it.live("a run flooding the host socket with forged headers: every concurrent genuine run returns its own bytes", () =>
    floodWhileGenuine(1, (tag) => ({ argv: ["echo", `genuine ${tag}`] })), { timeout: 30_000 })

  it.live("forged stdin connections (stream 0) are dropped: every concurrent run with a streamed stdin reads its own bytes", () =>
    floodWhileGenuine(0, (tag) => ({ argv: ["cat"], stdin: Stream.make(new TextEncoder().encode(`genuine ${tag}\n`)) })), {
    timeout: 30_000
  })

  it.live("a streamed stdin goes through the helper: 64 MiB counted whole, and a child that never reads ends the pull", () =>
    Effect.scoped(Effect.gen(function*() {
      const { helper, runner } = yield* helperRunnerWith({})
      const mib = new Uint8Array(1024 * 1024)
      const counted = yield* runner.exec({ argv: ["wc", "-c"], stdin: Stream.range(1, 64).pipe(Stream.map(() => mib)) })
      expect(text(counted.stdout).trim()).toBe(String(64 * 1024 * 1024))
      let pulled = 0
      const endless = Stream.repeatEffect(Effect.sync(() => (pulled++, mib)))
      const ignored = yield* runner.exec({ argv: ["true"], stdin: endless })
      expect(ignored.exitCode).toBe(0)
      expect(pulled).toBeLessThan(8)
      // Started by the helper (its parent), not directly by this process.
      const parent = yield* runner.exec({ argv: ["sh", "-c", "cat; echo \" $PPID\""], stdin: Stream.make(new TextEncoder().encode("in")) })
      expect(text(parent.stdout)).toBe(`in ${helper.helperPid}\n`)
    })), { timeout: 30_000 })

  it.live("spawn failures are reported as the direct spawner reports them", () =>
    Effect.scoped(Effect.gen(function*() {
      const helper = yield* makeHelperSpawner
      const failure = (argv: readonly [string, ...Array<string>], cwd: string) =>
        Effect.flip(Effect.scoped(helper.spawn({ argv, cwd, env }, undefined)))
      expect(yield* failure(["no-such-program-nr"], dir)).toMatchObject({ reason: "NotFound" })
      expect(yield* failure(["true"], path.join(dir, "missing"))).toMatchObject({ reason: "CwdNotFound" })
      expect(yield* failure([path.join(dir)], dir)).toMatchObject({ reason: "PermissionDenied" })
      expect(helper.alive()).toBe(true)
    })))

  it.live("closing the scope kills what runs, ends the helper and removes its 0700 directory and socket", () =>
    Effect.gen(function*() {
      const layerScope = yield* Scope.make()
      const helper = yield* Scope.extend(makeHelperSpawner, layerScope)
      expect(statSync(helper.socketDir).mode & 0o777).toBe(0o700)
      expect(readdirSync(helper.socketDir)).toEqual(["host.sock"])
      // Started in a scope that stays open: only the layer's close can stop it.
      const runScope = yield* Scope.make()
      const arg = marker()
      const proc = yield* Scope.extend(helper.spawn({ argv: ["sleep", "1000", arg], cwd: dir, env }, undefined), runScope)
      expect(yield* waitUntil(() => pidsWithArg(arg).length === 1, 5000)).toBe(true)
      yield* Scope.close(layerScope, Exit.void)
      expect(yield* proc.exit).toEqual({ code: null, signal: "SIGKILL" })
      expect(existsSync(helper.socketDir)).toBe(false)
      expect(isGone(helper.helperPid)).toBe(true)
      expect(yield* waitUntil(() => pidsWithArg(arg).length === 0, 5000)).toBe(true)
      yield* Scope.close(runScope, Exit.void)
    }))

  it.live("a SIGKILLed host leaves neither the helper nor its children running (host bundled by esbuild)", () =>
    Effect.scoped(Effect.gen(function*() {
      // The host as the bin ships it (esbuild, CommonJS, minified; keepNames as tsx runs it), with the helper's
      // program copied beside the bundle and import.meta.url defined as the bundle's own, as bench/build-bin.mjs does.
      const hostScript = path.join(dir, "host.cjs")
      mkdirSync(path.join(dir, "spawnHelper"), { recursive: true })
      for (const file of helperFiles) copyFileSync(path.join(helperDir, file), path.join(dir, "spawnHelper", file))
      yield* Effect.promise(() =>
        esbuild.build({
          stdin: {
            contents: `
              import * as Effect from "effect/Effect"
              import { makeHelperSpawner } from "./src/internal/spawnHelper.ts"
              const arg = process.env.NR_TEST_MARK
              Effect.runFork(Effect.scoped(Effect.gen(function*() {
                const helper = yield* makeHelperSpawner
                yield* helper.spawn({ argv: ["sleep", "1000", arg], cwd: "/", env: { PATH: process.env.PATH } }, undefined)
                console.log(JSON.stringify({ helperPid: helper.helperPid, socketDir: helper.socketDir }))
                yield* Effect.never
              })))`,
            resolveDir: repoRoot,
            loader: "ts"
          },
          bundle: true,
          platform: "node",
          format: "cjs",
          target: "node20",
          minify: true,
          keepNames: true,
          define: { "import.meta.url": "__bundleUrl" },
          banner: { js: "\"use strict\";var __bundleUrl = require(\"node:url\").pathToFileURL(__filename).href;" },
          outfile: hostScript,
          logLevel: "error"
        })
      )
      const arg = marker()
      // The marker goes in the env: on the host's command line it would be found in /proc too.
      const host = spawn(process.execPath, [hostScript], {
        stdio: ["ignore", "pipe", "inherit"],
        env: { ...process.env, NR_TEST_MARK: arg }
      })
      yield* Effect.addFinalizer(() => Effect.sync(() => host.kill("SIGKILL")))
      const started = yield* firstLine(host)
      const { helperPid, socketDir } = JSON.parse(started)
      expect(yield* waitUntil(() => pidsWithArg(arg).length === 1, 5000)).toBe(true)
      expect(isGone(helperPid)).toBe(false)
      host.kill("SIGKILL")
      expect(yield* waitUntil(() => isGone(helperPid) && pidsWithArg(arg).length === 0, 5000)).toBe(true)
      // The helper also removed what the host could not.
      expect(existsSync(socketDir)).toBe(false)
    })))

  it.live("the helper dying mid-run: SpawnError HelperLost with the output so far; a new helper serves later execs", () =>
    Effect.gen(function*() {
      const [warnings, logger] = warningsLogger()
      yield* Effect.scoped(Effect.gen(function*() {
        const helper = yield* makeHelperSpawner
        const runner = yield* bareRunner(helper)
        const arg = marker()
        // Killed only once the host has the helper's "spawned" reply (Started: before it, the start itself fails,
        // since the child may exist and falling back could run the command twice) and the run has printed.
        let started = false
        let printed = false
        const running = yield* Effect.fork(Effect.flip(runner.execStream({
          argv: ["sh", "-c", "echo started; exec sleep 5 \"$0\"", arg]
        }).pipe(
          Stream.tap((event) => Effect.sync(() => {
            if (event._tag === "Started") started = true
            if (event._tag === "Stdout") printed = true
          })),
          Stream.runDrain
        )))
        expect(yield* waitUntil(() => started && printed && pidsWithArg(arg).length === 1, 5000)).toBe(true)
        process.kill(helper.helperPid, "SIGKILL")
        const error = yield* Fiber.join(running).pipe(Effect.timeout(Duration.seconds(4)))
        expect(error).toMatchObject({ _tag: "SpawnError", reason: "HelperLost" })
        expect(error.message).toMatch(/the spawn helper went away/)
        expect(error._tag === "SpawnError" && error.stdout !== undefined ? text(error.stdout) : undefined).toBe("started\n")
        // Its processes were killed: nothing of it is left.
        expect(yield* waitUntil(() => pidsWithArg(arg).length === 0, 2000)).toBe(true)
        expect(helper.alive()).toBe(false)
        const lostPid = helper.helperPid
        for (const word of ["still", "works"]) {
          const next = yield* runner.exec({ argv: ["sh", "-c", "echo $0 $PPID", word] })
          // Started by the new helper (its parent), not by this process.
          expect(text(next.stdout)).toBe(`${word} ${helper.helperPid}\n`)
        }
        expect([helper.alive(), helper.started(), helper.helperPid === lostPid]).toEqual([true, 2, false])
      })).pipe(Effect.provide(logger))
      expect(warnings).toHaveLength(1)
      expect(warnings[0]).toMatch(/spawn helper went away \(SIGKILL\): a new spawn helper \(pid \d+\) takes over/)
    }))

  it.live("a helper stopped (SIGSTOP) during a run: the run ends by timeout + grace + the exit-report bound, HelperLost", () =>
    Effect.gen(function*() {
      const [warnings, logger] = warningsLogger()
      yield* Effect.scoped(Effect.gen(function*() {
        const helper = yield* makeHelperSpawner
        const runner = yield* bareRunner(helper, { killGrace: "300 millis" })
        const arg = marker()
        const started = Date.now()
        // Stopped once the host has the helper's "spawned" reply (the Started event): a helper stopped before it
        // answers is the start watchdog's (`answerWithin`, the next test).
        let running = false
        const run = yield* Effect.fork(Effect.flip(runner.execStream({
          argv: ["sh", "-c", "echo started; exec sleep 30 \"$0\"", arg],
          timeout: "2 seconds"
        }).pipe(
          Stream.tap((event) => Effect.sync(() => {
            if (event._tag === "Started") running = true
          })),
          Stream.runDrain
        )))
        expect(yield* waitUntil(() => running && pidsWithArg(arg).length === 1, 5000)).toBe(true)
        process.kill(helper.helperPid, "SIGSTOP")
        // Without the bound it waited for the stopped helper's exit report for ever (the issue saw 40 s and more).
        const error = yield* Fiber.join(run).pipe(Effect.timeout(Duration.seconds(10)))
        const elapsed = Date.now() - started
        expect(error).toMatchObject({ _tag: "SpawnError", reason: "HelperLost" })
        expect(error.message).toMatch(/did not report the exit within 2000 ms of SIGKILL/)
        expect(elapsed).toBeLessThan(2_000 + 300 + 2_000 + 1_500)
        expect(yield* waitUntil(() => pidsWithArg(arg).length === 0, 2000)).toBe(true)
        expect(yield* waitUntil(() => isGone(helper.helperPid), 5000), "the stopped helper was killed").toBe(true)
        const next = yield* runner.exec({ argv: ["sh", "-c", "echo next $PPID"] })
        expect(text(next.stdout)).toBe(`next ${helper.helperPid}\n`)
        expect(helper.started()).toBe(2)
      })).pipe(Effect.provide(logger))
      expect(warnings).toEqual([expect.stringMatching(/did not report the exit.*a new spawn helper .* takes over/)])
    }), { timeout: 30_000 })

  it.live("a helper that stops answering is killed: that start fails HelperLost, a new helper serves the next", () =>
    Effect.gen(function*() {
      const [warnings, logger] = warningsLogger()
      yield* Effect.scoped(Effect.gen(function*() {
        const helper = yield* makeHelperSpawnerWith({ answerWithin: "500 millis" })
        const stopped = helper.helperPid
        process.kill(stopped, "SIGSTOP")
        const failure = yield* Effect.flip(Effect.scoped(helper.spawn({ argv: ["true"], cwd: dir, env }, undefined)))
        expect(failure).toMatchObject({ reason: "HelperLost", message: expect.stringMatching(/did not answer in 500 ms/) })
        expect(yield* waitUntil(() => isGone(stopped), 5000)).toBe(true)
        const proc = yield* helper.spawn({ argv: ["true"], cwd: dir, env }, undefined)
        expect(yield* proc.exit).toEqual({ code: 0, signal: null })
        expect([helper.started(), helper.alive(), isGone(helper.helperPid)]).toEqual([2, true, false])
      })).pipe(Effect.provide(logger))
      expect(warnings).toEqual([expect.stringMatching(/did not answer in 500 ms.*a new spawn helper .* takes over/)])
    }))

  it.live("a helper stopped before it starts the run: the exec ends by timeout + grace + 2 s (not answerWithin), HelperLost", () =>
    Effect.gen(function*() {
      const [warnings, logger] = warningsLogger()
      yield* Effect.scoped(Effect.gen(function*() {
        // The default answerWithin (30 s) would be the only bound before: the exec's own bound is 1 s + 300 ms + 2 s.
        const helper = yield* makeHelperSpawner
        const runner = yield* bareRunner(helper, { killGrace: "300 millis" })
        const stopped = helper.helperPid
        process.kill(stopped, "SIGSTOP")
        const started = Date.now()
        const error = yield* Effect.flip(runner.exec({ argv: ["echo", "never"], timeout: "1 second" })).pipe(
          Effect.timeout(Duration.seconds(20))
        )
        const elapsed = Date.now() - started
        expect(error).toMatchObject({ _tag: "SpawnError", reason: "HelperLost" })
        expect(error.message).toMatch(/did not answer in 3300 ms/)
        expect(elapsed).toBeGreaterThanOrEqual(3_200)
        expect(elapsed).toBeLessThan(3_300 + 2_000)
        expect(yield* waitUntil(() => isGone(stopped), 5000), "the stopped helper was killed").toBe(true)
        const next = yield* runner.exec({ argv: ["echo", "next"] })
        expect(text(next.stdout)).toBe("next\n")
      })).pipe(Effect.provide(logger))
      expect(warnings).toEqual([expect.stringMatching(/did not answer in 3300 ms.*a new spawn helper .* takes over/)])
    }), { timeout: 30_000 })

  it.live("helpers that keep dying are replaced three times a minute; after the fourth loss spawns go direct", () =>
    Effect.gen(function*() {
      const [warnings, logger] = warningsLogger()
      yield* Effect.scoped(Effect.gen(function*() {
        const helper = yield* makeHelperSpawner
        for (let loss = 1; loss <= 4; loss++) {
          const pid = helper.helperPid
          process.kill(pid, "SIGKILL")
          expect(yield* waitUntil(() => !helper.alive(), 5000)).toBe(true)
          const proc = yield* Effect.scoped(Effect.flatMap(helper.spawn({ argv: ["true"], cwd: dir, env }, undefined), (p) => p.exit))
          expect(proc).toEqual({ code: 0, signal: null })
        }
        expect([helper.started(), helper.alive()]).toEqual([4, false])
      })).pipe(Effect.provide(logger))
      expect(warnings.slice(0, 3)).toEqual(Array.from({ length: 3 }, () => expect.stringMatching(/takes over/)))
      expect(warnings[3]).toMatch(/4 spawn helpers lost within a minute: spawning directly from now on/)
      expect(warnings).toHaveLength(4)
    }))

  it.live("the helper is a program of its own: started by path, a short command line that names it", () =>
    Effect.scoped(Effect.gen(function*() {
      const helper = yield* makeHelperSpawner
      const cmdline = cmdlineOf(String(helper.helperPid)).filter((arg) => arg !== "")
      expect(cmdline).toEqual([process.execPath, path.join(helperDir, "native-runner-spawn-helper.mjs"), path.join(helper.socketDir, "host.sock")])
      // The function text it replaced was about 3 KB.
      expect(cmdline.join(" ").length).toBeLessThan(300)
      // Started by hand with no host socket: a request comes back as a failed start (the whole request path), and
      // the program refuses to run without its IPC channel.
      const reply = yield* askHelper(path.join(dir, "no-such.sock"))
      expect(reply).toMatchObject({ k: "failed", id: 7, message: expect.stringMatching(/no connection/) })
      const alone = spawnSync(process.execPath, [path.join(helperDir, "native-runner-spawn-helper.mjs")], { encoding: "utf8" })
      expect([alone.status, alone.stderr]).toEqual([64, expect.stringMatching(/started by effect-native-runner only/)])
    })))
})

describe("adaptive spawner", () => {
  const recording = (name: string, calls: Array<string>): Spawner => ({
    spawn: () =>
      Effect.sync(() => {
        calls.push(name)
        return { pid: 1, output: () => Effect.void, exit: Effect.succeed({ code: 0, signal: null }), kill: () => Effect.void }
      })
  })
  const command = { argv: ["true"], cwd: "/", env: {} } as const

  it.live("spawns directly below the RSS threshold and through the helper above it", () =>
    Effect.gen(function*() {
      const calls: Array<string> = []
      const direct = recording("direct", calls)
      const helper = recording("helper", calls)
      const rss = process.memoryUsage.rss()
      yield* Effect.scoped(makeAdaptiveSpawner(direct, helper, { rssThresholdBytes: rss * 4 }).spawn(command, undefined))
      yield* Effect.scoped(makeAdaptiveSpawner(direct, helper, { rssThresholdBytes: rss / 4 }).spawn(command, undefined))
      expect(calls).toEqual(["direct", "helper"])
    }))
})

/** A logger layer that keeps the messages of warnings (and prints nothing). */
const warningsLogger = () => {
  const warnings: Array<string> = []
  const logger = Logger.make(({ logLevel, message }) => {
    if (logLevel._tag === "Warning") warnings.push(String(message))
  })
  return [warnings, Logger.replace(Logger.defaultLogger, logger)] as const
}

/** The first line a child writes to stdout. */
const firstLine = (child: ChildProcess) =>
  Effect.async<string, Error>((resume) => {
    let seen = ""
    child.stdout?.on("data", (chunk: Buffer) => {
      seen += chunk.toString("utf8")
      const end = seen.indexOf("\n")
      if (end !== -1) resume(Effect.succeed(seen.slice(0, end)))
    })
    child.once("exit", (code, signal) => resume(Effect.fail(new Error(`host exited (${code ?? signal}): ${seen}`))))
  }).pipe(Effect.timeout(Duration.seconds(20)))

/** Starts the helper's program for `socketPath`, sends it one request and returns the first reply; then disconnects. */
const askHelper = (socketPath: string) =>
  Effect.async<unknown, Error>((resume) => {
    const child = spawn(process.execPath, [path.join(helperDir, "native-runner-spawn-helper.mjs"), socketPath], {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      serialization: "advanced"
    })
    let reply: unknown
    child.once("message", (message) => {
      reply = message
      child.disconnect()
    })
    child.once("exit", (code, signal) =>
      reply !== undefined && code === 0
        ? resume(Effect.succeed(reply))
        : resume(Effect.fail(new Error(`the helper exited (${code ?? signal}) with reply ${JSON.stringify(reply)}`))))
    child.send({ id: 7, argv: ["true"], cwd: "/", env: {}, stdin: undefined, token: new Uint8Array(16), fds: [] })
  }).pipe(Effect.timeout(Duration.seconds(10)))
