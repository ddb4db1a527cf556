/**
 * The package as a user gets it: `npm pack` of this checkout (through its `prepack` build, in a copy so the checkout's
 * own dist/ is left alone), installed into a fresh app with `npm install effect-native-runner effect` at the lowest
 * `effect` the peer range allows, then the README's examples type-checked and run there: an exec, the Promise runner,
 * a test-layer test under vitest, and the CLI. Needs the npm registry (or npm's cache) for the app's install.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { execFileSync, spawnSync } from "node:child_process"
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const ROOT = fileURLToPath(new URL("..", import.meta.url))
const manifest = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as {
  readonly version: string
  readonly peerDependencies: Record<string, string>
}
/** The lowest version a `~x.y.z` peer range allows. */
const lowest = (range: string) => {
  const match = /^~(\d+\.\d+\.\d+)$/.exec(range)
  if (match === null) throw new Error(`expected a ~x.y.z peer range, got ${range}`)
  return match[1]!
}
const EFFECT = lowest(manifest.peerDependencies["effect"]!)

const tmp = mkdtempSync(path.join(os.tmpdir(), "native-runner-pack-"))
const checkout = path.join(tmp, "checkout")
const app = path.join(tmp, "app")
const installed = path.join(app, "node_modules", "effect-native-runner")
afterAll(() => rmSync(tmp, { recursive: true, force: true }))

const npm = (cwd: string, args: ReadonlyArray<string>) =>
  execFileSync("npm", [...args], {
    cwd,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, npm_config_audit: "false", npm_config_fund: "false", npm_config_update_notifier: "false" },
    timeout: 240_000
  })

/** Every file under `dir`, as paths relative to it. */
const filesUnder = (dir: string): Array<string> =>
  readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile())
    .map((entry) => path.relative(dir, path.join(entry.parentPath, entry.name)))

let tarball = ""

/** The README's TypeScript examples, each with the heading of the section it is in. */
const readmeBlocks = () => {
  const readme = readFileSync(path.join(ROOT, "README.md"), "utf8")
  const blocks: Array<{ readonly section: string; readonly code: string }> = []
  let heading = ""
  for (const part of readme.split(/^(## .*)$/m)) {
    if (part.startsWith("## ")) heading = part
    else for (const match of part.matchAll(/```ts\n([\s\S]*?)```/g)) blocks.push({ section: heading, code: match[1]! })
  }
  return blocks
}
const section = (blocks: ReturnType<typeof readmeBlocks>, heading: string, index: number) => {
  const code = blocks.filter((b) => b.section === heading)[index]?.code
  if (code === undefined) throw new Error(`no TypeScript example ${index} under ${heading} in README.md`)
  return code
}

beforeAll(() => {
  // The checkout's files as git would give them to a packer, with its node_modules for the build.
  mkdirSync(checkout)
  for (const entry of ["src", "bench/build-bin.mjs", "package.json", "package-lock.json", "tsconfig.json", "tsconfig.build.json", "LICENSE", "README.md"]) {
    cpSync(path.join(ROOT, entry), path.join(checkout, entry), { recursive: true })
  }
  symlinkSync(path.join(ROOT, "node_modules"), path.join(checkout, "node_modules"))
  const packed = JSON.parse(npm(checkout, ["pack", "--json", "--pack-destination", tmp])) as Array<{ readonly filename: string }>
  tarball = path.join(tmp, packed[0]!.filename)

  mkdirSync(app)
  writeFileSync(path.join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }))
  // What the README's first section tells a user to run (with the lowest effect the peer range allows).
  npm(app, ["install", "--prefer-offline", tarball, `effect@${EFFECT}`])
  // What the app's own type check and tests need.
  npm(app, ["install", "--prefer-offline", "-D", "typescript@~5.9.3", "@types/node@^20", "vitest@~3.2.7", "@effect/vitest@~0.30.0"])
}, 600_000)

