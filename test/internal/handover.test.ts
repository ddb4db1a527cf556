/**
 * Handing a workspace to the sandbox user and back (`internal/handover`), on a real tree. Changing owners needs root:
 * in CI (root there, CI=true) these must run; elsewhere, as another user, they are skipped with the reason printed.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { SpawnError } from "../../src/Errors.js"
import { handOver } from "../../src/internal/handover.js"

const isRoot = process.getuid?.() === 0
const inCI = process.env["CI"] === "true"
const sandboxUser = { uid: 65534, gid: 65534 }

if (!isRoot && !inCI) console.warn("handover tests not run: changing file owners needs root (CI runs them as root).")

const created: Array<string> = []
// Every tree links to /etc/passwd: should a regression follow that link, put its owner back rather than leave the
// host changed (the assertions still fail).
const passwdOwner = isRoot ? fs.statSync("/etc/passwd") : undefined
afterAll(() => {
  for (const dir of created) fs.rmSync(dir, { recursive: true, force: true })
  const now = isRoot ? fs.statSync("/etc/passwd") : undefined
  if (passwdOwner !== undefined && now !== undefined && (now.uid !== passwdOwner.uid || now.gid !== passwdOwner.gid)) {
    fs.chownSync("/etc/passwd", passwdOwner.uid, passwdOwner.gid)
  }
})

/**
 * A root-owned workspace: a dir, a nested dir with a file, a symlink to /etc/passwd and a hard-linked pair
 * (one name at the top, one nested), as the host leaves it before a run.
 */
const makeTree = () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "enr-handover-"))
  created.push(root)
  const at = (name: string) => path.join(root, name)
  fs.mkdirSync(at("nested/deeper"), { recursive: true })
  fs.writeFileSync(at("nested/file"), "data")
  fs.symlinkSync("/etc/passwd", at("passwd-link"))
  fs.writeFileSync(at("hard"), "linked")
  fs.linkSync(at("hard"), at("nested/hard-too"))
  return {
    root,
    at,
    handed: [root, at("nested"), at("nested/deeper"), at("nested/file"), at("passwd-link")],
    hardLinks: [at("hard"), at("nested/hard-too")]
  }
}

/** Every entry under `root` (itself included), never following links. */
const entriesOf = (root: string): Array<string> => [
  root,
  ...fs.readdirSync(root, { recursive: true }).map((name) => path.join(root, String(name)))
]

const ownerOf = (entry: string) => {
  const stats = fs.lstatSync(entry)
  return { entry, uid: stats.uid, gid: stats.gid }
}

const expectOwned = (entries: ReadonlyArray<string>, uid: number, gid: number) =>
  expect(entries.map(ownerOf)).toEqual(entries.map((entry) => ({ entry, uid, gid })))

