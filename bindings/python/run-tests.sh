#!/bin/sh
# SPDX-License-Identifier: MIT
#
# The Python package's unittest suite against the library of the build
# tree, as make check runs it (through the generated test-python wrapper).
# SHMFD_PYTHON is the interpreter configure chose, ":" for none;
# SHMFD_BUILDDIR the top build directory.  Exit 77 (SKIP) when there is
# no Python, 0 pass, 1 fail.  Tests of numpy and Qt skip one by one,
# saying so, when those modules are missing.

py=${SHMFD_PYTHON:-:}
if [ "$py" = : ]; then
	echo "SKIP: no Python 3.9 or later (configure found none, or" \
	     "--disable-python); install python3, or configure PYTHON=/usr/bin/python3"
	exit 77
fi
here=$(cd "$(dirname "$0")" && pwd) || exit 99
builddir=${SHMFD_BUILDDIR:-$PWD}
lib=$builddir/lib/.libs/libshmfd.so.0
if [ ! -e "$lib" ]; then
	echo "ERROR: $lib is missing: run make first"
	exit 99
fi

# A library built with AddressSanitizer can only be loaded into a process
# whose first library is the ASan runtime: preload it.  Python's own
# allocations are not ours to judge, so no leak report at exit.
asan=$(ldd "$lib" 2>/dev/null | awk '/libasan/ { print $3; exit }')
if [ -n "$asan" ]; then
	LD_PRELOAD=$asan${LD_PRELOAD:+:$LD_PRELOAD}
	ASAN_OPTIONS=detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}
	export LD_PRELOAD ASAN_OPTIONS
fi

SHMFD_LIBRARY=$lib
PYTHONPATH=$here${PYTHONPATH:+:$PYTHONPATH}
# The source tree may be read-only (distcheck): write no __pycache__.
PYTHONDONTWRITEBYTECODE=1
QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-offscreen}
export SHMFD_LIBRARY PYTHONPATH PYTHONDONTWRITEBYTECODE QT_QPA_PLATFORM

"$py" - <<'PYEOF' || exit 99
import sys
print("python", sys.version.split()[0], sys.executable)
for mod in ("numpy", "PyQt5.QtGui", "PyQt6.QtGui"):
    try:
        __import__(mod)
        print(mod, "found")
    except ImportError:
        print(mod, "missing: its tests are skipped")
PYEOF
exec "$py" -m unittest discover -v -s "$here/tests" -p 'test_*.py'
