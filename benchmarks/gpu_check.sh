#!/usr/bin/env bash
# Check a commit on a CUDA machine in one go and keep what it measured in one JSON file. Parts, in order:
#
#   tests  the gpu-marked tests (tests/test_gpu.py): both families trained, analysed and fine-tuned; a killed run
#          resumed against an uninterrupted one; the smoke study; vmap against loop, eager and compiled; compiled
#          against eager; one checkpoint on the CPU and on the GPU; sync-debug mode; the recompile guard.
#          Estimate on one H100: ~3.5 min (about twelve graphs compiled at 10-20 s each, the rest smoke-sized
#          training, evaluation and three CLI processes).
#   bench  the speed table (benchmarks/bench_gpu.py), with the authors' TRM beside ours when
#          $GROKSCOPE_AUTHORS_DIR names their TRM_model folder.
#          Estimate on one H100: ~2.5 min (the paper trm compiled twice, ours and theirs, ~45 s each; the eager
#          rows, HF GPT-2, the micro trainer and 16 stacked runs, one graph each, about a minute together).
#
# Total about 6 minutes by estimate: no GPU has run it yet. Nothing is installed: the machine's torch is used, and
# this checkout's src/ is put on PYTHONPATH unless the importable grokscope is this checkout's.
#
#   bash benchmarks/gpu_check.sh [tests] [bench]         # the parts to run (default: both; or GPU_CHECK_PARTS)
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 bash benchmarks/gpu_check.sh   # a dry run on a CPU (a few minutes)
#
# Environment: GPU_CHECK_PARTS (tests,bench), GPU_CHECK_DEVICE (cuda | cpu), GPU_CHECK_QUICK (1: small sizes),
# GPU_CHECK_OUT (the folder of gpu_check.json; default the repository root), GROKSCOPE_AUTHORS_DIR (the authors'
# TRM_model folder, passed as --authors-dir), PYTHON (the interpreter; default python3).
# Every part runs even when an earlier one failed (a GPU session is short: keep what can be measured); the exit
# status is the first failure's.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
OUT_DIR=${GPU_CHECK_OUT:-.}
PARTS=$(echo "${*:-${GPU_CHECK_PARTS:-tests,bench}}" | tr ', ' '\n\n' | grep -v '^$' || true)
QUICK=()
if [[ -n "${GPU_CHECK_QUICK:-}" && "${GPU_CHECK_QUICK}" != 0 ]]; then QUICK=(--quick); fi
AUTHORS=()
if [[ -n "${GROKSCOPE_AUTHORS_DIR:-}" ]]; then AUTHORS=(--authors-dir "$GROKSCOPE_AUTHORS_DIR"); fi

fail() { echo "gpu_check: $*" >&2; exit 2; }
for part in $PARTS; do [[ $part == tests || $part == bench ]] || fail "unknown part '$part'; choose tests, bench"; done
[[ $DEVICE == cuda || $DEVICE == cpu ]] || fail "GPU_CHECK_DEVICE=$DEVICE; choose cuda or cpu"

# This checkout's grokscope, never another installed copy.
if ! $PY -c "import grokscope, pathlib, sys
sys.exit(0 if pathlib.Path(grokscope.__file__).resolve().is_relative_to(pathlib.Path('src').resolve()) else 1)" \
        2>/dev/null; then
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
$PY -c "import torch, grokscope" 2>/dev/null || fail "$PY cannot import torch and grokscope (src/ is on PYTHONPATH)"
if [[ $DEVICE == cuda ]]; then
    $PY -c "import torch, sys; sys.exit(not torch.cuda.is_available())" ||
        fail "no CUDA device; for a dry run on the CPU: GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 bash $0"
fi
$PY -c "import grokscope, torch
print('device:', torch.cuda.get_device_name() if '$DEVICE' == 'cuda' else 'CPU', '| torch', torch.__version__,
      '| grokscope from', grokscope.__file__)"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
STATUS=0
declare -A SECONDS_OF EXIT_OF

run_part() {  # name, command...: runs it, prints and keeps its elapsed time and exit status
    local name=$1 start=$SECONDS code
    shift
    echo "[gpu_check] $name ..."
    "$@"
    code=$?
    SECONDS_OF[$name]=$((SECONDS - start))
    EXIT_OF[$name]=$code
    echo "[gpu_check] $name: ${SECONDS_OF[$name]} s (exit $code)"
    if [[ $code -ne 0 && $STATUS -eq 0 ]]; then STATUS=$code; fi
}

for part in $PARTS; do
    case $part in
        tests) run_part tests $PY -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider --device "$DEVICE" \
                   ${QUICK[@]+"${QUICK[@]}"} --junitxml "$WORK/tests.xml" ;;
        bench) run_part bench $PY benchmarks/bench_gpu.py --device "$DEVICE" ${QUICK[@]+"${QUICK[@]}"} \
                   ${AUTHORS[@]+"${AUTHORS[@]}"} --json "$WORK/bench.json" ;;
    esac
done

mkdir -p "$OUT_DIR"
parts_json=""
for part in $PARTS; do
    parts_json+="\"$part\": {\"seconds\": ${SECONDS_OF[$part]}, \"exit\": ${EXIT_OF[$part]}},"
done
$PY - "$WORK" "$OUT_DIR/gpu_check.json" "{${parts_json%,}}" "$DEVICE" "${#QUICK[@]}" <<'EOF'
"""One JSON for the whole check: each part's time and exit status, the tests' outcomes, the bench table."""
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

work, out, parts, device, quick = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4], \
    sys.argv[5] == "1"
record = {"device": torch.cuda.get_device_name() if device == "cuda" else "CPU", "torch": torch.__version__,
          "quick": quick, "parts": parts, "tests": None, "bench": None}
if (work / "tests.xml").exists():
    cases = ET.parse(work / "tests.xml").getroot().iter("testcase")
    outcome = {}
    for case in cases:
        kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        outcome.setdefault(kind, []).append(case.get("name"))
    record["tests"] = {kind: {"count": len(names), "names": names if kind != "passed" else None}
                       for kind, names in outcome.items()}
if (work / "bench.json").exists():
    record["bench"] = json.loads((work / "bench.json").read_text())
out.write_text(json.dumps(record, indent=1))
print(f"[gpu_check] {out}")
EOF
exit $STATUS
