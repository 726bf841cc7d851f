#!/usr/bin/env bash
# Build the fatigue_msgs interface package into a Python venv that carries ROS 2 Kilted from
# PyPI wheels. On a real ROS 2 install use colcon instead (see README).
# Usage: scripts/build_msgs.sh VENV
set -euo pipefail
venv=$(cd "${1:?usage: build_msgs.sh VENV}" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
py="$venv/bin/python"
build="$here/build/fatigue_msgs"
mkdir -p "$build"

# The rosidl wheels were built in a manylinux container; their exported CMake files still
# point at that container's Python. Point them at this venv's Python and numpy headers.
py_inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_inc=$("$py" -c 'import numpy; print(numpy.get_include())')
{ grep -rl --include='*rosidl_generator_py*Export.cmake' '/opt/python/cp311-cp311' "$venv/share" 2>/dev/null || true; } |
  while read -r f; do
    sed -i -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_inc#g" \
           -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/core/include#$np_inc#g" \
           -e "s#/opt/python/cp311-cp311/include/python3.11#$py_inc#g" "$f"
  done

export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv" PATH="$venv/bin:$PATH"
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
cmake -S "$here/fatigue_msgs" -B "$build" -DCMAKE_INSTALL_PREFIX="$venv" -DBUILD_TESTING=OFF \
  -DPython3_EXECUTABLE="$py" -DPYTHON_EXECUTABLE="$py" -DCMAKE_BUILD_TYPE=Release >"$build.log" 2>&1 ||
  { tail -40 "$build.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" >>"$build.log" 2>&1 || { tail -40 "$build.log"; exit 1; }
cmake --install "$build" >>"$build.log" 2>&1 || { tail -40 "$build.log"; exit 1; }
# cmake installs the Python package under lib/python3.11/site-packages of the prefix, which is the venv's.
"$py" -c 'import fatigue_msgs.msg as m; m.Intervention()' || { echo "fatigue_msgs import failed"; exit 1; }
echo "fatigue_msgs built into $venv"
