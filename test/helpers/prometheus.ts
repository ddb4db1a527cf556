/**
 * Checks Prometheus text exposition (format 0.0.4) the way a scraper takes it: each metric family once, its `# HELP`
 * and `# TYPE` before its samples and all its samples together; a histogram's `le="+Inf"` bucket equal to its
 * `_count`; no sample (name and labels) twice.
 */

/** The problems of `text` as exposition format; empty when a scraper would take it. */
export const problems = (text: string): Array<string> => {
  const found: Array<string> = []
  const typeOf = new Map<string, string>()
  const finished = new Set<string>()
  const seen = new Set<string>()
  let current: string | undefined
  const familyOf = (sample: string): string => {
    for (const suffix of ["_bucket", "_sum", "_count"]) {
      const base = sample.slice(0, -suffix.length)
      if (sample.endsWith(suffix) && typeOf.get(base) === "histogram") return base
    }
    return sample
  }
  const infOf = new Map<string, number>()
  const countOf = new Map<string, number>()
  for (const line of text.split("\n").filter((l) => l !== "")) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line)
    if (line.startsWith("# HELP ")) continue
    if (type !== null) {
      const [, name, kind] = type
      if (typeOf.has(name!)) found.push(`TYPE twice for ${name}`)
      typeOf.set(name!, kind!)
      if (current !== undefined) finished.add(current)
      current = name
      continue
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line)
    if (sample === null) {
      found.push(`not a sample: ${line}`)
      continue
    }
    const [, name, labelSet = "", value] = sample
    const family = familyOf(name!)
    if (family !== current) found.push(`${name}${labelSet} outside its family's block (${finished.has(family) ? "family seen before" : "no TYPE"})`)
    if (seen.has(`${name}${labelSet}`)) found.push(`sample twice: ${name}${labelSet}`)
    seen.add(`${name}${labelSet}`)
    if (name!.endsWith("_bucket") && labelSet.includes('le="+Inf"')) {
      const series = family + labelSet.replace(/,?le="\+Inf"/, "").replace("{}", "")
      infOf.set(series, Number(value))
    }
    if (name!.endsWith("_count") && family !== name) countOf.set(family + labelSet, Number(value))
  }
  for (const [series, count] of countOf) {
    const inf = infOf.get(series)
    if (inf !== count) found.push(`${series}: le="+Inf" ${inf} is not _count ${count}`)
  }
  return found
}

