import { describe, expect, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Bubblewrap from "../src/Bubblewrap.js"
import { InvalidInput, SandboxUnavailable } from "../src/Errors.js"
import { runProcess, type RunSettings } from "../src/internal/engine.js"
import { makeNodeSpawner } from "../src/internal/nodeSpawner.js"
import type { PreparedCommand } from "../src/internal/prepared.js"
import type * as Sandbox from "../src/Sandbox.js"

const workspace = "/srv/job"
const command: PreparedCommand = { argv: ["make", "-j2"], cwd: workspace, env: { PATH: "/usr/bin:/bin", LANG: "C" } }
const asRoot = process.getuid?.() === 0
const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes)

const wrapped = (policy: Sandbox.Policy, cmd: PreparedCommand = command, options?: Bubblewrap.WrapOptions) => {
  const result = Bubblewrap.wrap(policy, cmd, options)
  if (Either.isLeft(result)) throw new Error(`expected Right, got ${result.left.message}`)
  return result.right
}

const rejected = (policy: Sandbox.Policy, cmd: PreparedCommand): InvalidInput => {
  const result = Bubblewrap.wrap(policy, cmd)
  if (Either.isRight(result)) throw new Error(`expected Left, got ${result.right.argv.join(" ")}`)
  return result.left
}

/** The bytes bwrap reads with `--args 3`: descriptor 3, always the first extra one. */
const fd3 = (cmd: PreparedCommand): Uint8Array => {
  const fd = cmd.extraFds?.[0]
  if (fd?._tag !== "Input") throw new Error("descriptor 3 is not an input")
  return fd.bytes
}

/**
 * bwrap's options and the program after its `--`, read through `expandArgs` (the flags come from descriptor 3).
 * The separator is located by counting from the end, so a flag value equal to `--` could not fool it.
 */
const partsOf = (cmd: PreparedCommand) => {
  const at = cmd.argv.indexOf("--args")
  expect(cmd.argv.slice(at, at + 3), cmd.argv.join(" ")).toEqual(["--args", "3", "--"])
  const expanded = Bubblewrap.expandArgs(cmd)
  const separator = expanded.length - (cmd.argv.length - (at + 3)) - 1
  expect(expanded[separator]).toBe("--")
  return { flags: expanded.slice(at, separator), inner: expanded.slice(separator + 1) }
}

/** bwrap's options, as it parses them. */
const flagsOf = (cmd: PreparedCommand) => partsOf(cmd).flags
/** What bwrap runs inside: the prlimit prefix, then the command. */
const innerOf = (cmd: PreparedCommand) => partsOf(cmd).inner

/** Index of `flag` followed by exactly `args`, or -1. */
const indexOfFlag = (flags: ReadonlyArray<string>, flag: string, ...args: Array<string>): number =>
  flags.findIndex((value, index) => value === flag && args.every((arg, offset) => flags[index + 1 + offset] === arg))

const expectFlag = (flags: ReadonlyArray<string>, flag: string, ...args: Array<string>): number => {
  const index = indexOfFlag(flags, flag, ...args)
  expect(index, `${flag} ${args.join(" ")} in ${flags.join(" ")}`).toBeGreaterThanOrEqual(0)
  return index
}

/** Values following each `--setenv`, as a record. */
const setenvOf = (flags: ReadonlyArray<string>): Record<string, string> => {
  const env: Record<string, string> = {}
  flags.forEach((value, index) => {
    const name = flags[index + 1]
    const val = flags[index + 2]
    if (value === "--setenv" && name !== undefined && val !== undefined) env[name] = val
  })
  return env
}

