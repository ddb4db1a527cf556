export * as Audit from "./Audit.js"
export * as Bubblewrap from "./Bubblewrap.js"
export * as Errors from "./Errors.js"
export * as Exec from "./Exec.js"
export * as Metrics from "./Metrics.js"
export * as NativeRunner from "./NativeRunner.js"
export * as NativeRunnerTest from "./NativeRunnerTest.js"
export * as Sandbox from "./Sandbox.js"
export type * from "./types.js"
/** The Promise runner (`NativeRunner.toPromiseRunner`) and its input, by name. */
export type { PromiseExecInput, PromiseExecOptions, PromiseRunner, PromiseRunnerOptions } from "./internal/promiseRunner.js"
/** The seed's Promise interface (`NativeRunner` is the Effect module's name here): what `PromiseRunner` satisfies. */
export type { NativeRunner as NativeRunnerContract } from "./types.js"
