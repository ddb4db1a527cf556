/** How real processes express each scenario of the behaviour suite (`src/testing`), through a POSIX shell. */
import * as Duration from "effect/Duration"
import type { Commands } from "../../src/testing.js"

/** `printf` with every byte as an octal escape: exact bytes (NUL included) through a POSIX shell. */
const printf = (bytes: Uint8Array) => `printf '${Array.from(bytes, (b) => `\\${b.toString(8).padStart(3, "0")}`).join("")}'`
/** `sleep` in seconds with millisecond fractions (GNU and busybox `sleep` take them). */
const sleep = (duration: Duration.DurationInput) =>
  `sleep ${(Duration.toMillis(Duration.decode(duration)) / 1000).toFixed(3)}`

export const liveCommands: Commands = {
  write: (chunks) => [
    "sh",
    "-c",
    chunks.map(([stream, bytes]) => `${printf(bytes)}${stream === "stderr" ? " >&2" : ""}`).join("; ")
  ],
  paced: (steps) => [
    "sh",
    "-c",
    steps.map((step) =>
      step[0] === "sleep" ? sleep(step[1]) : `${printf(step[1])}${step[0] === "stderr" ? " >&2" : ""}`
    ).join("; ")
  ],
  zeros: (count) => ["head", "-c", String(count), "/dev/zero"],
  cat: ["cat"],
  exit: (code) => ["sh", "-c", `exit ${code}`],
  raise: (signal) => ["sh", "-c", `kill -${signal.slice(3)} $$`],
  // `exec` so the signal reaches `sleep` itself; an ignored TERM stays ignored across exec.
  hang: (before, { ignoreTerm }) => [
    "sh",
    "-c",
    `${ignoreTerm ? "trap '' TERM; " : ""}printf '%s' "$0"; exec sleep 30`,
    before
  ],
  env: ["env", "-0"],
  pwd: ["pwd"],
  touch: (path) => ["touch", path]
}