describe("Bubblewrap.wrap", () => {
  it("spawns the absolute bwrap reading its flags from fd 3, in / with an empty environment", () => {
    const result = wrapped({ workspace }, { ...command, env: { ...command.env, LD_PRELOAD: "/evil.so" } })
    expect(result.argv).toEqual(["/usr/bin/bwrap", "--args", "3", "--", "make", "-j2"])
    expect(innerOf(result)).toEqual(["make", "-j2"])
    expect(result.cwd).toBe("/")
    // Nothing of the command's environment reaches bwrap itself; LD_PRELOAD is only set inside, through fd 3.
    expect(result.env).toEqual({})
    expect(setenvOf(flagsOf(result))["LD_PRELOAD"]).toBe("/evil.so")
  })

  it("uses bwrapPath, and starts with setpriv (parent-death KILL, then the identity) when given", () => {
    const own = wrapped({ workspace }, { ...command, env: {} }, { bwrapPath: "/opt/bwrap" })
    expect(own.argv).toEqual(["/opt/bwrap", "--args", "3", "--", "make", "-j2"])
    expect(own.env).toEqual({})
    const guarded = wrapped({ workspace }, command, { setprivPath: "/usr/bin/setpriv" })
    expect(guarded.argv).toEqual(["/usr/bin/setpriv", "--pdeathsig", "KILL", "/usr/bin/bwrap", "--args", "3", "--", "make", "-j2"])
    const switched = wrapped({ workspace }, command, {
      bwrapPath: "/opt/bwrap",
      setprivPath: "/usr/bin/setpriv",
      identity: { uid: 1000, gid: 1001 }
    })
    expect(switched.argv).toEqual([
      "/usr/bin/setpriv",
      "--reuid=1000",
      "--regid=1001",
      "--clear-groups",
      "--pdeathsig",
      "KILL",
      "/opt/bwrap",
      "--args",
      "3",
      "--",
      "make",
      "-j2"
    ])
    expect(switched.cwd).toBe("/")
    expect(switched.env).toEqual({})
    // The prefix does not change what bwrap parses.
    expect(flagsOf(switched)).toEqual(flagsOf(wrapped({ workspace })))
  })

  it("puts no environment value on any command line, only in the bytes of fd 3", () => {
    const secret = "s3cret-token-4f2a"
    const result = wrapped(
      { workspace, env: { POLICY_SECRET: `${secret}-policy` }, limits: { maxOpenFiles: 64 } },
      { ...command, env: { TOKEN: secret, MULTI: `a b=c\n${secret}` } },
      {
        setprivPath: "/usr/bin/setpriv",
        identity: { uid: 65534, gid: 65534 },
        seccomp: new Uint8Array(8),
        onStatus: () => {}
      }
    )
    expect(result.argv.filter((arg) => arg.includes(secret))).toEqual([])
    expect(result.env).toEqual({})
    expect(text(fd3(result))).toContain(secret)
    expect(setenvOf(flagsOf(result))).toEqual({
      TOKEN: secret,
      MULTI: `a b=c\n${secret}`,
      POLICY_SECRET: `${secret}-policy`
    })
  })

  it("numbers the status and seccomp descriptors after fd 3, in that order", () => {
    const onStatus = (_chunk: Uint8Array) => {}
    const seccomp = new Uint8Array([6, 0, 0, 0, 0, 0, 0xff, 0x7f])

    const plain = wrapped({ workspace })
    expect(plain.extraFds?.map((fd) => fd._tag)).toEqual(["Input"])
    expect(flagsOf(plain)).not.toContain("--json-status-fd")
    expect(flagsOf(plain)).not.toContain("--seccomp")

    const both = wrapped({ workspace }, command, { onStatus, seccomp })
    expect(both.extraFds).toEqual([
      { _tag: "Input", bytes: fd3(both) },
      { _tag: "Output", onData: onStatus },
      { _tag: "Input", bytes: seccomp }
    ])
    expectFlag(flagsOf(both), "--json-status-fd", "4")
    expectFlag(flagsOf(both), "--seccomp", "5")

    const status = wrapped({ workspace }, command, { onStatus })
    expect(status.extraFds?.map((fd) => fd._tag)).toEqual(["Input", "Output"])
    expectFlag(flagsOf(status), "--json-status-fd", "4")
    expect(flagsOf(status)).not.toContain("--seccomp")

    const filtered = wrapped({ workspace }, command, { seccomp })
    expect(filtered.extraFds?.[1]).toEqual({ _tag: "Input", bytes: seccomp })
    expect(filtered.extraFds).toHaveLength(2)
    expectFlag(flagsOf(filtered), "--seccomp", "4")
    expect(flagsOf(filtered)).not.toContain("--json-status-fd")
  })

  it("binds the paths given with descriptors by --bind-fd / --ro-bind-fd, numbered after status and seccomp", () => {
    const onStatus = (_chunk: Uint8Array) => {}
    const seccomp = new Uint8Array(8)
    const policy: Sandbox.Policy = {
      workspace,
      readWriteBinds: [{ host: `${workspace}/cache`, sandbox: "/cache" }, { host: "/data" }],
      readOnlyBinds: [{ host: `${workspace}/.git`, sandbox: "/git" }, { host: "/opt/tools" }]
    }
    const boundFds = { workspace: 41, readWriteBinds: [42, undefined], readOnlyBinds: [43, undefined] }
    const result = wrapped(policy, command, { onStatus, seccomp, boundFds })
    // The host's descriptors, workspace then read-write then read-only, after fd 3 (flags), 4 (status), 5 (seccomp).
    expect(result.extraFds?.slice(3)).toEqual([
      { _tag: "Directory", fd: 41 },
      { _tag: "Directory", fd: 42 },
      { _tag: "Directory", fd: 43 }
    ])
    const flags = flagsOf(result)
    expectFlag(flags, "--bind-fd", "6", "/workspace")
    expectFlag(flags, "--bind-fd", "7", "/cache")
    expectFlag(flags, "--ro-bind-fd", "8", "/git")
    // Paths without a descriptor are bound by name, as before.
    expectFlag(flags, "--bind", "/data", "/data")
    expectFlag(flags, "--ro-bind", "/opt/tools", "/opt/tools")
    expect(indexOfFlag(flags, "--bind", workspace, "/workspace")).toBe(-1)
    expect(indexOfFlag(flags, "--ro-bind", `${workspace}/.git`, "/git")).toBe(-1)
  })

  it("with flockPath, holds the workspace's lock shared in front of bwrap: setpriv dies with the host, flock --close", () => {
    const locked = wrapped({ workspace }, command, {
      setprivPath: "/usr/bin/setpriv",
      flockPath: "/usr/bin/flock",
      identity: { uid: 65534, gid: 65534 }
    })
    expect(locked.argv.slice(0, 17)).toEqual([
      "/usr/bin/setpriv", "--pdeathsig", "KILL",
      "/usr/bin/flock", "--shared", "--nonblock", "--close", "--conflict-exit-code", "75", workspace,
      "/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--pdeathsig", "KILL", "/usr/bin/bwrap"
    ])
    // A workspace bound by descriptor is locked through that descriptor, not by looking its path up again.
    const byFd = wrapped({ workspace }, command, {
      setprivPath: "/usr/bin/setpriv",
      flockPath: "/usr/bin/flock",
      boundFds: { workspace: 9 }
    })
    expect(byFd.argv[9]).toBe("/proc/self/fd/4")
    expect(byFd.extraFds?.[1]).toEqual({ _tag: "Directory", fd: 9 })
    const noSetpriv = Bubblewrap.wrap({ workspace }, command, { flockPath: "/usr/bin/flock" })
    expect(Either.isLeft(noSetpriv) && noSetpriv.left.issues).toEqual([{ path: "setprivPath", message: "is required with flockPath" }])
  })

  it("expandArgs replaces `--args 3` with fd 3's NUL-terminated strings, and leaves other commands alone", () => {
    const result = wrapped({ workspace, env: { A: "1" } }, command, {
      setprivPath: "/usr/bin/setpriv",
      identity: { uid: 1000, gid: 1000 },
      seccomp: new Uint8Array(8)
    })
    const bytes = fd3(result)
    expect(bytes.at(-1)).toBe(0)
    const strings = text(bytes).split("\0").slice(0, -1)
    expect(strings).toContain("--unshare-all")
    expect(strings.at(-2)).toBe("--seccomp")
    expect(Bubblewrap.expandArgs(result)).toEqual([
      "/usr/bin/setpriv",
      "--reuid=1000",
      "--regid=1000",
      "--clear-groups",
      "--pdeathsig",
      "KILL",
      "/usr/bin/bwrap",
      ...strings,
      "--",
      "make",
      "-j2"
    ])
    expect(Bubblewrap.expandArgs(command)).toEqual(command.argv)
  })

  it("has every default flag", () => {
    const flags = flagsOf(wrapped({ workspace }))
    for (const dir of ["/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc"]) expectFlag(flags, "--ro-bind-try", dir, dir)
    expectFlag(flags, "--proc", "/proc")
    expectFlag(flags, "--dev", "/dev")
    expectFlag(flags, "--tmpfs", "/tmp")
    expectFlag(flags, "--unshare-all")
    expectFlag(flags, "--die-with-parent")
    expectFlag(flags, "--new-session")
    expectFlag(flags, "--cap-drop", "ALL")
    expectFlag(flags, "--clearenv")
    expectFlag(flags, "--bind", workspace, "/workspace")
    expectFlag(flags, "--chdir", "/workspace")
    expectFlag(flags, "--ro-bind", "/dev/null", "/etc/shadow")
    expectFlag(flags, "--ro-bind", "/dev/null", "/etc/gshadow")
    // Nothing writable on the host besides the workspace, and no host /tmp or /home.
    expect(flags.filter((flag) => flag === "--bind" || flag === "--bind-try" || flag === "--dev-bind")).toHaveLength(1)
    expect(flags).not.toContain("--share-net")
  })

  it("orders the flags where bwrap depends on order", () => {
    const flags = flagsOf(
      wrapped(
        { workspace, env: { A: "1" }, readWriteBinds: [{ host: "/data" }], readOnlyBinds: [{ host: "/data/.git" }] },
        command,
        { masks: [{ path: "/etc/ssl/private", kind: "directory" }] }
      )
    )
    const etc = expectFlag(flags, "--ro-bind-try", "/etc", "/etc")
    // Masks cover /etc, so they come after it.
    expect(expectFlag(flags, "--tmpfs", "/etc/ssl/private")).toBeGreaterThan(etc)
    expect(expectFlag(flags, "--remount-ro", "/etc/ssl/private")).toBeGreaterThan(etc)
    // --clearenv runs at parse time: it must precede every --setenv.
    expect(flags.indexOf("--clearenv")).toBeGreaterThanOrEqual(0)
    expect(flags.indexOf("--clearenv")).toBeLessThan(flags.indexOf("--setenv"))
    // User binds may live under /tmp or /workspace, so they come after those mounts; read-only ones last.
    const tmp = expectFlag(flags, "--tmpfs", "/tmp")
    const ws = expectFlag(flags, "--bind", workspace, "/workspace")
    const rw = expectFlag(flags, "--bind", "/data", "/data")
    const ro = expectFlag(flags, "--ro-bind", "/data/.git", "/data/.git")
    expect(tmp).toBeLessThan(ws)
    expect(ws).toBeLessThan(rw)
    expect(rw).toBeLessThan(ro)
    // The root goes read-only after the last mount.
    const remountRoot = expectFlag(flags, "--remount-ro", "/")
    expect(remountRoot).toBeGreaterThan(ro)
  })

  it("keeps the network namespace private by default and for network none", () => {
    for (const policy of [{ workspace }, { workspace, network: "none" as const }]) {
      const flags = flagsOf(wrapped(policy))
      expectFlag(flags, "--unshare-all")
      expect(flags).not.toContain("--share-net")
    }
  })

  it("shares the host network after --unshare-all for network host", () => {
    const flags = flagsOf(wrapped({ workspace, network: "host" }))
    expect(flags.indexOf("--unshare-all")).toBeGreaterThanOrEqual(0)
    expect(flags.indexOf("--share-net")).toBe(flags.indexOf("--unshare-all") + 1)
  })

  it("sets exactly the command env merged with the policy env, the policy winning", () => {
    const flags = flagsOf(
      wrapped({ workspace, env: { LANG: "C.UTF-8", HOME: "/workspace" } }, {
        ...command,
        env: { PATH: "/bin", LANG: "C", TOKEN: "x y=z" }
      })
    )
    expect(setenvOf(flags)).toEqual({ PATH: "/bin", LANG: "C.UTF-8", TOKEN: "x y=z", HOME: "/workspace" })
    expect(flags.filter((flag) => flag === "--setenv")).toHaveLength(4)
  })

  it("rejects env names bwrap cannot set", () => {
    const error = rejected({ workspace, env: { "A=B": "1" } }, command)
    expect(error).toBeInstanceOf(InvalidInput)
    expect(error.issues).toEqual([{ path: "env.A=B", message: expect.stringContaining("'='") }])
  })

  it("maps the cwd under /workspace", () => {
    const chdir = (cwd: string, ws = workspace) => {
      const flags = flagsOf(wrapped({ workspace: ws }, { ...command, cwd }))
      expect(flags.filter((flag) => flag === "--chdir")).toHaveLength(1)
      return flags[flags.indexOf("--chdir") + 1]
    }
    expect(chdir(workspace)).toBe("/workspace")
    expect(chdir(`${workspace}/`)).toBe("/workspace")
    expect(chdir(`${workspace}/src`)).toBe("/workspace/src")
    expect(chdir(`${workspace}/a/b/c`)).toBe("/workspace/a/b/c")
    expect(chdir(`${workspace}/a/../b/./c`)).toBe("/workspace/b/c")
    expect(chdir(`${workspace}/..foo`)).toBe("/workspace/..foo")
    expect(chdir(`${workspace}/x`, `${workspace}/`)).toBe("/workspace/x")
    expect(chdir("/anything", "/")).toBe("/workspace/anything")
    // bwrap itself starts in /, whatever the command's cwd.
    expect(wrapped({ workspace }, { ...command, cwd: `${workspace}/src` }).cwd).toBe("/")
  })

  it("rejects a cwd outside the workspace with InvalidInput", () => {
    for (const cwd of ["/srv", "/srv/jobs", "/srv/job-other", "/etc", `${workspace}/..`, `${workspace}/a/../../x`, "src"]) {
      const error = rejected({ workspace }, { ...command, cwd })
      expect(error._tag, cwd).toBe("InvalidInput")
      expect(error.issues.map((issue) => issue.path), cwd).toEqual(["cwd"])
    }
  })

  it("fails closed with an identity but no setpriv to switch to it", () => {
    const result = Bubblewrap.wrap({ workspace }, command, { identity: { uid: 65534, gid: 65534 } })
    expect(Either.isLeft(result) && result.left.issues).toEqual([{ path: "setprivPath", message: "is required with an identity" }])
  })

  it("rejects relative workspace and bind paths", () => {
    const error = rejected(
      { workspace: "job", readOnlyBinds: [{ host: "/ok", sandbox: "rel" }], readWriteBinds: [{ host: "data" }] },
      command
    )
    expect(error.issues.map((issue) => issue.path)).toEqual([
      "sandbox.workspace",
      "sandbox.readWriteBinds[0].host",
      "sandbox.readOnlyBinds[0].sandbox",
      "cwd"
    ])
  })

  it("binds extra paths read-only or read-write, at the same path unless told", () => {
    const flags = flagsOf(
      wrapped({
        workspace,
        readOnlyBinds: [{ host: "/opt/tools" }, { host: "/home/me/.cache/pip", sandbox: "/cache/pip" }],
        readWriteBinds: [{ host: "/var/cache/build", sandbox: "/workspace/.cache" }]
      })
    )
    expectFlag(flags, "--ro-bind", "/opt/tools", "/opt/tools")
    expectFlag(flags, "--ro-bind", "/home/me/.cache/pip", "/cache/pip")
    expectFlag(flags, "--bind", "/var/cache/build", "/workspace/.cache")
  })

  it("masks files with /dev/null and directories with a read-only tmpfs", () => {
    const flags = flagsOf(
      wrapped({ workspace }, command, {
        masks: [{ path: "/etc/sudoers", kind: "file" }, { path: "/etc/sudoers.d", kind: "directory" }]
      })
    )
    expectFlag(flags, "--ro-bind", "/dev/null", "/etc/sudoers")
    expectFlag(flags, "--tmpfs", "/etc/sudoers.d", "--remount-ro", "/etc/sudoers.d")
    // Given masks replace the defaults.
    expect(indexOfFlag(flags, "--ro-bind", "/dev/null", "/etc/shadow")).toBe(-1)
  })

  it("prefixes the command with prlimit when limits are set", () => {
    const limits = { maxCpuSeconds: 2, maxFileSizeBytes: 1024, maxProcesses: 20 }
    expect(innerOf(wrapped({ workspace, limits }))).toEqual([
      "/usr/bin/prlimit",
      "--cpu=2:3",
      "--fsize=1024",
      "--nproc=20",
      "--",
      "make",
      "-j2"
    ])
    expect(innerOf(wrapped({ workspace, limits: { maxOpenFiles: 8 } }, command, { prlimitPath: "/bin/prlimit" })))
      .toEqual(["/bin/prlimit", "--nofile=8", "--", "make", "-j2"])
    expect(innerOf(wrapped({ workspace, limits: {} }))).toEqual(["make", "-j2"])
    expect(innerOf(wrapped({ workspace }))).toEqual(["make", "-j2"])
  })

  it("keeps a command argv that looks like bwrap flags after the separator", () => {
    const result = wrapped({ workspace }, { ...command, argv: ["--bind", "/", "/"] })
    expect(innerOf(result)).toEqual(["--bind", "/", "/"])
    // The first `--` bwrap meets (flags from fd 3 included) is the one before the command.
    const expanded = Bubblewrap.expandArgs(result)
    expect(expanded.indexOf("--")).toBe(expanded.length - 4)
    expect(indexOfFlag(flagsOf(result), "--bind", "/", "/")).toBe(-1)
  })
})

