/**
 * Hostile workloads run by a root host. Each attack is shown working without the sandbox (the control: proof that
 * the probe is real, so the sandboxed test can fail) and contained with it. Gated like sandboxed.test.ts: in CI
 * (CI=true) every test runs and an unusable bwrap or a non-root runner fails; elsewhere the suite is skipped, saying why.
 */
import { afterEach, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import { spawnSync } from "node:child_process"
import { randomInt } from "node:crypto"
import { chmodSync, existsSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import * as path from "node:path"
import { Bubblewrap, type Exec, NativeRunner, type Sandbox } from "../src/index.js"
import {
  fileHolds,
  hostIds,
  hostPath,
  isAlive,
  listener,
  pidsWithArgv,
  pidsWithCmdlineContaining,
  processWithArg,
  randomDigits,
  randomHex,
  rootCanary,
  runCleanups,
  sentinel,
  tempDir,
  text,
  waitUntil,
  workspace
} from "./helpers/escape.js"

const preflight = await Effect.runPromise(Effect.either(Bubblewrap.preflight()))
const inCI = process.env["CI"] === "true"
const isRoot = process.getuid?.() === 0
const unusable = [
  ...(Either.isLeft(preflight) ? [`${preflight.left.message} Fix: ${preflight.left.fix}`] : []),
  ...(isRoot ? [] : ["the attacks need a root host (run as root, as CI does)."])
]
if (unusable.length > 0 && !inCI) console.warn(`hostile-workload tests not run: ${unusable.join(" ")}`)

const options = { killGrace: "2 seconds", timeout: "10 seconds" } as const
const host = NativeRunner.layerNode(options)
const sandboxed = (policy: Sandbox.Policy) => NativeRunner.layerNode({ ...options, sandbox: { policy } })

const runHost = (input: Exec.ExecInput) => NativeRunner.exec(input).pipe(Effect.provide(host))
/** A sandboxed run; every one must be audited as `sandbox: "bwrap"`. */
const runSandboxed = (policy: Sandbox.Policy, input: Exec.ExecInput) =>
  NativeRunner.exec(input).pipe(
    Effect.tap((result) => Effect.sync(() => expect(result.audits.map((a) => a.sandbox)).toEqual(["bwrap"]))),
    Effect.provide(sandboxed(policy))
  )

afterEach(runCleanups)

describe("hostile workload: preflight", () => {
  it.runIf(inCI)("bubblewrap is usable and the runner is root (required in CI)", () => {
    expect(unusable).toEqual([])
  })
})

describe.runIf(unusable.length === 0 || inCI)("hostile workload", () => {
  describe("writes a /proc/sys value (kernel/printk_ratelimit)", () => {
    const sysctl = "/proc/sys/kernel/printk_ratelimit"
    const read = () => readFileSync(sysctl, "utf8").trim()
    /** Runs `attack` with a value other than the original, always restoring the original. */
    const withRestore = <A, E, R>(attack: (original: string, value: string) => Effect.Effect<A, E, R>) =>
      Effect.acquireUseRelease(
        Effect.sync(read),
        (original) => attack(original, original === "9" ? "8" : "9"),
        (original) => Effect.sync(() => writeFileSync(sysctl, original))
      )
    const write = (value: string) => ({ argv: ["sh", "-c", `echo ${value} > ${sysctl}`] })

    it.live("control: an unsandboxed root program changes it", () =>
      withRestore((_original, value) =>
        Effect.gen(function*() {
          expect((yield* runHost(write(value))).exitCode).toBe(0)
          expect(read()).toBe(value)
        })
      ))

    it.live("sandboxed: the write fails and the host value is unchanged", () =>
      withRestore((original, value) =>
        Effect.gen(function*() {
          const result = yield* runSandboxed({ workspace: workspace() }, write(value))
          expect(result.exitCode).not.toBe(0)
          expect(read()).toBe(original)
        })
      ))
  })

  describe("reads a root-only file in /etc", () => {
    it.live("control: an unsandboxed program prints the canary's token", () =>
      Effect.gen(function*() {
        const { file, token } = rootCanary()
        expect(text((yield* runHost({ argv: ["cat", file] })).stdout)).toBe(token)
      }))

    it.live("sandboxed: permission denied, the token never printed", () =>
      Effect.gen(function*() {
        const { file, token } = rootCanary()
        const result = yield* runSandboxed({ workspace: workspace() }, { argv: ["cat", file] })
        expect(text(result.stdout)).not.toContain(token)
        expect(text(result.stderr)).toContain("Permission denied")
      }))
  })

  describe("runs as host root", () => {
    /** Starts `exec sleep 30.<random>` under `layer`, reads its ids from the host, interrupts the run. */
    const observe = <E>(layer: Layer.Layer<NativeRunner.NativeRunner, E>) =>
      Effect.gen(function*() {
        const argv = ["sleep", `30.${randomDigits()}`]
        const run = NativeRunner.exec({ argv: ["sh", "-c", `exec ${argv.join(" ")}`], timeout: "60 seconds" })
        const fiber = yield* Effect.fork(run.pipe(Effect.provide(layer)))
        const started = yield* waitUntil(() => pidsWithArgv(argv).length > 0, 15_000)
        const ids = pidsWithArgv(argv).map(hostIds)
        yield* Fiber.interrupt(fiber)
        const gone = yield* waitUntil(() => pidsWithArgv(argv).length === 0, 10_000)
        return { started, ids, gone }
      })
    const as = (id: number) => [{ uid: [id, id, id, id], gid: [id, id, id, id] }]

    it.live("control: unsandboxed, the host sees uid 0", () =>
      Effect.gen(function*() {
        expect(yield* observe(host)).toEqual({ started: true, ids: as(0), gone: true })
      }))

    it.live("sandboxed: the host sees 65534, or the policy's user; the process is gone after interruption", () =>
      Effect.gen(function*() {
        expect(yield* observe(sandboxed({ workspace: workspace() }))).toEqual({ started: true, ids: as(65534), gone: true })
        const custom = sandboxed({ workspace: workspace({ uid: 4242, gid: 4242 }), user: { uid: 4242, gid: 4242 } })
        expect(yield* observe(custom)).toEqual({ started: true, ids: as(4242), gone: true })
      }))
  })

  describe("plants a `bwrap` in the workspace for the host to run", () => {
    const paths = [".:/usr/bin:/bin", ":/usr/bin:/bin"]
    const plantedScript = (marker: string) => `#!/bin/sh\ntouch ${marker}\n`

    it.live("control: spawning bwrap by name with such a PATH runs the planted script", () =>
      Effect.gen(function*() {
        const ws = workspace()
        const marker = hostPath(`/tmp/enr-escape-planted-${randomHex(6)}`)
        writeFileSync(path.join(ws, "bwrap"), plantedScript(marker), { mode: 0o755 })
        for (const PATH of paths) {
          spawnSync("bwrap", ["--version"], { cwd: ws, env: { PATH } })
          expect({ PATH, planted: existsSync(marker) }).toEqual({ PATH, planted: true })
          rmSync(marker)
        }
      }))

    it.live("sandboxed: the real bwrap runs; the planted one never does", () =>
      Effect.gen(function*() {
        const ws = workspace()
        const marker = hostPath(`/tmp/enr-escape-planted-${randomHex(6)}`)
        const plant = `printf '${plantedScript(marker).replaceAll("\n", "\\n")}' > bwrap; chmod +x bwrap`
        expect((yield* runSandboxed({ workspace: ws }, { argv: ["sh", "-c", plant] })).exitCode).toBe(0)
        expect(statSync(path.join(ws, "bwrap")).mode & 0o111).not.toBe(0)
        for (const PATH of paths) {
          const probe = { argv: ["sh", "-c", "grep Seccomp: /proc/self/status; id -u"], env: { PATH } }
          const result = yield* runSandboxed({ workspace: ws }, probe)
          expect({ PATH, planted: existsSync(marker), stdout: text(result.stdout) })
            .toEqual({ PATH, planted: false, stdout: "Seccomp:\t2\n65534\n" })
        }
      }))
  })

  describe("finds an env value on a host command line", () => {
    it.live("control: the scanner finds a value that is in a host process's argv", () =>
      Effect.gen(function*() {
        const token = randomHex(16)
        const child = processWithArg(token)
        expect(yield* waitUntil(() => pidsWithCmdlineContaining(token).includes(child.pid ?? -1), 5_000), "scanner found the argv").toBe(true)
      }))

    it.live("sandboxed: the value is in no /proc/*/cmdline, yet the program receives it", () =>
      Effect.gen(function*() {
        const token = randomHex(16)
        const sleep = ["sleep", `3.${randomDigits()}`]
        const fiber = yield* Effect.fork(runSandboxed({ workspace: workspace() }, {
          argv: ["sh", "-c", `echo started; ${sleep.join(" ")}; printenv CANARY_TOKEN`],
          env: { CANARY_TOKEN: token }
        }))
        expect(yield* waitUntil(() => pidsWithArgv(sleep).length > 0, 10_000), "sandboxed sleep seen").toBe(true)
        expect(pidsWithCmdlineContaining(token)).toEqual([])
        expect(text((yield* Fiber.join(fiber)).stdout)).toBe(`started\n${token}\n`)
      }))
  })

  describe("uses syscalls the seccomp filter denies", () => {
    const run = (seccomp: boolean, script: string) =>
      runSandboxed({ workspace: workspace(), seccomp }, { argv: ["sh", "-c", script] }).pipe(Effect.map((r) => text(r.stdout)))
    const python = (code: string) => `python3 -c '${code}'`
    const libc = "import ctypes, sys; libc = ctypes.CDLL(None, use_errno=True)"
    // PTRACE_ATTACH (16) to a sibling sleep of the same uid; prints the return value and errno.
    const ptrace = `sleep 30 & ${python(
      `${libc}; r = libc.ptrace(16, int(sys.argv[1]), None, None); print("ptrace", r, ctypes.get_errno())`
    )} $!; kill -9 $!`
    // SYS_keyctl (250 on x86_64): KEYCTL_GET_KEYRING_ID (0) of the session keyring (-3), without creating it.
    const keyctl = python(`${libc}; r = libc.syscall(250, 0, -3, 0); print("keyctl", r, ctypes.get_errno())`)

    it.live("the filter is on (Seccomp: 2), and off with seccomp: false (Seccomp: 0)", () =>
      Effect.gen(function*() {
        expect(yield* run(true, "grep Seccomp: /proc/self/status")).toBe("Seccomp:\t2\n")
        expect(yield* run(false, "grep Seccomp: /proc/self/status")).toBe("Seccomp:\t0\n")
      }))

    it.live("control: an unprivileged host user can create a user namespace (unshare -U)", () =>
      Effect.gen(function*() {
        const argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "unshare", "-U", "true"]
        expect((yield* runHost({ argv })).exitCode).toBe(0)
      }))

    it.live("sandboxed: a nested user namespace is refused", () =>
      Effect.gen(function*() {
        // Exit 1 is unshare's own failure; 127 would mean it is missing, which would prove nothing.
        expect(yield* run(true, "unshare -U true; echo unshare exit $?")).toBe("unshare exit 1\n")
      }))

    it.live("control: without the filter, ptrace attach and keyctl work in the sandbox", () =>
      Effect.gen(function*() {
        expect(yield* run(false, ptrace)).toBe("ptrace 0 0\n")
        expect(yield* run(false, keyctl)).toMatch(/^keyctl \d+ 0\n$/)
      }))

    it.live("sandboxed: ptrace attach and keyctl fail with EPERM", () =>
      Effect.gen(function*() {
        expect(yield* run(true, ptrace)).toBe("ptrace -1 1\n")
        expect(yield* run(true, keyctl)).toBe("keyctl -1 1\n")
      }))
  })

  describe("traps SIGTERM to clean up", () => {
    // The handler prints before it writes term.txt: a program must get its grace period with its output still open.
    const script = "trap 'echo got-term; echo got-term > term.txt; exit 7' TERM; echo ready > ready.txt; echo ready; " +
      "while :; do sleep 0.1; done"
    /** Times the script out, then interrupts it: both times the trap must run within the grace period. */
    const probe = <E>(layer: (ws: string) => Layer.Layer<NativeRunner.NativeRunner, E>) =>
      Effect.gen(function*() {
        const timedOutWs = workspace()
        const started = Date.now()
        const result = yield* NativeRunner.exec({
          argv: ["sh", "-c", script],
          cwd: timedOutWs,
          timeout: "1 second",
          killGrace: "5 seconds"
        }).pipe(Effect.provide(layer(timedOutWs)))
        // Without SIGTERM reaching the program, SIGKILL would come only after timeout + grace (6 s).
        expect(Date.now() - started).toBeLessThan(1_000 + 5_000)
        expect({ timedOut: result.timedOut, exitCode: result.exitCode, stdout: text(result.stdout) })
          .toEqual({ timedOut: true, exitCode: 124, stdout: "ready\ngot-term\n" })
        const ws = workspace()
        const fiber = yield* Effect.fork(
          NativeRunner.exec({ argv: ["sh", "-c", script], cwd: ws, killGrace: "5 seconds" }).pipe(
            Effect.provide(layer(ws))
          )
        )
        expect(yield* waitUntil(() => existsSync(path.join(ws, "ready.txt")), 10_000), "program ready").toBe(true)
        yield* Fiber.interrupt(fiber)
        const handled = yield* waitUntil(() => fileHolds(path.join(ws, "term.txt"), "got-term"), 3_000)
        expect(handled, "after interruption the TERM handler ran to its end (it prints, then writes term.txt)").toBe(true)
      })

    it.live("control: unsandboxed, the trap runs on timeout and on interruption", () => probe(() => host))

    it.live("sandboxed: the trap runs on timeout and on interruption", () =>
      probe((ws) => sandboxed({ workspace: ws })))
  })

  describe("kills every process it may signal (kill -9 -1)", () => {
    it.live("control: unsandboxed, as the sentinel's uid, it kills the sentinel", () =>
      Effect.gen(function*() {
        // A uid no one else uses: an unsandboxed `kill -9 -1` as 65534 would also kill other users' sandboxed runs.
        const uid = 200_000 + randomInt(100_000)
        const target = sentinel(uid)
        expect(yield* waitUntil(() => isAlive(target.pid ?? -1), 5_000), "sentinel started").toBe(true)
        const id = [`--reuid=${uid}`, `--regid=${uid}`, "--clear-groups"]
        expect((yield* runHost({ argv: ["setpriv", ...id, "sh", "-c", "kill -9 -1"] })).exitCode).toBe(0)
        expect(yield* waitUntil(() => !isAlive(target.pid ?? -1), 5_000), "sentinel killed").toBe(true)
      }))

    it.live("sandboxed: a host process of the sandbox's uid (65534) survives", () =>
      Effect.gen(function*() {
        const target = sentinel(65534)
        expect(yield* waitUntil(() => isAlive(target.pid ?? -1), 5_000), "sentinel started").toBe(true)
        const result = yield* runSandboxed({ workspace: workspace() }, { argv: ["sh", "-c", "kill -9 -1; echo done"] })
        expect(text(result.stdout)).toBe("done\n")
        yield* Effect.sleep("500 millis")
        expect(isAlive(target.pid ?? -1)).toBe(true)
      }))
  })

  describe("connects to a host listener on 127.0.0.1", () => {
    const connect = (port: number) => ({ argv: ["bash", "-c", `echo hi > /dev/tcp/127.0.0.1/${port} && echo connected`] })

    it.live("control: with network: host it connects", () =>
      Effect.gen(function*() {
        const server = yield* listener
        const result = yield* runSandboxed({ workspace: workspace(), network: "host" }, connect(server.port))
        expect(text(result.stdout)).toBe("connected\n")
        expect(yield* waitUntil(() => server.connections() === 1, 5_000), "one connection seen").toBe(true)
      }))

    it.live("sandboxed: with network: none it does not", () =>
      Effect.gen(function*() {
        const server = yield* listener
        const result = yield* runSandboxed({ workspace: workspace(), network: "none" }, connect(server.port))
        expect(text(result.stdout)).toBe("")
        expect(result.exitCode).not.toBe(0)
        yield* Effect.sleep("300 millis")
        expect(server.connections()).toBe(0)
      }))
  })

  describe("a read-only bind whose host path vanished", () => {
    /** Builds the layer while the bind exists, removes it when asked, then runs a command that leaves a marker. */
    const runWithBind = (removeFirst: boolean) =>
      Effect.scoped(Effect.gen(function*() {
        const ws = workspace()
        const bind = tempDir("bind-")
        // The sandbox user must reach a bind source: mkdtemp made it 0700.
        chmodSync(bind, 0o755)
        const runner = yield* Layer.build(sandboxed({ workspace: ws, readOnlyBinds: [{ host: bind }] }))
        if (removeFirst) rmSync(bind, { recursive: true })
        const outcome = yield* Effect.either(
          NativeRunner.exec({ argv: ["sh", "-c", "echo ran > /workspace/ran"] }).pipe(Effect.provide(runner))
        )
        return { outcome, bind, ran: existsSync(path.join(ws, "ran")) }
      }))

    it.live("control: with the bind present the command runs", () =>
      Effect.gen(function*() {
        const { outcome, ran } = yield* runWithBind(false)
        expect(Either.isRight(outcome) && outcome.right.exitCode).toBe(0)
        expect(ran).toBe(true)
      }))

    it.live("sandboxed: SpawnError SandboxSetup naming the path; nothing ran", () =>
      Effect.gen(function*() {
        const { outcome, bind, ran } = yield* runWithBind(true)
        const error = Either.isLeft(outcome) ? outcome.left : undefined
        expect(error?._tag).toBe("SpawnError")
        expect(error?._tag === "SpawnError" ? error.reason : undefined).toBe("SandboxSetup")
        expect(error?.message).toContain(bind)
        expect(ran).toBe(false)
      }))
  })
})
