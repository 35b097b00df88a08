/* SPDX-License-Identifier: MIT */
/*
 * Asymmetric fences with membarrier(2) (ring.c (7)).  A process that
 * registers for MEMBARRIER_CMD_GLOBAL_EXPEDITED lets any other process
 * put a full barrier into its running threads with one system call.  So
 * the side that is about to sleep, which pays a system call anyway, pays
 * the barrier for both, and the side that runs hot -- a producer
 * publishing, a reader releasing -- needs no fence at all.
 */
#include "internal.h"

#include <linux/membarrier.h>
#include <stdlib.h>
#include <sys/syscall.h>

static int mb_pid;		/* the process that probed, or 0 */
static int mb_ok;		/* its answer: 1 registered, -1 not */

static long sys_membarrier(int cmd)
{
	return syscall(__NR_membarrier, cmd, 0, 0);
}

/*
 * Registered once per process (a child after fork(2) probes again: the
 * answer is cached by pid).  SHMFD_NO_MEMBARRIER=1 pretends the kernel
 * or a seccomp filter refused, for the tests of the fenced fallback.
 */
bool shmfd__membarrier_ready(void)
{
	int pid = (int)getpid();
	const char *env;
	bool ok;
	long q;

	if (LOAD_ACQUIRE(&mb_pid) == pid)
		return LOAD_RELAXED(&mb_ok) > 0;
	env = getenv("SHMFD_NO_MEMBARRIER");
	q = sys_membarrier(MEMBARRIER_CMD_QUERY);
	ok = !(env && *env && strcmp(env, "0")) && q > 0 &&
	     (q & MEMBARRIER_CMD_GLOBAL_EXPEDITED) &&
	     (q & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) &&
	     sys_membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0;
	STORE_RELAXED(&mb_ok, ok ? 1 : -1);
	STORE_RELEASE(&mb_pid, pid);
	return ok;
}

int shmfd__membarrier(void)
{
	if (sys_membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) < 0)
		return shmfd__neg_errno();
	return 0;
}
