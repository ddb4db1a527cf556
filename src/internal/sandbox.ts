/** The sandbox policy's fixed values, used by the backend; `Sandbox.ts` re-exports them with their documentation. */
import * as path from "node:path"
import type { SandboxUser } from "../Sandbox.js"

export const defaultSandboxUser: SandboxUser = { uid: 65534, gid: 65534 }

export const workspaceMount = "/workspace"

/** flock's exit code when a workspace's lock is held elsewhere (a run during adoption, or adoption during a run). */
export const LOCK_CONFLICT = 75

/** `child` relative to `parent` when it lies at or below it (`""` for `parent` itself), else `undefined`. */
export const relativeInside = (parent: string, child: string): string | undefined => {
  const relative = path.posix.relative(parent, child)
  return relative === ".." || relative.startsWith("../") || path.posix.isAbsolute(relative) ? undefined : relative
}
