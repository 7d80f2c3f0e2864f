#!/usr/bin/env bash
# bench/gpu/run.sh — everything LayerPrune checks and measures on one GPU, in one command (issue 29; docs/gpu.md).
#
#   bench/gpu/run.sh [--out DIR] [--skip STEP,...]   on the GPU machine, after bench/gpu/pack.sh here (carry
#                                                    .gpu/layerprune-bench.tar.xz)
#   bench/gpu/run.sh --dry-run [--out DIR]           the same steps on the CPU: tiny shapes, fp32, one torch thread
#
# Steps (each a `LayerPrune.Bench gpu STEP` call, or a python3 script; a failed step does not stop the others):
#   parity          five golden architectures, fp32 logits within 1e-4 of HF, identical greedy ids
#   loss            kjv-llama-16l validation loss: bf16 within 0.01 of fp32, fp32 within 1e-3 of HF's 2.94131 (128 chunks)
#   cloze-requests  token ids of the first 20 kjv-cloze rows' choices for hf-cloze
#   hf-cloze        bench/gpu/hf_cloze_reference.py: HF fp32 with TF32 off, per-choice log-likelihoods (the new reference)
#   cloze           ours in fp32 against the shared (TF32) reference and against hf-cloze's (1e-3)
#   peer            bench/gpu/peer_hf_llama7b.py: HF + PEFT on the Llama-2-7B shape (bf16, SDPA)
#   race            LayerPrune on the same shape: forward, similarity pass, LoRA r 64 training (4 x 1024)
#   qlora           one NF4 + LoRA step on the Llama-2-70B shape (80 layers, hidden 8192, GQA 8)
#   stream          a similarity pass of the 70B shape streamed from the host one layer at a time
# Results: results.json, results.md, log.txt, peer.json and hf_cloze_tf32off.json in --out (default $OUT, else ./gpu-out).
# --budget S: seconds for the whole run (default 450 on the GPU: the device tool's timeout_s 480 leaves the report
# time); each step's limit is cut to what is left, and a step with under 20 s left is skipped, so results.json is
# always written. Exit code: 0 when every step that ran exited 0, 1 otherwise, 2 for usage errors.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
COMMAND="bench/gpu/run.sh${*:+ $*}"
DRY=0; OUTDIR=${OUT:-}; SKIP=","; BUDGET=""; START=$(date +%s)
usage() { sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY=1 ;;
    --out) [ $# -ge 2 ] || { echo "run.sh: --out needs a folder" >&2; exit 2; }; OUTDIR=$2; shift ;;
    --budget) [[ ${2:-} =~ ^[0-9]+$ ]] || { echo "run.sh: --budget needs whole seconds, got '${2:-}'" >&2; exit 2; }; BUDGET=$2; shift ;;
    --skip) [ $# -ge 2 ] || { echo "run.sh: --skip needs step names, e.g. parity,loss" >&2; exit 2; }; SKIP=",$2,"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$OUTDIR" ] || OUTDIR=$ROOT/gpu-out
mkdir -p "$OUTDIR" || { echo "run.sh: --out $OUTDIR: cannot create the folder" >&2; exit 2; }
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/layerprune-gpu.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
LOG=$OUTDIR/log.txt
: > "$LOG"
say() { echo "$*" | tee -a "$LOG"; }

# ---- how the .NET steps run ----
# LP_BENCH: a command to use as is; --dry-run without LP_BUNDLE: the Release build of bench/LayerPrune.Bench; else the
# bundle bench/gpu/pack.sh made (self-contained, trimmed, no libtorch), unpacked into the work folder.
BUNDLE=${LP_BUNDLE:-$ROOT/.gpu/layerprune-bench.tar.xz}
if [ -n "${LP_BENCH:-}" ]; then
  read -r -a BENCH <<< "$LP_BENCH"              # e.g. "dotnet /path/LayerPrune.Bench.dll" (the CI test sets it)
elif [ $DRY = 1 ] && [ -z "${LP_BUNDLE:-}" ]; then
  dll=$ROOT/bench/LayerPrune.Bench/bin/Release/net10.0/linux-x64/LayerPrune.Bench.dll
  [ -f "$dll" ] || { echo "run.sh: $dll not found: build it first (dotnet build bench/LayerPrune.Bench -c Release)" >&2; exit 2; }
  BENCH=(dotnet "$dll")
else
  [ -f "$BUNDLE" ] || { echo "run.sh: $BUNDLE not found: run bench/gpu/pack.sh here and carry .gpu/layerprune-bench.tar.xz" >&2; exit 2; }
  mkdir -p "$WORK/bench" && tar -xJf "$BUNDLE" -C "$WORK/bench" ||
    { echo "run.sh: $BUNDLE: cannot unpack it" >&2; exit 2; }
  BENCH=("$WORK/bench/LayerPrune.Bench")
fi
if [ $DRY = 0 ]; then
  # TorchSharp loads the machine's own libtorch (PyTorch's, with CUDA): ../shared/notes/gpu.md.
  TORCH_LIB=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') ||
    { echo "run.sh: python3 -c 'import torch' failed: the GPU run needs PyTorch's libtorch" >&2; exit 2; }
  export LD_LIBRARY_PATH=$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
export DOTNET_CLI_TELEMETRY_OPTOUT=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1   # that machine has no network

T=$ROOT/bench/gpu/tiny
if [ $DRY = 1 ]; then
  DEV=(--device cpu --dtype fp32 --threads 1)
  LOSS=(--chunks 4)
  CLOZE=(--rows 4)
  RACE=(--shape "$T/llama-7b-tiny.json" --batch 2 --seq-len 32 --train-batch 2 --train-seq-len 32 --repeats 1 --train-steps 2)
  QLORA=(--shape "$T/llama-70b-tiny.json" --batch 2 --seq-len 32 --train-steps 2)
  STREAM=(--shape "$T/llama-70b-tiny.json" --batch 2 --seq-len 32)
  PEER=(--tiny)
  LIMIT=120
  BUDGET=${BUDGET:-900}
else
  DEV=(--device cuda --dtype bf16)
  LOSS=(--chunks 128)
  CLOZE=(--rows 20)
  RACE=(--shape "$ROOT/bench/shapes/llama-2-7b.json")
  QLORA=(--shape "$ROOT/bench/shapes/llama-2-70b.json")
  STREAM=(--shape "$ROOT/bench/shapes/llama-2-70b.json")
  PEER=()
  LIMIT=300
  BUDGET=${BUDGET:-450}
fi
if command -v nvidia-smi > /dev/null; then
  GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)
