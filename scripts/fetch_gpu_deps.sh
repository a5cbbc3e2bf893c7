#!/usr/bin/env bash
# Gather, on a Debian 12 machine with network, what scripts/gpu_check.sh needs on an offline CUDA machine that has
# CUDA, Python, PyTorch, protobuf 3.21, HDF5 and OpenBLAS libraries but no Boost, glog or gflags:
#
#   scripts/fetch_gpu_deps.sh [OUT=build/gpu-deps]
#
# OUT gets: debs/ (Debian 12 .deb files: Boost 1.74 system/thread/filesystem and headers, glog, gflags, libunwind;
# OpenBLAS's headers as a .tar.gz), boost-python/ (Boost.Python 1.74 sources, to build it for that machine's Python), wheels/
# (PyWavelets, protobuf, six and wheel for CPython 3.12) and the Caffe sdist. About 22 MB: carry it with the working tree.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/build/gpu-deps}
BOOST_ORIG=http://deb.debian.org/debian/pool/main/b/boost1.74/boost1.74_1.74.0.orig.tar.xz
BOOST_SHA256=2467be4af625b5ae4b3c93fc7af196a09eba39c11a7338cd9e8b356fa44d2f45
BOOST_DEBIAN=http://deb.debian.org/debian/pool/main/b/boost1.74/boost1.74_1.74.0+ds1-21.debian.tar.xz
BOOST_DEBIAN_SHA256=6549dab4824c781e0510272ac352f9e0367d4d47c16c94989e5ec7447fd8f0d8
DEBS="libboost1.74-dev libboost-system1.74-dev libboost-system1.74.0 libboost-thread1.74-dev libboost-thread1.74.0
      libboost-filesystem1.74-dev libboost-filesystem1.74.0 libboost-atomic1.74-dev libboost-atomic1.74.0
      libboost-chrono1.74-dev libboost-chrono1.74.0 libboost-date-time1.74-dev libboost-date-time1.74.0
      libgoogle-glog-dev libgoogle-glog0v6 libgflags-dev libgflags2.2 libunwind-dev libunwind8"
# OpenBLAS: that machine has the libraries; only the headers travel (11 MB of .deb files less)
OPENBLAS_DEV=libopenblas-pthread-dev
die() { echo "fetch_gpu_deps: $*" >&2; exit 1; }

mkdir -p "$OUT/debs" "$OUT/wheels"
(cd "$OUT/debs" && apt-get download $DEBS 2>&1 | grep -v "unsandboxed as root" >&2 || true; for d in $DEBS; do ls ${d}_*.deb >/dev/null 2>&1 || exit 1; done) || die "apt-get download failed"
if [ ! -f "$OUT/debs/openblas-headers.tar.gz" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download $OPENBLAS_DEV 2>&1 | grep -v "unsandboxed as root" >&2 || true)
  dpkg-deb -x "$tmp"/${OPENBLAS_DEV}_*.deb "$tmp/x" || die "apt-get download $OPENBLAS_DEV failed"
  (cd "$tmp/x" && tar czf "$OUT/debs/openblas-headers.tar.gz" $(find usr/include -name '*.h'))
  rm -rf "$tmp"
fi
if [ ! -d "$OUT/boost-python/src" ]; then
  # the upstream sources with Debian's Python patches of 1.74.0+ds1-21 (Python >= 3.10: Py_SET_TYPE, enums)
  tmp=$(mktemp -d)
  curl -sfL -o "$tmp/boost.tar.xz" "$BOOST_ORIG" || die "download of $BOOST_ORIG failed"
  echo "$BOOST_SHA256  $tmp/boost.tar.xz" | sha256sum -c --quiet - || die "sha256 mismatch for $BOOST_ORIG"
  curl -sfL -o "$tmp/debian.tar.xz" "$BOOST_DEBIAN" || die "download of $BOOST_DEBIAN failed"
  echo "$BOOST_DEBIAN_SHA256  $tmp/debian.tar.xz" | sha256sum -c --quiet - || die "sha256 mismatch for $BOOST_DEBIAN"
  tar xJf "$tmp/boost.tar.xz" -C "$tmp" boost/libs/python/src boost/libs/python/include boost/LICENSE_1_0.txt
  tar xJf "$tmp/debian.tar.xz" -C "$tmp"
  for p in python3.10-file python3.10-pep-620 fix-enum python-enum; do
    patch -d "$tmp/boost" -p1 -s -f < "$tmp/debian/patches/$p.patch" || die "Debian's $p.patch does not apply"
  done
  mkdir -p "$OUT/boost-python"
  mv "$tmp/boost/libs/python/src" "$tmp/boost/libs/python/include" "$tmp/boost/LICENSE_1_0.txt" "$OUT/boost-python/"
  rm -rf "$tmp"
fi
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}; [ -x "$PYTHON" ] || PYTHON=python3
"$PYTHON" -m pip download -q --no-deps --only-binary :all: --python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$OUT/wheels" "PyWavelets==1.9.0" "protobuf==5.29.6" "six==1.17.0" "wheel==0.45.1" || die "pip download of the wheels failed"
# the Caffe sdist that scripts/build_caffe.sh checks (its VERSION and SHA256)
eval "$(grep -E '^(VERSION|SHA256)=' "$ROOT/scripts/build_caffe.sh")"
SDIST=$OUT/brocolli-caffe-$VERSION.tar.gz
if [ ! -f "$SDIST" ]; then
  found=$(ls "$ROOT"/build/caffe*/brocolli-caffe-$VERSION.tar.gz 2>/dev/null | head -1 || true)
  if [ -n "$found" ]; then cp "$found" "$SDIST"
  else "$PYTHON" -m pip download -q --no-deps --no-binary :all: "brocolli-caffe==$VERSION" -d "$OUT" \
         || die "pip download brocolli-caffe failed"; fi
fi
echo "$SHA256  $SDIST" | sha256sum -c --quiet - || die "sha256 mismatch for $SDIST"
echo "fetch_gpu_deps: $(du -sh "$OUT" | cut -f1) in $OUT"
