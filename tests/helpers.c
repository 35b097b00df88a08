/* SPDX-License-Identifier: MIT */
/* Helpers shared by the Check suites: see helpers.h. */
#define _GNU_SOURCE
#include "config.h"
#include "helpers.h"

#include <shmfd.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef HAVE_VALGRIND_VALGRIND_H
#include <valgrind/valgrind.h>
#endif

bool th_in_child;

static char test_dir[64];
static struct th_fds fds_at_setup;
static char skip_notes[2048];

#define MAX_TRACKED 64
static pid_t tracked[MAX_TRACKED];

const char *th_strerr(long ret)
{
	if (ret >= 0)
		return "success";
	return strerror((int)-ret);
}

void th_fail(const char *file, int line, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (th_in_child) {
		fprintf(stderr, "[child %d] %s:%d: %s\n", (int)getpid(), file,
			line, msg);
		_exit(CHILD_FAILED);
	}
	_ck_assert_failed(file, line, "Failed", "%s", msg);
}

int th_slowdown(void)
{
	static int factor;

	if (!factor) {
		const char *env = getenv("SHMFD_TEST_SLOWDOWN");
		long f = env ? strtol(env, NULL, 10) : 1;

		factor = f >= 1 && f <= 1000 ? (int)f : 1;
	}
	return factor;
}

bool th_under_valgrind(void)
{
#ifdef HAVE_VALGRIND_VALGRIND_H
	return RUNNING_ON_VALGRIND;
#else
	/* valgrind preloads its own libraries into every process it runs. */
	const char *p = getenv("LD_PRELOAD");

	return p && strstr(p, "vgpreload");
#endif
}

uint64_t th_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void th_msleep(int ms)
{
	struct timespec ts = {
		.tv_sec = ms / 1000,
		.tv_nsec = (long)(ms % 1000) * 1000000,
	};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ---- fd and mapping accounting ---- */

void th_fd_snapshot(struct th_fds *s)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	memset(s, 0, sizeof(*s));
	expect(d, "opendir /proc/self/fd: %s", strerror(errno));
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name);

		if (e->d_name[0] == '.' || fd == dirfd(d))
			continue;
		if (fd >= 0 && fd < TH_MAX_FDS)
			s->open[fd] = true;
	}
	closedir(d);
}

static void describe_fd(int fd, char *buf, size_t len)
{
	char path[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, buf, len - 1);
	if (n < 0)
		n = snprintf(buf, len, "?");
	buf[n] = '\0';
}

int th_fd_leaks(const struct th_fds *s, char *buf, size_t len)
{
	struct th_fds now;
	size_t used = 0;
	int fd, leaks = 0;

	th_fd_snapshot(&now);
	if (len)
		buf[0] = '\0';
	for (fd = 0; fd < TH_MAX_FDS; fd++) {
		char what[256];

		if (!now.open[fd] || s->open[fd])
			continue;
		leaks++;
		describe_fd(fd, what, sizeof(what));
		if (used < len) {
			int n = snprintf(buf + used, len - used,
					 "%sfd %d -> %s", used ? ", " : "",
					 fd, what);

			used += n > 0 ? (size_t)n : 0;
		}
	}
	return leaks;
}

static int count_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	int n = 0;

	expect(d, "opendir %s: %s", path, strerror(errno));
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

int th_fd_count(void)
{
	/* opendir's own fd is in the listing. */
	return count_dir("/proc/self/fd") - 1;
}

int th_thread_count(void)
{
	return count_dir("/proc/self/task");
}

#if defined(__SANITIZE_ADDRESS__)
#define TH_MAPS_ALL	0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TH_MAPS_ALL	0
#endif
#endif
#ifndef TH_MAPS_ALL
#define TH_MAPS_ALL	1
#endif

/*
 * Every mapping, or -- under AddressSanitizer or valgrind, whose
 * allocators map and unmap on their own schedule in this process -- only
 * the kinds the library makes: memfd rings and pages, and io_uring queues.
 */
