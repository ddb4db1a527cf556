/**
 * Scenario "mem" (`BENCH_ONLY=mem npm run bench`): per-exec cost of `/bin/true` and the longest event-loop stall,
 * against the host's RSS. Node's spawn forks the host and copies its page tables on the main thread, so both grow
 * with RSS (FINDINGS, "Spawn cost against the host's memory"); a spawn helper started while the host was small does
 * not.
 *
 * Each RSS point runs in a fresh Node process (this file, given a JSON job): it builds and warms every contender
 * (runtimes, the helper process) while small, then fills Buffers up to the target RSS (touching every page), then
 * runs the contenders round-robin in batches while `monitorEventLoopDelay` watches the event loop. The parent prints
 * a table and draws bench/results/spawn-vs-rss.svg (hand-written SVG).
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import { execFile } from "node:child_process"
import { existsSync, mkdirSync, writeFileSync } from "node:fs"
import * as path from "node:path"
import { monitorEventLoopDelay } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import type { Spawner } from "../src/internal/engine.js"
import { makeNodeSpawner } from "../src/internal/nodeSpawner.js"
import { makeRunner, plainPolicy } from "../src/internal/runner.js"
import { DEFAULT_RSS_THRESHOLD_BYTES, makeAdaptiveSpawner, makeHelperSpawner } from "../src/internal/spawnHelper.js"
import * as NativeRunner from "../src/NativeRunner.js"
import * as C from "./lib/contenders.js"
import { roundRobin, scaled, timed } from "./lib/harness.js"
import { fmt, median, MiB, quantile, table } from "./lib/stats.js"

/**
 * Host RSS to reach at each point (`BENCH_MEM_MIB=100,150,200` to choose others); the first is below any real host's
 * baseline, so it measures the baseline.
 */
const TARGETS_MIB: ReadonlyArray<number> = (process.env["BENCH_MEM_MIB"] ?? "50,256,512,1024,2048").split(",").map(Number)

const RAW = "raw spawn"
const EXECA = "execa"
const DIRECT = "ours, direct"
const HELPER = "ours, helper always"
const ADAPTIVE = "ours, adaptive"
const COLORS: Record<string, string> = {
  [RAW]: "#555555",
  [EXECA]: "#e69f00",
  [DIRECT]: "#0072b2",
  [HELPER]: "#009e73",
  [ADAPTIVE]: "#d55e00"
}

interface Job {
  readonly targetMiB: number
  readonly execs: number
}

interface Measured {
  readonly contender: string
  readonly medianMs: number
  readonly p90Ms: number
  /** Longest event-loop stall over all batches, and the median of the batches' longest. */
  readonly maxStallMs: number
  readonly medianStallMs: number
}

interface Point {
  readonly targetMiB: number
  /** RSS after building the contenders, before the ballast. */
  readonly baseRssMiB: number
  /** RSS while measuring (after the runs). */
  readonly rssMiB: number
  /** Touched Buffers held to get there. */
  readonly ballastMiB: number
  readonly results: ReadonlyArray<Measured>
}

/** The shape bench/run.ts records in latest.json. */
interface Row {
  readonly contender: string
  readonly [metric: string]: string | number | boolean | null
}
export interface Scenario {
  readonly title: string
  readonly params: Record<string, unknown>
  readonly rows: Array<Row>
  readonly targets: Array<{ readonly target: string; readonly value: string; readonly met: boolean | null }>
  readonly notes: Array<string>
}

const trueSpec: C.RunSpec = { argv: ["/bin/true"], maxStdoutBytes: MiB, maxStderrBytes: MiB }

/**
 * The runner with default options and no policy (no sandbox, no per-run cgroup, which `layerNode` adds where it can:
 * that costs the same on every path), over the direct, the helper or the adaptive spawner. Each has its own helper.
 */