describe("Bubblewrap.hostMasks", () => {
  it.effect("keeps existing files and directories, skips missing paths and symlinks", () =>
    Effect.gen(function* () {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "enr-masks-"))
      try {
        fs.writeFileSync(path.join(dir, "secret"), "x")
        fs.mkdirSync(path.join(dir, "private"))
        fs.symlinkSync(path.join(dir, "secret"), path.join(dir, "link"))
        const masks = yield* Bubblewrap.hostMasks(["secret", "private", "missing", "link"].map((name) => path.join(dir, name)))
        expect(masks).toEqual([
          { path: path.join(dir, "secret"), kind: "file" },
          { path: path.join(dir, "private"), kind: "directory" }
        ])
      } finally {
        fs.rmSync(dir, { recursive: true, force: true })
      }
    }))

  it.effect("finds /etc/shadow on this host", () =>
    Effect.gen(function* () {
      const masks = yield* Bubblewrap.hostMasks()
      expect(masks).toContainEqual({ path: "/etc/shadow", kind: "file" })
    }))
})

describe("Bubblewrap.preflight", () => {
  /** A fake bwrap running `script`, removed after `body`. */
  const withStub = <A, E>(script: string, body: (file: string) => Effect.Effect<A, E>) =>
    Effect.acquireUseRelease(
      Effect.sync(() => {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "enr-bwrap-"))
        fs.writeFileSync(path.join(dir, "bwrap"), `#!/bin/sh\n${script}\n`, { mode: 0o755 })
        return dir
      }),
      (dir) => body(path.join(dir, "bwrap")),
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
    )

  it.live("succeeds with the installed bwrap", () => Bubblewrap.preflight({ bwrapPath: "/usr/bin/bwrap" }))

  it.live("succeeds with bwrap from PATH and every mask of this host", () =>
    Effect.gen(function* () {
      yield* Bubblewrap.preflight({ masks: yield* Bubblewrap.hostMasks() })
    }))

  it.live("fails with SandboxUnavailable when bwrap does not exist", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(Bubblewrap.preflight({ bwrapPath: "/nonexistent/bwrap" }))
      expect(error).toBeInstanceOf(SandboxUnavailable)
      expect(error.backend).toBe("bwrap")
      expect(error.message).toContain("not found")
      expect(error.message).toContain("/nonexistent/bwrap")
      expect(error.fix).toContain("apt-get install -y bubblewrap")
    }))

  it.live("reports bwrap's stderr and the namespace fix when the sandbox cannot be created", () =>
    withStub("echo 'bwrap: No permissions to creating new namespace' >&2; exit 1", (bwrap) => Effect.gen(function* () {
      const error = yield* Effect.flip(Bubblewrap.preflight({ bwrapPath: bwrap }))
      expect(error.message).toContain("could not create the sandbox (exit 1)")
      expect(error.message).toContain("No permissions to creating new namespace")
      expect(error.fix).toContain("kernel.unprivileged_userns_clone=1")
      expect(error.fix).toContain("user.max_user_namespaces")
    })))

  it.live("finds a mask without a mount point with the real bwrap", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(
        Bubblewrap.preflight({ masks: [{ path: "/etc/effect-native-runner-missing", kind: "file" }] })
      )
      expect(error.message).toContain("/etc/effect-native-runner-missing")
      expect(error.fix).toContain("hostMasks")
    }))

  it.live("gives up after the timeout and kills the stuck bwrap", () =>
    withStub("exec sleep 30", (bwrap) => Effect.gen(function* () {
      const started = Date.now()
      const error = yield* Effect.flip(Bubblewrap.preflight({ bwrapPath: bwrap, timeout: "200 millis" }))
      expect(error.message).toContain("within 200 ms")
      expect(Date.now() - started).toBeLessThan(2_000)
    })))
})

