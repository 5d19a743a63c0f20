#!/usr/bin/env bash
# Pack the smallest DALI that decodes JPEG on the device machine, in as few 64 MiB chunks as possible:
#   benchmarks/pack_dali.sh [SITE_PACKAGES] [OUT_DIR=.devcheck/dali]
# From an installed nvidia-dali-cuda130 (+ nvidia-nvimgcodec-cu13, nvidia-nvjpeg): the CPython 3.12 extension only
# (the device's python3), no headers, shared libraries stripped of their (non-dynamic) symbols; nvcomp, nvjpeg2k and
# nvtiff left out (DALI loads them only on demand, for other codecs); no nvidia/__init__.py (it would shadow the
# machine's own `nvidia` namespace). DALI's pure-Python dependencies come as cp312 wheels (pip download). The tree is
# tar | gzip -6 (COMPRESS=xz saves about a part where the CPU has minutes to spare) and split into 60 MiB parts; the
# device reassembles them with `cat part.* | gzip -d | tar -x` (`xz -d` for xz).
set -euo pipefail
SITE=${1:-$(/work/main/.venv/bin/python -c 'import nvidia.dali, os; print(os.path.dirname(os.path.dirname(os.path.dirname(nvidia.dali.__file__))))')}
OUT=${2:-.devcheck/dali}
PY=${PY:-/work/main/.venv/bin/python}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/site/nvidia" "$OUT"
cp -a "$SITE/nvidia/dali" "$SITE/nvidia/nvimgcodec" "$SITE/nvidia/cu13" "$WORK/site/nvidia/"
for d in "$SITE"/nvidia_dali_cuda130-*.dist-info "$SITE"/nvidia_nvimgcodec_cu13-*.dist-info; do cp -a "$d" "$WORK/site/"; done
find "$WORK/site/nvidia" -name '*.cpython-*.so' ! -name '*cpython-312-*' -delete
find "$WORK/site/nvidia" -name '__pycache__' -prune -exec rm -rf {} +
rm -rf "$WORK/site/nvidia/dali/include" "$WORK/site/nvidia/dali/test" "$WORK/site/nvidia/nvimgcodec/include" \
    "$WORK/site/nvidia/nvimgcodec/tools"
# nvImageCodec's plugins for JPEG 2000 and TIFF (JPEG: nvjpeg + libjpeg-turbo; PNG: opencv; BMP/PNM are tiny)
rm -f "$WORK"/site/nvidia/nvimgcodec/extensions/lib{nvjpeg2k,nvtiff,tiff}_ext.so*
find "$WORK/site/nvidia" -name '*.so*' -type f -exec strip --strip-unneeded {} + 2>/dev/null || true
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WORK/whl" astunparse==1.6.3 gast==0.7.0 optree==0.20.0 nvtx==0.2.17 makefun==1.16.0 libcst==1.9.0 \
    platformdirs==4.14.8
for w in "$WORK"/whl/*.whl; do (cd "$WORK/site" && "$PY" -m zipfile -e "$w" .); done
du -sh "$WORK/site"
rm -f "$OUT"/part.*
case "${COMPRESS:-gzip}" in xz) Z="xz -9 -T2" ;; *) Z="gzip -6" ;; esac
tar -C "$WORK" -cf - site | $Z | split -b 60m - "$OUT/part."
ls -l "$OUT"
