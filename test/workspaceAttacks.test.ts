/**
 * Attacks on the workspace a root host shares with its sandboxed workloads (issue 18). The host must change no owner
 * or mode for a run: not outside the workspace, where a planted link would send a change to a host file, and not in
 * it, where a chown strips set-id bits and file capabilities and a SIGKILLed host leaves the tree handed over. Each
 * victim is a file of the test's own, in a fresh root-owned temp dir. Gated like escape.test.ts: in CI (CI=true)
 * every test runs and an unusable bwrap or a non-root runner fails; elsewhere the suite is skipped, saying why.
 */
import { afterEach, describe, expect, it } from "@effect/vitest"
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import { spawnSync } from "node:child_process"
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  symlinkSync,
  writeFileSync
} from "node:fs"
import * as path from "node:path"
import type { Errors, Exec, Sandbox } from "../src/index.js"
import { NativeRunner } from "../src/index.js"
import {
  addCapability,
  buildRacer,
  capabilityOf,
  contents,
  dirOf,
  fileOf,
  inCI,
  mixedTree,
  nobody,
  preparedWorkspace,
  sameEntries,
  scratch,
  secondHost,
  snapshot,
  unusable,
  victim
} from "./helpers/attacks.js"
import { onCleanup, pidsWithArgv, randomDigits, runCleanups, text, waitUntil } from "./helpers/escape.js"

if (unusable.length > 0 && !inCI) console.warn(`workspace-attack tests not run: ${unusable.join(" ")}`)

const options = { killGrace: "2 seconds", timeout: "30 seconds" } as const
const sandboxed = (policy: Sandbox.Policy) => NativeRunner.layerNode({ ...options, sandbox: { policy } })
const sh = (script: string): Exec.ExecInput => ({ argv: ["sh", "-c", script] })
type Runner = Context.Context<NativeRunner.NativeRunner>

/** One exec on a runner built once; the outcome, failure included. */
const attempt = (runner: Runner, input: Exec.ExecInput) =>
  Effect.either(NativeRunner.exec(input).pipe(Effect.provide(runner)))

/** What an outcome was, as one line a diff shows: `SandboxSetup: <message>`, or `ran, exit N` when it ran. */
const outcomeOf = (outcome: Either.Either<Exec.ExecResult, Errors.NativeRunnerError>): string =>
  Either.isRight(outcome)
    ? `ran, exit ${outcome.right.exitCode}`
    : outcome.left._tag === "SpawnError"
    ? `${outcome.left.reason}: ${outcome.left.message}`
    : `${outcome.left._tag}: ${outcome.left.message}`

/** What the second host printed: its run's outcome, or the error it failed with. */
const HostReport = Schema.parseJson(Schema.Union(
  Schema.Struct({ exitCode: Schema.NullOr(Schema.Number), stdout: Schema.String, stderr: Schema.String }),
  Schema.Struct({ error: Schema.String, message: Schema.String })
))
const reportOf = (output: string) => Schema.decodeUnknownSync(HostReport)(output.trim())

afterEach(runCleanups)

describe("workspace attacks: preflight", () => {
  it.runIf(inCI)("bubblewrap is usable and the runner is root (required in CI)", () => {
    expect(unusable).toEqual([])
  })
})

