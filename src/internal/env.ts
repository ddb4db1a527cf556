/** The child's environment: a small inherited core, never secrets, then explicit variables that always win. */

export type InheritEnv = "none" | "core" | "all"

/** Variables a command commonly needs to behave normally; inherited when present in "core" mode. */
export const CORE_ENV_NAMES: ReadonlyArray<string> = ["PATH", "HOME", "LANG", "TERM", "TZ", "TMPDIR", "USER", "SHELL"]

// PASS covers PASSWORD, PASSWD, PGPASS and PASSPHRASE; PWD catches DB_PWD-style names but not the shell's own
// working-directory variables, which are harmless and which some programs need.
const SECRET_NAME = /KEY|SECRET|TOKEN|PASS|PWD|CREDENTIAL|AUTH|COOKIE|SESSION|JWT|DSN|PRIVATE/i
const NOT_SECRET_NAMES: ReadonlySet<string> = new Set(["PWD", "OLDPWD"])

// A URL with userinfo: `scheme://user:password@host` (http_proxy, DATABASE_URL) and also `scheme://user@host`, since
// a lone user part is often the secret itself (a Sentry DSN's key, `https://<token>@github.com`).
const URL_WITH_USERINFO = /[a-z][a-z0-9+.-]*:\/\/[^/?#@\s]+@/i

/** True when a variable's name looks like it holds a secret; such variables are never inherited. */
export const looksSecret = (name: string): boolean => SECRET_NAME.test(name) && !NOT_SECRET_NAMES.has(name)

/** True when a variable's value holds a URL with credentials (`scheme://user[:password]@`); never inherited. */
export const holdsUrlCredentials = (value: string): boolean => URL_WITH_USERINFO.test(value)

/**
 * Builds the complete environment of the child. Inherited variables are filtered ("core": only `CORE_ENV_NAMES`,
 * "all": everything) and never include secret-looking names or values holding a URL with credentials; `explicit`
 * layers (layer env, then input env) are the caller's choice, never filtered, and win.
 */
export const buildEnv = (
  mode: InheritEnv,
  host: Readonly<Record<string, string | undefined>>,
  ...explicit: ReadonlyArray<Readonly<Record<string, string>> | undefined>
): Record<string, string> => {
  const env: Record<string, string> = {}
  if (mode !== "none") {
    const names = mode === "core" ? CORE_ENV_NAMES : Object.keys(host)
    for (const name of names) {
      const value = host[name]
      if (value !== undefined && !looksSecret(name) && !holdsUrlCredentials(value)) env[name] = value
    }
  }
  for (const layer of explicit) {
    if (layer !== undefined) Object.assign(env, layer)
  }
  return env
}
