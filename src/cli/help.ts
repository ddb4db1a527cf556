/**
 * `--help`, written like coreutils' (`timeout --help`): a usage line, what the command does, then each option on its
 * own line with its own description, wrapped to 80 columns, then examples. Rendered from the `@effect/cli` command
 * tree itself (names, pseudo-names, descriptions), so the help cannot drift from what is parsed; `@effect/cli`'s own
 * rendering repeated "A user-defined piece of text." for every option and padded lines to hundreds of columns.
 */
import type * as Command from "@effect/cli/Command"
import type * as HelpDoc from "@effect/cli/HelpDoc"
import type { Span } from "@effect/cli/HelpDoc/Span"

const WIDTH = 80
/** Where option descriptions start; a longer option name puts its description on the next line. */
const DESCRIPTION_COLUMN = 28

/** Splits `text` into lines of at most `width` columns (a longer word gets a line of its own). */
export const wrap = (text: string, width: number): Array<string> => {
  const lines: Array<string> = []
  let line = ""
  for (const word of text.split(/\s+/).filter((w) => w !== "")) {
    if (line === "") line = word
    else if (line.length + 1 + word.length <= width) line += ` ${word}`
    else {
      lines.push(line)
      line = word
    }
  }
  if (line !== "") lines.push(line)
  return lines
}

/** A span's plain text (its styles dropped). */
export const spanText = (span: Span): string => {
  switch (span._tag) {
    case "Text":
    case "URI":
      return span.value
    case "Sequence":
      return spanText(span.left) + spanText(span.right)
    case "Highlight":
    case "Strong":
    case "Weak":
      return spanText(span.value)
  }
}

/** A help document as blocks: paragraphs, and headings (our examples are a heading then `$ command` / `what` pairs). */
type Block = { readonly _tag: "Paragraph"; readonly text: string } | { readonly _tag: "Heading"; readonly text: string }

const blocksOf = (doc: HelpDoc.HelpDoc): Array<Block> => {
  switch (doc._tag) {
    case "Empty":
      return []
    case "Header":
      return [{ _tag: "Heading", text: spanText(doc.value) }]
    case "Paragraph":
      return [{ _tag: "Paragraph", text: spanText(doc.value) }]
    case "DescriptionList":
      return doc.definitions.flatMap(([term, body]) => [{ _tag: "Paragraph" as const, text: spanText(term) }, ...blocksOf(body)])
    case "Enumeration":
      return doc.elements.flatMap(blocksOf)
    case "Sequence":
      return [...blocksOf(doc.left), ...blocksOf(doc.right)]
  }
}

/** The plain text of a document, its paragraphs joined. */
const plainText = (doc: HelpDoc.HelpDoc): string => blocksOf(doc).map((b) => b.text).join(" ")

/** One option as the help lists it. */
interface OptionRow {
  readonly flags: string
  readonly description: string
}

interface Node {
  readonly _tag: string
  readonly [key: string]: unknown
}

const isNode = (value: unknown): value is Node =>
  typeof value === "object" && value !== null && typeof (value as { _tag?: unknown })._tag === "string"

const optionValue = <A>(option: unknown): A | undefined =>
  isNode(option) && option._tag === "Some" ? (option as unknown as { readonly value: A }).value : undefined

/**
 * The options of an `@effect/cli` options tree, in order: every `Single` (a flag), found through the combinators
 * around it (`Map`, `WithDefault`, `Both`, `OrElse`, `Variadic` for a repeatable one, ...).
 */
const optionRows = (tree: unknown, repeated = false): Array<OptionRow> => {
  if (!isNode(tree)) return []
  if (tree._tag === "Single") {
    const name = String(tree["name"])
    const aliases = Array.isArray(tree["aliases"]) ? (tree["aliases"] as Array<string>) : []
    const primitive = tree["primitiveType"]
    const isBool = isNode(primitive) && primitive._tag === "Bool"
    const pseudo = optionValue<string>(tree["pseudoName"])
    const names = [...aliases.map((a) => (a.length === 1 ? `-${a}` : `--${a}`)), `--${name}`].join(", ")
    const description = isNode(tree["description"]) ? plainText(tree["description"] as unknown as HelpDoc.HelpDoc) : ""
    return [{
      // A placeholder in capitals (DURATION); a list of the values it takes as they are typed (none|core|all).
      flags: isBool ? names : `${names} ${pseudo === undefined ? "VALUE" : pseudo.includes("|") ? pseudo : pseudo.toUpperCase()}`,
      description: repeated && !/repeatable/i.test(description) ? `${description} Repeatable.` : description
    }]
  }
  if (tree._tag === "Variadic") return optionRows(tree["argumentOption"], true)
  return ["options", "left", "right"].flatMap((key) => optionRows(tree[key], repeated))
}

/** The positional arguments of an args tree: their names, and whether each repeats. */
const argNames = (tree: unknown, repeated = false): Array<string> => {
  if (!isNode(tree)) return []
  if (tree._tag === "Single") {
    const name = optionValue<string>(tree["pseudoName"]) ?? String(tree["name"] ?? "ARG")
    return [repeated ? `${name.replace(/^<|>$/g, "").toUpperCase()}...` : name.replace(/^<|>$/g, "").toUpperCase()]
  }
  if (tree._tag === "Variadic") return argNames(tree["args"], true)
  return ["args", "left", "right"].flatMap((key) => argNames(tree[key], repeated))
}