const runnerOver = (choose: (direct: Spawner, helper: Spawner) => Spawner) =>
  Layer.scoped(
    NativeRunner.NativeRunner,
    Effect.gen(function*() {
      const helper = yield* makeHelperSpawner
      const options = yield* NativeRunner.decodeOptions(Schema.Struct(NativeRunner.runnerFields), {})
      return yield* makeRunner({
        spawner: choose(makeNodeSpawner(), helper),
        policy: plainPolicy,
        hostEnv: process.env,
        hostCwd: process.cwd()
      }, options)
    })
  )

/** Touched Buffers until this process's RSS reaches `targetBytes` (give or take half a chunk). */
const ballast = (targetBytes: number): Array<Buffer> => {
  const chunk = 32 * MiB
  const held: Array<Buffer> = []
  while (process.memoryUsage.rss() + chunk / 2 < targetBytes) held.push(Buffer.allocUnsafeSlow(chunk).fill(held.length | 1))
  return held
}

/** One RSS point, in this (fresh) process. */
const runPoint = async (job: Job): Promise<Point> => {
  const contenders = [
    C.raw(RAW),
    C.execaContender(),
    C.ours(DIRECT, runnerOver((direct) => direct)),
    C.ours(HELPER, runnerOver((_, helper) => helper)),
    C.ours(ADAPTIVE, runnerOver((direct, helper) => makeAdaptiveSpawner(direct, helper)))
  ]
  // Built while small: runtimes, the helpers, compiled code paths.
  await roundRobin(contenders, 1, async (c) => {
    for (let i = 0; i < 10; i++) {
      const report = await c.run(trueSpec)
      if (report.exitCode !== 0) throw new Error(`${c.name}: unexpected result ${JSON.stringify(report)}`)
    }
  })
  const baseRss = process.memoryUsage.rss()
  const held = ballast(job.targetMiB * MiB)
  const batch = 10
  const samples = await roundRobin(contenders, Math.max(1, Math.round(job.execs / batch)), async (c) => {
    const delay = monitorEventLoopDelay({ resolution: 1 })
    const times: Array<number> = []
    delay.enable()
    for (let i = 0; i < batch; i++) times.push(await timed(() => c.run(trueSpec)))
    delay.disable()
    return { times, stallMs: delay.max / 1e6 }
  })
  const rss = process.memoryUsage.rss()
  // Read after the runs, so the ballast is surely alive until then.
  const ballastMiB = held.reduce((bytes, buffer) => bytes + buffer.length, 0) / MiB
  for (const c of contenders) await c.dispose()
  return {
    targetMiB: job.targetMiB,
    baseRssMiB: baseRss / MiB,
    rssMiB: rss / MiB,
    ballastMiB,
    results: contenders.map((c, i) => {
      const batches = samples[i] ?? []
      const times = batches.flatMap((b) => b.times)
      const stalls = batches.map((b) => b.stallMs)
      return {
        contender: c.name,
        medianMs: median(times),
        p90Ms: quantile(times, 0.9),
        maxStallMs: Math.max(...stalls),
        medianStallMs: median(stalls)
      }
    })
  }
}

const runChild = (here: string, job: Job): Promise<Point> =>
  new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [path.join(here, "hostMemory.js"), JSON.stringify(job)],
      { maxBuffer: 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) return reject(new Error(`host memory ${job.targetMiB} MiB: ${error.message}\n${stderr}`))
        resolve(JSON.parse(stdout.trim().split("\n").pop() ?? "{}"))
      }
    )
  })

const escapeXml = (value: string) => value.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")

/** A step of 1, 2 or 5 times a power of ten giving about `count` ticks up to `max`. */
const niceStep = (max: number, count: number) => {
  const raw = max / count
  const power = 10 ** Math.floor(Math.log10(raw))
  return ([1, 2, 5, 10].map((m) => m * power).find((step) => step >= raw) ?? raw)
}

