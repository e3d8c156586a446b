#!/usr/bin/env bash
# A multi-node Ray cluster on one machine: a head and N worker nodes, each a separate raylet with
# its own object store and workers. For trying the cluster code path and docs/operators.md:
#   cluster/local_cluster.sh start 2     then   export RAY_ADDRESS=127.0.0.1:6380
#   cluster/local_cluster.sh stop
# Everything binds 127.0.0.1; the dashboard (and `serve deploy`, which talks to it) is at
# http://127.0.0.1:8265, Prometheus metrics of every node at 127.0.0.1:8080/metrics.
set -euo pipefail
cmd=${1:-start}; workers=${2:-2}
export RAY_USAGE_STATS_ENABLED=0
case "$cmd" in
  start)
    ray start --head --node-ip-address=127.0.0.1 --port=6380 --num-cpus=2 \
      --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port=8265 \
      --metrics-export-port=8080 --disable-usage-stats
    for i in $(seq 1 "$workers"); do
      ray start --address=127.0.0.1:6380 --node-ip-address=127.0.0.1 --num-cpus=2 \
        --resources="{\"worker_$i\": 1}" --metrics-export-port=$((8080 + i)) --disable-usage-stats
    done
    echo "cluster up: export RAY_ADDRESS=127.0.0.1:6380 (dashboard http://127.0.0.1:8265)";;
  stop) ray stop --force;;
  *) echo "usage: $0 start [workers] | stop" >&2; exit 2;;
esac
