/** Small statistics helpers for the benchmarks: order statistics over samples, formatting. */

/** The q-quantile (0..1) of `samples` by nearest rank; NaN for no samples. */
export const quantile = (samples: ReadonlyArray<number>, q: number): number => {
  if (samples.length === 0) return Number.NaN
  const sorted = [...samples].sort((a, b) => a - b)
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return sorted[rank] ?? Number.NaN
}

export const median = (samples: ReadonlyArray<number>): number => quantile(samples, 0.5)

export const sum = (samples: ReadonlyArray<number>): number => samples.reduce((a, b) => a + b, 0)

/** Fixed-precision number for tables; "-" when not finite. */
export const fmt = (n: number | undefined, digits = 2): string =>
  n === undefined || !Number.isFinite(n) ? "-" : n.toFixed(digits)

export const MiB = 1024 * 1024
export const GiB = 1024 * MiB

/** Renders rows as an aligned text table. */
export const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join("  ").trimEnd()
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n")
}