describe("Bubblewrap.wrap in a real bwrap", () => {
  // Generous for two loaded cores; the engine SIGKILLs the tree at the timeout, as spawnSync's killSignal did.
  const settings: RunSettings = {
    maxStdoutBytes: 1 << 20,
    maxStderrBytes: 1 << 20,
    timeout: Duration.seconds(5),
    killGrace: Duration.zero,
    drainTimeout: Duration.seconds(1)
  }

  /** Runs `script` under `policy` through the engine and the Node spawner, which feed the descriptors bwrap reads. */
  const run = (
    policy: Sandbox.Policy,
    script: string,
    cwd = policy.workspace,
    env: Record<string, string> = {},
    options: Bubblewrap.WrapOptions = {}
  ) =>
    Effect.gen(function* () {
      const masks = yield* Bubblewrap.hostMasks()
      const result = Bubblewrap.wrap(
        policy,
        { argv: ["/bin/sh", "-c", script], cwd, env: { PATH: "/usr/bin:/bin", ...env } },
        { masks, ...options }
      )
      const prepared = yield* Either.match(result, { onLeft: Effect.die, onRight: Effect.succeed })
      const out = yield* Effect.orDie(runProcess(makeNodeSpawner(), prepared, undefined, settings))
      return { status: out.exitCode, stdout: text(out.stdout.bytes()), stderr: text(out.stderr.bytes()) }
    })

  const withWorkspace = <A, E>(body: (dir: string) => Effect.Effect<A, E>) =>
    Effect.acquireUseRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "enr-ws-"))),
      body,
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
    )

  it.live("runs in the mapped cwd with exactly the given env, writing only to the workspace", () =>
    withWorkspace((dir) =>
      Effect.gen(function* () {
        fs.mkdirSync(path.join(dir, "a", "b"), { recursive: true })
        const out = yield* run(
          { workspace: dir, env: { FROM_POLICY: "1" } },
          "pwd; env | sort; echo hi > /workspace/out; touch /usr/x 2>/dev/null || echo usr-ro; touch /etc/x 2>/dev/null || echo etc-ro",
          path.join(dir, "a", "b"),
          { FROM_COMMAND: "2" }
        )
        expect(out.stderr).toBe("")
        expect(out.stdout.split("\n")).toEqual([
          "/workspace/a/b",
          "FROM_COMMAND=2",
          "FROM_POLICY=1",
          "PATH=/usr/bin:/bin",
          "PWD=/workspace/a/b",
          "usr-ro",
          "etc-ro",
          ""
        ])
        expect(fs.readFileSync(path.join(dir, "out"), "utf8")).toBe("hi\n")
      })
    ))

  const shadowProbe = "id -u; umount /etc/shadow 2>/dev/null; wc -c < /etc/shadow || echo hidden"

  it.live("hides /etc/shadow even from uid 0, who cannot unmount the mask", () =>
    withWorkspace((dir) =>
      Effect.gen(function* () {
        // As root with no identity, bwrap runs the program as uid 0 with every capability dropped.
        const out = yield* run({ workspace: dir }, shadowProbe)
        expect(out.stdout).toBe(`${process.getuid?.() ?? ""}\nhidden\n`)
      })
    ))

  it.live.runIf(asRoot)("uid 0 inside reads /etc/shadow when it is not masked (the mask is what hides it)", () =>
    withWorkspace((dir) =>
      Effect.gen(function* () {
        const out = yield* run({ workspace: dir }, shadowProbe, dir, {}, { masks: [] })
        expect(out.stdout).toBe(`0\n${fs.statSync("/etc/shadow").size}\n`)
      })
    ))

  it.live.runIf(asRoot)("with an identity, runs the program as that user through setpriv, shadow still hidden", () =>
    withWorkspace((dir) =>
      Effect.gen(function* () {
        // bwrap now runs as 65534 and must reach the workspace it binds (the runner hands it over instead).
        fs.chmodSync(dir, 0o755)
        const out = yield* run({ workspace: dir }, `id -u; id -g; id -G; ${shadowProbe}`, dir, {}, {
          setprivPath: "/usr/bin/setpriv",
          identity: { uid: 65534, gid: 65534 }
        })
        expect(out.stdout).toBe("65534\n65534\n65534\n65534\nhidden\n")
      })
    ))

  it.live("has only loopback without network, the host interfaces with network host", () =>
    withWorkspace((dir) =>
      Effect.gen(function* () {
        const interfaces = "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '"
        const none = yield* run({ workspace: dir }, interfaces)
        expect(none.stdout).toBe("lo ")
        const host = yield* run({ workspace: dir, network: "host" }, interfaces)
        const hostInterfaces = fs.readFileSync("/proc/net/dev", "utf8").split("\n").slice(2)
          .flatMap((line) => (line.includes(":") ? [line.split(":")[0]?.trim()] : [])).sort().join(" ")
        expect(host.stdout).toBe(`${hostInterfaces} `)
        expect(hostInterfaces).not.toBe("lo")
      })
    ))

  it.live("does not see host processes or the host /tmp", () =>
    withWorkspace((dir) =>
      Effect.gen(function* () {
        const out = yield* run({ workspace: dir }, "ls /proc | grep -c '^[0-9]'; ls -A /tmp | wc -l")
        // The sandbox's init and the shell (plus the short-lived ls/grep of the pipeline).
        const [processes, tmpEntries] = out.stdout.trim().split("\n").map(Number)
        expect(processes).toBeLessThanOrEqual(5)
        expect(tmpEntries).toBe(0)
      })
    ))
})
