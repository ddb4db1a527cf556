/**
 * Helpers of the workspace-attack suites (test/workspaceAttacks.test.ts, test/workspaceAdopt.test.ts): the gate,
 * workspaces and root-owned victims in fresh temp dirs, owner/mode snapshots taken from the host, the `cc`-built
 * racer, and a second host process. Everything made here is removed after the test (`rm -rf`: a workload may leave
 * paths longer than PATH_MAX, which Node's own `rmSync` cannot remove).
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { chmodSync, chownSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { Bubblewrap } from "../../src/index.js"
import { onCleanup, randomHex } from "./escape.js"

export const inCI = process.env["CI"] === "true"
export const isRoot = process.getuid?.() === 0
const preflight = await Effect.runPromise(Effect.either(Bubblewrap.preflight()))
/** Why the suites cannot run here; empty when they can. In CI every test runs regardless, so these fail it. */
export const unusable: ReadonlyArray<string> = [
  ...(Either.isLeft(preflight) ? [`${preflight.left.message} Fix: ${preflight.left.fix}`] : []),
  ...(isRoot ? [] : ["the attacks need a root host (run as root, as CI does)."])
]

export const nobody = { uid: 65534, gid: 65534 } as const

/** Removes `dir` and everything below it, however deep. */
export const removeTree = (dir: string): void => {
  const removed = spawnSync("rm", ["-rf", "--one-file-system", dir], { encoding: "utf8" })
  if (removed.status !== 0) throw new Error(`rm -rf ${dir} failed: ${removed.stderr}`)
}

/** A fresh directory `<tmp>/enr-attack-<prefix>XXXXXX`, root's and mode 0700 (mkdtemp's), removed after the test. */
export const scratch = (prefix = ""): string => {
  const dir = mkdtempSync(path.join(tmpdir(), `enr-attack-${prefix}`))
  onCleanup(() => removeTree(dir))
  return dir
}

/** Creates `dir` with `owner` and `mode` (chmod after chown: chown clears set-id bits). */
export const dirOf = (dir: string, owner: { uid: number; gid: number }, mode: number): string => {
  mkdirSync(dir)
  chownSync(dir, owner.uid, owner.gid)
  chmodSync(dir, mode)
  return dir
}

/** Creates `file` holding `content`, with `owner` and `mode`. */
export const fileOf = (file: string, owner: { uid: number; gid: number }, mode: number, content = ""): string => {
  writeFileSync(file, content)
  chownSync(file, owner.uid, owner.gid)
  chmodSync(file, mode)
  return file
}

/** A prepared workspace: `<parent>/ws`, owned by `owner` (default 65534) and 0700, in a root 0755 parent. */
export const preparedWorkspace = (owner: { uid: number; gid: number } = nobody): string => {
  const parent = scratch("ws-")
  chmodSync(parent, 0o755)
  return dirOf(path.join(parent, "ws"), owner, 0o700)
}

const root = { uid: 0, gid: 0 } as const
const other = { uid: 1234, gid: 1234 } as const

/**
 * Entries a workspace may hold that are not the sandbox user's (a checkout made by root, a colleague's files, set-id
 * programs): what a host that hands the tree over would have to change, and must not.
 */
export const mixedTree = (ws: string): void => {
  fileOf(path.join(ws, "root-file"), root, 0o644, "root's\n")
  fileOf(path.join(ws, "root-setuid"), root, 0o4755, "#!/bin/sh\n")
  dirOf(path.join(ws, "other-dir"), other, 0o2750)
  fileOf(path.join(ws, "other-dir", "other-setgid"), other, 0o2755, "#!/bin/sh\n")
  fileOf(path.join(ws, "own-setuid"), nobody, 0o4755, "#!/bin/sh\n")
}

/**
 * Every entry below `dir` (and `dir` itself as ""), from the host: path -> "uid:gid mode type", by `find`, which
 * walks with descriptors (so paths beyond PATH_MAX are listed too).
 */
export const snapshot = (dir: string): Record<string, string> => {
  const listed = spawnSync("find", [dir, "-printf", "%P\\t%U:%G %m %y\\n"], { encoding: "utf8", maxBuffer: 64 << 20 })
  if (listed.status !== 0) throw new Error(`find ${dir} failed: ${listed.stderr}`)
  return Object.fromEntries(listed.stdout.split("\n").filter((line) => line !== "").map((line) => {
    const tab = line.indexOf("\t")
    return [line.slice(0, tab), line.slice(tab + 1)]
  }))
}

