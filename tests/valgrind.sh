#!/bin/sh
# SPDX-License-Identifier: MIT
#
# One Check suite under valgrind memcheck, for make check-valgrind:
#
#   tests/valgrind.sh [--nouring] SUITE [ARGS...]
#
# --nouring runs it as SUITE.nouring does (SHMFD_NO_IO_URING=1
# SHMFD_NO_MEMBARRIER=1).  Exits 0, 77 (the suite skipped a part), or 1
# when the suite failed or valgrind found anything in any of its
# processes.  VALGRIND names the valgrind to run; VALGRIND_TIMEOUT (in
# seconds, 1800 by default) ends a suite that hangs.
#
# How, and why:
#
# * CK_FORK=no: Check runs every test in the suite's own process, so
#   valgrind sees each test from start to end, leaks included, and no
#   test needs a crash or an exit to pass (none of the suites has a
#   tcase_add_test_raise_signal or _exit_test).  The processes the tests
#   fork themselves (producers, readers, hostile peers) are still forked.
# * Forked children are followed (valgrind always does: it is the same
#   process image), so memory errors in readers and producers count.  A
#   forked child leaves leak checking off (tests/helpers.c, th_spawn): it
#   inherits the test's heap without owning it.
# * --trace-children=yes: the suites exec only their own programs
#   (tests/exec-reader, a reader across exec), which run under valgrind
#   too.  The one skipped is test-basic --leak-demo: the fixture showing
#   that its fd-leak check fails, which calls no library code and whose
#   output the test parses.
# * --track-fds=yes: valgrind 3.19 only prints the fds open at each exit,
#   it does not count them as errors.  This script fails the run if the
#   suite's own process ends with any fd open that it did not inherit.
#   Children end with what they inherited from the test still open, by
#   design; their lists are only printed.
# * --error-markers: an error in a child that a test then kills (no exit
#   status, no summary) is still found here, by its marker.
# * SHMFD_TEST_SLOWDOWN=10: the tests' deadlines, which only decide when
#   a test is hung, stretch ten times (tests/helpers.h).
# * valgrind 3.19 does not know pidfd_open(2) (it prints "unhandled
#   amd64-linux syscall: 434" and returns ENOSYS): the library then falls
#   back to kill(pid, 0) and the tests' helpers to waitpid polling.
#   io_uring works, but memcheck cannot see the buffers it passes to the
#   kernel: the --nouring runs are where it checks what goes to sendmsg.
set -u

nouring=
if [ "${1-}" = --nouring ]; then
	nouring=1
	shift
fi
if [ $# -lt 1 ]; then
	echo "usage: $0 [--nouring] SUITE [ARGS...]" >&2
	exit 99
fi
suite=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
vg=${VALGRIND:-valgrind}

if ! command -v "$vg" >/dev/null 2>&1; then
	echo "valgrind.sh: $vg not found (apt-get install valgrind)" >&2
	exit 99
fi

CK_FORK=no
SHMFD_TEST_SLOWDOWN=${SHMFD_TEST_SLOWDOWN:-10}
export CK_FORK SHMFD_TEST_SLOWDOWN
if [ -n "$nouring" ]; then
	SHMFD_NO_IO_URING=1
	SHMFD_NO_MEMBARRIER=1
	export SHMFD_NO_IO_URING SHMFD_NO_MEMBARRIER
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/shmfd-vg.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
log=$tmp/log
begin=VALGRIND-ERROR-BEGIN
end=VALGRIND-ERROR-END

# The suite's stdout and every process's stderr, valgrind's reports
# included, in one file in the order written.  (--log-file would leave
# its fds open across exec, into exec-reader's check.)  The wrapper shell
# writes its pid before it becomes valgrind: the suite's own process.
timeout -k 10 "${VALGRIND_TIMEOUT:-1800}" sh -c 'echo $$ >"$0"; exec "$@"' \
	"$tmp/pid" "$vg" --tool=memcheck -q \
	--error-exitcode=99 --error-markers=$begin,$end \
	--leak-check=full --show-leak-kinds=definite,indirect,possible \
	--errors-for-leak-kinds=definite,indirect,possible \
	--track-origins=yes --num-callers=30 \
	--track-fds=yes \
	--trace-children=yes --trace-children-skip-by-arg=--leak-demo \
	--suppressions="$here/valgrind.supp" \
	"$suite" "$@" >"$log" 2>&1
rc=$?
# The log, less valgrind's five-line warning on each pidfd_open(2) call
# (syscall 434 on every architecture), counted instead.
awk '
	/^--[0-9]+-- WARNING: unhandled [a-z0-9]+-linux syscall: 434$/ {
		skip = 4; n++; next
	}
	skip > 0 && /^--[0-9]+-- / { skip--; next }
	{ skip = 0; print }
	END {
		if (n)
			printf "\n(valgrind.sh: %d warnings that valgrind does " \
			       "not know pidfd_open(2) left out)\n", n
	}' "$log"

pid=$(cat "$tmp/pid" 2>/dev/null)
errors=$(grep -c "$begin" "$log")
# The suite process's fds at exit: each entry ("Open file descriptor N"
# or "Open AF_UNIX socket N") is followed by where it was opened, or by
# "<inherited from parent>".
leaked=$(awk -v p="==$pid== " '
	index($0, p) != 1 { next }
	{ line = substr($0, length(p) + 1) }
	line ~ /^FILE DESCRIPTORS:/ { in_fds = 1; next }
	!in_fds { next }
	line ~ /^Open / { pending = line; next }
	pending != "" {
		if (line !~ /<inherited from parent>/)
			print pending
		pending = ""
	}' "$log")

status=0
case $rc in
0) ;;
77) status=77 ;;
99) echo "valgrind.sh: valgrind found errors in $suite (see above)"
    status=1 ;;
124|137) echo "valgrind.sh: $suite did not finish within" \
	"${VALGRIND_TIMEOUT:-1800} s under valgrind"
    status=1 ;;
*) echo "valgrind.sh: $suite exited with $rc"
   status=1 ;;
esac
if [ "$errors" -gt 0 ]; then
	echo "valgrind.sh: $errors valgrind error(s) in $suite or the" \
		"processes it ran: search this log for $begin"
	status=1
fi
if [ -n "$leaked" ]; then
	echo "valgrind.sh: $suite ended with fds open that it did not" \
		"inherit:"
	echo "$leaked"
	status=1
fi
exit $status