else
  GPU="none: dry run on the CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores)"
fi
say "run.sh: $COMMAND; GPU: $GPU; work folder $WORK; results in $OUTDIR"

# step NAME SECONDS COMMAND...: runs the command under a time limit, logs it, records "exit-code seconds" and, where
# nvidia-smi exists, the peak GPU memory in use while it ran (MiB, CUDA context included).
step() {
  local name=$1 limit=$2; shift 2
  if [[ $SKIP == *",$name,"* ]]; then
    echo "--skip $name" > "$WORK/skipped-$name.txt"; say "== $name: skipped (--skip)"; return 0
  fi
  local left=$((BUDGET - ($(date +%s) - START)))
  if [ "$left" -lt 20 ]; then
    echo "no time left: the run's --budget of $BUDGET s is spent" > "$WORK/skipped-$name.txt"
    say "== $name: skipped (budget spent)"; return 0
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  say "== $name (limit $limit s): $*"
  local t0 poller="" rc
  t0=$(date +%s%N)
  if command -v nvidia-smi > /dev/null; then
    ( peak=0
      while :; do
        m=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 2> /dev/null | head -1)
        if [[ $m =~ ^[0-9]+$ ]] && [ "$m" -gt "$peak" ]; then peak=$m; echo "$peak" > "$WORK/mem-$name.txt"; fi
        sleep 0.2
      done ) &
    poller=$!
  fi
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  if [ -n "$poller" ]; then kill "$poller" 2> /dev/null; wait "$poller" 2> /dev/null; fi
  echo "$rc $(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')" > "$WORK/status-$name.txt"
  [ "$rc" = 124 ] && say "== $name: stopped after its $limit s limit"
  say "== $name: exit $rc"
}

