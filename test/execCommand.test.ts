/** `NativeRunner.execCommand`: a platform `Command` description run through the runner, with its caps and audit. */
import * as Command from "@effect/platform/Command"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { mkdtempSync, realpathSync, rmSync } from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as NativeRunner from "../src/NativeRunner.js"

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes)
const live = NativeRunner.layerNode()

describe("execCommand", () => {
  it.live("program, args, env, workingDirectory and feed reach the command; the result is ours, audit included", () => {
    const dir = realpathSync(mkdtempSync(path.join(os.tmpdir(), "enr-exec-command-")))
    return Effect.gen(function*() {
      const command = Command.make("sh", "-c", "cat; echo \"$GREETING\"; pwd", "sh").pipe(
        Command.env({ GREETING: "hello" }),
        Command.workingDirectory(dir),
        Command.feed("from feed\n")
      )
      const result = yield* NativeRunner.execCommand(command)
      expect([result.exitCode, text(result.stdout)]).toStrictEqual([0, `from feed\nhello\n${dir}\n`])
      expect(result.audits[0]).toMatchObject({ cmd: "sh", cwd: dir })
    }).pipe(Effect.provide(live), Effect.ensuring(Effect.sync(() => rmSync(dir, { recursive: true, force: true }))))
  })

  it.live("the runner's caps and the overrides apply: a Command's output is capped, its tree killed on timeout", () =>
    Effect.gen(function*() {
      const capped = yield* NativeRunner.execCommand(Command.make("head", "-c", "100000", "/dev/zero"), { limits: { maxStdoutBytes: 10 } })
      expect([capped.stdout.length, capped.stdoutBytes, capped.truncatedStdout]).toStrictEqual([10, 100_000, true])
      const slow = yield* NativeRunner.execCommand(Command.make("sleep", "5"), { timeout: "200 millis", killGrace: "100 millis" })
      expect([slow.exitCode, slow.timedOut]).toStrictEqual([124, true])
    }).pipe(Effect.provide(live)))

  it.live("runInShell runs sh -c with the words joined, as Node's shell option does; stdin(stream) is streamed", () =>
    Effect.gen(function*() {
      const shell = yield* NativeRunner.execCommand(Command.make("echo", "$((1 + 2))").pipe(Command.runInShell(true)))
      expect(text(shell.stdout)).toBe("3\n")
      const streamed = yield* NativeRunner.execCommand(Command.make("wc", "-c").pipe(
        Command.stdin(Stream.make(new Uint8Array(1000), new Uint8Array(24)))
      ))
      expect(text(streamed.stdout).trim()).toBe("1024")
    }).pipe(Effect.provide(live)))

  it.live("a piped Command and one with a uid are refused with InvalidInput before anything runs", () =>
    Effect.gen(function*() {
      const piped = yield* Effect.flip(NativeRunner.execCommand(Command.make("echo", "a").pipe(Command.pipeTo(Command.make("cat")))))
      expect(piped._tag === "InvalidInput" && piped.issues[0]?.path).toBe("command")
      // The platform has no combinator for uid in this version: the field, set on a copy of a Command.
      const plain = Command.make("id")
      const asRoot = Object.assign(Object.create(Object.getPrototypeOf(plain)), plain, { uid: Option.some(0) }) as Command.Command
      const stranger = yield* Effect.flip(NativeRunner.execCommand(asRoot))
      expect(stranger._tag === "InvalidInput" && stranger.issues[0]?.path).toBe("uid")
    }).pipe(Effect.provide(live)))

  it.live("an endless stdin stream is pulled only as the child reads it, never collected first", () =>
    Effect.gen(function*() {
      let pulled = 0
      const endless = Stream.repeatEffect(Effect.sync(() => (pulled++, new Uint8Array(1024 * 1024))))
      const result = yield* NativeRunner.execCommand(Command.make("head", "-c", "10").pipe(Command.stdin(endless)))
      expect([result.exitCode, result.stdout.length]).toStrictEqual([0, 10])
      // One chunk in flight and the kernel's pipe: a handful of MiB, where collecting first never ends.
      expect(pulled).toBeLessThan(8)
    }).pipe(Effect.provide(live)))
}, { timeout: 30_000 })
