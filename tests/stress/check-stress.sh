#!/bin/sh
# SPDX-License-Identifier: MIT
# make check-stress: shmfd-stress with io_uring and membarrier, then again
# with SHMFD_NO_IO_URING=1 SHMFD_NO_MEMBARRIER=1 (the plain sendmsg/futex
# path, every fence in place), with one seed for both so that a failure
# in either replays.  SHMFD_STRESS_SEED, _RUNS, _LOAD and _ONLY pass
# through (see tests/stress/main.c).
prog=${1:?usage: check-stress.sh PATH-TO-shmfd-stress}

if [ -z "${SHMFD_STRESS_SEED:-}" ]; then
	SHMFD_STRESS_SEED=0x$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
fi
export SHMFD_STRESS_SEED

echo "==== check-stress: io_uring, membarrier"
env -u SHMFD_NO_IO_URING -u SHMFD_NO_MEMBARRIER "$prog"
first=$?
echo
echo "==== check-stress: SHMFD_NO_IO_URING=1 SHMFD_NO_MEMBARRIER=1"
SHMFD_NO_IO_URING=1 SHMFD_NO_MEMBARRIER=1 "$prog"
second=$?

echo
if [ $first -ne 0 ] || [ $second -ne 0 ]; then
	echo "check-stress: FAILED (io_uring pass: exit $first, fallback" \
	     "pass: exit $second); seed $SHMFD_STRESS_SEED" >&2
	exit 1
fi
echo "check-stress: both passes passed; seed $SHMFD_STRESS_SEED"
