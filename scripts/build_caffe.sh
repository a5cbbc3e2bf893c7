#!/usr/bin/env bash
# Build BVLC Caffe (library, tools, pycaffe) from the brocolli-caffe sdist on PyPI with Caffe's classic Makefile.
# The CPU and the CUDA build take the same path and differ only in the generated Makefile.config.
#
#   scripts/build_caffe.sh PYTHON [CUDA=0|1]
#
# PYTHON is the interpreter of the project's virtualenv (its numpy headers are compiled in). The CPU build lands in
# build/caffe/, the CUDA build in build/caffe-cuda/ (both ignored by git); a .pth file in the venv makes
# `import caffe` load the one built last. Idempotent: a finished build whose stamp (sdist sha256, patches, python,
# numpy, variant) matches is not rebuilt; an interrupted one resumes (make keeps its objects).
#
# Environment:
#   CUDA_DIR     the CUDA toolkit (default /usr/local/cuda, else the folder above `nvcc` on PATH)
#   CUDA_LIBS_DIR  a folder with include/ and lib/ of cuBLAS and cuRAND where the toolkit lacks them (default:
#                NVIDIA's pip wheels found by PYTHON, e.g. those PyTorch brings)
#   CUDA_ARCH    compute capabilities to compile for, e.g. "80 90" (default 90: H100/H200); PTX of the last is
#                kept so newer GPUs can JIT it
#   DEPS_PREFIX  a folder of unpacked .deb files (usr/include, usr/lib/<triplet>) used besides the system's, for
#                machines without apt (scripts/gpu_check.sh); apt is then not used
#   CUDNN_DIR    with CUDA=1: build with cuDNN from this folder (include/cudnn.h, lib/libcudnn.so*; e.g. the
#                nvidia-cudnn pip wheel's nvidia/cudnn); patch 06 ports Caffe's cuDNN convolution to cuDNN 8/9
#   PYCAFFE=0    build only the library and the `caffe` tool (where no Boost.Python for this Python exists)
#   JOBS         parallel compile jobs (default: nproc)
set -euo pipefail

PY=${1:?usage: build_caffe.sh PYTHON [CUDA]}
CUDA=${2:-0}
VERSION=9.0.2
SHA256=c6410cc60bdd6db685d441b66be7df05410f8850ac88d6b75d48ef9b2315c08a
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PATCHES=$ROOT/scripts/caffe-patches
JOBS=${JOBS:-$(nproc)}
CUDA_ARCH=${CUDA_ARCH:-90}
DEPS_PREFIX=${DEPS_PREFIX:-}
PYCAFFE=${PYCAFFE:-1}
CUDNN_DIR=${CUDNN_DIR:-}
TRIPLET=$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)

die() { echo "build_caffe: $*" >&2; exit 1; }
step() { echo "build_caffe: $*"; }

case "$CUDA" in
  0) BUILD=$ROOT/build/caffe ;;
  1) BUILD=$ROOT/build/caffe-cuda
     # the toolkit: CUDA_DIR, else /usr/local/cuda, else the folder above nvcc on PATH (wrappers resolved)
     if [ -z "${CUDA_DIR:-}" ]; then
       for d in /usr/local/cuda "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc || echo /none/bin/nvcc)")")")"; do
         [ -x "$d/bin/nvcc" ] && [ -f "$d/include/cuda_runtime.h" ] && { CUDA_DIR=$d; break; }
       done
     fi
     [ -n "${CUDA_DIR:-}" ] && [ -x "$CUDA_DIR/bin/nvcc" ] || die "CUDA=1 needs the CUDA toolkit, but there is no \
nvcc (set CUDA_DIR, or put nvcc on PATH). Without a GPU, build the CPU variant: make caffe"
     [ -f "$CUDA_DIR/include/cuda_runtime.h" ] || die "CUDA_DIR=$CUDA_DIR has no include/cuda_runtime.h"
     if [ -n "$CUDNN_DIR" ]; then
       [ -f "$CUDNN_DIR/include/cudnn.h" ] || die "CUDNN_DIR=$CUDNN_DIR has no include/cudnn.h"
       CUDNN_DIR=$(cd "$CUDNN_DIR" && pwd)
     fi
     ;;
  *) die "CUDA must be 0 or 1, not '$CUDA'" ;;
esac
SRC=$BUILD/src
mkdir -p "$BUILD"
exec 9>"$BUILD/.lock"
flock -n 9 || die "another build is running in $BUILD"

