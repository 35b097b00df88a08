/* SPDX-License-Identifier: MIT */
/*
 * Early wake (lib/ring.c (9)): reserving a large record wakes the readers
 * blocked at head, so that their wake-up overlaps the build -- and never
 * at the cost of a message or a poll fd's quiet.
 *
 * When the producer wakes early is checked by trapping its
 * FUTEX_WAKE_BITSET calls with a seccomp filter on the thread that
 * reserves: a trapped wake is counted and not made, so the reader also
 * shows that the commit's own wake still reaches it.  Run as itself and
 * as test-ahead.nouring.
 */
#define _GNU_SOURCE
#include "config.h"

#include <linux/filter.h>
#include <linux/futex.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <shmfd.h>

#include "helpers.h"

#define KiB		1024u
#define RING		(1024 * KiB)
#define SMALL		(4 * KiB)	/* below the early-wake size */
#define LARGE		(128 * KiB)	/* above it (64 KiB) */
#define QUIET_MS	50
#define FUTEX_BLOCK_BIT	1u		/* lib/internal.h SHMFD_FUTEX_BLOCK */

/* ---- the producer's early wakes, trapped and counted ---- */

static volatile int traps;
static volatile long trap_bits;	/* the bitset of the last one, or -1 */

static void on_sigsys(int sig, siginfo_t *si, void *ctx)
{
	ucontext_t *uc = ctx;

	(void)sig;
	(void)si;
	(void)uc;
	traps++;
#if defined(__x86_64__)
	trap_bits = (long)uc->uc_mcontext.gregs[REG_R9];
	uc->uc_mcontext.gregs[REG_RAX] = 0;
#elif defined(__aarch64__)
	trap_bits = (long)uc->uc_mcontext.regs[5];
	uc->uc_mcontext.regs[0] = 0;
#else
	trap_bits = -1;
#endif
}

/* Trap this thread's futex(FUTEX_WAKE_BITSET) calls, and only those:
 * the commit's wake (FUTEX_WAKE) still goes through. */
static int trap_wake_bitset(void)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	const unsigned int op = offsetof(struct seccomp_data, args[1]);
#else
	const unsigned int op = offsetof(struct seccomp_data, args[1]) + 4;
#endif
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_futex, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, op),
		BPF_STMT(BPF_ALU | BPF_AND | BPF_K, FUTEX_CMD_MASK),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, FUTEX_WAKE_BITSET, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]),
				   .filter = f };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	/* prctl() filters only the calling thread, which exits after. */
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
		return -errno;
	return 0;
}

struct resv_job {
	struct shmfd_chan *chan;
	size_t len;
	void *buf;
	int ret;
};

static void *resv_thread(void *arg)
{
	struct resv_job *j = arg;

	j->ret = trap_wake_bitset();
	if (j->ret == 0)
		j->ret = shmfd_reserve(j->chan, j->len, &j->buf, 0);
	return NULL;
}

/* shmfd_reserve(chan, len) on a thread whose early wakes are trapped;
 * the number of wakes it tried.  The caller fills and commits. */
static int reserve_counting(struct shmfd_chan *chan, size_t len, void **bufp)
{
	struct resv_job j = { .chan = chan, .len = len };
	pthread_t t;

	traps = 0;
	trap_bits = 0;
	expect_eq(pthread_create(&t, NULL, resv_thread, &j), 0);
	expect_eq(pthread_join(t, NULL), 0);
	expect_ok(j.ret);
	*bufp = j.buf;
	return traps;
}

static void commit_seq(struct shmfd_chan *chan, void *buf, size_t len,
		       uint64_t seq)
{
	th_fill(buf, len, seq);
	expect_ok(shmfd_commit(chan, len));
}

/* ---- a reader in a child process, driven over its socket ---- */

struct reader_arg {
	int share;
	bool poll;	/* wait in poll(2) on shmfd_reader_pollfd */
};

#define READY	(-1)
#define ENTERED	(-2)

