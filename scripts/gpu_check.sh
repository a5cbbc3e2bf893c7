#!/usr/bin/env bash
# One command for a CUDA machine: build Caffe with CUDA, query the device, time the deploy twin and training on the
# GPU, run the GPU tests, and write the figures as a table.
#
#   scripts/gpu_check.sh [DEPS=build/gpu-deps] [OUT=${OUT:-runs/gpu_check}]
#
# The machine needs CUDA (nvcc), a Python with numpy, scipy, opencv, h5py, onnx, tqdm and pytest (PyTorch for the
# torch rows), protobuf 3.21 (protoc and headers), serial HDF5 and OpenBLAS libraries. Everything else comes from
# DEPS, made on a Debian 12 machine with network by scripts/fetch_gpu_deps.sh: Debian .deb files (unpacked into a
# prefix, not installed), the Boost.Python sources (built here for this Python, so that pycaffe can be built), a
# PyWavelets wheel and the Caffe sdist. Nothing is downloaded. Steps that cannot run are reported and skipped; the
# exit status is that of the GPU tests. GPU_CHECK_CUDA=0 builds the CPU variant instead (a dry run of every other
# step on a machine without CUDA); GPU_CHECK_PY: an interpreter that has the packages (no venv is made).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEPS=$(cd "${1:-$ROOT/build/gpu-deps}" 2>/dev/null && pwd) || { echo "gpu_check: no DEPS folder ${1:-build/gpu-deps} (scripts/fetch_gpu_deps.sh)" >&2; exit 2; }
OUT=${2:-${OUT:-$ROOT/runs/gpu_check}}
PY=${GPU_CHECK_PY:-${PYTHON:-python3}}
PREFIX=$ROOT/build/gpu-prefix
VENV=$ROOT/build/gpu-venv
TRIPLET=$(gcc -dumpmachine)
T0=$(date +%s)
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
say() { echo "[gpu_check $(( $(date +%s) - T0 ))s] $*"; }

say "machine: $(nproc) cores; $("$PY" --version 2>&1); $(nvcc --version 2>/dev/null | tail -1)"
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt" \
  || say "nvidia-smi failed: no GPU visible"
CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader -i 0 2>/dev/null | head -1 | tr -d '. ')
CUDA_ARCH=${CUDA_ARCH:-${CAP:-90}}

# 1. the .deb files, unpacked into a prefix ------------------------------------------------------------------------
mkdir -p "$PREFIX"
for d in "$DEPS"/debs/*.deb; do dpkg-deb -x "$d" "$PREFIX"; done
for t in "$DEPS"/debs/*.tar.gz; do tar xzf "$t" -C "$PREFIX"; done
# the -dev packages' .so links are absolute (/usr/lib/...): point them into the prefix
for l in "$PREFIX/usr/lib/$TRIPLET"/*.so; do
  t=$(readlink "$l" || true)
  case "$t" in /*) ln -sf "$PREFIX$t" "$l" ;; esac
done
say "unpacked $(ls "$DEPS"/debs/*.deb | wc -l) .deb files into $PREFIX"

# 2. Boost.Python for this Python (pycaffe needs it; Debian 12 has it for Python 3.11 only) -----------------------
PYVER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
PYINC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
BP=$PREFIX/usr/lib/$TRIPLET/libboost_python$PYVER.so
PYCAFFE=1
if [ ! -f "$PYINC/Python.h" ]; then
  PYCAFFE=0; say "no Python.h in $PYINC: no pycaffe; Caffe is timed through its caffe tool"
elif [ ! -f "$BP" ]; then
  mkdir -p "$ROOT/build/boost-python"
  find "$DEPS/boost-python/src" -name '*.cpp' -not -path '*/numpy/*' | xargs -P "$(nproc)" -I{} sh -c \
    'o='"$ROOT"'/build/boost-python/$(echo {} | md5sum | cut -c1-8).o; g++ -O2 -fPIC -std=c++14 -w -DBOOST_BIND_GLOBAL_PLACEHOLDERS \
       -DBOOST_PYTHON_SOURCE -DBOOST_PYTHON_DYNAMIC_LIB -I'"$DEPS"'/boost-python/include \
       -I'"$PREFIX"'/usr/include -I'"$PYINC"' -c {} -o $o' \
    && g++ -shared -o "$BP" "$ROOT"/build/boost-python/*.o -Wl,-soname,libboost_python$PYVER.so \
    && say "built $BP" || { PYCAFFE=0; say "Boost.Python did not build: no pycaffe"; }
fi

# 3. Caffe with CUDA (the same script and patches as the CPU build) --------------------------------------------------
# a venv that sees the machine's packages (torch, numpy, ...); GPU_CHECK_PY: an interpreter that has them all
if [ -n "${GPU_CHECK_PY:-}" ]; then VPY=$GPU_CHECK_PY
else "$PY" -m venv --system-site-packages "$VENV" && VPY=$VENV/bin/python || VPY=$PY; fi
for w in "$DEPS"/wheels/*.whl; do
  mod=$(basename "$w" | cut -d- -f1 | tr 'A-Z' 'a-z'); mod=${mod/pywavelets/pywt}; mod=${mod/protobuf/google.protobuf}
  "$VPY" -c "import $mod" 2>/dev/null || "$VPY" -m pip install -q --no-index --no-deps "$w"
done
if ! "$VPY" -m pip install -q --no-deps --no-build-isolation -e "$ROOT" -e "$ROOT/lab"; then
  say "pip install -e . -e lab failed: pyfusion and fusionlab from PYTHONPATH, the C kernels built in place"
  (cd "$ROOT" && "$VPY" setup.py -q build_ext --inplace) || say "no winograd C kernels (the tests use onnx)"
  export PYTHONPATH=$ROOT:$ROOT/lab${PYTHONPATH:+:$PYTHONPATH}
fi
CUDA=${GPU_CHECK_CUDA:-1}
BUILD=$ROOT/build/caffe$([ "$CUDA" = 1 ] && echo -cuda)
CAFFE_SDIST=$(ls "$DEPS"/brocolli-caffe-*.tar.gz | head -1) DEPS_PREFIX=$PREFIX CUDA_ARCH=$CUDA_ARCH PYCAFFE=$PYCAFFE \
  JOBS=$(nproc) bash "$ROOT/scripts/build_caffe.sh" "$VPY" "$CUDA" && say "Caffe built (CUDA=$CUDA, arch $CUDA_ARCH)" \
  || { tail -30 "$BUILD/make.log"; say "Caffe build failed (CUDA=$CUDA)"; }
TOOL=$BUILD/src/build/tools/caffe
if [ -x "$TOOL" ]; then
  "$TOOL" device_query -gpu 0 > "$OUT/device_query.txt" 2>&1; say "caffe device_query: exit $? ($OUT/device_query.txt)"
fi

# 4. figures, GPU tests --------------------------------------------------------------------------------------------
export GLOG_minloglevel=2
"$VPY" -m fusionlab gpu-check --out "$OUT" --gpu 0 --caffe-tool "$TOOL" --doc "$OUT/benchmarks_gpu.md" \
  || say "fusionlab gpu-check failed"
# with CUDA the GPU tests must run: PYFUSION_REQUIRE_GPU=1 turns their skips (no CUDA pycaffe, no device) into failures
(cd "$ROOT" && PYFUSION_REQUIRE_GPU=$CUDA "$VPY" -m pytest -q -m gpu -rs -p no:cacheprovider tests) | tee "$OUT/pytest_gpu.txt"
rc=${PIPESTATUS[0]}
say "done: GPU tests exit $rc; figures in $OUT"
exit "$rc"
