/* SPDX-License-Identifier: MIT */
/*
 * DESIGN §4.6: no allocation, lock or syscall on the steady-state
 * send/recv path.  A producer and a reader run their steady state under a
 * seccomp filter that traps every syscall but exit, and with malloc and
 * pthread_mutex_lock counted: one syscall, allocation or lock fails the
 * test and names it.  They coordinate through a shared word, spinning,
 * since a pipe would be a syscall.  The ring wraps (PAD records, space
 * reclaimed from the reader's tail) while they run.
 */
#define _GNU_SOURCE
#include "config.h"

#include <dlfcn.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <shmfd.h>

#include "helpers.h"

#define RING		(64u * 1024u)
#define BATCH		600		/* 600 * 80 bytes: most of the ring */
#define ROUNDS		6		/* wraps the ring several times */

/* ---- counting allocations and locks made by the library ---- */

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void __libc_free(void *p);

/* Thread-local: only the thread on the send/recv path is watched, not the
 * producer's admission thread, which may admit or drop readers meanwhile. */
static __thread int counting;
static volatile int allocs, locks;

void *malloc(size_t size)
{
	if (counting)
		allocs++;
	return __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
	if (counting)
		allocs++;
	return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
	if (counting)
		allocs++;
	return __libc_realloc(p, size);
}

void free(void *p)
{
	__libc_free(p);
}

static int (*real_mutex_lock)(pthread_mutex_t *);

__attribute__((constructor)) static void find_real_lock(void)
{
	real_mutex_lock = (int (*)(pthread_mutex_t *))
		dlsym(RTLD_NEXT, "pthread_mutex_lock");
}

int pthread_mutex_lock(pthread_mutex_t *m)
{
	if (counting)
		locks++;
	return real_mutex_lock(m);
}

/* ---- shared state between the two processes ---- */

struct shared {
	int step;		/* producer: odd after a batch; reader: even */
	int joined;		/* the reader has joined */
	pid_t reader_pid;
	int rc[2];		/* exit code per side, -1 while running */
	int bad_syscall[2];	/* syscall number trapped, per side, or -1 */
};

static struct shared *sh;
static int side;		/* 0 producer, 1 reader */

static void on_sigsys(int sig, siginfo_t *si, void *ctx)
{
	(void)sig;
	(void)ctx;
	__atomic_store_n(&sh->bad_syscall[side], si->si_syscall,
			 __ATOMIC_SEQ_CST);
	__atomic_store_n(&sh->rc[side], 3, __ATOMIC_SEQ_CST);
	syscall(SYS_exit_group, 3);	/* allowed by the filter */
}

/* Trap every syscall of this thread except exit and exit_group. */
static int lock_down(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_exit_group, 2, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_exit, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };
	struct sigaction sa = { .sa_sigaction = on_sigsys,
				.sa_flags = SA_SIGINFO };

	if (sigaction(SIGSYS, &sa, NULL) < 0)
		return -1;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -1;
	/* prctl(), unlike seccomp(TSYNC), filters only this thread: the
	 * producer's admission thread keeps running unfiltered. */
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

/* Wait for the other side's step; give up (exit 8) if it has failed. */
static void spin_until(int step)
{
	while (__atomic_load_n(&sh->step, __ATOMIC_ACQUIRE) < step) {
		int other = __atomic_load_n(&sh->rc[!side], __ATOMIC_ACQUIRE);

		if (other > 0)
			syscall(SYS_exit_group, 8);
		__asm__ __volatile__("" ::: "memory");
	}
}

static int reader_side(struct shmfd_reader *r)
{
	uint64_t seq = 0;

	side = 1;
	if (lock_down() < 0)
		return 2;
	counting = 1;
	for (int round = 0; round < ROUNDS; round++) {
		spin_until(2 * round + 1);
		for (int i = 0; i < BATCH; i++) {
			struct shmfd_msg m;

			/* Data is there: timeout 0 never reaches the wait. */
			if (shmfd_recv(r, &m, 0, 0) != 0 || m.seq != ++seq ||
			    m.lost || m.len != 64 ||
			    th_check(m.data, m.len, m.seq) != -1)
				return 4;
			if (shmfd_msg_release(r, &m) != 0)
				return 5;
		}
		__atomic_store_n(&sh->step, 2 * round + 2, __ATOMIC_RELEASE);
	}
	counting = 0;
	return allocs || locks ? 6 : 0;
}

static int producer_side(struct shmfd_chan *chan)
{
	char buf[64];
	uint64_t seq = 0;

	side = 0;
	if (lock_down() < 0)
		return 2;
	counting = 1;
	for (int round = 0; round < ROUNDS; round++) {
		spin_until(2 * round);
		for (int i = 0; i < BATCH; i++) {
			void *p;

			th_fill(buf, sizeof(buf), ++seq);
			if (i & 1) {
				if (shmfd_send(chan, buf, sizeof(buf), 0) != 0)
					return 4;
			} else {
				if (shmfd_reserve(chan, sizeof(buf), &p, 0) != 0)
					return 4;
				memcpy(p, buf, sizeof(buf));
				if (shmfd_commit(chan, sizeof(buf)) != 0)
					return 5;
			}
		}
		__atomic_store_n(&sh->step, 2 * round + 1, __ATOMIC_RELEASE);
	}
	spin_until(2 * ROUNDS);
	counting = 0;
	return allocs || locks ? 6 : 0;
}