/* Each value read is the seq of the next message to receive, 0 to end.
 * ENTERED is sent just before the wait, so that once the child sleeps
 * again the parent knows it sleeps in the library. */
static int reader_main(int sock, void *arg)
{
	const struct reader_arg *a = arg;
	struct shmfd_reader *r = th_join(a->share, 0);
	int fd = a->poll ? expect_ok(shmfd_reader_pollfd(r)) : -1;
	int64_t seq;

	th_put(sock, READY);
	while ((seq = th_get(sock)) != 0) {
		struct shmfd_msg m;
		int ret;

		th_put(sock, ENTERED);
		if (!a->poll) {
			expect_ok(shmfd_recv(r, &m, 0, DEADLINE_MS));
		} else {
			do {
				struct pollfd p = { .fd = fd, .events = POLLIN };

				expect(poll(&p, 1, DEADLINE_MS) == 1,
				       "poll fd not readable in %d ms",
				       DEADLINE_MS);
				ret = shmfd_recv(r, &m, 0, 0);
			} while (ret == -EAGAIN);
			expect_ok(ret);
		}
		expect_eq(m.seq, seq);
		expect(th_check(m.data, m.len, m.seq) < 0, "message %lld "
		       "corrupt", (long long)seq);
		expect_ok(shmfd_msg_release(r, &m));
		th_put(sock, seq);
	}
	shmfd_reader_close(r);
	return 0;
}

static struct th_child reader_spawn(struct reader_arg *a)
{
	struct th_child c = th_spawn(reader_main, a, 0);

	expect_eq(th_get(c.sock), READY);
	return c;
}

/* Have the child wait for seq, and return once it sleeps in that wait. */
static void reader_waits(const struct th_child *c, uint64_t seq)
{
	th_put(c->sock, (int64_t)seq);
	expect_eq(th_get(c->sock), ENTERED);
	expect_sleeping(c->pid);
}

static void reader_end(struct th_child *c)
{
	th_put(c->sock, 0);
	expect_exit(c->pid, 0);
	close(c->sock);
}

static uint32_t mode_flags(int i)
{
	return i ? SHMFD_LOSSY : 0;
}

/* A large reservation wakes a reader blocked at head, once, with the
 * blocked readers' bit; a small one, a reader that is not waiting and a
 * reader waiting on a poll fd are left alone.  Each trapped early wake
 * is a wake that never happened: the reader then gets the message from
 * the commit's wake, as it must. */
START_TEST(test_early_wake_when_due)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, mode_flags(_i));
	struct reader_arg a = { .share = expect_ok(shmfd_chan_share_fd(chan)) };
	struct reader_arg ap = { .share = a.share, .poll = true };
	struct sigaction sa = { .sa_sigaction = on_sigsys,
				.sa_flags = SA_SIGINFO };
	struct th_child c, cp;
	void *buf;

	if (th_under_valgrind()) {
		/* valgrind runs each thread's system calls itself: a
		 * seccomp filter would trap valgrind, not the library. */
		th_skip("test_early_wake_when_due: no seccomp under valgrind\n");
		shmfd_chan_close(chan);
		close(a.share);
		return;
	}
	expect_sys(sigaction(SIGSYS, &sa, NULL));
	c = reader_spawn(&a);

	/* Blocked at head, small record: no early wake. */
	reader_waits(&c, 1);
	expect_eq(reserve_counting(chan, SMALL, &buf), 0);
	commit_seq(chan, buf, SMALL, 1);
	expect_eq(th_get(c.sock), 1);

	/* Blocked at head, large record: one, for blocked readers. */
	reader_waits(&c, 2);
	expect_eq(reserve_counting(chan, LARGE, &buf), 1);
	if (trap_bits != -1)
		expect_eq(trap_bits, FUTEX_BLOCK_BIT);
	commit_seq(chan, buf, LARGE, 2);
	expect_eq(th_get(c.sock), 2);

	/* Not waiting (busy elsewhere): nobody to wake. */
	expect_eq(reserve_counting(chan, LARGE, &buf), 0);
	commit_seq(chan, buf, LARGE, 3);
	th_put(c.sock, 3);
	expect_eq(th_get(c.sock), ENTERED);
	expect_eq(th_get(c.sock), 3);

	/* Waiting in poll(2) on its poll fd: an early wake would only make
	 * the fd spuriously readable. */
	cp = reader_spawn(&ap);
	reader_waits(&cp, 4);
	expect_eq(reserve_counting(chan, LARGE, &buf), 0);
	commit_seq(chan, buf, LARGE, 4);
	expect_eq(th_get(cp.sock), 4);

	reader_end(&cp);
	th_put(c.sock, 4);
	expect_eq(th_get(c.sock), ENTERED);
	expect_eq(th_get(c.sock), 4);
	reader_end(&c);
	close(a.share);
	shmfd_chan_close(chan);
}
END_TEST

