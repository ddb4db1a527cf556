/**
 * The fleet benchmark (scenario g of `npm run bench`): PostgreSQL and worker processes of the real bin on this
 * machine, loopback only. Per-exec cost of a remote exec against a local one (sequential, `/bin/true`), and
 * throughput (16 in flight) with one worker, then two. Client, workers and PostgreSQL share this machine's cores, so
 * the two-worker figure is a floor for separate machines, not a forecast.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import * as Effect from "effect/Effect"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as NativeRunner from "../src/NativeRunner.js"
import * as NativeRunnerCluster from "../src/NativeRunnerCluster.js"
import { pool, roundRobin, scaled, timed } from "./lib/harness.js"
import { freePort, startPostgres } from "./lib/postgres.js"
import { fmt, median } from "./lib/stats.js"

const startWorker = async (bin: string, url: string, fleetDir: string) => {
  const [listen, client, health] = [await freePort(), await freePort(), await freePort()]
  const child = spawn(process.execPath, [bin, "worker", "--listen", `127.0.0.1:${listen}`, "--client-listen", `127.0.0.1:${client}`, "--fleet-dir", fleetDir, "--health", `127.0.0.1:${health}`, "--sandbox", "none", "--allow-unsandboxed"], {
    env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", NATIVE_RUNNER_DATABASE_URL: url },
    stdio: ["ignore", "ignore", "inherit"]
  })
  const end = Date.now() + 60_000
  for (;;) {
    const ok = await fetch(`http://127.0.0.1:${health}/health`).then((r) => r.status === 200, () => false)
    if (ok) return { child, client }
    if (Date.now() > end) throw new Error("worker did not become healthy")
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

const stop = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    child.once("exit", () => resolve())
    child.kill("SIGTERM")
  })

export interface FleetRow {
  readonly contender: string
  readonly [metric: string]: string | number | boolean | null
}

export const fleetScenario = async (options: { readonly repoRoot: string }) => {
  const tmp = mkdtempSync(path.join(tmpdir(), "enr-bench-fleet-"))
  const pg = await startPostgres()
  const workers: Array<{ readonly child: ChildProcess; readonly client: number }> = []
  try {
    execFileSync(process.execPath, [path.join(options.repoRoot, "bench", "build-bin.mjs"), "--outdir", path.join(tmp, "dist")])
    const bin = path.join(tmp, "dist", "bin.js")
    const fleetDir = path.join(tmp, "fleet")
    execFileSync(process.execPath, [bin, "fleet", "init", fleetDir], { stdio: "ignore" })
    workers.push(await startWorker(bin, pg.url, fleetDir))
    execFileSync(process.execPath, [bin, "fleet", "tenant", "bench", "--fleet-dir", fleetDir], {
      env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", NATIVE_RUNNER_DATABASE_URL: pg.url },
      stdio: "ignore"
    })
    const local = ManagedRuntime.make(NativeRunner.layerNode())
    // A tenant's client through the first worker's endpoint (HTTPS), which hands each run to the cluster.
    const remote = ManagedRuntime.make(NativeRunnerCluster.layerClient({
      url: `https://127.0.0.1:${workers[0]!.client}`,
      credentials: path.join(fleetDir, "bench.credentials")
    }))
    const exec = (runtime: typeof local | typeof remote) => () =>
      runtime.runPromise(Effect.flatMap(NativeRunner.exec({ argv: ["/bin/true"] }), (r) =>
        r.exitCode === 0 ? Effect.void : Effect.dieMessage(`exit ${r.exitCode}`)))
    const contenders = [{ name: "local (layerNode)", run: exec(local) }, { name: "remote (layerClient, 1 worker)", run: exec(remote) }]
    for (const c of contenders) for (let i = 0; i < 20; i++) await c.run()
    const batch = 20
    const perExec = (await roundRobin(contenders, scaled(10, 2), async (c) => (await timed(async () => {
      for (let i = 0; i < batch; i++) await c.run()
    })) / batch)).map((samples) => median(samples))
    const throughput = async (run: () => Promise<void>) => {
      const count = scaled(400, 50)
      const ms = await timed(() => pool(count, 16, run))
      return count / (ms / 1000)
    }
    const localRate = await throughput(exec(local))
    const oneWorker = await throughput(exec(remote))
    workers.push(await startWorker(bin, pg.url, fleetDir))
    // Let the shards rebalance onto the second worker (assignments refresh every second).
    await new Promise((resolve) => setTimeout(resolve, 5_000))
    for (let i = 0; i < 50; i++) await exec(remote)()
    const twoWorkers = await throughput(exec(remote))
    await remote.dispose()
    await local.dispose()
    const [localMs, remoteMs] = [perExec[0] ?? NaN, perExec[1] ?? NaN]
    const rows: Array<FleetRow> = [
      { contender: "local (layerNode)", msPerExec: localMs, perSec16: localRate },
      { contender: "remote, 1 worker", msPerExec: remoteMs, perSec16: oneWorker },
      { contender: "remote, 2 workers", msPerExec: null, perSec16: twoWorkers }
    ]
    console.log("\n## (g) fleet on loopback: remote exec vs local, throughput with 1 and 2 workers")
    for (const r of rows) {
      console.log(`${r.contender.padEnd(20)} ${r.msPerExec === null ? "-" : fmt(Number(r.msPerExec))} ms/exec  ${fmt(Number(r.perSec16), 0)} execs/s (16 in flight)`)
    }
    console.log(`remote/local per exec: ${fmt(remoteMs / localMs)}x; 2 workers/1 worker throughput: ${fmt(twoWorkers / oneWorker)}x`)
    return {
      title: "(g) fleet on loopback: remote exec (a tenant client over HTTPS to a worker endpoint, mTLS between workers) vs local (/bin/true), throughput 16 in flight with 1 and 2 workers",
      params: { batch, sequentialRounds: scaled(10, 2), throughputExecs: scaled(400, 50) },
      rows,
      targets: [],
      notes: [
        `remote/local per exec ${fmt(remoteMs / localMs)}x; 2 workers vs 1: ${fmt(twoWorkers / oneWorker)}x`,
        "client, workers and PostgreSQL share this machine's 2 cores"
      ]
    }
  } finally {
    await Promise.all(workers.map((w) => stop(w.child)))
    pg.stop()
    rmSync(tmp, { recursive: true, force: true })
  }
}