describe("the packed tarball", () => {
  it("ships the built library, the bin and LICENSE, and nothing that names the machine it was packed on", () => {
    const files = filesUnder(installed)
    expect(files).toContain("LICENSE")
    expect(files).toContain("dist/index.js")
    expect(files).toContain("dist/index.d.ts")
    expect(files).toContain("dist/bin.js")
    expect(files).toContain("dist/bin/native-runner.cjs")
    // No source maps pointing at the unshipped src/, no V8 code cache (it stores the packing machine's path), no CLI
    // modules that nothing imports (the bin is a bundle), no tests.
    expect(files.filter((f) => f.endsWith(".map") || f.includes(".cache") || f.startsWith("dist/cli/") || f.startsWith("src/") || f.startsWith("test/"))).toEqual([])
    const naming = files.filter((f) => readFileSync(path.join(installed, f)).includes(checkout))
    expect(naming).toEqual([])
  })

  it("declares what a user's tools read: exports with types, import and default, ./package.json, sideEffects, metadata", () => {
    const pkg = JSON.parse(readFileSync(path.join(installed, "package.json"), "utf8")) as Record<string, any>
    for (const entry of [".", "./testing", "./cluster"]) {
      expect(Object.keys(pkg["exports"][entry])).toEqual(["types", "import", "default"])
    }
    expect(pkg["exports"]["./package.json"]).toBe("./package.json")
    expect(pkg["types"]).toBe("./dist/index.d.ts")
    expect(pkg["sideEffects"]).toBe(false)
    expect(pkg["license"]).toBe("MIT")
    expect(pkg["keywords"]).toEqual(expect.arrayContaining(["effect", "sandbox"]))
    // No install-time script for consumers (npm warns about those).
    expect(Object.keys(pkg["scripts"] ?? {}).filter((s) => ["preinstall", "install", "postinstall", "prepare"].includes(s))).toEqual([])
  })
})

