/**
 * The child's environment (`buildEnv`): what is inherited from the host in each mode, what never is (secret-looking
 * names, URLs with credentials), and that explicit variables are never filtered.
 */
import { describe, expect, it } from "@effect/vitest"
import { buildEnv, CORE_ENV_NAMES, holdsUrlCredentials, type InheritEnv, looksSecret } from "../../src/internal/env.js"

const secretNames = [
  // before: KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|AUTH|COOKIE|SESSION
  "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "MYSQL_PASSWORD", "SMB_PASSWD", "GOOGLE_CREDENTIALS",
  "AUTH_HEADER", "COOKIE_JAR", "SESSION_ID",
  // added
  "DB_PASS", "PGPASSWORD", "PGPASSFILE", "GPG_PASSPHRASE", "MY_JWT", "SENTRY_DSN", "GPG_PRIVATE", "X_PWD", "DB_PWD",
  "lower_case_jwt"
]
const harmlessNames = ["PWD", "OLDPWD", "PATH", "HOME", "LANG", "TERM", "SHELL", "EDITOR", "NODE_ENV"]

const credentialUrls = [
  "postgres://app:pw@db/app",
  "http://u:p@proxy:3128",
  "https://user:@example.com/x",
  "mysql://root:p%40ss@127.0.0.1:3306/db",
  "https://ghp_0123456789@github.com/org/repo.git",
  "https://0123456789abcdef@o0.ingest.sentry.io/1",
  "see redis://:secret@cache:6379/0 for the cache"
]
const plainValues = [
  "https://example.com/x",
  "http://proxy:3128",
  "https://example.com/a@b",
  "https://example.com/?q=user:pass@host",
  "me@example.com",
  "user:pass@host",
  "/usr/local/bin:/usr/bin:/bin"
]

describe("looksSecret", () => {
  it.each(secretNames)("%s is secret", (name) => {
    expect(looksSecret(name)).toBe(true)
  })

  it.each(harmlessNames)("%s is not", (name) => {
    expect(looksSecret(name)).toBe(false)
  })
})

describe("holdsUrlCredentials", () => {
  it.each(credentialUrls)("%s holds credentials", (value) => {
    expect(holdsUrlCredentials(value)).toBe(true)
  })

  it.each(plainValues)("%s does not", (value) => {
    expect(holdsUrlCredentials(value)).toBe(false)
  })
})

describe("buildEnv", () => {
  const host: Record<string, string> = {
    PATH: "/usr/bin:/bin",
    HOME: "/home/me",
    PWD: "/home/me/project",
    OLDPWD: "/home/me",
    EDITOR: "vi",
    DB_PASS: "hunter2",
    PGPASSWORD: "hunter2",
    MY_JWT: "eyJhbGciOi",
    SENTRY_DSN: "https://key@o0.ingest.sentry.io/1",
    GPG_PRIVATE: "-----BEGIN PGP PRIVATE KEY BLOCK-----",
    X_PWD: "hunter2",
    DATABASE_URL: "postgres://app:pw@db/app",
    http_proxy: "http://u:p@proxy:3128",
    HOMEPAGE: "https://example.com/x"
  }

  it("'all' keeps harmless variables and drops secret names and credential URLs", () => {
    expect(buildEnv("all", host)).toStrictEqual({
      PATH: "/usr/bin:/bin",
      HOME: "/home/me",
      PWD: "/home/me/project",
      OLDPWD: "/home/me",
      EDITOR: "vi",
      HOMEPAGE: "https://example.com/x"
    })
  })

  it("'core' inherits only the core names, and filters them the same way", () => {
    const core = { PATH: "/usr/bin", HOME: "/home/me", EDITOR: "vi", LANG: "C.UTF-8" }
    expect(buildEnv("core", core)).toStrictEqual({ PATH: "/usr/bin", HOME: "/home/me", LANG: "C.UTF-8" })
    // A core variable whose value is a URL with credentials is dropped too.
    expect(buildEnv("core", { PATH: "/usr/bin", HOME: "https://u:p@example.com/" })).toStrictEqual({ PATH: "/usr/bin" })
    expect(CORE_ENV_NAMES.every((name) => !looksSecret(name))).toBe(true)
  })

  it.each(["none", "core", "all"] as const)("explicit variables are never filtered (inherit %s)", (mode: InheritEnv) => {
    const explicit = { DATABASE_URL: "postgres://app:pw@db/app", DB_PASS: "hunter2", MY_JWT: "eyJ" }
    expect(buildEnv(mode, host, { PGPASSWORD: "layer" }, explicit)).toMatchObject({ ...explicit, PGPASSWORD: "layer" })
  })

  it("explicit layers win in order: later over earlier over inherited", () => {
    expect(buildEnv("all", { EDITOR: "vi" }, { EDITOR: "nano", A: "1" }, { A: "2" })).toStrictEqual({
      EDITOR: "nano",
      A: "2"
    })
  })

  it("'none' inherits nothing", () => {
    expect(buildEnv("none", host)).toStrictEqual({})
  })
})
