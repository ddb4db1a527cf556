/**
 * Benchmarks (`npm run bench`, which compiles src and bench with tsc and runs plain Node, so no TypeScript loader
 * shares the measured process; not part of `npm test`). Every scenario runs its contenders in one process,
 * interleaved round-robin in batches, and reports medians and ratios to raw `child_process.spawn`. The large-output
 * scenario runs each contender in a fresh child process so RSS baselines are clean; so does the CLI's cold start.
 *
 *   BENCH_SCALE=0.1 npm run bench        quick run (iteration counts scaled; sizes are not)
 *   BENCH_ONLY=a,d npm run bench         some scenarios only (a: per exec, b: concurrency, c: large output, d: kill,
 *                                        e: CLI cold start, f: execStream throughput, g: fleet on loopback,
 *                                        h: Command.string through each CommandExecutor, mem: host memory)
 *
 * Writes every table, with machine info, to bench/results/latest.json.
 */
import { execFile, execFileSync, spawnSync } from "node:child_process"
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NativeRunner from "../src/NativeRunner.js"
import * as C from "./lib/contenders.js"
import { pool, roundRobin, scale, scaled, timed } from "./lib/harness.js"
import { fmt, GiB, median, MiB, quantile, sum, table } from "./lib/stats.js"
import { sandboxContenders } from "./lib/sandbox.js"
import { hostMemoryScenario } from "./hostMemory.js"
import { fleetScenario } from "./fleet.js"

// Compiled by `npm run bench` to bench/.build/bench/run.js; results go to bench/results at the repo's root.
const here = path.dirname(fileURLToPath(import.meta.url))
const repoRoot = (() => {
  let dir = here
  while (!existsSync(path.join(dir, "package.json")) && path.dirname(dir) !== dir) dir = path.dirname(dir)
  return dir
})()
const only = new Set((process.env["BENCH_ONLY"] ?? "a,b,c,d,e,f,g,h").split(",").map((s) => s.trim()))

interface Row {
  readonly contender: string
  readonly [metric: string]: string | number | boolean | null
}
interface Scenario {
  readonly title: string
  readonly params: Record<string, unknown>
  readonly rows: Array<Row>
  readonly targets: Array<{ readonly target: string; readonly value: string; readonly met: boolean | null }>
  readonly notes: Array<string>
}
const scenarios: Record<string, Scenario> = {}
const put = (key: string, scenario: Scenario): Scenario => {
  scenarios[key] = scenario
  return scenario
}

const print = (s: Scenario, header: ReadonlyArray<string>, cells: (row: Row) => ReadonlyArray<string>) => {
  console.log(`\n## ${s.title}`)
  console.log(Object.entries(s.params).map(([k, v]) => `${k}=${String(v)}`).join("  "))
  console.log(table(header, s.rows.map(cells)))
  for (const t of s.targets) {
    console.log(`target ${t.target}: ${t.value} -> ${t.met === null ? "not measured" : t.met ? "MET" : "MISSED"}`)
  }
  for (const n of s.notes) console.log(`note: ${n}`)
}

const OURS = "ours (NativeRunner)"
const OURS_DIRECT = "ours, direct (spawnHelper off)"

const perExecContenders = (options: { readonly exitOnly: boolean }): Array<C.Contender> => [
  C.raw(),
  ...(options.exitOnly ? [C.commandExitOnly()] : []),
  C.command(),
  C.execaContender(),
  C.ours(),
  C.ours(OURS_DIRECT, NativeRunner.layerNode({ spawnHelper: "off" }))
]

const oneMiB = MiB
const trueSpec: C.RunSpec = { argv: ["/bin/true"], maxStdoutBytes: oneMiB, maxStderrBytes: oneMiB }
const echoSpec: C.RunSpec = { argv: ["/bin/echo", "hello"], maxStdoutBytes: oneMiB, maxStderrBytes: oneMiB }