describe("a fresh app with `npm install effect-native-runner effect`", () => {
  it("has one effect, the platform as a peer, and no fleet or CLI package", () => {
    const tree = npm(app, ["ls", "--all", "--omit=dev", "--omit=peer", "--parseable"])
    const names = tree.trim().split("\n").map((p) => path.relative(path.join(app, "node_modules"), p))
    expect(names.filter((n) => /^(@effect\/(cluster|rpc|sql|sql-pg|cli|platform-node|printer|printer-ansi|workflow)|pg|pg-.*|kubernetes-types|@parcel\/watcher)$/.test(n))).toEqual([])
    const effects = filesUnder(app).filter((f) => /(^|\/)node_modules\/effect\/package\.json$/.test(f))
    expect(effects).toEqual(["node_modules/effect/package.json"])
    expect(JSON.parse(readFileSync(path.join(app, "node_modules/effect/package.json"), "utf8")).version).toBe(EFFECT)
    expect(existsSync(path.join(app, "node_modules/@effect/platform/package.json"))).toBe(true)
  })

  it("type-checks the README's Effect (execCommand and live output included) and Promise examples as written, and runs two", () => {
    mkdirSync(path.join(app, "src"), { recursive: true })
    writeFileSync(path.join(app, "tsconfig.json"), JSON.stringify({
      compilerOptions: {
        target: "ES2022",
        module: "NodeNext",
        moduleResolution: "NodeNext",
        strict: true,
        types: ["node"],
        outDir: "out",
        skipLibCheck: false
      },
      include: ["src"]
    }))
    const blocks = readmeBlocks()
    // Every example of the Effect section (the first runs), and the Promise one; each as a module of its own
    // (`export {}`: top-level await in the Promise one).
    const effects = blocks.filter((b) => b.section === "## Effect")
    expect(effects.length).toBeGreaterThanOrEqual(3)
    effects.forEach((block, i) => writeFileSync(path.join(app, "src", i === 0 ? "effect.ts" : `effect${i}.ts`), block.code + "\nexport {}\n"))
    writeFileSync(path.join(app, "src", "promise.ts"), section(blocks, "## Promise", 0) + "\nexport {}\n")
    const tsc = spawnSync(path.join(app, "node_modules", ".bin", "tsc"), ["-p", "tsconfig.json"], { cwd: app, encoding: "utf8", timeout: 120_000 })
    expect(tsc.stdout + tsc.stderr).toBe("")
    expect(tsc.status).toBe(0)
    for (const example of ["effect.js", "promise.js"]) {
      const ran = spawnSync(process.execPath, [path.join(app, "out", example)], { cwd: app, encoding: "utf8", timeout: 60_000 })
      expect([example, ran.status, ran.stderr]).toEqual([example, 0, ""])
    }
  }, 180_000)

  it("runs the README's test-layer tests under vitest", () => {
    mkdirSync(path.join(app, "test"), { recursive: true })
    writeFileSync(path.join(app, "test", "branch.test.ts"), section(readmeBlocks(), "## Testing code that runs commands", 0))
    const ran = spawnSync(path.join(app, "node_modules", ".bin", "vitest"), ["run", "--reporter=verbose"], { cwd: app, encoding: "utf8", timeout: 120_000 })
    expect(ran.stdout).toMatch(/2 passed/)
    expect(ran.status).toBe(0)
  }, 180_000)

  it("runs the CLI, which makes its code cache on this machine at the first run and uses it after", () => {
    const bin = path.join(app, "node_modules", ".bin", "native-runner")
    const caches = () => readdirSync(path.join(installed, "dist", "bin")).filter((f) => f.endsWith(".cache"))
    expect(caches()).toEqual([])
    const first = spawnSync(bin, ["run", "--", "echo", "hi"], { cwd: app, encoding: "utf8", timeout: 60_000 })
    expect([first.status, first.stdout, first.stderr]).toEqual([0, "hi\n", ""])
    expect(caches()).toEqual([`native-runner.cjs.v8-${process.versions.v8}.cache`])
    const cache = path.join(installed, "dist", "bin", caches()[0]!)
    expect(statSync(cache).mode & 0o022).toBe(0)
    // The cache names this install's path, not the packing checkout's.
    expect(readFileSync(cache).includes(checkout)).toBe(false)
    const second = spawnSync(bin, ["run", "--", "echo", "again"], { cwd: app, encoding: "utf8", timeout: 60_000 })
    expect([second.status, second.stdout, second.stderr]).toEqual([0, "again\n", ""])
    // A cache others could have written is not read as code: the run compiles from source and replaces it.
    const inode = statSync(cache).ino
    chmodSync(cache, 0o666)
    const third = spawnSync(bin, ["run", "--", "true"], { cwd: app, encoding: "utf8", timeout: 60_000 })
    expect(third.status).toBe(0)
    expect([statSync(cache).ino === inode, statSync(cache).mode & 0o777]).toEqual([false, 0o644])
    // A damaged cache (its bytes changed, its header kept: V8 would run it or crash on it) is not handed to V8.
    const good = readFileSync(cache)
    const damaged = Buffer.from(good)
    for (let i = damaged.length - 4096; i < damaged.length - 4032; i++) damaged[i] = damaged[i]! ^ 0xff
    writeFileSync(cache, damaged, { mode: 0o644 })
    const afterDamage = spawnSync(bin, ["run", "--", "echo", "still"], { cwd: app, encoding: "utf8", timeout: 60_000 })
    expect([afterDamage.status, afterDamage.stdout, afterDamage.signal]).toEqual([0, "still\n", null])
    expect(readFileSync(cache).equals(damaged)).toBe(false)
    // A FIFO planted at the cache's name does not hang the start.
    rmSync(cache)
    execFileSync("mkfifo", [cache])
    const fifo = spawnSync(bin, ["run", "--", "echo", "fifo"], { cwd: app, encoding: "utf8", timeout: 20_000 })
    rmSync(cache, { force: true })
    expect([fifo.status, fifo.stdout, fifo.signal]).toEqual([0, "fifo\n", null])
    // Nor is one written into a directory others can write.
    rmSync(cache, { force: true })
    chmodSync(path.dirname(cache), 0o777)
    const shared = spawnSync(bin, ["run", "--", "true"], { cwd: app, encoding: "utf8", timeout: 60_000 })
    chmodSync(path.dirname(cache), 0o755)
    expect([shared.status, caches()]).toEqual([0, []])
  }, 120_000)

  it("effect-native-runner/cluster without the fleet's optional peers fails to load naming a missing one", () => {
    const ran = spawnSync(process.execPath, ["--input-type=module", "-e", "await import('effect-native-runner/cluster')"], { cwd: app, encoding: "utf8", timeout: 60_000 })
    expect(ran.status).not.toBe(0)
    expect(ran.stderr).toMatch(/Cannot find (package|module) '@effect\/(cluster|rpc|sql|sql-pg|platform-node)/)
  })

  it("with the fleet's peers installed as the README says, effect-native-runner/cluster loads, on the same effect", () => {
    const peers = ["@effect/cluster", "@effect/rpc", "@effect/sql", "@effect/sql-pg", "@effect/platform-node"]
    npm(app, ["install", "--prefer-offline", ...peers.map((name) => `${name}@${manifest.peerDependencies[name]!}`)])
    const ran = spawnSync(process.execPath, ["--input-type=module", "-e",
      "const m = await import('effect-native-runner/cluster'); console.log(typeof m.NativeRunnerCluster.layerClient, typeof m.NativeRunnerCluster.layerWorker)"
    ], { cwd: app, encoding: "utf8", timeout: 60_000 })
    expect([ran.status, ran.stdout, ran.stderr]).toEqual([0, "function function\n", ""])
    const effects = filesUnder(app).filter((f) => /(^|\/)node_modules\/effect\/package\.json$/.test(f))
    expect(effects).toEqual(["node_modules/effect/package.json"])
  }, 180_000)
})
