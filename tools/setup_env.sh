#!/usr/bin/env bash
# Creates or updates the project's virtual environment (.venv at the repository root):
#   1. python3 -m venv .venv (once)
#   2. the pinned requirements (requirements.txt)
#   3. sam2 (sdist: SAM2_BUILD_CUDA=0, --no-build-isolation, --no-deps)
#   4. this package, editable (the library is the repository's samwise_ros/)
#   5. the messages (msg/): the same CMake project a colcon build uses, built with the ROS 2 wheels'
#      ament_cmake/rosidl and installed into .venv, without a second copy of the library
# Idempotent: every step is skipped or quick when already done. `make venv` runs it.
#
# Environment: PYTHON (interpreter for a new venv, default python3), VENV (default <repo>/.venv),
# SAMWISE_BUILD_DIR (CMake build dir, default <repo>/build/ros).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
BUILD_DIR=${SAMWISE_BUILD_DIR:-$ROOT/build/ros}
SAM2_VERSION=1.1.0

log() { printf '[setup_env] %s\n' "$*"; }

# 1. the venv
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
  new_venv=1
fi
PY=$VENV/bin/python
# pip install, quiet; drops only pip's warning about configured local index directories that do
# not exist on this machine (one line per package looked up), keeping every other message.
pip_install() {
  "$PY" -m pip install --quiet --disable-pip-version-check "$@" \
    2> >(grep -v "^WARNING: Location 'file:///.*' is ignored: it is neither a file nor a directory\.$" >&2)
}

# 2-4. Python packages
if [ -n "${new_venv:-}" ]; then
  pip_install --upgrade pip
fi
log "installing the pinned requirements"
pip_install -r "$ROOT/requirements.txt"
log "installing sam2==$SAM2_VERSION (CPU build, no build isolation, no declared dependencies)"
SAM2_BUILD_CUDA=0 pip_install --no-build-isolation --no-deps "sam2==$SAM2_VERSION"
log "installing samwise_ros (editable)"
pip_install --no-build-isolation --no-deps --editable "$ROOT"

# 5. messages. The wheels' *Export.cmake files name the include dirs of the machine that built them
# (/opt/python/cp3XX-cp3XX/...): point them at this venv's Python and numpy headers. Reinstalled
# wheels bring the original paths back, so this runs every time (and changes nothing when done).
PY_INCLUDE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
NUMPY_INCLUDE=$("$PY" -c 'import numpy; print(numpy.get_include())')
if [ ! -f "$PY_INCLUDE/Python.h" ]; then
  echo "[setup_env] error: no Python.h in $PY_INCLUDE: install the Python development headers" >&2
  exit 1
fi
mapfile -t export_files < <(grep -rlF --include='*Export.cmake' '/opt/python/cp3' "$VENV/share" || true)
if [ "${#export_files[@]}" -gt 0 ]; then
  log "pointing ${#export_files[@]} *Export.cmake files at $PY_INCLUDE and $NUMPY_INCLUDE"
  sed -i -E \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${PY_INCLUDE}#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#${NUMPY_INCLUDE}#g" \
    "${export_files[@]}"
  if left=$(grep -rlF --include='*Export.cmake' '/opt/python/cp3' "$VENV/share"); then
    echo "[setup_env] error: unexpected /opt/python paths left in:" >&2
    echo "$left" >&2
    exit 1
  fi
fi

# A build dir configured for another checkout or venv (a moved or copied tree) cannot be reused.
if [ -f "$BUILD_DIR/CMakeCache.txt" ] &&
   ! { grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$ROOT" "$BUILD_DIR/CMakeCache.txt" &&
       grep -qxF "CMAKE_INSTALL_PREFIX:PATH=$VENV" "$BUILD_DIR/CMakeCache.txt"; }; then
  log "removing $BUILD_DIR (configured for another tree or venv)"
  rm -rf "$BUILD_DIR"
fi

export AMENT_PREFIX_PATH=$VENV
export CMAKE_PREFIX_PATH=$VENV
mkdir -p "$BUILD_DIR"
log "building the messages (CMake, build dir $BUILD_DIR, logs samwise-*.log there)"
cmake -S "$ROOT" -B "$BUILD_DIR" \
  -DPython3_EXECUTABLE="$PY" \
  -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DBUILD_TESTING=OFF \
  -DSAMWISE_INSTALL_PYTHON_PACKAGE=OFF \
  > "$BUILD_DIR/samwise-configure.log" 2>&1 || { cat "$BUILD_DIR/samwise-configure.log" >&2; exit 1; }
cmake --build "$BUILD_DIR" --parallel "$(nproc)" > "$BUILD_DIR/samwise-build.log" 2>&1 ||
  { tail -n 60 "$BUILD_DIR/samwise-build.log" >&2; exit 1; }
cmake --install "$BUILD_DIR" > "$BUILD_DIR/samwise-install.log" 2>&1 ||
  { tail -n 60 "$BUILD_DIR/samwise-install.log" >&2; exit 1; }

# The check that matters: the messages import, and the library is the repository's source.
(cd / && "$PY" - "$ROOT" <<'PYCHECK'
import os
import sys

import samwise_ros
from samwise_ros.msg import CmeSwitch, Segmentation  # noqa: F401

expected = os.path.join(sys.argv[1], "samwise_ros", "__init__.py")
if os.path.realpath(samwise_ros.__file__) != os.path.realpath(expected):
    sys.exit(f"[setup_env] error: samwise_ros resolves to {samwise_ros.__file__}, not {expected}")
PYCHECK
)
log "ready: $VENV"
