/* SPDX-License-Identifier: MIT */
/*
 * Shared futexes on 32-bit words of MAP_SHARED memfd mappings, and the
 * monotonic clock the waits are measured against.  FUTEX_WAIT works on a
 * read-only mapping, which is how readers sleep on the sealed ring.
 */
#include "internal.h"

#include <limits.h>

uint64_t shmfd__now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t shmfd__deadline(int timeout_ms)
{
	if (timeout_ms < 0)
		return UINT64_MAX;
	if (timeout_ms == 0)
		return 0;
	return shmfd__now_ns() + (uint64_t)timeout_ms * 1000000ull;
}

/*
 * Returns 0 when woken (or when *word already differs: the caller
 * re-checks its condition either way), -ETIMEDOUT at the deadline,
 * -EINTR on a signal, -EFAULT if the page went away.
 */
int shmfd__futex_wait(const uint32_t *word, uint32_t val, uint32_t bits,
		      uint64_t deadline_ns)
{
	struct timespec ts, *tsp = NULL;
	long ret;

	if (deadline_ns != UINT64_MAX) {
		/* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time,
		 * so a retried wait never stretches the timeout. */
		ts.tv_sec = (time_t)(deadline_ns / 1000000000ull);
		ts.tv_nsec = (long)(deadline_ns % 1000000000ull);
		tsp = &ts;
	}
	ret = syscall(SYS_futex, word, FUTEX_WAIT_BITSET, val, tsp, NULL, bits);
	if (ret == 0)
		return 0;
	if (errno == EAGAIN)
		return 0;
	return shmfd__neg_errno();
}

int shmfd__futex_wake(const uint32_t *word, int n)
{
	long ret = syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);

	return ret < 0 ? shmfd__neg_errno() : (int)ret;
}

int shmfd__futex_wake_bits(const uint32_t *word, int n, uint32_t bits)
{
	long ret = syscall(SYS_futex, word, FUTEX_WAKE_BITSET, n, NULL, NULL,
			   bits);

	return ret < 0 ? shmfd__neg_errno() : (int)ret;
}
