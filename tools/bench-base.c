/* SPDX-License-Identifier: MIT */
/*
 * shmfd bench: the baselines' transports for the paced latency engine.
 * Each is the plain, idiomatic use of its mechanism, with nothing tuned
 * that libshmfd does not get as well:
 *
 *   pipe     write(2) the message; the reader read(2)s all of it
 *   unix     the same over a SOCK_STREAM socketpair
 *   eventfd  the message in shared memory, an eventfd write to wake the
 *            reader, which sleeps in read(2) on it
 *   mq       POSIX message queue, mq_send/mq_receive
 *   futex    the message in shared memory, a word next to it bumped and
 *            FUTEX_WAKE; the reader FUTEX_WAITs (shared, not private: the
 *            futex libshmfd uses across processes)
 *   spin     the reader polls the word: no system call at all, the floor
 */
#define _GNU_SOURCE
#include "tool.h"
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Big enough that a points message (160 KiB) is one write and one
 * wake-up, as it is for the ring: the same treatment examples/points.c
 * gives its pipe. */
#define BIG_BUF		(256 * 1024)
#define SLOT_DATA	64	/* the message starts a cache line after the word */

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax()	__builtin_ia32_pause()
#else
#define cpu_relax()	__asm__ __volatile__("" ::: "memory")
#endif

static void bufs(struct lat_ctx *c)
{
	c->wbuf = calloc(1, c->len);
	c->rbuf = calloc(1, c->len);
	if (!c->wbuf || !c->rbuf)
		bench_die("out of memory");
}

static struct bench_msg *wbuf(struct lat_ctx *c)
{
	return c->wbuf;
}

static void nothing(struct lat_ctx *c, int rd)
{
	(void)c;
	(void)rd;
}

static void close_fds(struct lat_ctx *c)
{
	for (int i = 0; i < BENCH_MAX_READERS; i++)
		for (int k = 0; k < 2; k++)
			if (c->fd[i][k] >= 0) {
				close(c->fd[i][k]);
				c->fd[i][k] = -1;
			}
	free(c->wbuf);
	free(c->rbuf);
}

/* ---- pipe: one per reader, written in turn ---- */

static int pipe_setup(struct lat_ctx *c)
{
	bufs(c);
	for (int i = 0; i < c->nreaders; i++) {
		if (pipe2(c->fd[i], O_CLOEXEC) < 0)
			bench_die("pipe: %s", strerror(errno));
		if (c->len > 4096 &&
		    fcntl(c->fd[i][1], F_SETPIPE_SZ, BIG_BUF) < 0)
			bench_die("F_SETPIPE_SZ %d: %s", BIG_BUF,
				  strerror(errno));
	}
	if (c->len > 4096)
		snprintf(c->note, sizeof(c->note), "(%d KiB pipe)",
			 BIG_BUF / 1024);
	return 0;
}

static void fd_join(struct lat_ctx *c, int rd)
{
	/* Touch the destination once, outside the clock. */
	memset(c->rbuf, 0, c->len);
	(void)rd;
}

static const struct bench_msg *fd_recv(struct lat_ctx *c, int rd)
{
	bench_read_all(c->fd[rd][0], c->rbuf, c->len, c->x->name);
	return c->rbuf;
}

static void fd_send(struct lat_ctx *c)
{
	for (int i = 0; i < c->nreaders; i++)
		bench_write_all(c->fd[i][1], c->wbuf, c->len, c->x->name);
}

const struct lat_xport bench_x_pipe = {
	.name = "pipe",
	.setup = pipe_setup,
	.join = fd_join,
	.recv = fd_recv,
	.release = nothing,
	.buf = wbuf,
	.send = fd_send,
	.teardown = close_fds,
};

/* ---- Unix stream socket ---- */

static void sockbuf(int fd, int opt)
{
	int size = BIG_BUF;

	if (setsockopt(fd, SOL_SOCKET, opt, &size, sizeof(size)) < 0)
		bench_die("setsockopt: %s", strerror(errno));
}

static int unix_setup(struct lat_ctx *c)
{
	bufs(c);
	for (int i = 0; i < c->nreaders; i++) {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
			bench_die("socketpair: %s", strerror(errno));
		c->fd[i][0] = sv[0];
		c->fd[i][1] = sv[1];
		if (c->len > 4096) {
			sockbuf(sv[1], SO_SNDBUF);
			sockbuf(sv[0], SO_RCVBUF);
		}
	}
	if (c->len > 4096)
		snprintf(c->note, sizeof(c->note), "(SO_SNDBUF %d KiB)",
			 BIG_BUF / 1024);
	return 0;
}

const struct lat_xport bench_x_unix = {
	.name = "unix",
	.setup = unix_setup,
	.join = fd_join,
	.recv = fd_recv,
	.release = nothing,
	.buf = wbuf,
	.send = fd_send,
	.teardown = close_fds,
};

/* ---- shared slot: eventfd, futex, spin ---- */

static uint32_t *slot_word(struct lat_ctx *c)
{
	return c->slot;
}

static struct bench_msg *slot_msg(struct lat_ctx *c)
{
	return (struct bench_msg *)((char *)c->slot + SLOT_DATA);
}

static int slot_setup(struct lat_ctx *c)
{
	c->slot_size = SLOT_DATA + c->len;
	c->slot = bench_shm(c->slot_size);
	return 0;
}

static void slot_teardown(struct lat_ctx *c)
{
	if (c->efd >= 0)
		close(c->efd);
	c->efd = -1;
	bench_unshm(c->slot, c->slot_size);
}

static int eventfd_setup(struct lat_ctx *c)
{
	if (c->nreaders != 1)
		bench_die("eventfd: one reader only");
	c->efd = eventfd(0, EFD_CLOEXEC);
	if (c->efd < 0)
		bench_die("eventfd: %s", strerror(errno));
	return slot_setup(c);
}