/** Fails loudly when a contender did not really run the command. */
const check = (name: string, report: C.RunReport, expect: { exitCode: number; stdoutBytes?: number }) => {
  if (report.exitCode !== expect.exitCode || (expect.stdoutBytes !== undefined && report.stdoutBytes !== expect.stdoutBytes)) {
    throw new Error(`${name}: unexpected result ${JSON.stringify(report)}`)
  }
}

// (a) per-exec overhead: sequential /bin/true.
const scenarioA = async () => {
  const total = scaled(1000, 20)
  const batch = 10
  const rounds = Math.max(2, Math.round(total / batch))
  const contenders = perExecContenders({ exitOnly: true })
  await roundRobin(contenders, 2, async (c) => {
    for (let i = 0; i < 10; i++) check(c.name, await c.run(trueSpec), { exitCode: 0 })
  })
  const cpu = contenders.map((): Array<number> => [])
  const samples = await roundRobin(contenders, rounds, async (c, round) => {
    const times: Array<number> = []
    const before = process.cpuUsage()
    for (let i = 0; i < batch; i++) times.push(await timed(() => c.run(trueSpec)))
    const used = process.cpuUsage(before)
    cpu[contenders.indexOf(c)]?.push((used.user + used.system) / 1000 / batch)
    void round
    return times
  })
  const medians = samples.map((s) => median(s.flat()))
  const base = medians[0] ?? Number.NaN
  const baseCpu = median(cpu[0] ?? [])
  const rows: Array<Row> = contenders.map((c, i) => ({
    contender: c.name,
    medianMs: medians[i] ?? Number.NaN,
    p90Ms: quantile(samples[i]?.flat() ?? [], 0.9),
    ratio: (medians[i] ?? Number.NaN) / base,
    hostCpuMsPerExec: median(cpu[i] ?? []),
    cpuRatio: median(cpu[i] ?? []) / baseCpu
  }))
  const oursRatio = Number(rows.find((r) => r.contender === OURS)?.["ratio"])
  const sa = put("a", {
    title: "(a) per-exec overhead: sequential /bin/true",
    params: { execsPerContender: rounds * batch, batch, warmup: 20 },
    rows,
    targets: [{ target: "ours <= 1.15x raw (median)", value: `${fmt(oursRatio)}x`, met: oursRatio <= 1.15 }],
    notes: ["hostCpuMsPerExec: user+system CPU of this (host) process per exec, children excluded"]
  })
  print(sa, ["contender", "median ms", "p90 ms", "ratio", "host cpu ms", "cpu ratio"], (r) => [
    r.contender,
    fmt(Number(r["medianMs"])),
    fmt(Number(r["p90Ms"])),
    `${fmt(Number(r["ratio"]))}x`,
    fmt(Number(r["hostCpuMsPerExec"])),
    `${fmt(Number(r["cpuRatio"]))}x`
  ])
  for (const c of contenders) await c.dispose()
}

// (b) concurrency: /bin/echo, 16 in flight.
const scenarioB = async () => {
  const total = scaled(2000, 64)
  const perBatch = Math.min(200, total)
  const rounds = Math.max(1, Math.round(total / perBatch))
  const inFlight = 16
  // "Command, exitCode only" leaves stdout unread, so it has no place where output is checked.
  const contenders = perExecContenders({ exitOnly: false })
  await roundRobin(contenders, 1, (c) => pool(32, inFlight, async () => check(c.name, await c.run(echoSpec), { exitCode: 0 })))
  const samples = await roundRobin(contenders, rounds, (c) =>
    timed(() => pool(perBatch, inFlight, async () => check(c.name, await c.run(echoSpec), { exitCode: 0, stdoutBytes: 6 }))))
  const throughput = samples.map((s) => (s.length * perBatch) / (sum(s) / 1000))
  const base = throughput[0] ?? Number.NaN
  const rows: Array<Row> = contenders.map((c, i) => ({
    contender: c.name,
    execsPerSec: throughput[i] ?? Number.NaN,
    medianBatchMs: median(samples[i] ?? []),
    ratio: (throughput[i] ?? Number.NaN) / base
  }))
  const oursRatio = Number(rows.find((r) => r.contender === OURS)?.["ratio"])
  const sb = put("b", {
    title: `(b) concurrency: /bin/echo, ${inFlight} in flight`,
    params: { execsPerContender: rounds * perBatch, inFlight, batch: perBatch },
    rows,
    targets: [{ target: "ours throughput >= 0.9x raw", value: `${fmt(oursRatio)}x`, met: oursRatio >= 0.9 }],
    notes: []
  })
  print(sb, ["contender", "execs/s", "median batch ms", "ratio"], (r) => [
    r.contender,
    fmt(Number(r["execsPerSec"]), 1),
    fmt(Number(r["medianBatchMs"]), 0),
    `${fmt(Number(r["ratio"]))}x`
  ])
  for (const c of contenders) await c.dispose()
}

