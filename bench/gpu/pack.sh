#!/usr/bin/env bash
# bench/gpu/pack.sh — the bundle that bench/gpu/run.sh runs on a GPU machine without .NET (docs/gpu.md):
# LayerPrune.Bench published self-contained and trimmed (the .NET runtime inside, no libtorch: the machine's PyTorch
# provides it), packed as .gpu/layerprune-bench.tar.xz (git-ignored). Then it checks that the checkout plus the bundle
# fit in the 64 MiB the device tool carries, and dry-runs the bundle itself on the CPU (run.sh --dry-run with
# LP_BUNDLE), so the files that travel are the files that were tested.
#   bench/gpu/pack.sh [--no-dry-run]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DRY=1
case ${1:-} in
  "") ;;
  --no-dry-run) DRY=0 ;;
  -h|--help) sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "pack.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac
LIMIT=$((64 * 1024 * 1024))
BUNDLE=$ROOT/.gpu/layerprune-bench.tar.xz
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/layerprune-pack.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT

# Build from a copy of the sources: the checkout's obj/ folders stay restored for the CPU libtorch.
mkdir -p "$STAGE/src"
tar -C "$ROOT" -cf - --exclude=bin --exclude=obj src bench build Directory.Build.props Directory.Build.targets global.json nuget.config \
  samples/PROVENANCE.md |
  tar -C "$STAGE/src" -xf -
dotnet publish "$STAGE/src/bench/LayerPrune.Bench" -c Release --self-contained true -p:PublishTrimmed=true -p:TrimMode=partial \
  -p:LayerPruneLibTorch=system -p:EnableTrimAnalyzer=false -p:SuppressTrimAnalysisWarnings=true -p:DebugType=none \
  -p:GenerateDocumentationFile=false -o "$STAGE/out" > "$STAGE/publish.log" 2>&1 ||
  { grep -E ' error |rror\(s\)' "$STAGE/publish.log" | sort -u | tail -n 20 >&2; echo "pack.sh: dotnet publish failed" >&2; exit 1; }
# Not loaded by the GPU steps (8.8 MB of xz instead of 10.0 MB with them): the plots' native libraries, the samples the CLI
# project publishes (the checkout has them), and the runtime's optional parts: the debugger and dump support
# (mscordaccore, mscordbi, createdump), the standalone GCs used only when DOTNET_GCName names one, LTTng tracing.
rm -rf "$STAGE/out/samples"
rm -f "$STAGE/out"/*.pdb "$STAGE/out"/*.xml "$STAGE/out"/libSkiaSharp.so "$STAGE/out"/libHarfBuzzSharp.so
rm -f "$STAGE/out"/libmscordaccore.so "$STAGE/out"/libmscordbi.so "$STAGE/out"/createdump "$STAGE/out"/libclrgc.so \
  "$STAGE/out"/libclrgcexp.so "$STAGE/out"/libcoreclrtraceptprovider.so
[ -x "$STAGE/out/LayerPrune.Bench" ] || { echo "pack.sh: the publish has no LayerPrune.Bench executable" >&2; exit 1; }
mkdir -p "$ROOT/.gpu"
tar -C "$STAGE/out" -cf - . | xz -9e -T0 > "$BUNDLE.tmp"
mv "$BUNDLE.tmp" "$BUNDLE"

# What the device tool sends: tracked and untracked-not-ignored files, plus the carried bundle.
tree=$(cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 stat -c %s 2> /dev/null | awk '{ s += $1 } END { print s + 0 }')
bundle=$(stat -c %s "$BUNDLE")
total=$((tree + bundle))
echo "pack.sh: $BUNDLE: $((bundle / 1024)) KiB; checkout $((tree / 1024)) KiB; together $((total / 1024)) KiB of $((LIMIT / 1024)) KiB"
if [ "$total" -gt "$LIMIT" ]; then
  echo "pack.sh: the checkout and the bundle exceed the device tool's 64 MiB by $(((total - LIMIT) / 1024)) KiB" >&2
  exit 1
fi
[ $DRY = 1 ] || exit 0
# The bundle on the CPU: the CPU libtorch of the Release build output stands in for PyTorch's.
cpu_lib=$ROOT/bench/LayerPrune.Bench/bin/Release/net10.0/linux-x64
[ -f "$cpu_lib/libtorch_cpu.so" ] ||
  { echo "pack.sh: $cpu_lib/libtorch_cpu.so not found: dotnet build bench/LayerPrune.Bench -c Release" >&2; exit 2; }
LP_BUNDLE=$BUNDLE LD_LIBRARY_PATH=$cpu_lib "$ROOT/bench/gpu/run.sh" --dry-run --out "$STAGE/dry"
echo "pack.sh: the bundle passed the dry run; carry .gpu/layerprune-bench.tar.xz (docs/gpu.md)"