int th_map_count(void)
{
	/* read(2) into a static buffer: stdio could map a buffer itself. */
	static char buf[1 << 20];
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	size_t len = 0;
	ssize_t n;
	int lines = 0;

	expect(fd >= 0, "open /proc/self/maps: %s", strerror(errno));
	while (len < sizeof(buf) - 1 &&
	       (n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
		len += (size_t)n;
	close(fd);
	buf[len] = 0;
	for (char *line = buf, *nl; *line; line = nl + 1) {
		nl = strchr(line, '\n');
		if (!nl)
			break;
		*nl = 0;
		if ((TH_MAPS_ALL && !th_under_valgrind()) ||
		    strstr(line, "memfd:") ||
		    strstr(line, "io_uring"))
			lines++;
	}
	return lines;
}

int th_fds_matching(const char *what)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	expect(d, "opendir /proc/self/fd: %s", strerror(errno));
	while ((e = readdir(d))) {
		char link[256];

		if (e->d_name[0] == '.')
			continue;
		describe_fd(atoi(e->d_name), link, sizeof(link));
		if (strstr(link, what))
			n++;
	}
	closedir(d);
	return n;
}

/* ---- fixture ---- */

static int rm_entry(const char *path, const struct stat *st, int flag,
		    struct FTW *ftw)
{
	remove(path);
	return 0;
}

void th_setup(void)
{
	th_in_child = false;
	memset(tracked, 0, sizeof(tracked));
	snprintf(test_dir, sizeof(test_dir), "/tmp/shmfd-test.XXXXXX");
	expect(mkdtemp(test_dir), "mkdtemp: %s", strerror(errno));
	setenv("SHMFD_DIR", test_dir, 1);
	/* A reader forked by a forked producer outlives its parent in the
	 * liveness tests: adopt it, so it can be waited for and killed. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	signal(SIGPIPE, SIG_IGN);
	th_fd_snapshot(&fds_at_setup);
}

void th_teardown(void)
{
	char leaked[1024];
	int i, n;

	for (i = 0; i < MAX_TRACKED; i++) {
		if (tracked[i] > 0) {
			kill(tracked[i], SIGKILL);
			waitpid(tracked[i], NULL, 0);
			tracked[i] = 0;
		}
	}
	if (test_dir[0])
		nftw(test_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	test_dir[0] = '\0';
	unsetenv("SHMFD_DIR");
	n = th_fd_leaks(&fds_at_setup, leaked, sizeof(leaked));
	ck_assert_msg(n == 0, "%d fd(s) leaked by the test: %s", n, leaked);
}

const char *th_dir(void)
{
	return test_dir;
}

TCase *th_tcase(const char *name)
{
	TCase *tc = tcase_create(name);
	const char *env = getenv("CK_DEFAULT_TIMEOUT");
	double timeout = TEST_TIMEOUT_S;

	/* A larger CK_DEFAULT_TIMEOUT (valgrind, sanitizers) wins. */
	if (env && atof(env) > timeout)
		timeout = atof(env);
	tcase_add_checked_fixture(tc, th_setup, th_teardown);
	tcase_set_timeout(tc, timeout);
	return tc;
}

/* ---- child processes ---- */

void th_track(pid_t pid)
{
	for (int i = 0; i < MAX_TRACKED; i++) {
		if (tracked[i] <= 0) {
			tracked[i] = pid;
			return;
		}
	}
}

void th_untrack(pid_t pid)
{
	for (int i = 0; i < MAX_TRACKED; i++)
		if (tracked[i] == pid)
			tracked[i] = 0;
}

struct th_child th_spawn(th_fn fn, void *arg, unsigned int flags)
{
	pid_t parent = getpid();
	struct th_child c;
	int sv[2], rc;

	th_pair(sv);
	fflush(stdout);
	fflush(stderr);
	c.pid = fork();
	expect(c.pid >= 0, "fork: %s", strerror(errno));
	if (c.pid == 0) {
		th_in_child = true;
#ifdef HAVE_VALGRIND_VALGRIND_H
		/* A forked child holds a copy of the test's heap that it
		 * neither owns nor frees: valgrind would call all of it
		 * lost at the child's exit.  Leaks are judged in the test
		 * process, which creates and frees every object of a test;
		 * memory errors are still reported here. */
		VALGRIND_CLO_CHANGE("--leak-check=no");
#endif
		close(sv[0]);
		memset(tracked, 0, sizeof(tracked));
		if (!(flags & TH_ORPHAN)) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(CHILD_FAILED);
		}
		/* The last resort against a hang: SIGALRM's default action. */
		alarm(2 * DEADLINE_MS / 1000);
		rc = fn(sv[1], arg);
		fflush(stdout);
		_exit(rc);
	}
	close(sv[1]);
	c.sock = sv[0];
	th_track(c.pid);
	return c;
}