/** Per-exec milliseconds against host RSS, one line per contender; plain SVG, no dependency. */
export const spawnVsRssSvg = (points: ReadonlyArray<Point>): string => {
  const [width, height] = [760, 460]
  const margin = { left: 64, right: 24, top: 40, bottom: 56 }
  const plotW = width - margin.left - margin.right
  const plotH = height - margin.top - margin.bottom
  const names = points[0]?.results.map((r) => r.contender) ?? []
  const maxX = Math.max(...points.map((p) => p.rssMiB)) * 1.05
  const maxY = Math.max(...points.flatMap((p) => p.results.map((r) => r.medianMs))) * 1.08
  const x = (mib: number) => margin.left + (mib / maxX) * plotW
  const y = (ms: number) => margin.top + plotH - (ms / maxY) * plotH
  const out: Array<string> = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
    `font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15">Per-exec cost of /bin/true against host RSS ` +
    `(median, sequential)</text>`
  ]
  const xStep = niceStep(maxX, 8)
  for (let v = 0; v <= maxX; v += xStep) {
    out.push(`<line x1="${x(v)}" y1="${margin.top}" x2="${x(v)}" y2="${margin.top + plotH}" stroke="#eee"/>`)
    out.push(`<text x="${x(v)}" y="${margin.top + plotH + 18}" text-anchor="middle">${v}</text>`)
  }
  const yStep = niceStep(maxY, 6)
  for (let v = 0; v <= maxY; v += yStep) {
    out.push(`<line x1="${margin.left}" y1="${y(v)}" x2="${margin.left + plotW}" y2="${y(v)}" stroke="#eee"/>`)
    out.push(`<text x="${margin.left - 8}" y="${y(v) + 4}" text-anchor="end">${v}</text>`)
  }
  out.push(
    `<rect x="${margin.left}" y="${margin.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#333"/>`,
    `<text x="${margin.left + plotW / 2}" y="${height - 14}" text-anchor="middle">host RSS (MiB)</text>`,
    `<text x="18" y="${margin.top + plotH / 2}" text-anchor="middle" ` +
      `transform="rotate(-90 18 ${margin.top + plotH / 2})">ms per exec</text>`
  )
  names.forEach((name, i) => {
    const color = COLORS[name] ?? "#000"
    const coords = points.map((p) => [x(p.rssMiB), y(p.results[i]?.medianMs ?? 0)] as const)
    out.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${coords.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(" ")}"/>`)
    for (const [a, b] of coords) out.push(`<circle cx="${a.toFixed(1)}" cy="${b.toFixed(1)}" r="3.5" fill="${color}"/>`)
    const ly = margin.top + 16 + i * 18
    out.push(`<line x1="${margin.left + 14}" y1="${ly - 4}" x2="${margin.left + 38}" y2="${ly - 4}" stroke="${color}" stroke-width="2"/>`)
    out.push(`<text x="${margin.left + 44}" y="${ly}">${escapeXml(name)}</text>`)
  })
  out.push("</svg>")
  return out.join("\n") + "\n"
}

