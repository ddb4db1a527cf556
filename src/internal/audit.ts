/** The `Audit` service's Tag, declared here so the runner can look it up; `Audit.ts` re-exports it. */
import * as Context from "effect/Context"
import type { AuditSink } from "../Audit.js"

export class Audit extends Context.Tag("effect-native-runner/Audit")<Audit, AuditSink>() {}