static const struct bench_msg *eventfd_recv(struct lat_ctx *c, int rd)
{
	uint64_t v;
	ssize_t n;

	(void)rd;
	do
		n = read(c->efd, &v, sizeof(v));
	while (n < 0 && errno == EINTR);
	if (n != sizeof(v))
		bench_child_die("eventfd read: %s",
				n < 0 ? strerror(errno) : "short read");
	return slot_msg(c);
}

static void eventfd_send(struct lat_ctx *c)
{
	uint64_t one = 1;

	/* The eventfd's own locking orders the slot's stores before the
	 * reader's read returns. */
	if (write(c->efd, &one, sizeof(one)) != sizeof(one))
		bench_die("eventfd write: %s", strerror(errno));
}

const struct lat_xport bench_x_eventfd = {
	.name = "eventfd",
	.setup = eventfd_setup,
	.join = nothing,
	.recv = eventfd_recv,
	.release = nothing,
	.buf = slot_msg,
	.send = eventfd_send,
	.teardown = slot_teardown,
};

static void slot_publish(struct lat_ctx *c)
{
	uint32_t *w = slot_word(c);

	__atomic_store_n(w, *w + 1, __ATOMIC_RELEASE);
}

static void futex_send(struct lat_ctx *c)
{
	slot_publish(c);
	/* Shared futex (no FUTEX_PRIVATE_FLAG): keyed on the page, as a
	 * futex between processes must be. */
	if (syscall(SYS_futex, slot_word(c), FUTEX_WAKE,
		    c->nreaders == 1 ? 1 : INT_MAX, NULL, NULL, 0) < 0)
		bench_die("FUTEX_WAKE: %s", strerror(errno));
}

static const struct bench_msg *futex_recv(struct lat_ctx *c, int rd)
{
	uint32_t *w = slot_word(c), v;

	while ((v = __atomic_load_n(w, __ATOMIC_ACQUIRE)) == c->last) {
		struct timespec ts = { .tv_sec = BENCH_TIMEOUT_MS / 1000 };

		if (syscall(SYS_futex, w, FUTEX_WAIT, v, &ts, NULL, 0) < 0 &&
		    errno != EAGAIN && errno != EINTR)
			bench_child_die("futex: reader %d: FUTEX_WAIT: %s", rd,
					strerror(errno));
	}
	c->last = v;
	return slot_msg(c);
}

const struct lat_xport bench_x_futex = {
	.name = "futex",
	.setup = slot_setup,
	.join = nothing,
	.recv = futex_recv,
	.release = nothing,
	.buf = slot_msg,
	.send = futex_send,
	.teardown = slot_teardown,
};

static const struct bench_msg *spin_recv(struct lat_ctx *c, int rd)
{
	uint32_t *w = slot_word(c), v;
	uint64_t deadline = bench_now_ns() +
			    (uint64_t)BENCH_TIMEOUT_MS * 1000000u;
	unsigned int n = 0;

	while ((v = __atomic_load_n(w, __ATOMIC_ACQUIRE)) == c->last) {
		cpu_relax();
		if (++n % 65536 == 0 && bench_now_ns() > deadline)
			bench_child_die("spin: reader %d: nothing for %d s", rd,
					BENCH_TIMEOUT_MS / 1000);
	}
	c->last = v;
	return slot_msg(c);
}

const struct lat_xport bench_x_spin = {
	.name = "spin",
	.setup = slot_setup,
	.join = nothing,
	.recv = spin_recv,
	.release = nothing,
	.buf = slot_msg,
	.send = slot_publish,
	.teardown = slot_teardown,
};

/* ---- POSIX message queue ---- */

static int mq_setup(struct lat_ctx *c)
{
	struct mq_attr attr = { .mq_maxmsg = 4, .mq_msgsize = (long)c->len };
	char name[64];

	if (c->nreaders != 1)
		bench_die("mq: one reader only");
	snprintf(name, sizeof(name), "/shmfd-bench-%d", (int)getpid());
	c->mq = mq_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600,
			&attr);
	if (c->mq == (mqd_t)-1) {
		/* No mqueue support, or not allowed here (containers): the
		 * row is missing, the run goes on. */
		if (errno == ENOSYS || errno == EACCES || errno == EPERM) {
			snprintf(c->note, sizeof(c->note), "mq_open: %s",
				 strerror(errno));
			return 1;
		}
		bench_die("mq_open %s: %s", name, strerror(errno));
	}
	/* Nameless from here on: nothing to leak if we are killed. */
	if (mq_unlink(name) < 0)
		bench_die("mq_unlink %s: %s", name, strerror(errno));
	bufs(c);
	return 0;
}

static const struct bench_msg *mq_recv(struct lat_ctx *c, int rd)
{
	ssize_t n;

	do
		n = mq_receive(c->mq, c->rbuf, c->len, NULL);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)c->len)
		bench_child_die("mq: reader %d: mq_receive: %s", rd,
				n < 0 ? strerror(errno) : "short message");
	return c->rbuf;
}

static void mq_send_msg(struct lat_ctx *c)
{
	if (mq_send(c->mq, c->wbuf, c->len, 0) < 0)
		bench_die("mq_send: %s", strerror(errno));
}

static void mq_teardown(struct lat_ctx *c)
{
	mq_close(c->mq);
	c->mq = (mqd_t)-1;
	free(c->wbuf);
	free(c->rbuf);
}

const struct lat_xport bench_x_mq = {
	.name = "mq",
	.setup = mq_setup,
	.join = fd_join,
	.recv = mq_recv,
	.release = nothing,
	.buf = wbuf,
	.send = mq_send_msg,
	.teardown = mq_teardown,
};