# python3 with torch + transformers (+ peft for the peer's LoRA) runs the HF side; where it is missing, say why.
PY_SKIP=""
if ! command -v python3 > /dev/null; then
  PY_SKIP="no python3 on this machine"
else
  # Syntax first (no bytecode written into the checkout), so that a typo cannot waste GPU time.
  if ! PYTHONPYCACHEPREFIX=$WORK/pycache python3 -m py_compile "$ROOT/bench/gpu/peer_hf_llama7b.py" \
      "$ROOT/bench/gpu/hf_cloze_reference.py" 2>&1 | tee -a "$LOG"; then
    say "run.sh: a python script of bench/gpu does not compile"; exit 1
  fi
  say "python scripts compile: bench/gpu/peer_hf_llama7b.py, bench/gpu/hf_cloze_reference.py"
  if ! why=$(python3 -c 'import torch, transformers' 2>&1); then
    PY_SKIP="python3 $(python3 -c 'import sys; print(sys.version.split()[0])') cannot import torch + transformers: ${why##*$'\n'}"
  fi
fi
py_step() {   # py_step NAME SECONDS SCRIPT ARGS...
  if [ -n "$PY_SKIP" ]; then echo "$PY_SKIP" > "$WORK/skipped-$1.txt"; say "== $1: skipped: $PY_SKIP"; return 0; fi
  local name=$1 limit=$2; shift 2
  step "$name" "$limit" python3 "$@"
}

G=("${BENCH[@]}" gpu)
O=(--out "$WORK" --repo "$ROOT" --work "$WORK")
step parity "$LIMIT" "${G[@]}" parity "${O[@]}" "${DEV[@]}"
step loss "$LIMIT" "${G[@]}" loss "${O[@]}" "${DEV[@]}" "${LOSS[@]}"
step cloze-requests "$LIMIT" "${G[@]}" cloze-requests "${O[@]}" "${DEV[@]}" "${CLOZE[@]}"
py_step hf-cloze "$LIMIT" "$ROOT/bench/gpu/hf_cloze_reference.py" "$WORK/cloze_requests.json" "$ROOT/samples/kjv-llama-16l" \
  "$WORK/hf-cloze.json"
step cloze "$LIMIT" "${G[@]}" cloze "${O[@]}" "${DEV[@]}" "${CLOZE[@]}" --hf "$WORK/hf-cloze.json"
py_step peer "$LIMIT" "$ROOT/bench/gpu/peer_hf_llama7b.py" "$WORK/peer.json" "${PEER[@]}"
step race "$LIMIT" "${G[@]}" race "${O[@]}" "${DEV[@]}" "${RACE[@]}"
step qlora "$LIMIT" "${G[@]}" qlora "${O[@]}" "${DEV[@]}" "${QLORA[@]}"
step stream "$LIMIT" "${G[@]}" stream "${O[@]}" "${DEV[@]}" "${STREAM[@]}"

"${G[@]}" report --out "$OUTDIR" --dir "$WORK" --command "$COMMAND" --gpu "$GPU" 2>&1 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" = 0 ] || { say "run.sh: the report step failed"; exit 1; }
[ -f "$WORK/peer.json" ] && cp "$WORK/peer.json" "$OUTDIR/peer.json"
[ -f "$WORK/hf-cloze.json" ] && cp "$WORK/hf-cloze.json" "$OUTDIR/hf_cloze_tf32off.json"
failed=$(grep -L '^0 ' "$WORK"/status-*.txt 2> /dev/null | sed 's|.*/status-||; s|\.txt$||' | tr '\n' ' ')
say "run.sh: results in $OUTDIR/results.md and results.json${failed:+; FAILED: $failed}"
[ -z "$failed" ]
