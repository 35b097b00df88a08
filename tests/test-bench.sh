#!/bin/sh
# SPDX-License-Identifier: MIT
#
# shmfd bench runs to the end and reports every scenario and every row.
# No timing is asserted (speed is what bench reports, not what tests
# judge): only that a --quick run exits 0, that each scenario and each
# baseline appears in its tables, and that --json prints a document that
# parses.
#
# Run by "make check" from the top build directory (VPATH and distcheck
# safe); by hand, SHMFD=path/to/shmfd overrides where the tool is.
# Exit 0: pass; 1: fail; 99: hard error.

set -eu

LC_ALL=C
export LC_ALL

shmfd=${SHMFD:-}
if [ -z "$shmfd" ]; then
	for try in "${builddir:-.}/tools/shmfd" "$(dirname "$0")/../tools/shmfd"; do
		if [ -x "$try" ]; then
			shmfd=$try
			break
		fi
	done
fi
if [ -z "$shmfd" ] || [ ! -x "$shmfd" ]; then
	echo "ERROR: tools/shmfd not found (run from the build directory)"
	exit 99
fi

out=$(mktemp)
trap 'rm -f "$out"' EXIT INT TERM

if ! "$shmfd" bench --quick >"$out"; then
	cat "$out"
	echo "FAIL: shmfd bench --quick exited with an error"
	exit 1
fi
cat "$out"

status=0
for scen in wake spin points throughput fanout blob; do
	if ! grep -q "^$scen: " "$out"; then
		echo "FAIL: scenario '$scen' missing from the output"
		status=1
	fi
done
# A row may say "unavailable" (mq in a container) but must be there.
for row in shmfd pipe unix eventfd mq futex spin; do
	if ! grep -q "^  $row " "$out"; then
		echo "FAIL: row '$row' missing from the output"
		status=1
	fi
done
if ! grep -q "^  target: " "$out"; then
	echo "FAIL: no target line in the output"
	status=1
fi

if ! "$shmfd" bench --json --quick wake >"$out"; then
	echo "FAIL: shmfd bench --json --quick wake exited with an error"
	exit 1
fi
if command -v python3 >/dev/null 2>&1; then
	if ! python3 -c 'import json, sys; json.load(sys.stdin)' <"$out"; then
		cat "$out"
		echo "FAIL: --json printed something that is not JSON"
		status=1
	fi
else
	echo "(python3 missing: the JSON is not parsed)"
fi

[ $status -eq 0 ] && echo "PASS: shmfd bench --quick: every scenario and row"
exit $status
