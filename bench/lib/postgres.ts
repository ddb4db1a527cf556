/**
 * A throwaway PostgreSQL for the fleet tests and benchmark: initdb + pg_ctl in a temp dir, on a free loopback port, as the
 * `postgres` user when we are root (PostgreSQL refuses to run as root). Trust authentication, loopback only, fsync
 * off: a test database, never the host's. `stop` shuts it down immediately and removes the directory.
 */
import { execFileSync } from "node:child_process"
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import * as path from "node:path"

export interface TestPostgres {
  readonly url: string
  readonly port: number
  readonly stop: () => void
}

/** The PostgreSQL server binaries' directory, or undefined when the server is not installed. */
export const postgresBin = (): string | undefined => {
  const root = "/usr/lib/postgresql"
  if (!existsSync(root)) return undefined
  const versions = readdirSync(root).filter((v) => existsSync(path.join(root, v, "bin", "pg_ctl"))).sort((a, b) => Number(b) - Number(a))
  return versions[0] === undefined ? undefined : path.join(root, versions[0], "bin")
}

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

const pgUser = (): { uid: number; gid: number } | undefined => {
  if (process.getuid?.() !== 0) return undefined
  const line = execFileSync("getent", ["passwd", "postgres"], { encoding: "utf8" }).split(":")
  return { uid: Number(line[2]), gid: Number(line[3]) }
}

export const startPostgres = async (): Promise<TestPostgres> => {
  const bin = postgresBin()
  if (bin === undefined) throw new Error("PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)")
  const dir = mkdtempSync(path.join(tmpdir(), "enr-pg-"))
  const user = pgUser()
  if (user !== undefined) chownSync(dir, user.uid, user.gid)
  const as = (command: string, args: ReadonlyArray<string>) =>
    execFileSync(command, [...args], {
      stdio: ["ignore", "pipe", "pipe"],
      ...(user === undefined ? {} : { uid: user.uid, gid: user.gid }),
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", LANG: "C.UTF-8" }
    })
  const data = path.join(dir, "data")
  const port = await freePort()
  try {
    as(path.join(bin, "initdb"), ["-D", data, "-U", "runner", "--auth=trust", "--no-sync", "-E", "UTF8"])
    as(path.join(bin, "pg_ctl"), [
      "-D", data, "-l", path.join(dir, "log"), "-w", "-t", "60",
      "-o", `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=200`,
      "start"
    ])
  } catch (error) {
    rmSync(dir, { recursive: true, force: true })
    throw error
  }
  return {
    url: `postgres://runner@127.0.0.1:${port}/postgres`,
    port,
    stop: () => {
      try {
        as(path.join(bin, "pg_ctl"), ["-D", data, "-m", "immediate", "-w", "stop"])
      } finally {
        rmSync(dir, { recursive: true, force: true })
      }
    }
  }
}
