/**
 * `/metrics` is Prometheus text exposition (format 0.0.4) that a scraper accepts: each metric family once, its
 * `# HELP` and `# TYPE` before its samples and all its samples together; a histogram's buckets cumulative and ending
 * in exactly one `le="+Inf"` equal to `_count`; no sample (name and labels) twice. The check below is those rules.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import { prometheusText } from "../../src/cluster/health.js"

/** The problems of `text` as exposition format; empty when a scraper would take it. */
const problems = (text: string): Array<string> => {
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

describe("prometheusText", () => {
  it.effect("one block per family, one +Inf bucket per histogram series, no duplicate samples", () =>
    Effect.gen(function*() {
      const runs = Metric.counter("test_prom_runs_total", { description: "runs" })
      const latency = Metric.histogram("test_prom_latency_ms", MetricBoundaries.fromIterable([1, 10, 100]), "latency")
      const depth = Metric.gauge("test_prom_depth")
      // Pairs of one family interleaved with others, as a snapshot lists them.
      yield* Metric.increment(Metric.tagged(runs, "tenant", "a"))
      yield* Metric.update(Metric.tagged(latency, "tenant", "a"), 5)
      yield* Metric.set(Metric.tagged(depth, "tenant", "a"), 3)
      yield* Metric.increment(Metric.tagged(runs, "tenant", "b"))
      yield* Metric.update(Metric.tagged(latency, "tenant", "b"), 500)
      yield* Metric.update(latency, 50)
      const text = prometheusText(Metric.unsafeSnapshot().filter((p) => p.metricKey.name.startsWith("test_prom_")))
      expect(problems(text)).toEqual([])
      expect(text).toContain('test_prom_latency_ms_bucket{tenant="b",le="+Inf"} 1')
      expect(text).toContain('test_prom_latency_ms_bucket{tenant="b",le="100"} 0')
      expect(text).toContain('test_prom_runs_total{tenant="a"} 1')
      expect(text.match(/^# TYPE test_prom_runs_total counter$/gm)).toHaveLength(1)
    }))

  it("the check finds what a scraper refuses", () => {
    expect(problems("# TYPE a counter\na 1\n# TYPE b gauge\nb 2\na{x=\"1\"} 3\n")).toEqual(['a{x="1"} outside its family\'s block (family seen before)'])
    expect(problems("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n")).toEqual(['sample twice: h_bucket{le="+Inf"}'])
  })
})
