#!/bin/sh
# SPDX-License-Identifier: MIT
#
# The shared library exports exactly the names that lib/libshmfd.map lists
# as global: nothing leaks past -fvisibility=hidden, nothing listed is
# missing.  Version node names (LIBSHMFD_0.1 ...), which the linker adds
# as absolute symbols, are not counted.
#
# Run by "make check" from the top build directory, with $srcdir the top
# source directory.  Exit 0: same sets; 1: they differ (both printed);
# 77: skipped (no shared library); 99: hard error.

LC_ALL=C
export LC_ALL
srcdir=${srcdir:-.}
so=lib/.libs/libshmfd.so
map=$srcdir/lib/libshmfd.map
NM=${NM:-nm}

if [ ! -r "$map" ]; then
	echo "ERROR: cannot read $map"
	exit 99
fi
if [ ! -f "$so" ]; then
	echo "SKIP: $so was not built (static-only build?): no exports to compare"
	exit 77
fi
if ! command -v "$NM" >/dev/null 2>&1; then
	echo "ERROR: $NM not found: cannot list the symbols of $so"
	exit 99
fi

tmp=${TMPDIR:-/tmp}/check-symbols.$$
trap 'rm -rf "$tmp"' EXIT
trap 'exit 99' HUP INT TERM
mkdir "$tmp" || exit 99

# The map: node names ("NAME {"), and the names listed in each node's
# global: section (a node without "global:" is global throughout).
# Comments (# and /* */ on one line) are dropped.
awk -v nodes="$tmp/nodes" -v globals="$tmp/map" '
	{
		sub(/#.*/, "")
		gsub(/\/\*[^*]*\*+([^\/*][^*]*\*+)*\//, "")
		line = $0
		while (line != "") {
			if (match(line, /^[ \t;]+/)) {
				line = substr(line, RLENGTH + 1)
				continue
			}
			if (match(line, /^[A-Za-z_.][A-Za-z0-9_.]*[ \t]*\{/) && !in_node) {
				name = substr(line, 1, RLENGTH - 1)
				sub(/[ \t]+$/, "", name)
				print name > nodes
				in_node = 1
				scope = "global"
				line = substr(line, RLENGTH + 1)
				continue
			}
			if (!in_node && match(line, /^\{/)) {	# anonymous node
				in_node = 1
				scope = "global"
				line = substr(line, 2)
				continue
			}
			if (match(line, /^\}[^;]*;?/)) {
				in_node = 0
				line = substr(line, RLENGTH + 1)
				continue
			}
			if (match(line, /^(global|local)[ \t]*:/)) {
				scope = substr(line, 1, 5) == "local" ? "local" : "global"
				line = substr(line, RLENGTH + 1)
				continue
			}
			if (match(line, /^[^ \t;{}]+/)) {
				if (in_node && scope == "global")
					print substr(line, 1, RLENGTH) > globals
				line = substr(line, RLENGTH + 1)
				continue
			}
			line = substr(line, 2)
		}
	}
' "$map" || exit 99
touch "$tmp/nodes" "$tmp/map"
sort -u "$tmp/map" > "$tmp/map.sorted"
sort -u "$tmp/nodes" > "$tmp/nodes.sorted"

if [ ! -s "$tmp/map.sorted" ]; then
	echo "ERROR: $map lists no global symbol"
	exit 99
fi

# Exported: every defined dynamic symbol, whatever its type (a leaked
# variable counts as much as a leaked function), without @VERSION.
if ! "$NM" -D --defined-only "$so" > "$tmp/nm"; then
	echo "ERROR: $NM -D --defined-only $so failed"
	exit 99
fi
awk 'NF >= 3 { sub(/@.*/, "", $3); print $3 }' "$tmp/nm" | sort -u |
	comm -23 - "$tmp/nodes.sorted" > "$tmp/so.sorted"

if cmp -s "$tmp/map.sorted" "$tmp/so.sorted"; then
	echo "PASS: $so exports the $(wc -l < "$tmp/map.sorted" | tr -d ' ') global symbols of lib/libshmfd.map"
	exit 0
fi

echo "FAIL: the exports of $so differ from the global: list of $map"
list() {
	if [ -s "$1" ]; then
		sed 's/^/  /' "$1"
	else
		echo "  (none)"
	fi
}
comm -23 "$tmp/map.sorted" "$tmp/so.sorted" > "$tmp/only-map"
comm -13 "$tmp/map.sorted" "$tmp/so.sorted" > "$tmp/only-so"
echo "--- only in $map (listed, not exported):"
list "$tmp/only-map"
echo "--- only in $so (exported, not listed):"
list "$tmp/only-so"
echo "--- $map global:"
list "$tmp/map.sorted"
echo "--- $so exports:"
list "$tmp/so.sorted"
exit 1