int th_wait(pid_t pid)
{
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	int status;
	pid_t r;

	if (pidfd >= 0) {
		struct pollfd p = { .fd = pidfd, .events = POLLIN };
		int n;

		do
			n = poll(&p, 1, DEADLINE_MS);
		while (n < 0 && errno == EINTR);
		close(pidfd);
		if (n == 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			th_untrack(pid);
			th_fail(__FILE__, __LINE__,
				"process %d still running after %d ms: killed",
				(int)pid, DEADLINE_MS);
		}
	} else {
		uint64_t end = th_now_ms() + DEADLINE_MS;

		while ((r = waitpid(pid, &status, WNOHANG)) == 0 &&
		       th_now_ms() < end)
			th_msleep(1);
		if (r == pid) {
			th_untrack(pid);
			return status;
		}
		kill(pid, SIGKILL);
	}
	do
		r = waitpid(pid, &status, 0);
	while (r < 0 && errno == EINTR);
	expect(r == pid, "waitpid %d: %s", (int)pid, strerror(errno));
	th_untrack(pid);
	return status;
}

static void describe_status(int st, char *buf, size_t len)
{
	if (WIFEXITED(st))
		snprintf(buf, len, "exited with %d%s", WEXITSTATUS(st),
			 WEXITSTATUS(st) == CHILD_FAILED ?
			 " (a check failed: see its stderr)" :
			 WEXITSTATUS(st) == VALGRIND_FAILED &&
			 th_under_valgrind() ?
			 " (valgrind found errors in it: see the log)" : "");
	else if (WIFSIGNALED(st))
		snprintf(buf, len, "was killed by signal %d (%s)",
			 WTERMSIG(st), strsignal(WTERMSIG(st)));
	else
		snprintf(buf, len, "status %#x", st);
}

void th_expect_exit(const char *file, int line, pid_t pid, int code)
{
	int st = th_wait(pid);
	char what[128];

	if (WIFEXITED(st) && WEXITSTATUS(st) == code)
		return;
	describe_status(st, what, sizeof(what));
	th_fail(file, line, "process %d %s, expected exit %d", (int)pid, what,
		code);
}

void th_expect_signal(const char *file, int line, pid_t pid, int sig)
{
	int st = th_wait(pid);
	char what[128];

	if (WIFSIGNALED(st) && WTERMSIG(st) == sig)
		return;
	describe_status(st, what, sizeof(what));
	th_fail(file, line, "process %d %s, expected signal %d (%s)", (int)pid,
		what, sig, strsignal(sig));
}

char th_proc_state(pid_t pid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	/* "pid (comm) S ...": comm may hold spaces and parentheses. */
	p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : 0;
}

void th_expect_sleeping(const char *file, int line, pid_t pid)
{
	char st = 0;

	if (!wait_until((st = th_proc_state(pid)) == 'S'))
		th_fail(file, line, "process %d blocked in the library is in "
			"state '%c', not asleep, after %d ms (busy-waiting?)",
			(int)pid, st ? st : '?', DEADLINE_MS);
}

/* ---- handshakes ---- */

void th_pair(int sv[2])
{
	expect(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0,
	       "socketpair: %s", strerror(errno));
}