interface LargeResult {
  readonly ok: boolean
  readonly ms: number
  readonly mibPerSec: number
  readonly baseline: number
  readonly peak: number
  readonly growth: number
  readonly peakSource: string
}

const runLarge = (contender: string, bytes: number, cap: number): Promise<LargeResult> =>
  new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ["--expose-gc", path.join(here, "large-child.js"), JSON.stringify({ contender, bytes, cap })],
      { maxBuffer: 1024 * 1024, cwd: repoRoot },
      (error, stdout, stderr) => {
        if (error) return reject(new Error(`${contender}: ${error.message}\n${stderr}`))
        const line = stdout.trim().split("\n").pop() ?? ""
        resolve(JSON.parse(line))
      }
    )
  })

// (c) large output, each contender in a fresh process.
const scenarioC = async () => {
  const names = ["raw", "command", "execa", "ours"]
  const labels: Record<string, string> = {
    raw: "raw spawn",
    command: "@effect/platform Command",
    execa: "execa",
    ours: "ours (NativeRunner)"
  }
  const cases = [
    // The capped drain swung between runs (0.51x-1.10x within an hour): five rounds, and the target holds in each.
    { name: "capped", bytes: GiB, cap: MiB, rounds: scaled(5, 1) },
    { name: "full", bytes: 256 * MiB, cap: 512 * MiB, rounds: scaled(3, 1) }
  ] as const
  for (const kase of cases) {
    const rounds = kase.rounds
    const results = await roundRobin(names, rounds, async (name) => {
      const result = await runLarge(name, kase.bytes, kase.cap)
      if (!result.ok) throw new Error(`${name}: wrong output accounting: ${JSON.stringify(result)}`)
      return result
    })
    const throughput = results.map((rs) => median(rs.map((r) => r.mibPerSec)))
    const base = throughput[0] ?? Number.NaN
    const rows: Array<Row> = names.map((name, i) => ({
      contender: labels[name] ?? name,
      mibPerSec: throughput[i] ?? Number.NaN,
      ratio: (throughput[i] ?? Number.NaN) / base,
      baselineRssMiB: median((results[i] ?? []).map((r) => r.baseline)) / MiB,
      peakGrowthMiB: median((results[i] ?? []).map((r) => r.growth)) / MiB,
      maxPeakGrowthMiB: Math.max(...(results[i] ?? []).map((r) => r.growth)) / MiB,
      peakSource: results[i]?.[0]?.peakSource ?? "-"
    }))
    const ours = rows[3]
    const ratio = Number(ours?.["ratio"])
    // Each round's ours against the same round's raw spawn: the spread a single median hides.
    const perRound = (results[3] ?? []).map((r, i) => r.mibPerSec / (results[0]?.[i]?.mibPerSec ?? Number.NaN))
    const worstRound = Math.min(...perRound)
    const growth = Number(ours?.["maxPeakGrowthMiB"])
    const captured = Math.min(kase.bytes, kase.cap) / MiB
    const rssTarget = kase.name === "capped" ? 32 : 1.2 * captured
    const sc = put(`c-${kase.name}`, {
      title: `(c) large output, ${kase.name}: child writes ${kase.bytes / MiB} MiB, cap ${kase.cap / MiB} MiB`,
      params: { runsPerContender: rounds, producer: `head -c ${kase.bytes} /dev/zero` },
      rows,
      targets: [
        // Capped: the issue's 0.95x; full capture: 0.9x.
        kase.name === "capped"
          ? {
            target: "ours throughput >= 0.95x raw in every round",
            value: `${fmt(worstRound)}x worst of ${perRound.length} (median ${fmt(ratio)}x)`,
            met: worstRound >= 0.95
          }
          : { target: "ours throughput >= 0.9x raw", value: `${fmt(ratio)}x`, met: ratio >= 0.9 },
        {
          target: kase.name === "capped"
            ? "ours peak RSS growth <= 32 MiB"
            : `ours peak RSS growth <= 1.2x captured (${fmt(rssTarget, 0)} MiB)`,
          value: `${fmt(growth, 1)} MiB (worst run)`,
          met: growth <= rssTarget
        }
      ],
      notes: [
        `ours/raw per round, in order: ${perRound.map((r) => `${fmt(r)}x`).join(" ")}`,
        kase.name === "capped"
          ? "execa streams here (buffer: false) and keeps the first bytes itself: its maxBuffer would stop the child"
          : "every contender keeps all chunks, then builds one contiguous buffer (execa: its own buffering)"
      ]
    })
    print(sc, ["contender", "MiB/s", "ratio", "base RSS MiB", "peak growth MiB", "worst MiB"], (r) => [
      r.contender,
      fmt(Number(r["mibPerSec"]), 0),
      `${fmt(Number(r["ratio"]))}x`,
      fmt(Number(r["baselineRssMiB"]), 0),
      fmt(Number(r["peakGrowthMiB"]), 1),
      fmt(Number(r["maxPeakGrowthMiB"]), 1)
    ])
  }
}

