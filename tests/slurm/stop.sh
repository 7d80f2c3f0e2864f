#!/usr/bin/env bash
# Stops what tests/slurm/start.sh STATE_DIR started, by the pids it recorded (never by name).
state="${1:?usage: stop.sh STATE_DIR}"
for name in slurmd slurmctld munged; do
  f="$state/$name.pid"
  [[ -s "$f" ]] || continue
  pid="$(cat "$f")"
  kill "$pid" 2>/dev/null || continue
  for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
done
exit 0