/* A reader woken early watches for the commit only briefly: when the
 * build takes far longer it sleeps again, and the commit must still wake
 * it.  Large and small records alternate; the reader is asleep at head
 * before each reservation. */
START_TEST(test_slow_build_still_delivered)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, mode_flags(_i));
	struct reader_arg a = { .share = expect_ok(shmfd_chan_share_fd(chan)) };
	struct th_child c = reader_spawn(&a);

	for (uint64_t seq = 1; seq <= 6; seq++) {
		size_t len = seq & 1 ? LARGE : SMALL;
		void *buf;

		reader_waits(&c, seq);
		expect_ok(shmfd_reserve(chan, len, &buf, 0));
		/* Far past the reader's watch (200 us), had it been woken. */
		th_msleep(20);
		commit_seq(chan, buf, len, seq);
		expect_eq(th_get(c.sock), seq);
	}
	/* And a build as quick as the wake-up itself. */
	for (uint64_t seq = 7; seq <= 12; seq++) {
		void *buf;

		reader_waits(&c, seq);
		expect_ok(shmfd_reserve(chan, LARGE, &buf, 0));
		commit_seq(chan, buf, LARGE, seq);
		expect_eq(th_get(c.sock), seq);
	}
	reader_end(&c);
	close(a.share);
	shmfd_chan_close(chan);
}
END_TEST

/* A poll fd stays quiet while a large record is being built, and turns
 * readable at its commit. */
START_TEST(test_poll_fd_quiet_during_build)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, mode_flags(_i));
	int share = expect_ok(shmfd_chan_share_fd(chan));
	struct shmfd_reader *r = th_join(share, 0);
	int fd = expect_ok(shmfd_reader_pollfd(r));
	struct shmfd_msg m;
	void *buf;

	for (uint64_t seq = 1; seq <= 3; seq++) {
		expect_err(shmfd_recv(r, &m, 0, 0), EAGAIN);
		expect(!th_readable(fd, QUIET_MS), "poll fd readable with "
		       "nothing to receive");
		expect_ok(shmfd_reserve(chan, LARGE, &buf, 0));
		expect(!th_readable(fd, QUIET_MS), "poll fd readable while "
		       "the record is only reserved");
		expect_err(shmfd_recv(r, &m, 0, 0), EAGAIN);
		commit_seq(chan, buf, LARGE, seq);
		expect(th_readable(fd, DEADLINE_MS), "poll fd not readable "
		       "after the commit");
		expect_ok(shmfd_recv(r, &m, 0, 0));
		expect_next(r, &m, seq);
	}
	shmfd_reader_close(r);
	close(share);
	shmfd_chan_close(chan);
}
END_TEST

static Suite *ahead_suite(void)
{
	Suite *s = suite_create("ahead");
	TCase *tc = th_tcase("early wake");

	tcase_add_loop_test(tc, test_early_wake_when_due, 0, 2);
	tcase_add_loop_test(tc, test_slow_build_still_delivered, 0, 2);
	tcase_add_loop_test(tc, test_poll_fd_quiet_during_build, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return th_run(ahead_suite());
}
