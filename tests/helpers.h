/* SPDX-License-Identifier: MIT */
/*
 * Shared by the Check suites in tests/: assertions that say what went
 * wrong with a -errno result, child processes with generous deadlines,
 * a private SHMFD_DIR per test and a fixture that fails a test which
 * leaks a file descriptor.
 *
 * The expect*() macros work both in the test process (they fail the Check
 * test) and in a forked child (they print and _exit(CHILD_FAILED), which
 * the parent turns into a test failure through expect_exit()).  Check's
 * own ck_assert*() must not be used in a child: it would report to the
 * Check runner on the child's behalf.
 */
#ifndef SHMFD_TEST_HELPERS_H
#define SHMFD_TEST_HELPERS_H

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

/*
 * SHMFD_TEST_SLOWDOWN, a whole number (make check-valgrind sets it):
 * how many times slower than native this run may be.  It stretches the
 * bounds below, which only say how long to wait before calling a test
 * hung; what a test asserts stays the same.
 */
int th_slowdown(void);
/* Check's limit for one test, in seconds. */
#define TEST_TIMEOUT_S	(60 * th_slowdown())
/* How long to wait for a child, handshake or wake-up that may never come. */
#define DEADLINE_MS	(30000 * th_slowdown())
#define CHILD_FAILED	101	/* exit status: a child's check failed */
/* A window in which something must not happen (a send stays blocked),
 * stretched as much, so a slow run watches as long as a native one. */
#define TH_MS(ms)	((ms) * th_slowdown())
/* A process's exit status when valgrind found errors in it
 * (tests/valgrind.sh: --error-exitcode). */
#define VALGRIND_FAILED	99

/* Is this process running under valgrind? */
bool th_under_valgrind(void);

/* True in a process forked by th_spawn(): failures _exit() there. */
extern bool th_in_child;

void th_fail(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), noreturn));
const char *th_strerr(long ret);

#define expect(cond, ...)						\
	do {								\
		if (!(cond))						\
			th_fail(__FILE__, __LINE__, __VA_ARGS__);	\
	} while (0)