// (d) kill latency: result time - timeout, for a child ignoring SIGTERM and one honouring it.
const scenarioD = async () => {
  const runs = scaled(50, 10)
  const batch = 5
  const timeoutMs = 100
  const graceMs = 200
  const kinds = [
    { name: "ignores SIGTERM", argv: ["sh", "-c", "trap '' TERM; exec sleep 10"] as const, bound: graceMs + 50 },
    { name: "honours SIGTERM", argv: ["sleep", "10"] as const, bound: 50 }
  ]
  const contenders = [
    C.raw(),
    C.execaContender(),
    C.ours()
  ]
  for (const kind of kinds) {
    const spec: C.RunSpec = { argv: kind.argv, maxStdoutBytes: oneMiB, maxStderrBytes: oneMiB, timeoutMs, graceMs }
    const samples = await roundRobin(contenders, Math.max(1, Math.round(runs / batch)), async (c) => {
      const lat: Array<number> = []
      for (let i = 0; i < batch; i++) {
        let report: C.RunReport | undefined
        const ms = await timed(async () => {
          report = await c.run(spec)
        })
        if (report?.timedOut !== true) throw new Error(`${c.name}: expected a timeout, got ${JSON.stringify(report)}`)
        lat.push(ms - timeoutMs)
      }
      return lat
    })
    const rows: Array<Row> = contenders.map((c, i) => ({
      contender: c.name,
      p50Ms: quantile(samples[i]?.flat() ?? [], 0.5),
      p99Ms: quantile(samples[i]?.flat() ?? [], 0.99),
      maxMs: Math.max(...(samples[i]?.flat() ?? [])),
      runs: samples[i]?.flat().length ?? 0
    }))
    const p99 = Number(rows[2]?.["p99Ms"])
    const key = `d-${kind.name.split(" ")[0]}`
    const scenario = put(key, {
      title: `(d) kill latency, child ${kind.name}: (result time - timeout), timeout ${timeoutMs} ms, grace ${graceMs} ms`,
      params: { runsPerContender: rows[0]?.["runs"] ?? 0, argv: kind.argv.join(" ") },
      rows,
      targets: [{ target: `ours p99 <= ${kind.bound} ms`, value: `${fmt(p99, 1)} ms`, met: p99 <= kind.bound }],
      notes: [
        "measured from the call to the result, so spawn time is included",
        "@effect/platform Command is not a contender: it has no timeout, and its scope release sends SIGTERM and then waits for exit forever"
      ]
    })
    print(scenario, ["contender", "p50 ms", "p99 ms", "max ms"], (r) => [
      r.contender,
      fmt(Number(r["p50Ms"]), 1),
      fmt(Number(r["p99Ms"]), 1),
      fmt(Number(r["maxMs"]), 1)
    ])
  }
  for (const c of contenders) await c.dispose()
}

