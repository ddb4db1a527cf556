/**
 * `effect-native-runner/cluster`: the runner as a fleet (`NativeRunnerCluster`), served by worker machines through
 * `@effect/cluster` on PostgreSQL. A separate entry so that users of the local runner never load the cluster.
 */
export * as NativeRunnerCluster from "./NativeRunnerCluster.js"