PYVER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")') || die "cannot run $PY"
NUMPY_INC=$("$PY" -c 'import numpy; print(numpy.get_include())') || die "numpy is not installed in $PY"
PY_INC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PATCH_SUM=$(cat "$PATCHES"/*.patch | sha256sum | cut -c1-12)
SCRIPT_SUM=$(sha256sum < "$0" | cut -c1-12)
STAMP_WANT="$SHA256 makefile patches-$PATCH_SUM script-$SCRIPT_SUM py$PYVER cuda$CUDA$([ "$CUDA" = 1 ] && echo "-arch-${CUDA_ARCH// /,}${CUDNN_DIR:+-cudnn}") pycaffe$PYCAFFE $("$PY" -c 'import numpy; print(numpy.__version__)')"
link_venv() { if [ "$PYCAFFE" = 1 ]; then echo "$SRC/python" > "$SITE/pyfusion-caffe.pth"; fi; }

if [ -f "$BUILD/stamp" ] && [ "$(cat "$BUILD/stamp")" = "$STAMP_WANT" ]; then
  link_venv; step "up to date ($BUILD)"; exit 0
fi

# ---- Debian packages -------------------------------------------------------------------------------------------
# (no cmake, no boost_regex: patch 01 uses std::regex)
PKGS="libprotobuf-dev protobuf-compiler libgoogle-glog-dev libgflags-dev libhdf5-dev libopenblas-dev
      libboost-system-dev libboost-thread-dev libboost-filesystem-dev g++ make patch"
[ "$PYCAFFE" = 1 ] && PKGS="$PKGS libboost-python-dev"
if [ -z "$DEPS_PREFIX" ] && command -v dpkg >/dev/null; then
  missing=""
  for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    step "installing Debian packages:$missing"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing \
      || die "apt-get install failed for:$missing"
  fi
fi
LIBDIRS="/usr/lib/$TRIPLET"
INCDIRS="/usr/include/hdf5/serial"
if [ -n "$DEPS_PREFIX" ]; then
  DEPS_PREFIX=$(cd "$DEPS_PREFIX" && pwd)
  LIBDIRS="$DEPS_PREFIX/usr/lib/$TRIPLET $LIBDIRS"
  INCDIRS="$DEPS_PREFIX/usr/include $DEPS_PREFIX/usr/include/$TRIPLET $INCDIRS"
  [ -d "$DEPS_PREFIX/usr/include/$TRIPLET/openblas-pthread" ] && INCDIRS="$INCDIRS $DEPS_PREFIX/usr/include/$TRIPLET/openblas-pthread"
fi
find_lib() {  # find_lib NAME...: the first libNAME.so found in LIBDIRS
  for n in "$@"; do for d in $LIBDIRS; do [ -e "$d/lib$n.so" ] && { echo "$d/lib$n.so"; return 0; }; done; done
  return 1
}

# ---- source ----------------------------------------------------------------------------------------------------
mkdir -p "$BUILD"
TARBALL=$BUILD/brocolli-caffe-$VERSION.tar.gz
for f in "${CAFFE_SDIST:-}" "$ROOT"/build/caffe*/brocolli-caffe-$VERSION.tar.gz; do  # one download serves both
  if [ ! -f "$TARBALL" ] && [ -n "$f" ] && [ -f "$f" ]; then cp "$f" "$TARBALL"; fi
done
if [ ! -f "$TARBALL" ]; then
  step "downloading brocolli-caffe==$VERSION sdist from PyPI"
  tmp=$(mktemp -d)
  "$PY" -m pip download --quiet --no-deps --no-binary :all: "brocolli-caffe==$VERSION" -d "$tmp" \
    || die "pip download brocolli-caffe==$VERSION failed (offline? set CAFFE_SDIST to the .tar.gz)"
  mv "$tmp"/brocolli-caffe-$VERSION.tar.gz "$TARBALL"; rm -rf "$tmp"
fi
echo "$SHA256  $TARBALL" | sha256sum -c --quiet - || { rm -f "$TARBALL"; die "sha256 mismatch for $TARBALL (deleted)"; }
# a tree unpacked by another build method, or patched by a patch that has since changed or gone, is unpacked
# afresh; otherwise it keeps its objects (resume) and only new patches are applied
tree_ok() {
  [ -f "$SRC/.extracted" ] && [ "$(cat "$SRC/.extracted")" = makefile ] || return 1
  while read -r name sum; do
    [ -f "$PATCHES/$name" ] && [ "$(sha256sum < "$PATCHES/$name" | cut -c1-12)" = "$sum" ] || return 1
  done < "$SRC/.patches"
}
if ! tree_ok; then
  rm -rf "$SRC" "$BUILD/cmake" "$BUILD/python"
  mkdir -p "$SRC"
  tar xzf "$TARBALL" -C "$SRC" --strip-components=1
  # the sdist ships caffe.pb.h/.cc and caffe_pb2.py made by an old protoc (and Python 3.8 bytecode): remove them so
  # `make proto` / `make pycaffe` regenerate them with this protoc
  rm -f "$SRC/include/caffe/proto/caffe.pb.h" "$SRC/src/caffe/proto/caffe.pb.cc" "$SRC/python/caffe/proto/caffe_pb2.py"
  find "$SRC/python" -name __pycache__ -type d -prune -exec rm -rf {} +
  echo makefile > "$SRC/.extracted"
  : > "$SRC/.patches"
fi

# ---- patches (scripts/caffe-patches, each applied once, recorded in src/.patches) -------------------------------
for p in "$PATCHES"/*.patch; do
  name=$(basename "$p")
  grep -q "^$name " "$SRC/.patches" && continue
  patch -d "$SRC" -p1 -s -f --no-backup-if-mismatch < "$p" >/dev/null || die "patch $name does not apply"
  echo "$name $(sha256sum < "$p" | cut -c1-12)" >> "$SRC/.patches"
  step "applied $name"
done

# ---- Makefile.config --------------------------------------------------------------------------------------------
# Debian's serial HDF5 is libhdf5_serial*.so; Caffe links -lhdf5 -lhdf5_hl: a folder of links gives those names.
LINKS=$BUILD/linknames; mkdir -p "$LINKS"
ln -sf "$(find_lib hdf5_serial hdf5)" "$LINKS/libhdf5.so" || die "HDF5 not found in $LIBDIRS (libhdf5-dev)"
ln -sf "$(find_lib hdf5_serial_hl hdf5_hl)" "$LINKS/libhdf5_hl.so" || die "HDF5 HL not found in $LIBDIRS"
# OpenBLAS installed without its -dev package has only libopenblas.so.0: link -lopenblas to it
if ! find_lib openblas >/dev/null; then
  so=$(for d in $LIBDIRS; do ls "$d"/libopenblas.so.* "$d"/openblas-pthread/libopenblas.so.* 2>/dev/null; done | head -1)
  [ -n "$so" ] || die "no OpenBLAS (libopenblas.so*) in $LIBDIRS"
  ln -sf "$so" "$LINKS/libopenblas.so"
fi
PYLIBS=""
if [ "$PYCAFFE" = 1 ]; then
  BP=$(find_lib "boost_python$PYVER") || die "no Boost.Python for Python ${PYVER:0:1}.${PYVER:1} in $LIBDIRS \
(libboost-python-dev); build without pycaffe with PYCAFFE=0"
  ln -sf "$BP" "$LINKS/libboost_python.so"
  PYLIBS=boost_python
fi
if [ -n "$CUDNN_DIR" ]; then  # the pip wheel has libcudnn.so.9 but no libcudnn.so
  lib=$(ls "$CUDNN_DIR"/lib/libcudnn.so* 2>/dev/null | head -1) || true
  [ -n "$lib" ] || die "no libcudnn.so* in $CUDNN_DIR/lib"
  ln -sf "$lib" "$LINKS/libcudnn.so"
  LIBDIRS="$LIBDIRS $CUDNN_DIR/lib"
  INCDIRS="$INCDIRS $CUDNN_DIR/include"
fi
if [ "$CUDA" = 1 ]; then
  # CUDA 13 keeps thrust/cub under include/cccl (nvcc finds it; g++ compiling Caffe's .cpp files needs it too)
  [ -d "$CUDA_DIR/include/cccl" ] && INCDIRS="$INCDIRS $CUDA_DIR/include/cccl"
  # cuBLAS and cuRAND: from the toolkit, else CUDA_LIBS_DIR, else NVIDIA's pip wheels (PyTorch's dependencies:
  # site-packages/nvidia/*/{include,lib}), whose libraries have only versioned names (links made here)
  for pair in cublas_v2.h:cublas curand.h:curand cublas_v2.h:cublasLt; do
    h=${pair%%:*}; l=${pair##*:}
    [ -f "$CUDA_DIR/include/$h" ] && { [ -e "$CUDA_DIR/lib64/lib$l.so" ] || [ -e "$CUDA_DIR/lib/lib$l.so" ]; } && continue
    found=""
    for d in ${CUDA_LIBS_DIR:-} $("$PY" -c 'import glob, site, sys
for p in site.getsitepackages() + [site.getusersitepackages()] + sys.path:
    print(" ".join(sorted(glob.glob(p + "/nvidia/*"))))' 2>/dev/null); do
      if [ -f "$d/include/$h" ] && ls "$d"/lib/lib$l.so* >/dev/null 2>&1; then found=$d; break; fi
    done
    [ -n "$found" ] || die "no $h / lib$l.so in $CUDA_DIR, CUDA_LIBS_DIR or NVIDIA's pip wheels (pip install nvidia-${l,,})"
    case " $INCDIRS " in *" $found/include "*) ;; *) INCDIRS="$INCDIRS $found/include"; LIBDIRS="$LIBDIRS $found/lib" ;; esac
    [ -e "$found/lib/lib$l.so" ] || ln -sf "$(ls "$found"/lib/lib$l.so.* | head -1)" "$LINKS/lib$l.so"
  done