// (e) CLI cold start: the whole `native-runner run -- true` process against a bare Node process spawning `true`.
/** (f) live output: 1 GiB through `execStream`, every event consumed, against raw spawn draining the pipes. */
const scenarioF = async () => {
  const bytes = GiB
  const spec: C.RunSpec = { argv: ["head", "-c", String(bytes), "/dev/zero"], maxStdoutBytes: MiB, maxStderrBytes: MiB }
  const contenders = [C.raw(), C.oursStream()]
  const rounds = scaled(3, 1)
  await roundRobin(contenders, 1, async (c) => c.run({ ...spec, argv: ["head", "-c", String(16 * MiB), "/dev/zero"] }))
  const samples = await roundRobin(contenders, rounds, async (c) => {
    const ms = await timed(async () => check(c.name, await c.run(spec), { exitCode: 0, stdoutBytes: bytes }))
    return [bytes / MiB / (ms / 1000)]
  })
  const rates = samples.map((s) => median(s.flat()))
  const base = rates[0] ?? Number.NaN
  const ratio = (rates[1] ?? Number.NaN) / base
  const sf = put("f", {
    title: "(f) live output: 1 GiB through execStream (every event consumed), cap 1 MiB",
    params: { runsPerContender: rounds },
    rows: contenders.map((c, i) => ({ contender: c.name, mibPerSec: rates[i] ?? Number.NaN, ratio: (rates[i] ?? 0) / base })),
    targets: [{ target: "execStream drained >= 0.9x raw throughput", value: `${fmt(ratio)}x`, met: ratio >= 0.9 }],
    notes: ["median of the runs; each event counted, dropped bytes + streamed bytes checked against the result"]
  })
  print(sf, ["contender", "MiB/s", "ratio"], (r) => [r.contender, fmt(Number(r["mibPerSec"]), 0), `${fmt(Number(r["ratio"]))}x`])
  for (const c of contenders) await c.dispose()
}

/** (h) `Command.string` of /bin/echo, sequential: the same Effect code through the platform's executor and ours. */
const scenarioH = async () => {
  const total = scaled(600, 20)
  const batch = 10
  const rounds = Math.max(2, Math.round(total / batch))
  const contenders = [
    C.raw(),
    C.commandString("Command.string, NodeCommandExecutor", NodeContext.layer),
    C.commandString("Command.string, ours (layerCommandExecutor)", NativeRunner.layerCommandExecutor()),
    C.commandString("Command.string, ours direct (spawnHelper off)", NativeRunner.layerCommandExecutor({ spawnHelper: "off" }))
  ]
  await roundRobin(contenders, 2, async (c) => {
    for (let i = 0; i < 10; i++) check(c.name, await c.run(echoSpec), { exitCode: 0, stdoutBytes: 6 })
  })
  const samples = await roundRobin(contenders, rounds, async (c) => {
    const times: Array<number> = []
    for (let i = 0; i < batch; i++) times.push(await timed(() => c.run(echoSpec)))
    return times
  })
  const medians = samples.map((s) => median(s.flat()))
  const base = medians[0] ?? Number.NaN
  const platform = medians[1] ?? Number.NaN
  const rows: Array<Row> = contenders.map((c, i) => ({
    contender: c.name,
    medianMs: medians[i] ?? Number.NaN,
    p90Ms: quantile(samples[i]?.flat() ?? [], 0.9),
    ratio: (medians[i] ?? Number.NaN) / base,
    vsPlatform: (medians[i] ?? Number.NaN) / platform
  }))
  const sh = put("h", {
    title: "(h) Command.string(/bin/echo hello), sequential: NodeCommandExecutor vs layerCommandExecutor",
    params: { execsPerContender: rounds * batch, batch },
    rows,
    targets: [],
    notes: [
      "no issue sets a target here; ratio is to raw spawn, vsPlatform to the platform's own executor",
      "ours also caps, times out, kills the tree and audits each run; the platform's does none of these"
    ]
  })
  print(sh, ["contender", "median ms", "p90 ms", "ratio", "vs platform"], (r) => [
    r.contender,
    fmt(Number(r["medianMs"])),
    fmt(Number(r["p90Ms"])),
    `${fmt(Number(r["ratio"]))}x`,
    `${fmt(Number(r["vsPlatform"]))}x`
  ])
  for (const c of contenders) await c.dispose()
}

