/**
 * Descriptors this process inherited open without close-on-exec (a supervisor's socket, a shell's `40<secret`):
 * every child would get them too, a sandboxed program included, where they would hand it host files it may not
 * open itself. Node opens its own descriptors close-on-exec, so these are exactly the ones to keep from a sandbox.
 */
import { readdirSync, readFileSync } from "node:fs"

const O_CLOEXEC = 0o2000000

/** Open descriptors from 3 up whose flags lack O_CLOEXEC (read from /proc/self/fdinfo; none where it is missing). */
export const inheritedFds = (): ReadonlyArray<number> => {
  let entries: Array<string>
  try {
    entries = readdirSync("/proc/self/fdinfo")
  } catch {
    return []
  }
  return entries.map(Number).filter((fd) => Number.isInteger(fd) && fd >= 3).filter((fd) => {
    try {
      const flags = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"))?.[1]
      return flags !== undefined && (parseInt(flags, 8) & O_CLOEXEC) === 0
    } catch {
      // Closed meanwhile (the directory's own descriptor among them).
      return false
    }
  }).sort((a, b) => a - b)
}
