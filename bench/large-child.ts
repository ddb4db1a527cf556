/**
 * One contender of the large-output scenario, in a fresh Node process so its RSS baseline is clean.
 * Usage (compiled by `npm run bench`): node --expose-gc large-child.js '{"contender":"ours","bytes":N,"cap":M}'
 * Prints one JSON line: wall time, throughput, RSS baseline and peak (kernel VmHWM after a reset, and sampled).
 */
import * as C from "./lib/contenders.js"
import { peakRssBytes, resetPeakRss, rssBytes } from "./lib/procs.js"

interface Job {
  readonly contender: "raw" | "command" | "execa" | "ours"
  readonly bytes: number
  readonly cap: number
}

const job: Job = JSON.parse(process.argv[2] ?? "{}")
const full = job.cap >= job.bytes
const contender = job.contender === "raw"
  ? C.raw()
  : job.contender === "command"
  ? C.command()
  : job.contender === "execa"
  ? C.execaContender({ streaming: !full })
  : C.ours()

const gc = (): void => {
  const collect: unknown = Reflect.get(globalThis, "gc")
  if (typeof collect === "function") {
    collect()
    collect()
  }
}

const spec = (bytes: number): C.RunSpec => ({
  argv: ["head", "-c", String(bytes), "/dev/zero"],
  maxStdoutBytes: job.cap,
  maxStderrBytes: job.cap
})

// Warm-up: code paths compiled, runtime built, pools allocated, so the baseline includes them.
for (let i = 0; i < 3; i++) await contender.run(spec(4 * 1024 * 1024))
gc()
await new Promise((resolve) => setTimeout(resolve, 200))
gc()
const baseline = rssBytes()
const kernelPeak = resetPeakRss()
let sampledPeak = baseline
const sampler = setInterval(() => {
  sampledPeak = Math.max(sampledPeak, rssBytes())
}, 5)

const start = performance.now()
const report = await contender.run(spec(job.bytes))
const ms = performance.now() - start
sampledPeak = Math.max(sampledPeak, rssBytes())
clearInterval(sampler)
const peak = kernelPeak ? Math.max(peakRssBytes(), sampledPeak) : sampledPeak
await contender.dispose()

const expectedKept = Math.min(job.bytes, job.cap)
const ok = report.stdoutBytes === job.bytes && report.keptStdoutBytes === expectedKept && report.exitCode === 0
process.stdout.write(JSON.stringify({
  ok,
  report,
  ms,
  mibPerSec: job.bytes / (1024 * 1024) / (ms / 1000),
  baseline,
  peak,
  growth: peak - baseline,
  peakSource: kernelPeak ? "VmHWM+sampled" : "sampled"
}) + "\n")