const scenarioE = async () => {
  // The bin as `npm start` would run it: rebuilt first if src/ changed since the last build.
  execFileSync(process.execPath, [path.join(repoRoot, "bench", "build-bin.mjs"), "--if-stale"], { stdio: "inherit" })
  const runs = scaled(20, 5)
  const bin = path.join(repoRoot, "dist", "bin.js")
  const stdout = await new Promise<string>((resolve, reject) =>
    execFile(
      process.execPath,
      [path.join(here, "cold-start.js"), JSON.stringify({ runs, bin })],
      { cwd: repoRoot, maxBuffer: 1024 * 1024 },
      (error, out, err) => (error ? reject(new Error(`cold start: ${error.message}\n${err}`)) : resolve(out))
    )
  )
  const samples: { bare: Array<number>; bin: Array<number> } = JSON.parse(stdout.trim().split("\n").pop() ?? "{}")
  const base = median(samples.bare)
  const rows: Array<Row> = [
    { contender: "bare node (node -e spawnSync('true'))", times: samples.bare },
    { contender: "native-runner run -- true (node dist/bin.js)", times: samples.bin }
  ].map(({ contender, times }) => ({
    contender,
    medianMs: median(times),
    p90Ms: quantile(times, 0.9),
    ratio: median(times) / base
  }))
  const binMedian = median(samples.bin)
  const se = put("e", {
    title: "(e) CLI cold start: node dist/bin.js run -- true, whole process",
    params: { runsPerCommand: samples.bin.length, bin: "dist/bin.js (bench/build-bin.mjs)" },
    rows,
    targets: [{ target: "native-runner run -- true <= 150 ms (median)", value: `${fmt(binMedian, 0)} ms`, met: binMedian <= 150 }],
    notes: [
      "wall time from spawn to exit, measured from a fresh small Node process; files already in the page cache",
      "bare node is the floor: Node's own start-up plus one spawnSync of true"
    ]
  })
  print(se, ["command", "median ms", "p90 ms", "ratio"], (r) => [
    r.contender,
    fmt(Number(r["medianMs"]), 1),
    fmt(Number(r["p90Ms"]), 1),
    `${fmt(Number(r["ratio"]))}x`
  ])
}