/** The entries of `after` that were in `before` (so what the workload added is left out). */
export const sameEntries = (before: Record<string, string>, after: Record<string, string>): Record<string, string> =>
  Object.fromEntries(Object.keys(before).map((entry) => [entry, after[entry] ?? "gone"]))

/** A victim outside any workspace: a root 0755 dir holding `inner`, a root 0700 dir with a secret and a script. */
export const victim = () => {
  const dir = scratch("victim-")
  chmodSync(dir, 0o755)
  const inner = dirOf(path.join(dir, ".cache"), root, 0o700)
  const token = randomHex(16)
  fileOf(path.join(inner, "secret"), root, 0o600, token)
  fileOf(path.join(inner, "tool.sh"), root, 0o755, "#!/bin/sh\necho tool\n")
  fileOf(path.join(inner, "setuid"), root, 0o4755, "#!/bin/sh\n")
  return { dir, inner, token }
}

/** `cat` of every regular file below `dir`, by name: what a victim's contents were. */
export const contents = (dir: string): string =>
  spawnSync("sh", ["-c", "cd \"$1\" && find . -type f | sort | xargs cat", "sh", dir], { encoding: "utf8" }).stdout

/** The raw `security.capability` xattr of `file` in hex ("" when it has none), read with python3. */
export const capabilityOf = (file: string): string => {
  const code = "import os, sys\ntry: print(os.getxattr(sys.argv[1], 'security.capability').hex())\nexcept OSError: print('')"
  return spawnSync("python3", ["-c", code, file], { encoding: "utf8" }).stdout.trim()
}

/**
 * Gives `file` the file capability cap_net_raw+ep: with `setcap` when installed, else by writing the xattr
 * (VFS_CAP_REVISION_2 with the effective flag, permitted = 1 << 13) with python3.
 */
export const addCapability = (file: string): void => {
  const setcap = spawnSync("setcap", ["cap_net_raw+ep", file], { encoding: "utf8" })
  if (setcap.status === 0) return
  const code = "import os, struct, sys\n" +
    "os.setxattr(sys.argv[1], 'security.capability', struct.pack('<5I', 0x02000001, 1 << 13, 0, 0, 0))"
  const set = spawnSync("python3", ["-c", code, file], { encoding: "utf8" })
  if (set.status !== 0) throw new Error(`cannot give ${file} a capability: ${set.stderr}`)
}

/** The racer (test/fixtures/racer.c) built with `cc` into a fresh root 0755 dir, to bind read-only at /tools. */
export const buildRacer = (): string => {
  const dir = scratch("tools-")
  chmodSync(dir, 0o755)
  const source = path.join(import.meta.dirname, "..", "fixtures", "racer.c")
  const built = spawnSync("cc", ["-O2", "-o", path.join(dir, "racer"), source], { encoding: "utf8" })
  if (built.status !== 0) throw new Error(`cc ${source} failed: ${built.stderr}`)
  return dir
}

/** A second host (test/fixtures/workspace-host.ts in its own Node process); SIGKILLed after the test if alive. */
export const secondHost = (
  request: { readonly policy: object; readonly argv: ReadonlyArray<string> },
  /** Descriptors the host inherits, by number (as a shell's `40<file` would give them). */
  inherit: Readonly<Record<number, number>> = {}
) => {
  const repo = path.join(import.meta.dirname, "..", "..")
  const script = path.join(repo, "test", "fixtures", "workspace-host.ts")
  const top = Math.max(2, ...Object.keys(inherit).map(Number))
  const stdio = Array.from({ length: top + 1 }, (_, fd): "ignore" | "pipe" | "inherit" | number =>
    fd === 1 ? "pipe" : fd === 2 ? "inherit" : inherit[fd] ?? "ignore")
  // One process (tsx as a loader, not its CLI, which would put the host in a child): SIGKILL hits the host itself.
  const child: ChildProcess = spawn(process.execPath, ["--import", "tsx", script, JSON.stringify(request)], {
    cwd: repo,
    stdio
  })
  onCleanup(() => child.kill("SIGKILL"))
  let output = ""
  child.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString()
  })
  const exited = Effect.async<string>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.succeed(output))
    child.once("close", () => resume(Effect.succeed(output)))
  })
  return { child, exited }
}
