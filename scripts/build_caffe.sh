#!/usr/bin/env bash
# Build BVLC Caffe (library + pycaffe) from the brocolli-caffe sdist on PyPI against Debian's packages.
#
#   scripts/build_caffe.sh PYTHON [CUDA=0|1]
#
# PYTHON is the interpreter of the project's virtualenv (its numpy headers are compiled in). The build lands in
# build/caffe/ (ignored by git); a .pth file in the venv makes `import caffe` work. Idempotent: a finished build
# (stamp file matching sdist sha256 + python + CUDA flag) is not rebuilt.
set -euo pipefail

PY=${1:?usage: build_caffe.sh PYTHON [CUDA]}
CUDA=${2:-0}
VERSION=9.0.2
SHA256=c6410cc60bdd6db685d441b66be7df05410f8850ac88d6b75d48ef9b2315c08a
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$ROOT/build/caffe
SRC=$BUILD/src
JOBS=${JOBS:-$(nproc)}

die() { echo "build_caffe: $*" >&2; exit 1; }
step() { echo "build_caffe: $*"; }

PYVER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")') || die "cannot run $PY"
NUMPY_INC=$("$PY" -c 'import numpy; print(numpy.get_include())') || die "numpy is not installed in $PY"
PY_INC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
STAMP_WANT="$SHA256 py$PYVER cuda$CUDA $("$PY" -c 'import numpy; print(numpy.__version__)')"

if [ -f "$BUILD/stamp" ] && [ "$(cat "$BUILD/stamp")" = "$STAMP_WANT" ] && [ -e "$BUILD/python/caffe/_caffe.so" ]; then
  echo "$BUILD/python" > "$SITE/pyfusion-caffe.pth"
  step "up to date ($BUILD)"; exit 0
fi

# ---- Debian packages -------------------------------------------------------------------------------------------
PKGS="libprotobuf-dev protobuf-compiler libgoogle-glog-dev libgflags-dev libhdf5-dev libopenblas-dev
      libboost-system-dev libboost-thread-dev libboost-filesystem-dev libboost-regex-dev libboost-python-dev
      libgtest-dev cmake g++ make"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  step "installing Debian packages:$missing"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing \
    || die "apt-get install failed for:$missing"
fi

# ---- source ----------------------------------------------------------------------------------------------------
mkdir -p "$BUILD"
TARBALL=$BUILD/brocolli-caffe-$VERSION.tar.gz
if [ ! -f "$TARBALL" ]; then
  step "downloading brocolli-caffe==$VERSION sdist from PyPI"
  tmp=$(mktemp -d)
  "$PY" -m pip download --quiet --no-deps --no-binary :all: "brocolli-caffe==$VERSION" -d "$tmp" \
    || die "pip download brocolli-caffe==$VERSION failed"
  mv "$tmp"/brocolli-caffe-$VERSION.tar.gz "$TARBALL"; rm -rf "$tmp"
fi
echo "$SHA256  $TARBALL" | sha256sum -c --quiet - || { rm -f "$TARBALL"; die "sha256 mismatch for $TARBALL (deleted)"; }
# the source tree and cmake folder are kept between runs, so an interrupted or failed build resumes where it stopped
if [ ! -f "$SRC/.extracted" ]; then
  rm -rf "$SRC" "$BUILD/cmake"
  mkdir -p "$SRC"
  tar xzf "$TARBALL" -C "$SRC" --strip-components=1
  touch "$SRC/.extracted"
fi
rm -rf "$BUILD/python"

# ---- patches (idempotent) ---------------------------------------------------------------------------------------------------
# 1. the fork hard-codes CPU_ONLY and a conda include path; drop both (the CPU_ONLY option below decides).
sed -i -e 's/^add_definitions( -DCPU_ONLY=1 )/# (pyfusion) CPU_ONLY decided by the option/' \
       -e 's/^include_directories(${ANACONDA_HOME}.*/# (pyfusion) no conda include path/' \
       -e 's/^link_directories(${ANACONDA_HOME}.*/# (pyfusion) no conda link path/' "$SRC/CMakeLists.txt"
# 2. tests are not built (they need the whole gtest tree); keep the library and pycaffe only.
sed -i 's/^ add_subdirectory(test)/# add_subdirectory(test)/' "$SRC/src/caffe/CMakeLists.txt"
# 3. Debian names: boost_python -> boost_python3XX, hdf5 -> hdf5_serial (resolved through a link folder).
LINKS=$BUILD/linknames; mkdir -p "$LINKS"
LIBDIR=/usr/lib/$(gcc -dumpmachine)
ln -sf "$LIBDIR/libboost_python$PYVER.so" "$LINKS/libboost_python.so"
ln -sf "$LIBDIR/libhdf5_serial.so" "$LINKS/libhdf5.so"
ln -sf "$LIBDIR/libhdf5_serial_hl.so" "$LINKS/libhdf5_hl.so"
for l in libboost_python.so libhdf5.so libhdf5_hl.so; do [ -e "$LINKS/$l" ] || die "missing $LINKS/$l target (Debian package not installed?)"; done

CMAKE_CUDA_ARGS="-DCPU_ONLY=ON"
EXTRA_DEF="-DCPU_ONLY=1"
if [ "$CUDA" = 1 ]; then
  command -v nvcc >/dev/null || die "CUDA=1 but nvcc is not on PATH"
  CMAKE_CUDA_ARGS="-DCPU_ONLY=OFF -DUSE_CUDNN=OFF -DCUDA_ARCH_NAME=Manual -DCUDA_ARCH_BIN=${CUDA_ARCH_BIN:-90} -DCUDA_ARCH_PTX="
  EXTRA_DEF=""
fi

# ---- configure + build ----------------------------------------------------------------------------------------
CXXFLAGS="-O2 -I/usr/include/hdf5/serial -I$PY_INC -I$NUMPY_INC -DUSE_HDF5 $EXTRA_DEF -Wno-deprecated-declarations"
step "configuring (CUDA=$CUDA, python $PYVER, numpy include $NUMPY_INC)"
cmake -S "$SRC" -B "$BUILD/cmake" -DCMAKE_BUILD_TYPE=Release -DBUILD_python=ON -DUSE_HDF5=ON \
      -DUSE_OPENCV=OFF -DUSE_LMDB=OFF -DUSE_LEVELDB=OFF $CMAKE_CUDA_ARGS \
      -DCMAKE_CXX_FLAGS="$CXXFLAGS" -DCMAKE_SHARED_LINKER_FLAGS="-L$LINKS" \
      > "$BUILD/cmake.log" 2>&1 || { tail -30 "$BUILD/cmake.log" >&2; die "cmake configure failed (log: $BUILD/cmake.log)"; }
step "compiling with $JOBS jobs (log: $BUILD/make.log)"
make -C "$BUILD/cmake" -j"$JOBS" pycaffe > "$BUILD/make.log" 2>&1 \
  || { grep -m20 -E "error|Error" "$BUILD/make.log" >&2; die "compile failed (log: $BUILD/make.log)"; }

# ---- install into build/caffe/python and link into the venv ------------------------------------------------------
cp -r "$SRC/python" "$BUILD/python"
rm -f "$BUILD/python/caffe/_caffe.so"
cp "$(find "$BUILD/cmake" -name '_caffe.so' -type f | head -1)" "$BUILD/python/caffe/_caffe.so"
echo "$BUILD/python" > "$SITE/pyfusion-caffe.pth"
"$PY" -c 'import caffe; caffe.set_mode_cpu()' || die "built, but 'import caffe' fails"
echo "$STAMP_WANT" > "$BUILD/stamp"
step "done: import caffe works in $PY"