// Sandboxed per-exec cost, when the runner has a sandbox; otherwise an honest "not measured" row.
const scenarioSandbox = async () => {
  const found = await sandboxContenders()
  if (found._tag === "Unavailable") {
    const unavailable = put("sandbox", {
      title: "(a') per-exec overhead, sandboxed: ours sandboxed vs bare bwrap ... /bin/true",
      params: {},
      rows: [{ contender: "ours sandboxed", status: `not measured: ${found.reason}` }],
      targets: [{ target: "ours sandboxed vs bare bwrap", value: "not measured", met: null }],
      notes: []
    })
    console.log(`\n## ${unavailable.title}\nnot measured: ${found.reason}`)
    return
  }
  const contenders = [found.bare, found.ours]
  const total = scaled(300, 10)
  const batch = 10
  await roundRobin(contenders, 1, async (c) => {
    for (let i = 0; i < 5; i++) check(c.name, await c.run(trueSpec), { exitCode: 0 })
  })
  const samples = await roundRobin(contenders, Math.max(1, Math.round(total / batch)), async (c) => {
    const times: Array<number> = []
    for (let i = 0; i < batch; i++) times.push(await timed(() => c.run(trueSpec)))
    return times
  })
  const medians = samples.map((s) => median(s.flat()))
  const base = medians[0] ?? Number.NaN
  const oursRatio = (medians[1] ?? Number.NaN) / base
  const ss = put("sandbox", {
    title: "(a') per-exec overhead, sandboxed: ours sandboxed vs bare bwrap ... /bin/true (raw spawn)",
    params: { execsPerContender: samples[0]?.flat().length ?? 0, bareArgv: found.bareArgv.join(" ") },
    rows: contenders.map((c, i) => ({ contender: c.name, medianMs: medians[i] ?? Number.NaN, ratio: (medians[i] ?? 0) / base })),
    targets: [{ target: "ours sandboxed <= 1.2x bare bwrap (median)", value: `${fmt(oursRatio)}x`, met: oursRatio <= 1.2 }],
    notes: ["bare bwrap: the argv Bubblewrap.wrap produces for the same policy, started with child_process.spawn"]
  })
  print(ss, ["contender", "median ms", "ratio"], (r) => [
    r.contender,
    fmt(Number(r["medianMs"])),
    `${fmt(Number(r["ratio"]))}x`
  ])
  for (const c of contenders) await c.dispose()
}

const machine = () => ({
  cpus: os.cpus().length,
  cpuModel: os.cpus()[0]?.model ?? "unknown",
  totalMemMiB: Math.round(os.totalmem() / MiB),
  node: process.version,
  platform: `${os.platform()} ${os.release()}`,
  loadavg: os.loadavg(),
  date: new Date().toISOString(),
  scale: scale(),
  bwrap: spawnSync("bwrap", ["--version"], { encoding: "utf8" }).stdout?.trim() ?? "absent"
})

const main = async () => {
  const before = machine()
  console.log(`bench: scale=${before.scale} cpus=${before.cpus} node=${before.node} load=${before.loadavg.map((l) => l.toFixed(2)).join(" ")}`)
  if (only.has("a")) {
    await scenarioA()
    await scenarioSandbox()
  }
  if (only.has("b")) await scenarioB()
  if (only.has("c")) await scenarioC()
  if (only.has("d")) await scenarioD()
  if (only.has("e")) await scenarioE()
  if (only.has("f")) await scenarioF()
  if (only.has("g")) put("g", await fleetScenario({ repoRoot }))
  if (only.has("h")) await scenarioH()
  // Not in the default set (a minute or two, and a 2 GiB host): BENCH_ONLY=mem; see bench/hostMemory.ts.
  if (only.has("mem")) put("mem", await hostMemoryScenario({ here, repoRoot }))
  const after = machine()
  console.log(`\nload average at the end: ${after.loadavg.map((l) => l.toFixed(2)).join(" ")}`)
  const dir = path.join(repoRoot, "bench", "results")
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true })
  // A run of some scenarios (BENCH_ONLY) replaces only those: each scenario keeps the machine facts of its own run.
  const file = path.join(dir, "latest.json")
  const machineNow = { ...before, loadavgAtEnd: after.loadavg, finished: after.date }
  const previous: unknown = existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : {}
  const previousMachine = typeof previous === "object" && previous !== null && "machine" in previous ? previous.machine : null
  const previousScenarios = typeof previous === "object" && previous !== null && "scenarios" in previous &&
      typeof previous.scenarios === "object" && previous.scenarios !== null
    ? Object.fromEntries(Object.entries(previous.scenarios).map(([key, scenario]: [string, unknown]) => [
      key,
      typeof scenario === "object" && scenario !== null && !("machine" in scenario)
        ? { ...scenario, machine: previousMachine }
        : scenario
    ]))
    : {}
  const fresh = Object.fromEntries(Object.entries(scenarios).map(([key, scenario]) => [key, { ...scenario, machine: machineNow }]))
  writeFileSync(file, JSON.stringify({ machine: machineNow, scenarios: { ...previousScenarios, ...fresh } }, null, 2) + "\n")
  console.log(`wrote ${path.relative(process.cwd(), path.join(dir, "latest.json"))}`)
}

await main()