fi
RPATH=""
[ "$CUDA" = 1 ] && for d in "$CUDA_DIR/lib64" "$CUDA_DIR/lib"; do [ -d "$d" ] && RPATH="$RPATH -Wl,-rpath,$d"; done
for d in $LIBDIRS; do case "$d" in /usr/lib/*) ;; *) RPATH="$RPATH -Wl,-rpath,$d -Wl,-rpath-link,$d" ;; esac; done
ARCH_FLAGS=""; last=""
for a in $CUDA_ARCH; do ARCH_FLAGS="$ARCH_FLAGS -gencode arch=compute_$a,code=sm_$a"; last=$a; done
ARCH_FLAGS="$ARCH_FLAGS -gencode arch=compute_$last,code=compute_$last"
{
  echo "# generated by scripts/build_caffe.sh; a change of these flags recompiles everything"
  if [ "$CUDA" = 1 ]; then
    echo "CUDA_DIR := $CUDA_DIR"
    echo "CUDA_ARCH := $ARCH_FLAGS"
    echo "USE_CUDNN := $([ -n "$CUDNN_DIR" ] && echo 1 || echo 0)"
  else
    echo "CPU_ONLY := 1"
  fi
  echo "USE_OPENCV := 0"
  echo "USE_LEVELDB := 0"
  echo "USE_LMDB := 0"
  echo "BLAS := open"
  echo "PYTHON_INCLUDE := $PY_INC $NUMPY_INC"
  echo "PYTHON_LIBRARIES := $PYLIBS"
  echo "INCLUDE_DIRS := \$(PYTHON_INCLUDE) $INCDIRS"
  echo "LIBRARY_DIRS := $LINKS $LIBDIRS"
  echo "LDFLAGS := $RPATH"
  echo "WARNINGS := -Wall -Wno-sign-compare -Wno-deprecated-declarations"
  echo "Q ?= @"
} > "$BUILD/Makefile.config.new"
flags() { grep -v "^#" "$1"; }
if [ -f "$BUILD/Makefile.config" ] && [ "$(flags "$BUILD/Makefile.config")" != "$(flags "$BUILD/Makefile.config.new")" ]; then
  step "the build flags changed: recompiling everything"
  make -C "$SRC" CONFIG_FILE="$BUILD/Makefile.config" clean >/dev/null 2>&1 || true
fi
mv "$BUILD/Makefile.config.new" "$BUILD/Makefile.config"

# ---- build ------------------------------------------------------------------------------------------------------
MK=(make -C "$SRC" CONFIG_FILE="$BUILD/Makefile.config")
TARGETS="all"; [ "$PYCAFFE" = 1 ] && TARGETS="all pycaffe"
VARIANT=CPU; [ "$CUDA" = 1 ] && VARIANT="CUDA, arch $CUDA_ARCH"
step "compiling ($VARIANT, python $PYVER, $JOBS jobs; log: $BUILD/make.log)"
{ "${MK[@]}" proto && "${MK[@]}" -j"$JOBS" $TARGETS; } > "$BUILD/make.log" 2>&1 \
  || { grep -m20 -E "error|Error" "$BUILD/make.log" >&2; die "compile failed (log: $BUILD/make.log)"; }
[ -x "$SRC/build/tools/caffe.bin" ] || die "built, but there is no $SRC/build/tools/caffe.bin"
if [ "$PYCAFFE" = 1 ]; then
  link_venv
  "$PY" -c 'import caffe; caffe.set_mode_cpu()' || die "built, but 'import caffe' fails"
  step "done: import caffe works in $PY ($SRC/python)"
else
  step "done: $SRC/build/tools/caffe.bin (no pycaffe: PYCAFFE=0)"
fi
echo "$STAMP_WANT" > "$BUILD/stamp"
