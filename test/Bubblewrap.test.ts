import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Bubblewrap from "../src/Bubblewrap.js"
import { InvalidInput, SandboxUnavailable } from "../src/Errors.js"
import type { PreparedCommand } from "../src/internal/prepared.js"
import { enterCgroup, limitExceeded, prlimitArgv } from "../src/internal/resourceLimits.js"
import type * as Sandbox from "../src/Sandbox.js"

const workspace = "/srv/job"
const command: PreparedCommand = { argv: ["make", "-j2"], cwd: workspace, env: { PATH: "/usr/bin:/bin", LANG: "C" } }

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

/** The flags before the `--` that ends bwrap's options. */
const flagsOf = (argv: ReadonlyArray<string>) => argv.slice(1, argv.indexOf("--"))
const innerOf = (argv: ReadonlyArray<string>) => argv.slice(argv.indexOf("--") + 1)

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
  it("spawns bwrap with the command after `--`, starting in the workspace with only PATH", () => {
    const result = wrapped({ workspace }, { ...command, env: { ...command.env, LD_PRELOAD: "/evil.so" } })
    expect(result.argv[0]).toBe("bwrap")
    expect(innerOf(result.argv)).toEqual(["make", "-j2"])
    expect(result.cwd).toBe(workspace)
    expect(result.env).toEqual({ PATH: "/usr/bin:/bin" })
  })

  it("uses bwrapPath, and a default PATH when the command has none", () => {
    const result = wrapped({ workspace }, { ...command, env: {} }, { bwrapPath: "/opt/bwrap" })
    expect(result.argv[0]).toBe("/opt/bwrap")
    expect(result.env["PATH"]).toContain("/usr/bin")
  })

  it("has every default flag", () => {
    const flags = flagsOf(wrapped({ workspace }).argv)
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
      ).argv
    )
    const etc = expectFlag(flags, "--ro-bind-try", "/etc", "/etc")
    // Masks cover /etc, so they come after it.
    expect(expectFlag(flags, "--tmpfs", "/etc/ssl/private")).toBeGreaterThan(etc)
    expect(expectFlag(flags, "--remount-ro", "/etc/ssl/private")).toBeGreaterThan(etc)
    // --clearenv runs at parse time: it must precede every --setenv.
    expect(flags.indexOf("--clearenv")).toBeLessThan(flags.indexOf("--setenv"))
    // User binds may live under /tmp or /workspace, so they come after those mounts; read-only ones last.
    const tmp = expectFlag(flags, "--tmpfs", "/tmp")
    const ws = expectFlag(flags, "--bind", workspace, "/workspace")
    const rw = expectFlag(flags, "--bind", "/data", "/data")
    const ro = expectFlag(flags, "--ro-bind", "/data/.git", "/data/.git")
    expect(tmp).toBeLessThan(ws)
    expect(ws).toBeLessThan(rw)
    expect(rw).toBeLessThan(ro)
  })

  it("keeps the network namespace private by default and for network none", () => {
    expect(flagsOf(wrapped({ workspace }).argv)).not.toContain("--share-net")
    expect(flagsOf(wrapped({ workspace, network: "none" }).argv)).not.toContain("--share-net")
  })

  it("shares the host network after --unshare-all for network host", () => {
    const flags = flagsOf(wrapped({ workspace, network: "host" }).argv)
    expect(flags.indexOf("--share-net")).toBe(flags.indexOf("--unshare-all") + 1)
  })

  it("sets exactly the command env merged with the policy env, the policy winning", () => {
    const flags = flagsOf(
      wrapped({ workspace, env: { LANG: "C.UTF-8", HOME: "/workspace" } }, {
        ...command,
        env: { PATH: "/bin", LANG: "C", TOKEN: "x y=z" }
      }).argv
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
      const flags = flagsOf(wrapped({ workspace: ws }, { ...command, cwd }).argv)
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
  })

  it("rejects a cwd outside the workspace with InvalidInput", () => {
    for (const cwd of ["/srv", "/srv/jobs", "/srv/job-other", "/etc", `${workspace}/..`, `${workspace}/a/../../x`, "src"]) {
      const error = rejected({ workspace }, { ...command, cwd })
      expect(error._tag, cwd).toBe("InvalidInput")
      expect(error.issues.map((issue) => issue.path), cwd).toEqual(["cwd"])
    }
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
      }).argv
    )
    expectFlag(flags, "--ro-bind", "/opt/tools", "/opt/tools")
    expectFlag(flags, "--ro-bind", "/home/me/.cache/pip", "/cache/pip")
    expectFlag(flags, "--bind", "/var/cache/build", "/workspace/.cache")
  })

  it("masks files with /dev/null and directories with a read-only tmpfs", () => {
    const flags = flagsOf(
      wrapped({ workspace }, command, {
        masks: [{ path: "/etc/sudoers", kind: "file" }, { path: "/etc/sudoers.d", kind: "directory" }]
      }).argv
    )
    expectFlag(flags, "--ro-bind", "/dev/null", "/etc/sudoers")
    expectFlag(flags, "--tmpfs", "/etc/sudoers.d", "--remount-ro", "/etc/sudoers.d")
    // Given masks replace the defaults.
    expect(indexOfFlag(flags, "--ro-bind", "/dev/null", "/etc/shadow")).toBe(-1)
  })

  it("prefixes the command with prlimit when limits are set", () => {
    const limits = { maxCpuSeconds: 2, maxFileSizeBytes: 1024, maxProcesses: 20 }
    expect(innerOf(wrapped({ workspace, limits }).argv)).toEqual([
      "/usr/bin/prlimit",
      "--cpu=2:3",
      "--fsize=1024",
      "--nproc=20",
      "--",
      "make",
      "-j2"
    ])
    expect(innerOf(wrapped({ workspace, limits: { maxOpenFiles: 8 } }, command, { prlimitPath: "/bin/prlimit" }).argv))
      .toEqual(["/bin/prlimit", "--nofile=8", "--", "make", "-j2"])
    expect(innerOf(wrapped({ workspace, limits: {} }).argv)).toEqual(["make", "-j2"])
    expect(innerOf(wrapped({ workspace }).argv)).toEqual(["make", "-j2"])
  })

  it("keeps a command argv that looks like bwrap flags after the separator", () => {
    const argv = wrapped({ workspace }, { ...command, argv: ["--bind", "/", "/"] }).argv
    expect(innerOf(argv)).toEqual(["--bind", "/", "/"])
    expect(argv.indexOf("--")).toBe(argv.length - 4)
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
  const run = (policy: Sandbox.Policy, script: string, cwd = policy.workspace, env: Record<string, string> = {}) =>
    Effect.gen(function* () {
      const masks = yield* Bubblewrap.hostMasks()
      const result = Bubblewrap.wrap(policy, { argv: ["/bin/sh", "-c", script], cwd, env: { PATH: "/usr/bin:/bin", ...env } }, { masks })
      const prepared = yield* Either.match(result, { onLeft: Effect.die, onRight: Effect.succeed })
      const [file, ...args] = prepared.argv
      const out = spawnSync(file, args, { cwd: prepared.cwd, env: prepared.env, encoding: "utf8", timeout: 5_000, killSignal: "SIGKILL" })
      return { status: out.status, stdout: out.stdout, stderr: out.stderr }
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

  it.live("hides /etc/shadow even from uid 0, who cannot unmount the mask", () =>
    withWorkspace((dir) =>
      Effect.gen(function* () {
        const out = yield* run({ workspace: dir }, "id -u; umount /etc/shadow 2>/dev/null; wc -c < /etc/shadow || echo hidden")
        expect(out.stdout).toBe(`${process.getuid?.() ?? ""}\nhidden\n`)
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

describe("prlimitArgv", () => {
  it("sets every limit, CPU hard one second above soft", () => {
    expect(
      prlimitArgv({ maxCpuSeconds: 2, maxFileSizeBytes: 10, maxMemoryBytes: 1 << 30, maxOpenFiles: 64, maxProcesses: 20 })
    ).toEqual(["prlimit", "--cpu=2:3", "--fsize=10", `--as=${1 << 30}`, "--nofile=64", "--nproc=20", "--"])
  })

  it("is empty without limits and uses prlimitPath", () => {
    expect(prlimitArgv({})).toEqual([])
    expect(prlimitArgv({ maxOpenFiles: 8 }, { prlimitPath: "/usr/bin/prlimit" })).toEqual([
      "/usr/bin/prlimit",
      "--nofile=8",
      "--"
    ])
  })
})

describe("limitExceeded", () => {
  const all: Sandbox.ResourceLimits = {
    maxCpuSeconds: 1,
    maxFileSizeBytes: 1,
    maxMemoryBytes: 1,
    maxOpenFiles: 1,
    maxProcesses: 1
  }

  it("maps SIGXCPU, as a signal or as exit 152, to cpu when a CPU limit was set", () => {
    expect(limitExceeded(all, { exitCode: null, signal: "SIGXCPU" })).toBe("cpu")
    expect(limitExceeded(all, { exitCode: 152 })).toBe("cpu")
    expect(limitExceeded({ maxFileSizeBytes: 1 }, { exitCode: null, signal: "SIGXCPU" })).toBeUndefined()
  })

  it("maps SIGXFSZ, as a signal or as exit 153, to fileSize when a file size limit was set", () => {
    expect(limitExceeded(all, { exitCode: null, signal: "SIGXFSZ" })).toBe("fileSize")
    expect(limitExceeded(all, { exitCode: 153, signal: undefined })).toBe("fileSize")
    expect(limitExceeded({ maxCpuSeconds: 1 }, { exitCode: 153 })).toBeUndefined()
  })

  it("maps refused forks to processes when a process limit was set", () => {
    expect(limitExceeded(all, { exitCode: 0, refusedForks: 3 })).toBe("processes")
    expect(limitExceeded(all, { exitCode: 2, refusedForks: 0 })).toBeUndefined()
    expect(limitExceeded({ maxCpuSeconds: 1 }, { exitCode: 2, refusedForks: 3 })).toBeUndefined()
    // The signal that ended the run comes first.
    expect(limitExceeded(all, { exitCode: 153, refusedForks: 3 })).toBe("fileSize")
  })

  it("does not guess from other outcomes", () => {
    for (const outcome of [{ exitCode: 0 }, { exitCode: 1 }, { exitCode: 137 }, { exitCode: null, signal: "SIGKILL" }]) {
      expect(limitExceeded(all, outcome)).toBeUndefined()
    }
  })
})

describe("enterCgroup", () => {
  it("joins the cgroup in a shell that then execs the unchanged command", () => {
    const entered = enterCgroup("/sys/fs/cgroup/pids/run-1", command)
    expect(entered.argv).toEqual([
      "/bin/sh",
      "-c",
      'echo $$ > "$1" && shift && exec "$@"',
      "sh",
      "/sys/fs/cgroup/pids/run-1/cgroup.procs",
      "make",
      "-j2"
    ])
    expect(entered.cwd).toBe(command.cwd)
    expect(entered.env).toBe(command.env)
  })
})
