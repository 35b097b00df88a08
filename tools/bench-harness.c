/* SPDX-License-Identifier: MIT */
/*
 * shmfd bench: the processes and the clock.  The producer is this
 * process; each reader is a forked child pinned to the other CPU.  Every
 * child is recorded here so that any failure, in the producer or in a
 * reader, ends with all of them killed and reaped: a benchmark that
 * leaves a spinning reader behind would poison the next run's numbers.
 */
#define _GNU_SOURCE
#include "tool.h"
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_KIDS	(BENCH_MAX_READERS + 1)

static struct {
	pid_t pid;
	bool reaped;
} kids[MAX_KIDS];
static int nkids;
static bool in_child;
static bool progress_shown;

uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void bench_pause_us(long us)
{
	struct timespec ts = {
		.tv_sec = us / 1000000,
		.tv_nsec = (us % 1000000) * 1000,
	};

	while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
		;
}

void bench_pin(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	/* Unpinned still measures something, and the header says which
	 * CPUs were asked for: failure is not an error. */
	(void)sched_setaffinity(0, sizeof(set), &set);
}

/* The first two CPUs we may run on, when there are two. */
void bench_pick_cpus(void)
{
	cpu_set_t set;
	int cpu, k = 0;

	bench_opt.cpus[0] = bench_opt.cpus[1] = -1;
	if (!bench_opt.pin)
		return;
	if (sched_getaffinity(0, sizeof(set), &set) < 0 || CPU_COUNT(&set) < 2)
		return;
	for (cpu = 0; cpu < CPU_SETSIZE && k < 2; cpu++)
		if (CPU_ISSET(cpu, &set))
			bench_opt.cpus[k++] = cpu;
}

void *bench_shm(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		bench_die("mmap of %zu shared bytes: %s", size, strerror(errno));
	return p;
}

void bench_unshm(void *p, size_t size)
{
	if (p && munmap(p, size) < 0)
		bench_die("munmap: %s", strerror(errno));
}

static void kill_all(void)
{
	for (int i = 0; i < nkids; i++)
		if (!kids[i].reaped)
			kill(kids[i].pid, SIGKILL);
	for (int i = 0; i < nkids; i++) {
		if (kids[i].reaped)
			continue;
		while (waitpid(kids[i].pid, NULL, 0) < 0 && errno == EINTR)
			;
		kids[i].reaped = true;
	}
	nkids = 0;
}

static void vsay(const char *fmt, va_list ap)
{
	char line[512];

	vsnprintf(line, sizeof(line), fmt, ap);
	tool_err("bench", "%s", line);
}

void bench_die(const char *fmt, ...)
{
	va_list ap;

	bench_progress_clear();
	kill_all();
	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
	exit(1);
}

void bench_child_die(const char *fmt, ...)
{
	va_list ap;

	/* A progress line may sit on the terminal: start a fresh one. */
	if (isatty(STDERR_FILENO))
		fputs("\r\033[K", stderr);
	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
	_exit(1);
}

/* A reader ended: fine if it exited 0, else end the run.  A reader that
 * exited 1 has said why already, so the producer adds nothing. */
static void judge(int i, int status)
{
	kids[i].reaped = true;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return;
	if (WIFSIGNALED(status))
		bench_die("a reader was killed by signal %d (%s)",
			  WTERMSIG(status), strsignal(WTERMSIG(status)));
	bench_progress_clear();
	kill_all();
	exit(1);
}

pid_t bench_fork(void (*fn)(void *arg, int idx), void *arg, int idx)
{
	pid_t pid;

	if (nkids == MAX_KIDS)
		bench_die("too many readers");
	fflush(NULL);		/* nothing buffered is printed twice */
	pid = fork();
	if (pid < 0)
		bench_die("fork: %s", strerror(errno));
	if (pid == 0) {
		in_child = true;
		nkids = 0;
		progress_shown = false;
		bench_pin(bench_opt.cpus[1]);
		fn(arg, idx);
		_exit(0);
	}
	kids[nkids].pid = pid;
	kids[nkids].reaped = false;
	nkids++;
	return pid;
}