void th_put(int fd, int64_t v)
{
	ssize_t n;

	do
		n = send(fd, &v, sizeof(v), MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == ENOTSOCK)
		n = write(fd, &v, sizeof(v));
	expect(n == (ssize_t)sizeof(v), "handshake write on fd %d: %s", fd,
	       n < 0 ? strerror(errno) : "short write");
}

bool th_readable(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint64_t end = th_now_ms() + (uint64_t)ms;
	int n;

	for (;;) {
		n = poll(&p, 1, ms);
		if (n >= 0 || errno != EINTR)
			break;
		ms = (int)(end > th_now_ms() ? end - th_now_ms() : 0);
	}
	return n > 0;
}

int64_t th_get(int fd)
{
	int64_t v;
	size_t got = 0;

	while (got < sizeof(v)) {
		ssize_t n;

		expect(th_readable(fd, DEADLINE_MS),
		       "no handshake on fd %d within %d ms", fd, DEADLINE_MS);
		n = read(fd, (char *)&v + got, sizeof(v) - got);
		if (n < 0 && errno == EINTR)
			continue;
		expect(n > 0, "handshake read on fd %d: %s", fd,
		       n < 0 ? strerror(errno) : "peer closed (did it fail?)");
		got += (size_t)n;
	}
	return v;
}

void th_send_fd(int sock, int fd)
{
	char byte = 'F';
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr m = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = u.buf, .msg_controllen = sizeof(u.buf),
	};
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);

	memset(&u, 0, sizeof(u));
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	expect(sendmsg(sock, &m, MSG_NOSIGNAL) == 1, "sendmsg fd: %s",
	       strerror(errno));
}

int th_recv_fd(int sock)
{
	char byte;
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr m = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = u.buf, .msg_controllen = sizeof(u.buf),
	};
	struct cmsghdr *c;
	int fd;

	expect(th_readable(sock, DEADLINE_MS), "no fd within %d ms",
	       DEADLINE_MS);
	expect(recvmsg(sock, &m, MSG_CMSG_CLOEXEC) == 1, "recvmsg fd: %s",
	       strerror(errno));
	c = CMSG_FIRSTHDR(&m);
	expect(c && c->cmsg_type == SCM_RIGHTS, "no fd in the message");
	memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd;
}

/* ---- payloads ---- */

size_t th_msg_len(uint64_t seq, size_t max)
{
	if (max == 0 || seq % 13 == 0)
		return 0;
	if (seq % 17 == 0)
		return max;
	return (size_t)((seq * 7919) % (max + 1));
}