/** Runs every point in a fresh process, prints the table, writes the chart; returns the scenario for latest.json. */
export const hostMemoryScenario = async (paths: { readonly here: string; readonly repoRoot: string }): Promise<Scenario> => {
  const execs = scaled(100, 10)
  const points: Array<Point> = []
  for (const targetMiB of TARGETS_MIB) points.push(await runChild(paths.here, { targetMiB, execs }))
  const rows: Array<Row> = points.flatMap((p) => {
    const raw = p.results.find((r) => r.contender === RAW)?.medianMs ?? Number.NaN
    return p.results.map((r) => ({
      contender: r.contender,
      targetMiB: p.targetMiB,
      rssMiB: Math.round(p.rssMiB),
      medianMs: r.medianMs,
      p90Ms: r.p90Ms,
      ratio: r.medianMs / raw,
      maxStallMs: r.maxStallMs,
      medianStallMs: r.medianStallMs
    }))
  })
  const dir = path.join(paths.repoRoot, "bench", "results")
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true })
  const svg = path.join(dir, "spawn-vs-rss.svg")
  writeFileSync(svg, spawnVsRssSvg(points))

  const of = (point: Point | undefined, contender: string) => point?.results.find((r) => r.contender === contender)
  const smallest = points[0]
  const largest = points[points.length - 1]
  const large = points.filter((p) => p.rssMiB >= 500)
  const huge = points.filter((p) => p.rssMiB >= 1000)
  // Small host: the adaptive spawner spawns directly, so it must cost what today's direct path costs.
  const smallRatio = (of(smallest, ADAPTIVE)?.medianMs ?? Number.NaN) / (of(smallest, DIRECT)?.medianMs ?? Number.NaN)
  // Large hosts: the cost stays flat, far below raw spawn's.
  const flatness = (of(largest, ADAPTIVE)?.medianMs ?? Number.NaN) / (of(smallest, ADAPTIVE)?.medianMs ?? Number.NaN)
  const hugeRatio = Math.max(
    ...huge.map((p) => (of(p, ADAPTIVE)?.medianMs ?? Number.NaN) / (of(p, RAW)?.medianMs ?? Number.NaN))
  )
  const largeStall = Math.max(...large.map((p) => of(p, ADAPTIVE)?.medianStallMs ?? Number.NaN))
  const scenario: Scenario = {
    title: "(mem) per-exec cost and event-loop stall against host RSS: sequential /bin/true",
    params: {
      execsPerContenderPerPoint: execs,
      targetsMiB: TARGETS_MIB.join(","),
      adaptiveThresholdMiB: DEFAULT_RSS_THRESHOLD_BYTES / MiB,
      chart: path.relative(paths.repoRoot, svg)
    },
    rows,
    targets: [
      {
        target: "ours adaptive <= 1.1x ours direct at the smallest host",
        value: `${fmt(smallRatio)}x`,
        met: smallRatio <= 1.1
      },
      {
        target: "ours adaptive at the largest host <= 1.5x at the smallest (flat)",
        value: `${fmt(flatness)}x`,
        met: flatness <= 1.5
      },
      huge.length === 0
        ? { target: "ours adaptive <= 0.25x raw at >= 1 GiB", value: "not measured", met: null }
        : { target: "ours adaptive <= 0.25x raw at >= 1 GiB", value: `${fmt(hugeRatio)}x (worst)`, met: hugeRatio <= 0.25 },
      large.length === 0
        ? { target: "ours adaptive stall <= 10 ms at >= 512 MiB", value: "not measured", met: null }
        : {
          target: "ours adaptive stall (median of batches' longest) <= 10 ms at >= 512 MiB",
          value: `${fmt(largeStall, 1)} ms (worst)`,
          met: largeStall <= 10
        }
    ],
    notes: [
      "each point is a fresh process: contenders built and warmed first, then Buffers filled up to the target RSS",
      "the first point is the process's own baseline (effect, execa and the runtimes loaded), not 50 MiB",
      "stall: monitorEventLoopDelay (1 ms resolution) max over each batch of 10 execs; max and median of batches"
    ]
  }
  const names = points[0]?.results.map((r) => r.contender) ?? []
  console.log(`\n## ${scenario.title}`)
  console.log(Object.entries(scenario.params).map(([k, v]) => `${k}=${String(v)}`).join("  "))
  console.log("cells: median ms per exec / longest event-loop stall ms (median of batches' longest)")
  console.log(table(
    ["host RSS MiB", ...names],
    points.map((p) => [
      `${fmt(p.rssMiB, 0)} (base ${fmt(p.baseRssMiB, 0)})`,
      ...p.results.map((r) => `${fmt(r.medianMs)} / ${fmt(r.maxStallMs, 1)} (${fmt(r.medianStallMs, 1)})`)
    ])
  ))
  for (const t of scenario.targets) {
    console.log(`target ${t.target}: ${t.value} -> ${t.met === null ? "not measured" : t.met ? "MET" : "MISSED"}`)
  }
  for (const n of scenario.notes) console.log(`note: ${n}`)
  console.log(`wrote ${path.relative(process.cwd(), svg)}`)
  return scenario
}

// Run as a point's child process: node hostMemory.js '{"targetMiB":N,"execs":M}'
if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const job: Job = JSON.parse(process.argv[2] ?? "{}")
  console.log(JSON.stringify(await runPoint(job)))
}
