import { configDefaults, defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    // Real-process tests are I/O bound; two cores, so keep the pool small and timeouts generous.
    pool: "forks",
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    testTimeout: 60_000,
    hookTimeout: 60_000,
    projects: [
      {
        extends: true,
        test: { name: "main", include: ["test/**/*.test.ts"], exclude: [...configDefaults.exclude, "test/upstream/**"] }
      },
      // Effect's own Command tests count every `sleep 30` on the machine (`ps aux | grep`): `npm test` runs them on
      // their own, after the rest, so no other test's sleeper is counted.
      { extends: true, test: { name: "upstream", include: ["test/upstream/**/*.test.ts"] } }
    ]
  }
})
