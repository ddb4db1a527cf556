/**
 * Interleaving harness: contenders take turns in small batches, with the order rotated every round, so that
 * machine noise (other jobs, GC, thermal) lands on all of them alike instead of on whoever ran last.
 */

/** `BENCH_SCALE` (default 1) scales iteration counts; never below `min`. */
export const scale = (): number => {
  const value = Number(process.env["BENCH_SCALE"] ?? "1")
  return Number.isFinite(value) && value > 0 ? value : 1
}

export const scaled = (n: number, min = 1): number => Math.max(min, Math.round(n * scale()))

/** Runs `fn` `count` times with at most `inFlight` running at once. */
export const pool = async (count: number, inFlight: number, fn: (i: number) => Promise<unknown>): Promise<void> => {
  let next = 0
  const worker = async () => {
    while (next < count) {
      const i = next++
      await fn(i)
    }
  }
  await Promise.all(Array.from({ length: Math.min(inFlight, count) }, worker))
}

/**
 * Round-robin: in each round every item (a contender, or a contender's name; order rotated) runs `batch(item)` once;
 * returns each item's list of batch results, in the order of `items`.
 */
export const roundRobin = async <T, A>(
  items: ReadonlyArray<T>,
  rounds: number,
  batch: (item: T, round: number) => Promise<A>
): Promise<Array<Array<A>>> => {
  const results = items.map((): Array<A> => [])
  for (let round = 0; round < rounds; round++) {
    for (let k = 0; k < items.length; k++) {
      const index = (k + round) % items.length
      const item = items[index]
      if (item === undefined) continue
      results[index]?.push(await batch(item, round))
    }
  }
  return results
}

/** Milliseconds elapsed while `fn` runs. */
export const timed = async (fn: () => Promise<unknown>): Promise<number> => {
  const start = performance.now()
  await fn()
  return performance.now() - start
}
