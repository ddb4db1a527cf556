/**
 * bwrap's `--json-status-fd` reports, and what they tell: the host pid of the sandbox's init (`child-pid`), and whether
 * the program was started at all (`exit-code` is written only after a successful exec, so its absence after bwrap
 * exited means set-up failed). Also how a signal reaches the program inside the PID namespace.
 */
import { readFileSync } from "node:fs"

/** The status stream of one bwrap run, fed chunk by chunk. */
export interface BwrapStatus {
  readonly onData: (chunk: Uint8Array) => void
  /** Host pid of the sandbox's init (pid 1 inside), once bwrap has cloned it. */
  readonly childPid: () => number | undefined
  /** The program's exit code, once bwrap reported it; absent when set-up failed before the program ran. */
  readonly exitCode: () => number | undefined
}

const numberField = (text: string, field: string): number | undefined => {
  const match = new RegExp(`"${field}"\\s*:\\s*(\\d+)`).exec(text)
  return match?.[1] === undefined ? undefined : Number(match[1])
}

export const makeBwrapStatus = (): BwrapStatus => {
  let text = ""
  const decoder = new TextDecoder()
  return {
    // A few hundred bytes per run: keeping the whole text is simpler than parsing documents as they complete.
    onData: (chunk) => {
      text += decoder.decode(chunk, { stream: true })
    },
    childPid: () => numberField(text, "child-pid"),
    exitCode: () => numberField(text, "exit-code")
  }
}

const childrenOf = (pid: number): Array<number> => {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").split(" ").filter((s) => s !== "").map(Number)
  } catch {
    return []
  }
}

/**
 * Every process below `pid` (the sandbox's init), depth first. bwrap's init does not forward signals, and a signal
 * from outside the namespace to its pid 1 is dropped unless pid 1 handles it, so TERM goes to the processes
 * themselves. Only a process that is a child of init (or of one of its descendants) at the moment of reading is
 * listed; those are reaped by init, inside the sandbox's own PID namespace.
 */
export const descendantsOf = (pid: number): Array<number> => {
  const found: Array<number> = []
  const pending = childrenOf(pid)
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    found.push(next)
    pending.push(...childrenOf(next))
  }
  return found
}