interface Standard {
  readonly name: string
  readonly description: HelpDoc.HelpDoc
  readonly options: unknown
  readonly args: unknown
}

/** A command of the tree: its own part, and its subcommands (none for a leaf). */
interface Found {
  readonly command: Standard
  readonly children: ReadonlyArray<Found>
}

const found = (descriptor: unknown): Found | undefined => {
  if (!isNode(descriptor)) return undefined
  switch (descriptor._tag) {
    case "Standard":
    case "GetUserInput":
      return { command: descriptor as unknown as Standard, children: [] }
    case "Map":
      return found(descriptor["command"])
    case "Subcommands": {
      const parent = found(descriptor["parent"])
      const children = Array.isArray(descriptor["children"]) ? descriptor["children"].map(found) : []
      return parent === undefined ? undefined : { command: parent.command, children: children.filter((c): c is Found => c !== undefined) }
    }
    default:
      return undefined
  }
}

/** The command at `path` under `root` (`["fleet", "init"]`), or undefined when there is none. */
export const commandAt = (root: Command.Command<any, any, any, any>, path: ReadonlyArray<string>): Found | undefined => {
  let at = found((root as unknown as { readonly descriptor: unknown }).descriptor)
  for (const name of path) at = at?.children.find((child) => child.command.name === name)
  return at
}

const indent = (lines: ReadonlyArray<string>, by: number) => lines.map((line) => " ".repeat(by) + line)

/**
 * Renders the help of the command at `path` (its names from the root: `["native-runner", "fleet", "init"]`).
 * `summaries` gives a subcommand's one line in a list of commands, by its path (`"fleet init"`); otherwise its
 * description's first sentence.
 */
export const renderHelp = (
  at: Found,
  path: ReadonlyArray<string>,
  version: string,
  summaries: Readonly<Record<string, string>> = {}
): string => {
  const out: Array<string> = []
  const args = argNames(at.command.args)
  const command = args.length > 0 && args.every((a) => a.endsWith("...")) && path[path.length - 1] === "run"
    ? ["--", "COMMAND", "[ARG]..."]
    : args
  const rows = optionRows(at.command.options)
  const usage = at.children.length > 0
    ? [...path, "COMMAND", "[OPTION]..."]
    : [...path, ...(rows.length > 0 ? ["[OPTION]..."] : []), ...command]
  out.push(...wrap(`Usage: ${usage.join(" ")}`, WIDTH))
  const blocks = blocksOf(at.command.description)
  const exampleAt = blocks.findIndex((b) => b._tag === "Heading" && /example/i.test(b.text))
  const about = exampleAt < 0 ? blocks : blocks.slice(0, exampleAt)
  const examples = exampleAt < 0 ? [] : blocks.slice(exampleAt + 1)
  for (const [i, block] of about.entries()) {
    if (i > 0) out.push("")
    out.push(...wrap(block.text, WIDTH))
  }
  if (at.children.length > 0) {
    out.push("", "Commands:")
    for (const child of at.children) {
      const first = blocksOf(child.command.description)[0]?.text ?? ""
      const summary = summaries[[...path.slice(1), child.command.name].join(" ")] ?? /^(.*?\.)(\s|$)/.exec(first)?.[1] ?? first
      out.push(...optionLine(child.command.name, summary))
    }
    out.push("", `Run '${path.join(" ")} COMMAND --help' for a command's options.`)
  }
  out.push("", "Options:")
  for (const row of rows) out.push(...optionLine(row.flags, row.description))
  out.push(...optionLine("-h, --help", "Prints this help and exits."))
  if (path.length === 1) out.push(...optionLine("--version", `Prints the version (${version}) and exits.`))
  if (examples.length > 0) {
    out.push("", "Examples:")
    for (const block of examples) {
      const text = block.text.trim()
      if (text.startsWith("$ ")) out.push(...indent(commandLines(text.slice(2)), 2))
      else out.push(...indent(wrap(text, WIDTH - 6), 6))
    }
  }
  return out.join("\n") + "\n"
}

/** `flags` in the left column, `description` wrapped in the right one (on the next line when `flags` is long). */
const optionLine = (flags: string, description: string): Array<string> => {
  const left = `  ${flags}`
  const lines = wrap(description, WIDTH - DESCRIPTION_COLUMN)
  if (left.length + 2 > DESCRIPTION_COLUMN) return [left, ...indent(lines, DESCRIPTION_COLUMN)]
  const [first, ...rest] = lines
  return [left.padEnd(DESCRIPTION_COLUMN) + (first ?? ""), ...indent(rest, DESCRIPTION_COLUMN)]
}

/** A long example command as shell lines continued with a backslash, broken before its options. */
const commandLines = (command: string): Array<string> => {
  if (command.length <= WIDTH - 2) return [command]
  const lines: Array<string> = []
  let line = ""
  for (const part of command.split(/ (?=--?[a-z])/)) {
    if (line !== "" && line.length + 1 + part.length > WIDTH - 6) {
      lines.push(`${line} \\`)
      line = `  ${part}`
    } else line = line === "" ? part : `${line} ${part}`
  }
  return [...lines, line]
}
