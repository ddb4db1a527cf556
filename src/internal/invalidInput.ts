/**
 * Schema parse errors as `InvalidInput`: each offending field and what it expected, never the value (input can hold
 * secrets: env values, stdin, argv, and errors end up in logs).
 */
import * as Arr from "effect/Array"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as ParseResult from "effect/ParseResult"
import * as AST from "effect/SchemaAST"
import { InvalidInput } from "./errors.js"

/**
 * Turns a Schema `ParseError` into `InvalidInput` whose messages name each offending field and what it expected, and
 * never the value: input can hold secrets (env values, stdin, argv), and errors end up in logs. Schema's own wording
 * ("Expected string, actual <value>") is replaced; messages written by our schemas (filters, `message` annotations)
 * are kept, so they must not quote values either (env variable names are fine: they are not secret).
 */
export const toInvalidInput = (what: string) => (error: ParseResult.ParseError): InvalidInput => {
  const issues = issuesOf(error.issue, [])
  const summary = issues.map((i) => (i.path === "" ? i.message : `${i.path}: ${i.message}`)).join("; ")
  return new InvalidInput({ message: `${what}: ${summary}`, issues })
}

interface Issue {
  readonly path: string
  readonly message: string
}

const issuesOf = (issue: ParseResult.ParseIssue, path: ReadonlyArray<PropertyKey>): Array<Issue> => {
  const here = (message: string): Array<Issue> => [{ path: path.map(String).join("."), message }]
  const authored = annotatedMessage(issue)
  if (authored !== undefined) return here(authored)
  switch (issue._tag) {
    case "Pointer":
      return issuesOf(issue.issue, [...path, ...Arr.ensure(issue.path)])
    case "Type":
      return here(issue.message ?? `expected ${expected(issue.ast)}`)
    case "Missing":
      return here("is missing")
    case "Unexpected":
      return here(typeof path.at(-1) === "string" ? "is not a known field" : "is unexpected")
    case "Forbidden":
      return here("could not be checked")
    case "Refinement":
    case "Transformation":
      return issuesOf(issue.issue, path)
    case "Composite": {
      if (!AST.isUnion(issue.ast)) return Arr.ensure(issue.issues).flatMap((inner) => issuesOf(inner, path))
      // No member matched. `Schema.optional` adds `| undefined`, whose own failure is noise beside the real one.
      const members = Arr.ensure(issue.issues).filter((i) => !(i._tag === "Type" && AST.isUndefinedKeyword(i.ast)))
      // An object that missed a `Struct | "literal"` union failed inside the struct: that is the one to report.
      const structural = members.filter((i) => !(i._tag === "Type" && AST.isLiteral(i.ast)))
      const [only, ...more] = structural.length === 1 ? structural : members
      return only !== undefined && more.length === 0 ? issuesOf(only, path) : here(`expected ${expected(issue.ast)}`)
    }
  }
}

// A `message` annotation, where Schema would use it: on a composite, a refinement of the `from` side or a
// transformation's sides only when it asks to override the inner message.
const annotatedMessage = (issue: ParseResult.ParseIssue): string | undefined => {
  if (issue._tag === "Pointer" || issue._tag === "Unexpected" || issue._tag === "Missing") return undefined
  const annotation = Option.getOrUndefined(AST.getMessageAnnotation(issue.ast))
  if (annotation === undefined) return undefined
  const out = annotation(issue)
  const { message, override } = typeof out === "string" || Effect.isEffect(out)
    ? { message: out, override: false }
    : out
  const innerFirst = issue._tag === "Composite" ||
    (issue._tag === "Refinement" && issue.kind === "From") ||
    (issue._tag === "Transformation" && issue.kind !== "Transformation")
  // An effectful message is left out: formatting stays synchronous, and the structural message still says enough.
  return typeof message !== "string" || (innerFirst && !override) ? undefined : message
}

/** What a schema expects, in words, from its annotations and shape: never from a value. */
const expected = (ast: AST.AST): string => {
  const description = Option.getOrUndefined(AST.getDescriptionAnnotation(ast))
  if (description !== undefined) return description
  switch (ast._tag) {
    case "Literal":
      return typeof ast.literal === "string" ? JSON.stringify(ast.literal) : String(ast.literal)
    case "Union": {
      const members = ast.types.filter((member) => !AST.isUndefinedKeyword(member))
      return members.length > 1 && members.every(AST.isLiteral)
        ? `one of ${members.map(expected).join(", ")}`
        : members.map(expected).join(" or ")
    }
    case "TupleType":
      return "an array"
    case "TypeLiteral":
      return "an object"
    case "Refinement":
      return `${expected(ast.from)} that passes a check`
    case "Transformation":
      return expected(ast.from)
    case "Suspend":
      return expected(ast.f())
    default:
      return Option.getOrElse(AST.getIdentifierAnnotation(ast), () => String(ast))
  }
}