/* Reap whoever has ended, without waiting. */
static void poll_kids(void)
{
	for (int i = 0; i < nkids; i++) {
		int status;
		pid_t p;

		if (kids[i].reaped)
			continue;
		p = waitpid(kids[i].pid, &status, WNOHANG);
		if (p < 0 && errno != EINTR)
			bench_die("waitpid: %s", strerror(errno));
		if (p == kids[i].pid)
			judge(i, status);
	}
}

void bench_reap(void)
{
	uint64_t deadline = bench_now_ns() +
			    (uint64_t)BENCH_TIMEOUT_MS * 1000000u;

	for (;;) {
		bool left = false;

		poll_kids();
		for (int i = 0; i < nkids; i++)
			left |= !kids[i].reaped;
		if (!left)
			break;
		if (bench_now_ns() > deadline)
			bench_die("a reader did not finish within %d s",
				  BENCH_TIMEOUT_MS / 1000);
		bench_pause_us(1000);
	}
	nkids = 0;
}

void bench_ack_open(struct bench_ack *a)
{
	int p[2];

	if (pipe2(p, O_CLOEXEC) < 0)
		bench_die("pipe: %s", strerror(errno));
	a->rd = p[0];
	a->wr = p[1];
}

void bench_ack_close(struct bench_ack *a)
{
	if (a->rd >= 0)
		close(a->rd);
	if (a->wr >= 0)
		close(a->wr);
	a->rd = a->wr = -1;
}

void bench_ack_send(const struct bench_ack *a)
{
	char c = 'k';
	ssize_t n;

	do
		n = write(a->wr, &c, 1);
	while (n < 0 && errno == EINTR);
	if (n != 1)
		bench_child_die("ack: %s", strerror(errno));
}

/*
 * n bytes from the readers.  The producer sleeps in poll, outside every
 * timed interval; slices of 100 ms let it notice a reader that died.
 */
void bench_ack_wait(const struct bench_ack *a, int n)
{
	uint64_t deadline = bench_now_ns() +
			    (uint64_t)BENCH_TIMEOUT_MS * 1000000u;
	char buf[BENCH_MAX_READERS];

	while (n > 0) {
		struct pollfd pfd = { .fd = a->rd, .events = POLLIN };
		ssize_t got;
		int ret;

		ret = poll(&pfd, 1, 100);
		if (ret < 0 && errno != EINTR)
			bench_die("poll: %s", strerror(errno));
		if (ret <= 0) {
			poll_kids();
			if (bench_now_ns() > deadline)
				bench_die("no word from a reader for %d s",
					  BENCH_TIMEOUT_MS / 1000);
			continue;
		}
		got = read(a->rd, buf, (size_t)n < sizeof(buf) ? (size_t)n
							       : sizeof(buf));
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			bench_die("ack read: %s", got < 0 ? strerror(errno)
							   : "end of file");
		n -= (int)got;
	}
}

void bench_write_all(int fd, const void *buf, size_t len, const char *what)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EPIPE)
			poll_kids();	/* a dead reader says why first */
		if (n <= 0)
			bench_die("%s write: %s", what,
				  n < 0 ? strerror(errno) : "wrote nothing");
		p += n;
		len -= (size_t)n;
	}
}

/* In a reader. */
void bench_read_all(int fd, void *buf, size_t len, const char *what)
{
	char *p = buf;

	while (len) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			bench_child_die("%s read: %s", what, strerror(errno));
		if (n == 0)
			bench_child_die("%s: end of file inside a message",
					what);
		p += n;
		len -= (size_t)n;
	}
}

/*
 * On a terminal one line, rewritten in place; otherwise (a log, a CI job)
 * one plain line per step, so the log shows how far a run got.
 */
void bench_progress(const char *fmt, ...)
{
	char line[160];
	va_list ap;

	if (in_child)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (isatty(STDERR_FILENO)) {
		fprintf(stderr, "\r\033[Kbench: %s", line);
		progress_shown = true;
	} else {
		fprintf(stderr, "bench: %s\n", line);
	}
	fflush(stderr);
}

void bench_progress_clear(void)
{
	if (progress_shown && !in_child) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
	}
	progress_shown = false;
}
