#!/usr/bin/env bash
# A multi-node Ray cluster on one machine (head + N workers with fractional CPUs), for tests
# of the cluster code path: `cluster/local_cluster.sh start 2`, then RAY_ADDRESS=auto wbc-ray ...
set -euo pipefail
cmd=${1:-start}; workers=${2:-2}
case "$cmd" in
  start)
    ray start --head --num-cpus=1 --port=6380 --include-dashboard=false --disable-usage-stats
    for i in $(seq 1 "$workers"); do
      ray start --address=127.0.0.1:6380 --num-cpus=1 --resources="{\"worker_$i\": 1}"
    done
    echo "cluster up: export RAY_ADDRESS=127.0.0.1:6380";;
  stop) ray stop --force;;
  *) echo "usage: $0 start [workers] | stop" >&2; exit 2;;
esac
