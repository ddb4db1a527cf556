/** `native-runner worker`: its command and help; the work is in ./fleet.ts, loaded only when a worker starts. */
import * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Effect from "effect/Effect"
import { examples } from "./options.js"
import { workerConfig, workerRunConfig } from "./workerOptions.js"

/** `native-runner worker --database-url URL --listen HOST:PORT --fleet-dir DIR [options]` */
export const workerCommand = Command.make("worker", { ...workerConfig, ...workerRunConfig }, (config) =>
  Effect.flatMap(Effect.promise(() => import("./fleet.js")), (fleet) => fleet.runWorker(config))).pipe(
    Command.withDescription(HelpDoc.blocks([
      HelpDoc.p(
        "Joins the fleet whose PostgreSQL is at --database-url-file, --database-url or NATIVE_RUNNER_DATABASE_URL, speaking to its " +
          "members only over mutually authenticated TLS with the certificates in --fleet-dir, and runs the " +
          "commands routed to it with its own local runner: the sandbox and limit options here are its policy, and its " +
          "commands are sandboxed unless --sandbox none --allow-unsandboxed says otherwise. " +
          "Runs until SIGTERM or SIGINT: then it stops taking work, lets runs in flight finish within --grace, " +
          "and kills what is left. Its commands die with it, even on SIGKILL."
      ),
      examples([
        [
          "native-runner worker --database-url-file /etc/native-runner/db.url --listen 127.0.0.1:34431 --fleet-dir /etc/native-runner/fleet --workspace /srv/jobs/w1",
          "a worker, its commands sandboxed in /srv/jobs/w1 ('workspace new'); the password in a 0600 file"
        ],
        [
          "native-runner worker --listen 0.0.0.0:34431 --fleet-dir /etc/native-runner/fleet --workspace /srv/jobs/w1 --health 127.0.0.1:9464 --concurrency 8",
          "8 runs at a time; GET /health and /metrics on 9464"
        ]
      ])
    ]))
  )

