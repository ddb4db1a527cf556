/** The sandbox policy's fixed values, used by the backend; `Sandbox.ts` re-exports them with their documentation. */
import type { SandboxUser } from "../Sandbox.js"

export const defaultSandboxUser: SandboxUser = { uid: 65534, gid: 65534 }

export const workspaceMount = "/workspace"

/** flock's exit code when a workspace's lock is held elsewhere (a run during adoption, or adoption during a run). */
export const LOCK_CONFLICT = 75
