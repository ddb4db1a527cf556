/**
 * Sandbox workspaces for tests. The runner never changes an owner or mode for a run, so a test's workspace must be
 * writable by the sandbox user before the run, as `Sandbox.makeWorkspace` makes one: a fresh directory owned by that
 * user (as root) inside a parent the user can search but not write. These are the test's own fresh directories.
 */
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"

const isRoot = process.getuid?.() === 0

/** A user the sandbox may run as. */
export interface TestUser {
  readonly uid: number
  readonly gid: number
}

/**
 * A parent (`<tmp>/<prefix>XXXXXX`, 0755, this process's) holding `ws`, a workspace owned by `user` (default
 * 65534:65534) when this process is root, else by this process. `remove` deletes both.
 */
export const makeTestWorkspace = (
  prefix = "enr-ws-",
  user: TestUser = { uid: 65534, gid: 65534 }
): { readonly parent: string; readonly ws: string; readonly remove: () => void } => {
  const parent = mkdtempSync(path.join(tmpdir(), prefix))
  chmodSync(parent, 0o755)
  const ws = path.join(parent, "ws")
  mkdirSync(ws, { mode: 0o700 })
  if (isRoot) chownSync(ws, user.uid, user.gid)
  return { parent, ws, remove: () => rmSync(parent, { recursive: true, force: true }) }
}

/** A directory below `dir` owned by `user` (as root), e.g. a read-write bind source. */
export const makeOwnedDir = (dir: string, user: TestUser = { uid: 65534, gid: 65534 }): string => {
  mkdirSync(dir, { recursive: true, mode: 0o755 })
  if (isRoot) chownSync(dir, user.uid, user.gid)
  return dir
}
