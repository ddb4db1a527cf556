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
import { problems } from "../helpers/prometheus.js"

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