static uint64_t mix(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

void th_fill(void *buf, size_t len, uint64_t seq)
{
	uint8_t *p = buf;
	uint64_t w = 0;

	for (size_t i = 0; i < len; i++) {
		if ((i & 7) == 0)
			w = mix(seq * 0x9e3779b97f4a7c15ull + i);
		p[i] = (uint8_t)(w >> ((i & 7) * 8));
	}
}

long th_check(const void *buf, size_t len, uint64_t seq)
{
	const uint8_t *p = buf;
	uint64_t w = 0;

	for (size_t i = 0; i < len; i++) {
		if ((i & 7) == 0)
			w = mix(seq * 0x9e3779b97f4a7c15ull + i);
		if (p[i] != (uint8_t)(w >> ((i & 7) * 8)))
			return (long)i;
	}
	return -1;
}

/* ---- channels and readers ---- */

struct shmfd_chan *th_chan_at(const char *file, int line, const char *name,
			      size_t ring_size, size_t max_inline,
			      uint32_t flags)
{
	struct shmfd_params p = {
		.ring_size = ring_size,
		.max_inline = max_inline,
		.flags = flags,
	};
	struct shmfd_chan *chan = NULL;
	int ret = shmfd_chan_create(&chan, name, &p);

	if (ret != 0 || !chan)
		th_fail(file, line, "shmfd_chan_create(%s, ring %zu, inline "
			"%zu, flags %#x) = %d (%s)", name ? name : "NULL",
			ring_size, max_inline, flags, ret, th_strerr(ret));
	return chan;
}

struct shmfd_reader *th_join_at(const char *file, int line, int share_fd,
				int flags)
{
	struct shmfd_reader *r = NULL;
	int fd = fcntl(share_fd, F_DUPFD_CLOEXEC, 0);
	int ret;

	if (fd < 0)
		th_fail(file, line, "dup share fd %d: %s", share_fd,
			strerror(errno));
	ret = shmfd_reader_open_fd(&r, fd, flags);
	if (ret < 0)
		close(fd);
	if (ret != 0 || !r)
		th_fail(file, line, "shmfd_reader_open_fd = %d (%s)", ret,
			th_strerr(ret));
	return r;
}

struct th_async_job {
	pthread_t thread;
	int pipe[2];
	struct shmfd_chan *chan;
	uint64_t seq;
	size_t len;
	int timeout_ms;
	bool reserve;
};

static void *async_main(void *arg)
{
	struct th_async_job *j = arg;
	int64_t ret;
	void *buf;

	if (j->reserve) {
		ret = shmfd_reserve(j->chan, j->len, &buf, j->timeout_ms);
		if (ret == 0) {
			th_fill(buf, j->len, j->seq);
			ret = shmfd_commit(j->chan, j->len);
		}
	} else {
		buf = malloc(j->len + 1);
		th_fill(buf, j->len, j->seq);
		ret = shmfd_send(j->chan, buf, j->len, j->timeout_ms);
		free(buf);
	}
	if (write(j->pipe[1], &ret, sizeof(ret)) != sizeof(ret))
		abort();
	return NULL;
}

void th_async_send(struct th_async *a, struct shmfd_chan *chan, uint64_t seq,
		   size_t len, int timeout_ms, bool reserve)
{
	struct th_async_job *j = calloc(1, sizeof(*j));
	int err;

	expect(j, "calloc: out of memory");
	j->chan = chan;
	j->seq = seq;
	j->len = len;
	j->timeout_ms = timeout_ms;
	j->reserve = reserve;
	a->job = j;
	expect(pipe2(j->pipe, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
	err = pthread_create(&j->thread, NULL, async_main, j);
	expect(err == 0, "pthread_create: %s", strerror(err));
}

bool th_async_done(struct th_async *a, int ms)
{
	return th_readable(a->job->pipe[0], ms);
}

/* A test that fails before it joins leaves the job, its pipe and its
 * thread behind: the failure is reported, and nothing dangles. */
int th_async_join(struct th_async *a)
{
	struct th_async_job *j = a->job;
	int64_t ret;

	expect(th_readable(j->pipe[0], DEADLINE_MS), "a send in another "
	       "thread still blocked after %d ms", DEADLINE_MS);
	expect(read(j->pipe[0], &ret, sizeof(ret)) == sizeof(ret),
	       "read send result: %s", strerror(errno));
	pthread_join(j->thread, NULL);
	close(j->pipe[0]);
	close(j->pipe[1]);
	free(j);
	a->job = NULL;
	return (int)ret;
}

/* ---- suites ---- */

void th_skip(const char *fmt, ...)
{
	size_t used = strlen(skip_notes);
	va_list ap;

	if (used + 8 >= sizeof(skip_notes))
		return;
	strcpy(skip_notes + used, "SKIP: ");
	used += 6;
	va_start(ap, fmt);
	vsnprintf(skip_notes + used, sizeof(skip_notes) - used, fmt, ap);
	va_end(ap);
	used = strlen(skip_notes);
	if (used + 1 < sizeof(skip_notes))
		strcpy(skip_notes + used, "\n");
}

int th_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	if (skip_notes[0])
		fputs(skip_notes, stdout);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	if (failed)
		return EXIT_FAILURE;
	if (skip_notes[0]) {
		printf("The other tests passed; exiting 77 (SKIP) because:\n%s",
		       skip_notes);
		return 77;
	}
	return EXIT_SUCCESS;
}