/* A libshmfd call that must succeed: its value (count, fd) or a failure. */
#define expect_ok(expr)							\
	({								\
		long ret_ = (expr);					\
		if (ret_ < 0)						\
			th_fail(__FILE__, __LINE__, "%s = %ld (%s)",	\
				#expr, ret_, th_strerr(ret_));		\
		(int)ret_;						\
	})

/* A libshmfd call that must fail with -err. */
#define expect_err(expr, err)						\
	do {								\
		long ret_ = (expr);					\
		if (ret_ != -(long)(err))				\
			th_fail(__FILE__, __LINE__,			\
				"%s = %ld (%s), expected -%s (%s)",	\
				#expr, ret_, th_strerr(ret_), #err,	\
				strerror(err));				\
	} while (0)

/* A libc call that returns -1 and sets errno on failure. */
#define expect_sys(expr)						\
	({								\
		long ret_ = (expr);					\
		if (ret_ == -1)						\
			th_fail(__FILE__, __LINE__, "%s: %s", #expr,	\
				strerror(errno));			\
		ret_;							\
	})

/* A libc call that must fail with errno err. */
#define expect_sys_err(expr, err)					\
	do {								\
		errno = 0;						\
		long ret_ = (long)(expr);				\
		if (ret_ != -1 || errno != (err))			\
			th_fail(__FILE__, __LINE__,			\
				"%s = %ld (%s), expected -1 (%s)",	\
				#expr, ret_,				\
				ret_ == -1 ? strerror(errno) : "success", \
				strerror(err));				\
	} while (0)

#define expect_eq(a, b)							\
	do {								\
		long long a_ = (long long)(a), b_ = (long long)(b);	\
		if (a_ != b_)						\
			th_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", \
				#a, #b, a_, b_);			\
	} while (0)

/* ---- fixture ---- */

/* Per test: a fresh 0700 directory exported as SHMFD_DIR, the open fds
 * remembered, this process made the reaper of orphaned grandchildren. */
void th_setup(void);
/* Kills children still running, removes the directory, fails the test
 * if an fd opened during the test is still open. */
void th_teardown(void);
const char *th_dir(void);
/* Add the fixture and the timeout to a test case. */
TCase *th_tcase(const char *name);

/* ---- fd and mapping accounting ---- */

#define TH_MAX_FDS	1024
struct th_fds {
	bool open[TH_MAX_FDS];
};
void th_fd_snapshot(struct th_fds *s);
/* Number of fds open now that were not in s; describes them in buf. */
int th_fd_leaks(const struct th_fds *s, char *buf, size_t len);
int th_fd_count(void);
int th_map_count(void);
int th_thread_count(void);
/* Is any open fd of this process a link to a name containing what? */
int th_fds_matching(const char *what);

/* ---- child processes ---- */

typedef int (*th_fn)(int sock, void *arg);

struct th_child {
	pid_t pid;
	int sock;		/* our end of a socketpair with the child */
};

#define TH_ORPHAN	(1u << 0)	/* survive our death (no PDEATHSIG) */

/*
 * Fork a child that runs fn(sock, arg) and exits with its return value.
 * The child dies with us (unless TH_ORPHAN) and after 2 * DEADLINE_MS in
 * any case, so a broken library never leaves a process behind.
 */
struct th_child th_spawn(th_fn fn, void *arg, unsigned int flags);
/* Wait up to DEADLINE_MS for a child (or an adopted grandchild); the
 * raw wait status.  Fails the test at the deadline. */
int th_wait(pid_t pid);
void th_expect_exit(const char *file, int line, pid_t pid, int code);
void th_expect_signal(const char *file, int line, pid_t pid, int sig);
#define expect_exit(pid, code) th_expect_exit(__FILE__, __LINE__, pid, code)
#define expect_signal(pid, sig) th_expect_signal(__FILE__, __LINE__, pid, sig)
/* The state letter of /proc/PID/stat (R, S, D, Z...), or 0. */
char th_proc_state(pid_t pid);
/* Wait until pid sleeps (state S): a process that said it is about to
 * block in the library is then really blocked, not still on its way. */
void th_expect_sleeping(const char *file, int line, pid_t pid);
#define expect_sleeping(pid) th_expect_sleeping(__FILE__, __LINE__, pid)
/* Remember a pid to SIGKILL at teardown (e.g. an adopted grandchild). */
void th_track(pid_t pid);
void th_untrack(pid_t pid);

/* ---- handshakes over a stream socket or pipe: one int64 at a time ---- */

void th_pair(int sv[2]);
void th_put(int fd, int64_t v);
/* Read a value within DEADLINE_MS; fails on EOF or at the deadline. */
int64_t th_get(int fd);
/* Is fd readable (or at EOF) within ms? */
bool th_readable(int fd, int ms);
/* Pass / receive one fd over a Unix socket. */
void th_send_fd(int sock, int fd);
int th_recv_fd(int sock);

/* ---- message payloads that prove their own integrity ---- */

/* Length of message seq, between 0 and max, varying with seq. */
size_t th_msg_len(uint64_t seq, size_t max);
void th_fill(void *buf, size_t len, uint64_t seq);
/* Returns the first bad offset, or -1 if buf is exactly th_fill(seq). */
long th_check(const void *buf, size_t len, uint64_t seq);

/* Message *m from r is seq want, nothing lost, intact: release it. */
#define expect_next(r, m, want)						\
	do {								\
		expect_eq((m)->seq, (want));				\
		expect_eq((m)->lost, 0);				\
		expect(th_check((m)->data, (m)->len, (m)->seq) < 0,	\
		       "message %llu corrupt",				\
		       (unsigned long long)(m)->seq);			\
		expect_eq(shmfd_msg_release((r), (m)), 0);		\
	} while (0)

/* ---- time ---- */

uint64_t th_now_ms(void);

/* Poll cond every millisecond until it holds or DEADLINE_MS passes: for
 * state the library exposes no event for (e.g. shmfd_chan_readers).
 * Returns whether it held; expect_eventually() fails the test if not. */
#define wait_until(cond)						\
	({								\
		uint64_t end_ = th_now_ms() + DEADLINE_MS;		\
		bool ok_;						\
		while (!(ok_ = (cond)) && th_now_ms() < end_)		\
			th_msleep(1);					\
		ok_;							\
	})
void th_msleep(int ms);
#define expect_eventually(cond)						\
	expect(wait_until(cond), "still not true after %d ms: %s",	\
	       DEADLINE_MS, #cond)

/* ---- channels and readers ---- */

struct shmfd_chan;
struct shmfd_reader;

/* A channel (name NULL: anonymous) with these parameters, or a failure
 * reported at the caller's line. */
#define th_chan(...) th_chan_at(__FILE__, __LINE__, __VA_ARGS__)
struct shmfd_chan *th_chan_at(const char *file, int line, const char *name,
			      size_t ring_size, size_t max_inline,
			      uint32_t flags);
/* Join through a copy of share_fd (share_fd stays the caller's). */
#define th_join(...) th_join_at(__FILE__, __LINE__, __VA_ARGS__)
struct shmfd_reader *th_join_at(const char *file, int line, int share_fd,
				int flags);

/* A send (or reserve+commit) of message seq in another thread, for
 * sends expected to block: the main thread watches and then joins.  The
 * thread's state lives on the heap, not in the caller's frame: under
 * CK_FORK=no a failed check leaves the test function while the send may
 * still be blocked, and the thread must not then write into a frame the
 * next test reuses. */
struct th_async_job;
struct th_async {
	struct th_async_job *job;
};
void th_async_send(struct th_async *a, struct shmfd_chan *chan, uint64_t seq,
		   size_t len, int timeout_ms, bool reserve);
/* Has it returned within ms? */
bool th_async_done(struct th_async *a, int ms);
/* Its result, waiting up to DEADLINE_MS (fails the test after that). */
int th_async_join(struct th_async *a);

/* ---- suites ---- */

/* Record why part of a suite did not run: the suite then exits 77 (SKIP)
 * when nothing failed, so a missing feature never passes silently. */
void th_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Run the suite; 0, 1 (failures) or 77 (skipped parts). */
int th_run(Suite *s);

#endif /* SHMFD_TEST_HELPERS_H */