static const char *what(int code)
{
	switch (code) {
	case 2: return "could not install the seccomp filter";
	case 3: return "made a syscall";
	case 4: return "a send/recv failed";
	case 5: return "a commit/release failed";
	case 6: return "allocated memory or took a lock";
	case 7: return "could not set up the channel";
	case 8: return "stopped because the other side failed";
	default: return "failed";
	}
}

static int run_producer(uint32_t flags)
{
	struct shmfd_params params = { .ring_size = RING, .flags = flags };
	struct shmfd_chan *chan;
	struct shmfd_reader *r;
	pid_t rd;
	int fd;

	if (shmfd_chan_create(&chan, NULL, &params) < 0)
		return 7;
	fd = shmfd_chan_share_fd(chan);
	if (fd < 0)
		return 7;
	rd = fork();
	if (rd < 0)
		return 7;
	if (rd == 0) {
		/* A reader joins through the share fd, never with the
		 * parent's handles (their mappings are not inherited). */
		if (shmfd_reader_open_fd(&r, fd, 0) < 0)
			_exit(7);
		__atomic_store_n(&sh->joined, 1, __ATOMIC_RELEASE);
		__atomic_store_n(&sh->rc[1], reader_side(r), __ATOMIC_RELEASE);
		_exit(sh->rc[1]);
	}
	sh->reader_pid = rd;
	close(fd);
	while (!__atomic_load_n(&sh->joined, __ATOMIC_ACQUIRE) ||
	       shmfd_chan_readers(chan) != 1)
		usleep(100);
	__atomic_store_n(&sh->rc[0], producer_side(chan), __ATOMIC_RELEASE);
	return sh->rc[0];
}

START_TEST(test_no_syscall_alloc_lock)
{
	int st[2];
	pid_t prod;

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(sh, MAP_FAILED);
	sh->bad_syscall[0] = sh->bad_syscall[1] = -1;
	sh->rc[0] = sh->rc[1] = -1;

	prod = fork();
	ck_assert_int_ge(prod, 0);
	if (prod == 0)
		_exit(run_producer(_i ? SHMFD_LOSSY : 0));
	th_track(prod);
	st[0] = th_wait(prod);
	ck_assert(wait_until(__atomic_load_n(&sh->reader_pid,
					     __ATOMIC_ACQUIRE) != 0 ||
			     sh->rc[0] == 7));
	st[1] = sh->reader_pid ? th_wait(sh->reader_pid) : 0;

	/* The side that failed first, then the one that gave up (8). */
	for (int k = 0; k < 4; k++) {
		int i = k & 1;
		const char *who = i ? "reader" : "producer";
		int code = WIFEXITED(st[i]) ? WEXITSTATUS(st[i]) : -1;

		if (k < 2 && code == 8)
			continue;
		ck_assert_msg(sh->rc[i] != 2 && code != 2,
			      "%s: %s", who, what(2));
		ck_assert_msg(code == 0, "%s %s (exit %d, signal %d, "
			      "syscall %d)", who, what(code), code,
			      WIFSIGNALED(st[i]) ? WTERMSIG(st[i]) : 0,
			      sh->bad_syscall[i]);
	}
	munmap(sh, sizeof(*sh));
}
END_TEST

/* Proves the filter can fail: a syscall under it is caught and named. */
START_TEST(test_filter_catches_syscall)
{
	pid_t pid;
	int st;

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(sh, MAP_FAILED);
	sh->bad_syscall[0] = -1;
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		side = 0;
		if (lock_down() < 0)
			_exit(2);
		getppid();
		_exit(0);
	}
	th_track(pid);
	st = th_wait(pid);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 3);
	ck_assert_int_eq(sh->bad_syscall[0], SYS_getppid);
	munmap(sh, sizeof(*sh));
}
END_TEST

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

int main(void)
{
	Suite *s = suite_create("hotpath");
	TCase *tc = th_tcase("steady state");

#ifdef UNDER_ASAN
	/* ASan owns malloc and makes syscalls of its own in the steady
	 * state: what this suite counts is not the library's there. */
	th_skip("hotpath: not meaningful under AddressSanitizer\n");
	suite_add_tcase(s, tc);
	return th_run(s);
#endif
	/* valgrind runs its own code, system calls included, inside each
	 * thread of the process: the seccomp filter would trap valgrind,
	 * and it owns malloc.  Counting is only meaningful without it. */
	if (th_under_valgrind()) {
		th_skip("hotpath: cannot count the library's syscalls and "
			"allocations under valgrind\n");
		suite_add_tcase(s, tc);
		return th_run(s);
	}

	tcase_add_test(tc, test_filter_catches_syscall);
	/* 0: reliable, 1: lossy */
	tcase_add_loop_test(tc, test_no_syscall_alloc_lock, 0, 2);
	suite_add_tcase(s, tc);
	return th_run(s);
}
