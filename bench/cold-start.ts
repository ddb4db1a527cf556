/**
 * The cold-start scenario's measurements, in a fresh small Node process: the bench's own process grows during the
 * other scenarios, and `spawn()` gets slower as the parent's RSS grows (libuv forks it), which would add to both
 * contenders. Usage (compiled by `npm run bench`): node cold-start.js '{"runs":20,"bin":"/abs/dist/bin.js"}'
 * Prints one JSON line: wall milliseconds per run, process start to exit, for each command.
 */
import { spawnSync } from "node:child_process"
import { roundRobin } from "./lib/harness.js"

interface Job {
  readonly runs: number
  readonly bin: string
}

const job: Job = JSON.parse(process.argv[2] ?? "{}")

/** The floor: a Node process that starts and spawns `true`, as `run -- true` does. */
const bare = [process.execPath, "-e", "require('child_process').spawnSync('true')"]
const bin = [process.execPath, job.bin, "run", "--", "true"]

const once = (argv: ReadonlyArray<string>): number => {
  const start = performance.now()
  const ran = spawnSync(argv[0] ?? "", argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] })
  const ms = performance.now() - start
  if (ran.status !== 0 || ran.stdout.length > 0 || ran.stderr.length > 0) {
    throw new Error(`${argv.join(" ")}: exit ${ran.status} (${ran.signal}), output ${ran.stdout}${ran.stderr}`)
  }
  return ms
}

// Warm-up: the files in the page cache, as for any command run twice.
for (const argv of [bare, bin, bare, bin]) once(argv)
const samples = await roundRobin([bare, bin], job.runs, async (argv) => once(argv))
process.stdout.write(JSON.stringify({ bare: samples[0], bin: samples[1] }) + "\n")
