#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Every public function has a man page: each function the built library
# exports, and each function include/shmfd.h marks SHMFD_API, must have
# man/<name>.3 in the source tree.  The shmfd command is public too: it
# must have man/shmfd.1.
#
# Run by "make check" from the top build directory, with $srcdir the top
# source directory (they differ in VPATH builds and in make distcheck).
# Exit 0: all present; 1: pages missing (listed); 77: skipped (no shared
# library to inspect; the header is still checked first); 99: hard error.

LC_ALL=C
export LC_ALL
srcdir=${srcdir:-.}
so=lib/.libs/libshmfd.so
header=$srcdir/include/shmfd.h
NM=${NM:-nm}
status=0

missing() {
	# $1: where the names come from; names on stdin, one per line.
	what=$1
	miss=
	while read -r name; do
		[ -n "$name" ] || continue
		[ -f "$srcdir/man/$name.3" ] || miss="$miss $name"
	done
	if [ -n "$miss" ]; then
		echo "FAIL: no man page in $srcdir/man/ for these $what:"
		for name in $miss; do
			echo "  $name (expected man/$name.3)"
		done
		return 1
	fi
	return 0
}

if [ ! -r "$header" ]; then
	echo "ERROR: cannot read $header"
	exit 99
fi

if [ ! -f "$srcdir/man/shmfd.1" ]; then
	echo "FAIL: no man page in $srcdir/man/ for the shmfd command:"
	echo "  shmfd (expected man/shmfd.1)"
	status=1
fi

# Functions declared SHMFD_API: the identifier before the first "(" of
# each declaration, which may span several lines.
api=$(awk '
	/^[ \t]*#/ { next }
	/SHMFD_API/ { decl = ""; in_decl = 1 }
	in_decl {
		decl = decl " " $0
		if (index(decl, "(")) {
			sub(/\(.*/, "", decl)
			n = split(decl, w, /[^A-Za-z0-9_]+/)
			while (n > 0 && w[n] == "")
				n--
			if (n > 0)
				print w[n]
			in_decl = 0
		}
	}
' "$header" | sort -u)

if [ -z "$api" ]; then
	echo "ERROR: found no SHMFD_API function in $header"
	exit 99
fi
echo "$api" | missing "SHMFD_API functions of include/shmfd.h" || status=1

if [ ! -f "$so" ]; then
	if [ $status -ne 0 ]; then
		echo "(and $so was not built: exported symbols not checked)"
		exit $status
	fi
	echo "SKIP: $so was not built (static-only build?), so its exported"
	echo "      symbols cannot be listed; every SHMFD_API function has a page."
	exit 77
fi
if ! command -v "$NM" >/dev/null 2>&1; then
	echo "ERROR: $NM not found: cannot list the symbols of $so"
	exit 99
fi

# Exported functions: defined dynamic symbols of type T, without the
# @@VERSION suffix that newer binutils print.
if ! syms=$("$NM" -D --defined-only "$so"); then
	echo "ERROR: $NM -D --defined-only $so failed"
	exit 99
fi
exported=$(echo "$syms" | awk '$2 == "T" { sub(/@.*/, "", $3); print $3 }' | sort -u)
if [ -z "$exported" ]; then
	echo "FAIL: $so exports no function"
	exit 1
fi
echo "$exported" | missing "functions exported by $so" || status=1

[ $status -eq 0 ] && echo "PASS: every exported and SHMFD_API function, and the shmfd command, has a man page"
exit $status
