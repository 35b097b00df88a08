#!/bin/sh
# SPDX-License-Identifier: MIT
#
# The shmfd command's list, stat, cat and pub, as a user runs them: real
# producers and readers in separate processes, a producer killed with
# SIGKILL, and the errors a user meets.  Everything runs twice, with
# io_uring and with SHMFD_NO_IO_URING=1.
#
# Run by "make check" from the top build directory.  Exit 0 pass, 1 fail.

LC_ALL=C
export LC_ALL
SHMFD=${SHMFD:-$PWD/tools/shmfd}
tmp=$(mktemp -d) || exit 99
pids=
cleanup() {
	for p in $pids; do kill -9 "$p" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT
fails=0

fail() {
	echo "FAIL ($mode): $*"
	fails=$((fails + 1))
}

# Poll until "shmfd list" shows (or, with !, no longer shows) NAME on a
# line matching PATTERN; at most 10 s.
wait_list() {
	neg=
	[ "$1" = ! ] && { neg=1; shift; }
	i=0
	while [ $i -lt 200 ]; do
		if "$SHMFD" list 2>/dev/null | grep -Eq "^$1 +$2"; then
			[ -z "$neg" ] && return 0
		else
			[ -n "$neg" ] && return 0
		fi
		sleep 0.05
		i=$((i + 1))
	done
	return 1
}

# Poll until "shmfd stat NAME" has a line matching PATTERN; at most 10 s.
wait_stat() {
	i=0
	while [ $i -lt 200 ]; do
		"$SHMFD" stat "$1" 2>/dev/null | grep -Eq "$2" && return 0
		sleep 0.05
		i=$((i + 1))
	done
	return 1
}

# "expect_exit_within PID STATUS WHAT": PID, a child of ours, exits with
# STATUS within 10 s (a watchdog kills it otherwise).
expect_exit_within() {
	( sleep 10; kill -9 "$1" 2>/dev/null ) &
	dog=$!
	wait "$1"
	got=$?
	kill "$dog" 2>/dev/null
	wait "$dog" 2>/dev/null
	[ "$got" -eq "$2" ] || fail "$3: exit $got, expected $2"
}

# "expect_err STATUS PATTERN cmd...": exits STATUS and prints one line on
# stderr that matches PATTERN.
expect_err() {
	want=$1 pat=$2
	shift 2
	"$@" >"$tmp/out" 2>"$tmp/err"
	got=$?
	[ "$got" -eq "$want" ] || fail "$*: exit $got, expected $want"
	[ "$(wc -l <"$tmp/err")" -eq 1 ] ||
		fail "$*: $(wc -l <"$tmp/err") lines on stderr, expected 1"
	grep -Eq -- "$pat" "$tmp/err" ||
		fail "$*: stderr '$(cat "$tmp/err")' lacks /$pat/"
}

run_all() {
	SHMFD_DIR=$tmp/dir-$mode
	export SHMFD_DIR

	# --help everywhere, and the command's own usage.
	for sub in list stat cat pub bench; do
		"$SHMFD" "$sub" --help >"$tmp/out" 2>&1 ||
			fail "shmfd $sub --help exits $?"
		grep -q "usage: shmfd $sub" "$tmp/out" ||
			fail "shmfd $sub --help prints no usage"
	done
	"$SHMFD" --help | grep -q 'usage: shmfd COMMAND' ||
		fail "shmfd --help prints no usage"
	"$SHMFD" frobnicate >/dev/null 2>&1
	[ $? -eq 2 ] || fail "an unknown command does not exit 2"

	# An empty directory lists no channel, and is no error.
	"$SHMFD" list >"$tmp/out" || fail "list of no channel exits $?"
	[ "$(wc -l <"$tmp/out")" -eq 1 ] || fail "list of no channel: $(cat "$tmp/out")"

	# pub -> cat: every line, in order, then cat ends when pub closes.
	printf 'one\ntwo\n\nthree and more\n' >"$tmp/lines"
	"$SHMFD" pub lines --wait 1 <"$tmp/lines" &
	pub=$!
	pids="$pids $pub"
	wait_list lines "[0-9]+ reliable" || fail "list never showed 'lines'"
	"$SHMFD" cat lines >"$tmp/got" 2>"$tmp/err" || fail "cat lines exits $?"
	cmp -s "$tmp/lines" "$tmp/got" ||
		fail "cat printed '$(cat "$tmp/got")', pub sent '$(cat "$tmp/lines")'"
	[ -s "$tmp/err" ] && fail "cat lines wrote on stderr: $(cat "$tmp/err")"
	wait "$pub" || fail "pub lines exits $?"
	wait_list ! lines || fail "list still shows 'lines' after pub exited"

	# stat while the producer runs: published messages and joined
	# readers, seen from outside; the watcher itself is no reader.
	mkfifo "$tmp/fifo"
	"$SHMFD" pub counted <"$tmp/fifo" &
	pub=$!
	pids="$pids $pub"
	exec 3>"$tmp/fifo"
	wait_list counted "[0-9]+ reliable" || fail "list never showed 'counted'"
	"$SHMFD" cat counted -n 3 >"$tmp/got" 3>&- &
	cat_pid=$!
	pids="$pids $cat_pid"
	wait_stat counted '^readers +1 joined' ||
		fail "stat never showed the reader: $("$SHMFD" stat counted)"
	printf 'a\nb\nc\n' >&3
	wait_stat counted '^published +3 messages' ||
		fail "stat never showed 3 published: $("$SHMFD" stat counted)"
	wait "$cat_pid" || fail "cat -n 3 exits $?"
	printf 'a\nb\nc\n' | cmp -s - "$tmp/got" || fail "cat -n 3 printed '$(cat "$tmp/got")'"
	wait_stat counted '^readers +0 joined .* 1 joined since' ||
		fail "stat after the reader left: $("$SHMFD" stat counted)"
	"$SHMFD" stat counted --watch --interval 0.05 >"$tmp/watch" 3>&- &
	watch=$!
	pids="$pids $watch"
	sleep 0.3
	exec 3>&-
	wait "$pub" || fail "pub counted exits $?"
	wait "$watch" || fail "stat --watch exits $? when the producer goes"
	grep -q 'MSGS/S' "$tmp/watch" || fail "stat --watch printed no table"
	grep -q "the producer of 'counted' is gone" "$tmp/watch" ||
		fail "stat --watch did not say the producer went: $(cat "$tmp/watch")"
	rm -f "$tmp/fifo"

	# A producer killed with SIGKILL leaves a stale socket: list says so.
	"$SHMFD" pub victim --wait 64 </dev/null &
	pub=$!
	pids="$pids $pub"
	wait_list victim "[0-9]+ reliable" || fail "list never showed 'victim'"
	kill -9 "$pub"
	wait "$pub" 2>/dev/null
	wait_list victim "- +stale" || fail "list does not show 'victim' as stale: $("$SHMFD" list)"
	expect_err 1 "channel 'victim': no such channel" "$SHMFD" stat victim
	# The next producer of the name replaces the stale socket.
	echo again | "$SHMFD" pub victim || fail "pub over a stale socket exits $?"

	# A file as one message: larger than the ring takes inline, so it
	# goes as a blob, byte for byte.
	head -c 3000000 /dev/urandom >"$tmp/file"
	"$SHMFD" pub file --file "$tmp/file" --ring-size 1M --wait 1 &
	pub=$!
	pids="$pids $pub"
	wait_list file "[0-9]+ reliable" || fail "list never showed 'file'"
	"$SHMFD" cat file --raw >"$tmp/got" || fail "cat --raw exits $?"
	cmp -s "$tmp/file" "$tmp/got" || fail "cat --raw: the file's bytes differ"
	wait "$pub" || fail "pub --file exits $?"
	"$SHMFD" pub file2 --file "$tmp/file" --ring-size 1M --wait 1 &
	pub=$!
	pids="$pids $pub"
	wait_list file2 "[0-9]+ reliable" || fail "list never showed 'file2'"
	"$SHMFD" cat file2 --hex >"$tmp/got" || fail "cat --hex exits $?"
	head -1 "$tmp/got" | grep -q '^# seq 1, 3000000 bytes, blob$' ||
		fail "cat --hex header: $(head -1 "$tmp/got")"
	wait "$pub" || fail "pub --file exits $?"

	# Lossy: a reader that falls behind is told what it lost, and the
	# total shows in stat.
	mkfifo "$tmp/fifo"
	"$SHMFD" pub fast --lossy --ring-size 64K <"$tmp/fifo" &
	pub=$!
	pids="$pids $pub"
	exec 3>"$tmp/fifo"
	wait_list fast "[0-9]+ lossy" || fail "list never showed 'fast' as lossy"
	# A reader whose output stalls for a second: its pipe fills, it
	# stops reading, and 100,000 messages lap a 64 KiB ring meanwhile.
	( { "$SHMFD" cat fast 2>"$tmp/err"; echo $? >"$tmp/status"; } |
		{ sleep 1; cat >/dev/null; } ) 3>&- &
	cat_pid=$!
	pids="$pids $cat_pid"
	wait_stat fast '^readers +1 joined' || fail "'fast' never had a reader"
	seq 1 100000 >&3
	wait_stat fast '^lost +[1-9][0-9]* messages' ||
		fail "stat shows no loss: $("$SHMFD" stat fast)"
	exec 3>&-
	wait "$pub" || fail "pub fast exits $?"
	wait "$cat_pid"
	[ "$(cat "$tmp/status")" = 0 ] || fail "cat fast exits $(cat "$tmp/status")"
	grep -Eq 'messages? lost before seq' "$tmp/err" ||
		fail "cat reported no loss: $(cat "$tmp/err")"
	rm -f "$tmp/fifo"

	# Ctrl-C ends a cat blocked for messages (exit 0) and a pub blocked
	# for a reader's space (exit 1, one line), though the library's own
	# waits ride out signals.
	mkfifo "$tmp/fifo"
	"$SHMFD" pub quiet --ring-size 64K <"$tmp/fifo" 2>"$tmp/perr" &
	pub=$!
	pids="$pids $pub"
	exec 3>"$tmp/fifo"
	wait_list quiet "[0-9]+ reliable" || fail "list never showed 'quiet'"
	"$SHMFD" cat quiet >/dev/null 3>&- &
	cat_pid=$!
	pids="$pids $cat_pid"
	wait_stat quiet '^readers +1 joined' || fail "'quiet' never had a reader"
	sleep 0.3
	kill -INT "$cat_pid"
	expect_exit_within "$cat_pid" 0 "cat blocked for messages, after SIGINT"
	"$SHMFD" cat quiet >/dev/null 3>&- &
	cat_pid=$!
	pids="$pids $cat_pid"
	wait_stat quiet '^readers +1 joined' || fail "'quiet' lost its reader"
	kill -STOP "$cat_pid"
	seq 1 20000 >&3 &		# more than a 64 KiB ring holds
	filler=$!
	wait_stat quiet '^published +[1-9][0-9]{2,} messages' ||
		fail "'quiet' published nothing"
	sleep 0.5
	kill -INT "$pub"
	expect_exit_within "$pub" 1 "pub blocked in a send, after SIGINT"
	grep -q "channel 'quiet': interrupted" "$tmp/perr" ||
		fail "pub after SIGINT said: $(cat "$tmp/perr")"
	kill -9 "$cat_pid" "$filler" 2>/dev/null
	wait "$cat_pid" "$filler" 2>/dev/null
	exec 3>&-
	rm -f "$tmp/fifo"

	# Errors: one line, naming the channel and the reason; exit 1.
	expect_err 1 "channel 'nosuch': no such channel" "$SHMFD" stat nosuch
	expect_err 1 "channel 'nosuch': no such channel" "$SHMFD" cat nosuch
	expect_err 1 "channel 'a/b': invalid name" "$SHMFD" cat a/b
	expect_err 1 "channel '': invalid name" "$SHMFD" stat ''
	expect_err 1 "channel '\.\.': invalid name" "$SHMFD" pub .. </dev/null
	expect_err 1 "invalid ring size" "$SHMFD" pub x --ring-size 1K </dev/null
	expect_err 2 "--ring-size: 'lots' is not a size" "$SHMFD" pub x --ring-size lots
	"$SHMFD" pub busy --wait 64 </dev/null &
	pub=$!
	pids="$pids $pub"
	wait_list busy "[0-9]+ reliable" || fail "list never showed 'busy'"
	expect_err 1 "channel 'busy': already served" "$SHMFD" pub busy </dev/null
	kill -9 "$pub"
	wait "$pub" 2>/dev/null
	expect_err 1 "$tmp/nofile: No such file" "$SHMFD" pub nf --file "$tmp/nofile"
}

mode=uring
unset SHMFD_NO_IO_URING
run_all
mode=nouring
SHMFD_NO_IO_URING=1
export SHMFD_NO_IO_URING
run_all

if [ "$fails" -ne 0 ]; then
	echo "$fails check(s) failed"
	exit 1
fi
echo "PASS: shmfd list, stat, cat, pub (with and without io_uring)"
exit 0
