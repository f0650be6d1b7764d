#!/usr/bin/env bash
# Block-size sweep of the forward (one thread): NODE=node bash bench/sweep.sh [extra node flags]
NODE=${NODE:-node}
for rb in "32 64" "64 64" "64 128" "128 64" "96 96" "128 128"; do
  set -- $rb
  echo "br=$1 bc=$2 $($NODE $FLAGS bench/bench.mjs --reps 3 --br $1 --bc $2)"
done
