/**
 * Helpers of the hostile-workload suite (test/escape.test.ts): what the host sees of a run (/proc scanning),
 * sentinel processes, root-only canaries, a TCP listener, and one registry that undoes all of it after each test.
 */
import * as Effect from "effect/Effect"
import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes, randomInt } from "node:crypto"
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { makeTestWorkspace, type TestUser } from "./workspace.js"

export const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes)
export const randomHex = (bytes: number) => randomBytes(bytes).toString("hex")
/** Six random digits, for argv markers such as `sleep 30.123456` (sleep takes fractional seconds). */
export const randomDigits = () => String(randomInt(1_000_000)).padStart(6, "0")

const cleanups: Array<() => void> = []

/** Registers `undo` to run after the current test, last registered first. */
export const onCleanup = (undo: () => void) => {
  cleanups.push(undo)
}

/** Runs every registered cleanup; all run even if one throws, and the first error is rethrown. */
export const runCleanups = () => {
  const errors: Array<unknown> = []
  for (const undo of cleanups.splice(0).reverse()) {
    try {
      undo()
    } catch (error) {
      errors.push(error)
    }
  }
  if (errors.length > 0) throw errors[0]
}

/** A fresh directory under the system temp dir (`enr-escape-<prefix>...`), removed after the test. */
export const tempDir = (prefix = ""): string => {
  const dir = mkdtempSync(path.join(tmpdir(), `enr-escape-${prefix}`))
  onCleanup(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** A fresh workspace the sandbox user (as root: 65534, or `user`) can write, removed after the test. */
export const workspace = (user?: TestUser): string => {
  const made = makeTestWorkspace("enr-escape-ws-", user)
  onCleanup(made.remove)
  return made.ws
}

/** A host path that the test may create (or that an escaped workload may), removed after the test. */
export const hostPath = (file: string): string => {
  onCleanup(() => rmSync(file, { force: true }))
  return file
}

/** `/etc/enr-escape-canary-<random>`, mode 0600, owned by the (root) test process, holding a random token. */
export const rootCanary = (): { readonly file: string; readonly token: string } => {
  const file = hostPath(`/etc/enr-escape-canary-${randomHex(6)}`)
  const token = randomHex(16)
  writeFileSync(file, token, { mode: 0o600 })
  chmodSync(file, 0o600)
  return { file, token }
}

interface HostProcess {
  readonly pid: number
  readonly argv: ReadonlyArray<string>
}

/** Every live (non-zombie) process on the host, with its argv; processes that exit while scanned are skipped. */
export const hostProcesses = (): Array<HostProcess> =>
  readdirSync("/proc").filter((entry) => /^\d+$/.test(entry)).flatMap((pid) => {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")
      if (argv.at(-1) === "") argv.pop()
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
      return stat.slice(stat.lastIndexOf(")") + 2)[0] === "Z" ? [] : [{ pid: Number(pid), argv }]
    } catch {
      return []
    }
  })

/** Host processes whose argv is exactly `argv`. */
export const pidsWithArgv = (argv: ReadonlyArray<string>): Array<number> =>
  hostProcesses().filter((p) => p.argv.join("\0") === argv.join("\0")).map((p) => p.pid)

/** Host processes with `value` anywhere in their command line. */
export const pidsWithCmdlineContaining = (value: string): Array<number> =>
  hostProcesses().filter((p) => p.argv.some((arg) => arg.includes(value))).map((p) => p.pid)

/** True while `pid` exists and is not a zombie. */
export const isAlive = (pid: number): boolean => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z"
  } catch {
    return false
  }
}

/** The real, effective, saved and filesystem uids and gids of `pid`, from `/proc/<pid>/status`. */
export const hostIds = (pid: number): { readonly uid: Array<number>; readonly gid: Array<number> } => {
  const status = readFileSync(`/proc/${pid}/status`, "utf8")
  const ids = (name: string) =>
    (new RegExp(`^${name}:\\s+(.*)$`, "m").exec(status)?.[1] ?? "").trim().split(/\s+/).map(Number)
  return { uid: ids("Uid"), gid: ids("Gid") }
}

/** Polls `condition` every 50 ms; true as soon as it holds, false after `timeoutMs`. */
export const waitUntil = (condition: () => boolean, timeoutMs: number): Effect.Effect<boolean> =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    while (!condition()) {
      if (Date.now() > deadline) return false
      yield* Effect.sleep("50 millis")
    }
    return true
  })

/** A host `sleep 60` running as `uid`:`uid`, SIGKILLed after the test. */
export const sentinel = (uid: number): ChildProcess => {
  const child = spawn("sleep", ["60"], { uid, gid: uid, stdio: "ignore" })
  onCleanup(() => child.kill("SIGKILL"))
  return child
}

/** A host process with `arg` in its argv (`sh -c 'sleep 5' sh <arg>`), killed after the test. */
export const processWithArg = (arg: string): ChildProcess => {
  const child = spawn("sh", ["-c", "sleep 5", "sh", arg], { stdio: "ignore" })
  onCleanup(() => child.kill("SIGKILL"))
  return child
}

/** A TCP listener on 127.0.0.1 counting connections, closed after the test. */
export const listener = Effect.async<{ readonly port: number; readonly connections: () => number }>((resume) => {
  let connections = 0
  const server = createServer((socket) => {
    connections++
    socket.destroy()
  })
  onCleanup(() => server.close())
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    resume(Effect.succeed({ port, connections: () => connections }))
  })
})

/** True when `file` exists and holds `content` (trailing whitespace ignored). */
export const fileHolds = (file: string, content: string): boolean =>
  existsSync(file) && readFileSync(file, "utf8").trim() === content