describe.runIf(unusable.length === 0 || inCI)("workspace attacks (root host)", () => {
  describe("a read-write bind inside the workspace, swapped for a link to a root-only directory", () => {
    // With the victim bound at /cache, the workload would read root's secret and plant code in root's script.
    const loot = sh("cat /cache/secret; echo pwned >> /cache/tool.sh; chmod 4777 /cache/tool.sh; touch /workspace/ran")

    /** Run 1 plants the link with `plant`; run 2 (same layer) and run 3 (a layer built after) must not run. */
    const attack = (plant: (target: ReturnType<typeof victim>) => string, link: (ws: string) => string) =>
      Effect.scoped(Effect.gen(function*() {
        const ws = preparedWorkspace()
        dirOf(path.join(ws, "cache"), nobody, 0o755)
        dirOf(path.join(ws, "cache", ".cache"), nobody, 0o755)
        const target = victim()
        const before = { tree: snapshot(target.dir), contents: contents(target.dir) }
        const policy = { workspace: ws, readWriteBinds: [{ host: path.join(ws, "cache", ".cache"), sandbox: "/cache" }] }
        const runner = yield* Layer.build(sandboxed(policy))
        expect(outcomeOf(yield* attempt(runner, sh(plant(target))))).toBe("ran, exit 0")
        const later = yield* Layer.build(sandboxed(policy))
        for (const outcome of [yield* attempt(runner, loot), yield* attempt(later, loot)]) {
          expect(outcomeOf(outcome)).toMatch(/^SandboxSetup: the sandbox was not set up, nothing ran: /)
          expect(outcomeOf(outcome)).toContain(`${link(ws)} is a symbolic link`)
        }
        expect(existsSync(path.join(ws, "ran")), "the workload ran").toBe(false)
        expect({ tree: snapshot(target.dir), contents: contents(target.dir) }).toEqual(before)
      }))

    it.live("a directory above the source: SandboxSetup naming the link; nothing ran; the victim unchanged", () =>
      attack(
        (target) => `mv /workspace/cache /workspace/cache.old && ln -s ${target.dir} /workspace/cache`,
        (ws) => path.join(ws, "cache")
      ))

    it.live("the source itself (its last component): SandboxSetup naming the link; nothing ran", () =>
      attack(
        (target) => `rm -r /workspace/cache/.cache && ln -s ${target.inner} /workspace/cache/.cache`,
        (ws) => path.join(ws, "cache", ".cache")
      ))
  })

  describe("a second host's workload swaps names while this host runs on the same workspace", () => {
    /**
     * The second host (its own process) runs `/tools/racer <args>` after `setup`; meanwhile this host runs sandboxed
     * `true`s on the workspace until the racer ends, checking `watched` after each. Returns what it saw.
     */
    const race = (ws: string, setup: string, args: ReadonlyArray<string>, watched: string) =>
      Effect.scoped(Effect.gen(function*() {
        const tools = buildRacer()
        const racer = ["/tools/racer", ...args]
        const other = secondHost({
          policy: { workspace: ws, readOnlyBinds: [{ host: tools, sandbox: "/tools" }] },
          argv: ["sh", "-c", `${setup} && exec ${racer.join(" ")}`]
        })
        const runner = yield* Layer.build(sandboxed({ workspace: ws }))
        expect(yield* waitUntil(() => pidsWithArgv(racer).length > 0, 30_000), "the racer started").toBe(true)
        const before = snapshot(watched)
        const changed = new Set<string>()
        const outcomes = new Map<string, number>()
        while (pidsWithArgv(racer).length > 0) {
          const outcome = outcomeOf(yield* attempt(runner, { argv: ["true"] }))
          outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1)
          const now = snapshot(watched)
          for (const [entry, value] of Object.entries(before)) if (now[entry] !== value) changed.add(`${entry}: ${now[entry]}`)
        }
        const report = reportOf(yield* other.exited)
        return { changed: [...changed], outcomes: Object.fromEntries(outcomes), report }
      }))

    /** The race happened: every run here succeeded (many of them), and the racer exchanged names thousands of times. */
    const expectRaced = (seen: Effect.Effect.Success<ReturnType<typeof race>>) => {
      expect(Object.keys(seen.outcomes)).toEqual(["ran, exit 0"])
      expect(seen.outcomes["ran, exit 0"]).toBeGreaterThan(20)
      expect("exitCode" in seen.report && seen.report.exitCode).toBe(0)
      expect(Number("stdout" in seen.report ? seen.report.stdout : 0)).toBeGreaterThan(10_000)
    }

    it.live("directory <-> link to a root 0700 dir (RENAME_EXCHANGE): its 50 files keep owner and mode", () =>
      Effect.gen(function*() {
        const ws = preparedWorkspace()
        dirOf(path.join(ws, "d"), nobody, 0o755)
        const target = scratch("victim-")
        for (let i = 0; i < 50; i++) fileOf(path.join(target, `v${i}`), { uid: 0, gid: 0 }, 0o600, "root's\n")
        const before = snapshot(target)
        const seen = yield* race(ws, `ln -s ${target} /workspace/l`, ["swap", "/workspace/d", "/workspace/l", "4"], target)
        expect(seen.changed, "victim entries changed while racing").toEqual([])
        expect(snapshot(target)).toEqual(before)
        expect(Object.values(before).filter((entry) => entry === "0:0 600 f")).toHaveLength(50)
        expectRaced(seen)
      }))

    it.live("set-uid files swapped with links to a root 0600 file: that file, and every mode here, unchanged", () =>
      Effect.gen(function*() {
        const ws = preparedWorkspace()
        mixedTree(ws)
        const secret = fileOf(path.join(scratch("victim-"), "secret"), { uid: 0, gid: 0 }, 0o600, "root's\n")
        const before = snapshot(ws)
        const seen = yield* race(ws, "mkdir /workspace/planted", ["plant", "/workspace/planted", secret, "4"],
          path.dirname(secret))
        expect(seen.changed, "the victim changed while racing").toEqual([])
        expect(snapshot(path.dirname(secret))).toEqual({ "": "0:0 700 d", secret: "0:0 600 f" })
        const after = snapshot(ws)
        expect(sameEntries(before, after)).toEqual(before)
        // What the workload made stays as it made it: set-uid files of 65534 and links, none stripped by the host.
        const planted = Object.entries(after).flatMap(([entry, value]) =>
          entry.startsWith("planted/") ? [`${entry.slice(8, 9)}: ${value}`] : [])
        expect(new Set(planted))
          .toEqual(new Set(["f: 65534:65534 4777 f", "l: 65534:65534 777 l"]))
        expectRaced(seen)
      }))
  })

  it.live("a path deeper than PATH_MAX and a set-uid file: later runs work, no owner or mode changed", () =>
    Effect.scoped(Effect.gen(function*() {
      const ws = preparedWorkspace()
      const runner = yield* Layer.build(sandboxed({ workspace: ws }))
      const name = "d".repeat(200)
      const deep = `mkdir deep && cd deep && i=0 && while [ $i -lt 25 ]; do mkdir ${name} && cd -P ${name} || exit 1; ` +
        "i=$((i + 1)); done && echo bottom > file && touch /workspace/setuid && chmod 4777 /workspace/setuid"
      expect(outcomeOf(yield* attempt(runner, sh(deep)))).toBe("ran, exit 0")
      const before = snapshot(ws)
      expect(Math.max(...Object.keys(before).map((entry) => entry.length))).toBeGreaterThan(5_000)
      for (let i = 0; i < 2; i++) {
        expect(outcomeOf(yield* attempt(runner, sh(`echo ${i} > /workspace/run${i}`)))).toBe("ran, exit 0")
      }
      // The mode the workload gave it, after its own run and two more: the host never touched it.
      expect(before["setuid"]).toBe("65534:65534 4777 f")
      expect(sameEntries(before, snapshot(ws))).toEqual(before)
    })))

  it.live("the host is SIGKILLed mid-run: at once, every owner and mode in the workspace is as before", () =>
    Effect.gen(function*() {
      const ws = preparedWorkspace()
      mixedTree(ws)
      const before = snapshot(ws)
      const sleep = ["sleep", `30.${randomDigits()}`]
      const other = secondHost({ policy: { workspace: ws }, argv: sleep })
      expect(yield* waitUntil(() => pidsWithArgv(sleep).length > 0, 30_000), "the sandboxed sleep started").toBe(true)
      other.child.kill("SIGKILL")
      yield* other.exited
      expect(snapshot(ws)).toEqual(before)
      expect(yield* waitUntil(() => pidsWithArgv(sleep).length === 0, 5_000), "the sleep died with its host").toBe(true)
    }))

  it.live("set-uid/set-gid bits and file capabilities in the workspace survive a run", () =>
    Effect.scoped(Effect.gen(function*() {
      const ws = preparedWorkspace()
      mixedTree(ws)
      const capable = [
        fileOf(path.join(ws, "own-cap"), nobody, 0o755, "#!/bin/sh\n"),
        fileOf(path.join(ws, "root-cap"), { uid: 0, gid: 0 }, 0o755, "#!/bin/sh\n")
      ]
      for (const file of capable) addCapability(file)
      const state = () => ({ tree: snapshot(ws), capabilities: capable.map(capabilityOf) })
      const before = state()
      expect(before.capabilities.filter((cap) => cap !== "")).toHaveLength(2)
      expect(Object.values(before.tree).filter((entry) => / [24]7\d\d f$/.test(entry))).toHaveLength(3)
      const runner = yield* Layer.build(sandboxed({ workspace: ws }))
      expect(outcomeOf(yield* attempt(runner, { argv: ["true"] }))).toBe("ran, exit 0")
      expect(state()).toEqual(before)
    })))

  it.live("a root-owned 0700 workspace: SandboxSetup naming it and its owner; nothing ran", () =>
    Effect.scoped(Effect.gen(function*() {
      const ws = scratch("root-ws-")
      const before = snapshot(ws)
      const runner = yield* Layer.build(sandboxed({ workspace: ws }))
      const outcome = outcomeOf(yield* attempt(runner, sh("touch /workspace/ran")))
      expect(outcome).toMatch(/^SandboxSetup: /)
      expect(outcome).toContain(`${ws} (owner 0:0, mode 700)`)
      expect(existsSync(path.join(ws, "ran")), "the workload ran").toBe(false)
      expect(snapshot(ws)).toEqual(before)
    })))

  describe("bind sources outside the workspace, swapped by someone who may write a directory above them", () => {
    /** Host descriptors of this process, to see that refused runs leave none open. */
    const openFds = () => readdirSync("/proc/self/fd").length

    it.live("a read-only source replaced by a link to another workspace: SandboxSetup, its secret never read", () =>
      Effect.scoped(Effect.gen(function*() {
        const ws = preparedWorkspace()
        // Job b's workspace, with a secret only the sandbox user (as every job's) may read.
        const other = preparedWorkspace()
        fileOf(path.join(other, "secret"), nobody, 0o600, "job b's secret\n")
        // A directory of another local user (4242) above job a's read-only source.
        const shared = dirOf(path.join(scratch("shared-"), "by-4242"), { uid: 4242, gid: 4242 }, 0o755)
        chmodSync(path.dirname(shared), 0o755)
        const data = dirOf(path.join(shared, "data"), { uid: 4242, gid: 4242 }, 0o755)
        const runner = yield* Layer.build(sandboxed({ workspace: ws, readOnlyBinds: [{ host: data, sandbox: "/data" }] }))
        expect(outcomeOf(yield* attempt(runner, sh("ls /data")))).toBe("ran, exit 0")
        // What 4242 may do to its own directory, between two runs of job a.
        renameSync(data, `${data}.old`)
        symlinkSync(other, data)
        const fds = openFds()
        const outcome = yield* attempt(runner, sh("cat /data/secret"))
        expect(outcomeOf(outcome)).toMatch(/^SandboxSetup: .*read-only bind .*data is a symbolic link/)
        expect(Either.isRight(outcome) ? text(outcome.right.stdout) : "").not.toContain("secret")
        expect(openFds()).toBe(fds)
      })))

    it.live("a component swapped for a link to a path longer than PATH_MAX: SandboxSetup each time, no descriptor left", () =>
      Effect.scoped(Effect.gen(function*() {
        const ws = preparedWorkspace()
        const base = scratch("deep-")
        chmodSync(base, 0o755)
        const place = dirOf(path.join(base, "p"), { uid: 0, gid: 0 }, 0o755)
        dirOf(path.join(place, "b"), nobody, 0o755)
        const runner = yield* Layer.build(sandboxed({ workspace: ws, readWriteBinds: [{ host: path.join(place, "b"), sandbox: "/b" }] }))
        expect(outcomeOf(yield* attempt(runner, sh("touch /b/ok")))).toBe("ran, exit 0")
        // 25 components of 200 bytes, then b: the real path of what p/b then opens cannot be named in 4096 bytes.
        const name = "d".repeat(200)
        const made = spawnSync("sh", ["-c", `cd ${base} && mkdir deep && cd deep && i=0 && while [ $i -lt 25 ]; do ` +
          `mkdir ${name} && cd -P ${name} || exit 1; i=$((i + 1)); done && mkdir b && chown 65534:65534 b`],
          { encoding: "utf8" })
        expect([made.status, made.stderr]).toEqual([0, ""])
        expect(`${base}/deep/${name}/`.length + 25 * (name.length + 1)).toBeGreaterThan(4096)
        renameSync(place, `${place}.old`)
        // Two links (one alone could not name it): p -> deep/<12 levels>/q, q -> <the 13 levels below>.
        const levels = (n: number) => Array.from({ length: n }, () => name).join("/")
        const linked = spawnSync("sh", ["-c", `cd ${base}/deep && i=0 && while [ $i -lt 12 ]; do cd -P ${name} || exit 1; ` +
          `i=$((i + 1)); done && ln -s ${levels(13)} q`], { encoding: "utf8" })
        expect([linked.status, linked.stderr]).toEqual([0, ""])
        symlinkSync(`deep/${levels(12)}/q`, place)
        const fds = openFds()
        for (let i = 0; i < 10; i++) {
          expect(outcomeOf(yield* attempt(runner, sh("touch /b/pwned")))).toMatch(/^SandboxSetup: /)
        }
        expect(openFds()).toBe(fds)
      })))

    it.live("the same directory bound twice (the workspace also read-only elsewhere): both mounts, the run works", () =>
      Effect.scoped(Effect.gen(function*() {
        const ws = preparedWorkspace()
        const cache = dirOf(path.join(scratch("twice-"), "cache"), nobody, 0o755)
        chmodSync(path.dirname(cache), 0o755)
        const policy: Sandbox.Policy = {
          workspace: ws,
          readWriteBinds: [{ host: cache, sandbox: "/cache" }],
          readOnlyBinds: [{ host: ws, sandbox: "/view" }, { host: cache, sandbox: "/cache-ro" }]
        }
        const runner = yield* Layer.build(sandboxed(policy))
        const outcome = yield* attempt(runner, sh("echo a > /workspace/a; echo c > /cache/c; cat /view/a /cache-ro/c"))
        expect(Either.isRight(outcome) ? text(outcome.right.stdout) : outcomeOf(outcome)).toBe("a\nc\n")
      })))
  })

  it.live("descriptors the host inherited (a shell's 40<secret 41>>log) never reach the sandboxed program", () =>
    Effect.gen(function*() {
      const ws = preparedWorkspace()
      const dir = scratch("inherited-")
      const secret = fileOf(path.join(dir, "secret"), { uid: 0, gid: 0 }, 0o600, "root's secret\n")
      const log = fileOf(path.join(dir, "log"), { uid: 0, gid: 0 }, 0o600, "")
      // A host started as `host 40<secret 41>>log`: both descriptors open in it, without close-on-exec.
      const fds = [openSync(secret, "r"), openSync(log, "a")]
      onCleanup(() => fds.forEach((fd) => closeSync(fd)))
      // What 40 and 41 are inside (the host's copies replaced by /dev/null), then the attack on each.
      const probe = "readlink /proc/self/fd/40 /proc/self/fd/41; cat <&40; echo pwned >&41; true"
      // bash: dash takes single-digit descriptors only.
      const other = secondHost({ policy: { workspace: ws }, argv: ["bash", "-c", probe] }, { 40: fds[0] ?? -1, 41: fds[1] ?? -1 })
      const report = reportOf(yield* other.exited)
      expect(report).toMatchObject({ exitCode: 0, stdout: "/dev/null\n/dev/null\n" })
      expect(readFileSync(log, "utf8")).toBe("")
    }))

  it.live("a workspace of 20,000 files: a sandboxed `true` costs no more than in an empty one", () =>
    Effect.scoped(Effect.gen(function*() {
      /** The slowest of three sandboxed `true`s on `ws`, in ms, on a layer built beforehand. */
      const slowest = (ws: string) =>
        Effect.gen(function*() {
          const runner = yield* Layer.build(sandboxed({ workspace: ws }))
          const times: Array<number> = []
          for (let i = 0; i < 3; i++) {
            const started = performance.now()
            expect(outcomeOf(yield* attempt(runner, { argv: ["true"] }))).toBe("ran, exit 0")
            times.push(performance.now() - started)
          }
          return Math.max(...times)
        })
      const many = preparedWorkspace()
      // Root's files, as a checkout made by root would be: a host handing the tree over would chown each one.
      for (let d = 0; d < 100; d++) {
        mkdirSync(path.join(many, `d${d}`))
        for (let f = 0; f < 200; f++) writeFileSync(path.join(many, `d${d}`, `f${f}`), "")
      }
      const empty = yield* slowest(preparedWorkspace())
      const full = yield* slowest(many)
      expect(full, `20,000 files: ${full.toFixed(0)} ms; empty: ${empty.toFixed(0)} ms`).toBeLessThan(empty + 500)
      expect(full).toBeLessThan(3_000)
    })))
})
