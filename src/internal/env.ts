/** The child's environment: a small inherited core, never secrets, then explicit variables that always win. */

export type InheritEnv = "none" | "core" | "all"

/** Variables a command commonly needs to behave normally; inherited when present in "core" mode. */
export const CORE_ENV_NAMES: ReadonlyArray<string> = ["PATH", "HOME", "LANG", "TERM", "TZ", "TMPDIR", "USER", "SHELL"]

const SECRET_NAME = /KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|AUTH|COOKIE|SESSION/i

/** True when a variable's name looks like it holds a secret; such variables are never inherited. */
export const looksSecret = (name: string): boolean => SECRET_NAME.test(name)

/**
 * Builds the complete environment of the child. Inherited variables are filtered ("core": only `CORE_ENV_NAMES`,
 * "all": everything) and never include secret-looking names; `explicit` layers (layer env, then input env) win.
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
      if (value !== undefined && !looksSecret(name)) env[name] = value
    }
  }
  for (const layer of explicit) {
    if (layer !== undefined) Object.assign(env, layer)
  }
  return env
}