describe.runIf(isRoot || inCI)("handOver", () => {
  it.live("hands the tree to the sandbox user for the scope, never following a link nor a hard-linked file", () =>
    Effect.gen(function*() {
      const tree = makeTree()
      const passwdBefore = fs.statSync("/etc/passwd")
      expectOwned(entriesOf(tree.root), 0, 0)

      yield* Effect.scoped(Effect.gen(function*() {
        yield* handOver([tree.root], sandboxUser)
        expectOwned(tree.handed, 65534, 65534)
        // The link itself changed hands; its target did not.
        const passwd = fs.statSync("/etc/passwd")
        expect([passwd.uid, passwd.gid, passwd.mode]).toEqual([0, 0, passwdBefore.mode])
        // A hard link could be a host file outside the workspace: both names keep their owner.
        expectOwned(tree.hardLinks, 0, 0)

        // What the sandbox makes during the run (its uid, simulated with chown).
        fs.writeFileSync(tree.at("nested/made"), "by the sandbox")
        fs.chownSync(tree.at("nested/made"), 65534, 65534)
        fs.mkdirSync(tree.at("made-dir"))
        fs.chownSync(tree.at("made-dir"), 65534, 65534)
        for (const [name, mode] of [["setuid", 0o4755], ["setgid", 0o2755]] as const) {
          fs.writeFileSync(tree.at(name), "#!/bin/sh\n")
          fs.chownSync(tree.at(name), 65534, 65534)
          // After the chown, which clears these bits.
          fs.chmodSync(tree.at(name), mode)
          expect(fs.lstatSync(tree.at(name)).mode & 0o7777).toBe(mode)
        }
      }))

      expectOwned(entriesOf(tree.root), 0, 0)
      // Nothing the sandbox made is a privileged program of the original owner.
      expect(fs.lstatSync(tree.at("setuid")).mode & 0o7777).toBe(0o755)
      expect(fs.lstatSync(tree.at("setgid")).mode & 0o7777).toBe(0o755)
      expect(fs.readFileSync(tree.at("nested/made"), "utf8")).toBe("by the sandbox")
      const passwdAfter = fs.statSync("/etc/passwd")
      expect([passwdAfter.uid, passwdAfter.gid, passwdAfter.mode, passwdAfter.ctimeMs])
        .toEqual([0, 0, passwdBefore.mode, passwdBefore.ctimeMs])
    }))

  it.live("keeps the tree handed while any of two overlapping scopes is open, gives it back when the last closes", () =>
    Effect.gen(function*() {
      const tree = makeTree()
      const first = yield* Scope.make()
      const second = yield* Scope.make()
      yield* Effect.gen(function*() {
        yield* Scope.extend(handOver([tree.root], sandboxUser), first)
        yield* Scope.extend(handOver([tree.root], sandboxUser), second)
        expectOwned(tree.handed, 65534, 65534)

        yield* Scope.close(first, Exit.void)
        expectOwned(tree.handed, 65534, 65534)

        yield* Scope.close(second, Exit.void)
        expectOwned(entriesOf(tree.root), 0, 0)
      }).pipe(
        // Closing a closed scope does nothing; this only matters when an assertion above failed.
        Effect.ensuring(Effect.zip(Scope.close(first, Exit.void), Scope.close(second, Exit.void)))
      )
    }))

  it.live("gives each entry its own owner back, leaves what was the sandbox user's before, and gives new ones to the workspace's owner", () =>
    Effect.gen(function*() {
      const tree = makeTree()
      fs.chownSync(tree.root, 1000, 1000)
      fs.writeFileSync(tree.at("owned-by-2000"), "x")
      fs.chownSync(tree.at("owned-by-2000"), 2000, 2001)
      fs.writeFileSync(tree.at("nobody-before"), "x")
      fs.chownSync(tree.at("nobody-before"), 65534, 65534)
      yield* Effect.scoped(Effect.gen(function*() {
        yield* handOver([tree.root], sandboxUser)
        expectOwned([tree.root, tree.at("owned-by-2000"), tree.at("nested/file")], 65534, 65534)
        fs.writeFileSync(tree.at("made-in-run"), "x")
        fs.chownSync(tree.at("made-in-run"), 65534, 65534)
      }))
      expect([tree.root, tree.at("owned-by-2000"), tree.at("nested/file"), tree.at("nobody-before"), tree.at("made-in-run")].map(ownerOf))
        .toEqual([
          { entry: tree.root, uid: 1000, gid: 1000 },
          { entry: tree.at("owned-by-2000"), uid: 2000, gid: 2001 },
          { entry: tree.at("nested/file"), uid: 0, gid: 0 },
          { entry: tree.at("nobody-before"), uid: 65534, gid: 65534 },
          { entry: tree.at("made-in-run"), uid: 1000, gid: 1000 }
        ])
    }))

  it.live("does not enter a bind mount below the workspace, even of the same file system", () =>
    Effect.gen(function*() {
      const tree = makeTree()
      const outside = fs.mkdtempSync(path.join(os.tmpdir(), "enr-handover-outside-"))
      created.push(outside)
      fs.writeFileSync(path.join(outside, "host-file"), "x")
      fs.mkdirSync(tree.at("mnt"))
      const mount = spawnSync("mount", ["--bind", outside, tree.at("mnt")])
      expect(mount.status, String(mount.stderr)).toBe(0)
      // Same device: only the mount table tells this directory apart.
      expect(fs.lstatSync(tree.at("mnt")).dev).toBe(fs.lstatSync(tree.root).dev)
      yield* Effect.scoped(Effect.gen(function*() {
        yield* handOver([tree.root], sandboxUser)
        expect(ownerOf(path.join(outside, "host-file"))).toMatchObject({ uid: 0, gid: 0 })
        expect(ownerOf(outside)).toMatchObject({ uid: 0, gid: 0 })
        expect(ownerOf(tree.at("nested/file"))).toMatchObject({ uid: 65534, gid: 65534 })
      })).pipe(Effect.ensuring(Effect.sync(() => spawnSync("umount", [tree.at("mnt")]))))
    }))

  it.live("refuses a path held for another user while it is held", () =>
    Effect.gen(function*() {
      const tree = makeTree()
      yield* Effect.scoped(Effect.gen(function*() {
        yield* handOver([tree.root], sandboxUser)
        const error = yield* Effect.flip(Effect.scoped(handOver([tree.root], { uid: 4242, gid: 4242 })))
        expect(error).toBeInstanceOf(SpawnError)
        expect(error.reason).toBe("SandboxSetup")
        expect(error.message).toContain("65534:65534")
        expectOwned(tree.handed, 65534, 65534)
      }))
      expectOwned(entriesOf(tree.root), 0, 0)
    }))

  it.live("fails with SandboxSetup for a path it cannot hand, giving back what it handed before", () =>
    Effect.gen(function*() {
      const tree = makeTree()
      const missing = path.join(tree.root, "does-not-exist")
      const error = yield* Effect.flip(Effect.scoped(handOver([tree.root, missing], sandboxUser)))
      expect(error).toBeInstanceOf(SpawnError)
      expect(error.reason).toBe("SandboxSetup")
      expect(error.message).toContain(missing)
      expectOwned(entriesOf(tree.root), 0, 0)
    }))
})
