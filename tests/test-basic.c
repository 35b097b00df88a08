/* SPDX-License-Identifier: MIT */
/*
 * The basics: creating channels and their argument checks, the version,
 * the reader count, reserve/commit, and messages that arrive whole and in
 * order in a forked reader and in a reader that was exec'ed with the
 * shared fd.  Also proves the fixture's fd-leak check can fail.
 */
#define _GNU_SOURCE
#include "config.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/io_uring.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <shmfd.h>

#include "helpers.h"

#define KiB		1024u
#define MiB		(1024u * 1024u)

static struct shmfd_chan *make_chan(size_t ring_size, size_t max_inline,
				    uint32_t flags)
{
	return th_chan(NULL, ring_size, max_inline, flags);
}

START_TEST(test_version)
{
	const char *v = shmfd_version();
	unsigned int major, minor, patch;
	char end;

	ck_assert_ptr_nonnull(v);
	ck_assert_str_eq(v, PACKAGE_VERSION);
	ck_assert_int_eq(sscanf(v, "%u.%u.%u%c", &major, &minor, &patch, &end),
			 3);
	ck_assert_uint_eq(major, SHMFD_VERSION_MAJOR);
	ck_assert_uint_eq(minor, SHMFD_VERSION_MINOR);
	ck_assert_uint_eq(patch, SHMFD_VERSION_PATCH);
}
END_TEST

START_TEST(test_create_defaults)
{
	struct shmfd_params zero = { 0 };
	struct shmfd_chan *a = NULL, *b = NULL;
	int fd, flags;

	expect_ok(shmfd_chan_create(&a, NULL, NULL));
	expect_ok(shmfd_chan_create(&b, NULL, &zero));
	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	ck_assert_ptr_ne(a, b);
	expect_eq(shmfd_chan_readers(a), 0);
	expect_eq(shmfd_chan_readers(b), 0);

	/* Default max_inline is ring_size / 4 = 1 MiB: the limit of
	 * reserve; send goes beyond it as a blob. */
	{
		size_t len = 1 * MiB;
		char *buf = calloc(1, len + 1);
		void *p;

		ck_assert_ptr_nonnull(buf);
		expect_ok(shmfd_send(a, buf, len, 0));
		expect_err(shmfd_reserve(a, len + 1, &p, 0), EMSGSIZE);
		expect_ok(shmfd_reserve(a, len, &p, 0));
		expect_ok(shmfd_commit(a, len));
		expect_ok(shmfd_send(a, buf, len + 1, 0));
		free(buf);
	}

	/* The share fd is close-on-exec and a socket. */
	fd = expect_ok(shmfd_chan_share_fd(a));
	flags = (int)expect_sys(fcntl(fd, F_GETFD));
	ck_assert_msg(flags & FD_CLOEXEC, "share fd %d is not close-on-exec",
		      fd);
	{
		int type;
		socklen_t len = sizeof(type);

		expect_sys(getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len));
	}
	close(fd);
	shmfd_chan_close(a);
	shmfd_chan_close(b);
	shmfd_chan_close(NULL);
}
END_TEST

static const struct {
	const char *what;
	const char *name;
	struct shmfd_params p;
} bad_create[] = {
	{ "empty name", "", { 0 } },
	{ "name .", ".", { 0 } },
	{ "name ..", "..", { 0 } },
	{ "name with /", "a/b", { 0 } },
	{ "absolute name", "/x", { 0 } },
	{ "unknown flag", NULL, { .flags = 1u << 7 } },
	{ "all flags", NULL, { .flags = ~0u } },
	{ "ring_size 1000", NULL, { .ring_size = 1000 } },
	{ "ring_size 64 KiB - 1", NULL, { .ring_size = 64 * KiB - 1 } },
	{ "ring_size 4 GiB + 1", NULL, { .ring_size = (4ull << 30) + 1 } },
	{ "ring_size SIZE_MAX", NULL, { .ring_size = SIZE_MAX } },
	/* 32-bit: past the largest power of two a size_t holds. */
	{ "ring_size SIZE_MAX / 2 + 2", NULL,
	  { .ring_size = SIZE_MAX / 2 + 2 } },
	/* The largest record, header included, fits in half the ring. */
	{ "max_inline > ring/2 - 16", NULL,
	  { .ring_size = 64 * KiB, .max_inline = 32 * KiB - 15 } },
	{ "max_inline = ring/2", NULL,
	  { .ring_size = 64 * KiB, .max_inline = 32 * KiB } },
	{ "max_inline > default ring/2", NULL, { .max_inline = 2 * MiB + 1 } },
	{ "max_inline SIZE_MAX", NULL, { .max_inline = SIZE_MAX } },
	{ "max_readers 4097", NULL, { .max_readers = 4097 } },
	{ "max_readers UINT32_MAX", NULL, { .max_readers = UINT32_MAX } },
};

START_TEST(test_create_einval)
{
	struct shmfd_chan *chan = NULL;
	int ret;

	ret = shmfd_chan_create(&chan, bad_create[_i].name, &bad_create[_i].p);
	ck_assert_msg(ret == -EINVAL, "%s: shmfd_chan_create = %d (%s)",
		      bad_create[_i].what, ret, th_strerr(ret));
	if (ret == 0)
		shmfd_chan_close(chan);
}
END_TEST

START_TEST(test_create_einval_null)
{
	expect_err(shmfd_chan_create(NULL, NULL, NULL), EINVAL);
	expect_err(shmfd_chan_create(NULL, "x", NULL), EINVAL);
}
END_TEST

static const struct shmfd_params good_create[] = {
	{ .ring_size = 64 * KiB },
	{ .ring_size = 64 * KiB, .max_inline = 32 * KiB - 16 },
	{ .ring_size = 64 * KiB, .max_inline = 1 },
	{ .ring_size = 100000 },		/* rounded up to 128 KiB */
	{ .ring_size = 8 * MiB, .max_inline = 4 * MiB - 16 },
	{ .ring_size = 100000, .max_inline = 64 * KiB - 16 },	/* 128 K */
	{ .max_readers = 1 },
	{ .max_readers = 4096 },
	{ .flags = SHMFD_LOSSY },
	{ .mode = 0666 },
};

START_TEST(test_create_limits)
{
	struct shmfd_chan *chan = NULL;
	int ret = shmfd_chan_create(&chan, NULL, &good_create[_i]);

	ck_assert_msg(ret == 0,
		      "params #%d (ring %zu, inline %zu, readers %u, flags %#x)"
		      ": shmfd_chan_create = %d (%s)", _i,
		      good_create[_i].ring_size, good_create[_i].max_inline,
		      good_create[_i].max_readers, good_create[_i].flags, ret,
		      th_strerr(ret));
	ck_assert_ptr_nonnull(chan);
	expect_eq(shmfd_chan_readers(chan), 0);
	shmfd_chan_close(chan);
}
END_TEST

/* An explicit max_inline is the limit of reserve; send goes beyond it
 * as a blob (test-blob checks what readers get). */
START_TEST(test_max_inline)
{
	struct shmfd_chan *chan = make_chan(64 * KiB, 1000, 0);
	static char buf[64 * KiB];
	void *p;

	expect_ok(shmfd_send(chan, buf, 1000, 0));
	expect_ok(shmfd_send(chan, buf, 1001, 0));
	expect_ok(shmfd_send(chan, buf, sizeof(buf), 0));
	expect_err(shmfd_reserve(chan, 1001, &p, 0), EMSGSIZE);
	expect_ok(shmfd_reserve(chan, 1000, &p, 0));
	expect_ok(shmfd_commit(chan, 1000));
	shmfd_chan_close(chan);

	/* Default for a 64 KiB ring: 16 KiB. */
	chan = make_chan(64 * KiB, 0, 0);
	expect_ok(shmfd_send(chan, buf, 16 * KiB, 0));
	expect_err(shmfd_reserve(chan, 16 * KiB + 1, &p, 0), EMSGSIZE);
	expect_ok(shmfd_reserve(chan, 16 * KiB, &p, 0));
	expect_ok(shmfd_commit(chan, 16 * KiB));
	shmfd_chan_close(chan);
}
END_TEST

START_TEST(test_name_too_long)
{
	struct shmfd_chan *chan = NULL;
	struct shmfd_reader *r = NULL;
	char name[121];

	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	expect_err(shmfd_chan_create(&chan, name, NULL), ENAMETOOLONG);
	expect_err(shmfd_reader_open(&r, name, 0), ENAMETOOLONG);
}
END_TEST

START_TEST(test_null_handles)
{
	struct shmfd_msg msg = { 0 };
	void *buf;

	expect_err(shmfd_chan_share_fd(NULL), EINVAL);
	expect_err(shmfd_chan_readers(NULL), EINVAL);
	expect_err(shmfd_send(NULL, "x", 1, 0), EINVAL);
	expect_err(shmfd_reserve(NULL, 1, &buf, 0), EINVAL);
	expect_err(shmfd_commit(NULL, 0), EINVAL);
	expect_err(shmfd_recv(NULL, &msg, 0, 0), EINVAL);
	expect_err(shmfd_msg_release(NULL, &msg), EINVAL);
	expect_err(shmfd_reader_set_spin(NULL, 0), EINVAL);
	expect_err(shmfd_reader_open(NULL, "x", 0), EINVAL);
	expect_err(shmfd_reader_open_fd(NULL, 0, 0), EINVAL);
	shmfd_reader_close(NULL);
	shmfd_chan_close(NULL);
}
END_TEST

START_TEST(test_send_args)
{
	struct shmfd_chan *chan = make_chan(64 * KiB, 0, 0);

	expect_err(shmfd_send(chan, NULL, 1, 0), EINVAL);
	/* No data and no length is an empty message. */
	expect_ok(shmfd_send(chan, NULL, 0, 0));
	expect_ok(shmfd_send(chan, "", 0, 0));
	shmfd_chan_close(chan);
}
END_TEST

START_TEST(test_reserve_commit_errors)
{
	struct shmfd_chan *chan = make_chan(64 * KiB, 0, 0);
	void *buf = NULL, *other = NULL;

	expect_err(shmfd_reserve(chan, 10, NULL, 0), EINVAL);
	expect_err(shmfd_commit(chan, 0), EINVAL);	/* nothing reserved */

	expect_ok(shmfd_reserve(chan, 100, &buf, 0));
	ck_assert_ptr_nonnull(buf);
	ck_assert_msg(((uintptr_t)buf & 15) == 0, "buffer %p not 16-byte "
		      "aligned", buf);
	memset(buf, 0xa5, 100);			/* it is writable */
	expect_err(shmfd_reserve(chan, 10, &other, 0), EBUSY);
	expect_err(shmfd_send(chan, "x", 1, 0), EBUSY);
	/* More than reserved. */
	expect_err(shmfd_commit(chan, 101), EINVAL);
	/* The failed calls left the reservation pending. */
	expect_ok(shmfd_commit(chan, 100));
	expect_err(shmfd_commit(chan, 100), EINVAL);	/* published */

	/* Every reservation is aligned, whatever came before it. */
	for (size_t len = 0; len < 300; len += 7) {
		expect_ok(shmfd_reserve(chan, len, &buf, 0));
		ck_assert_msg(((uintptr_t)buf & 15) == 0, "reserve(%zu) gave "
			      "%p", len, buf);
		expect_ok(shmfd_commit(chan, len / 2));
		expect_ok(shmfd_send(chan, "abc", len % 3, 0));
	}
	shmfd_chan_close(chan);
}
END_TEST

/* Reliable mode with no reader: nothing to wait for, the ring just wraps. */
START_TEST(test_no_reader_never_waits)
{
	struct shmfd_chan *chan = make_chan(64 * KiB, 0, 0);
	static char buf[KiB];
	void *p;

	for (int i = 0; i < 1000; i++) {
		expect_ok(shmfd_send(chan, buf, sizeof(buf), 0));
		expect_ok(shmfd_reserve(chan, sizeof(buf), &p, 0));
		expect_ok(shmfd_commit(chan, sizeof(buf)));
	}
	shmfd_chan_close(chan);
}
END_TEST

START_TEST(test_reader_args)
{
	struct shmfd_chan *chan = make_chan(64 * KiB, 0, 0);
	struct shmfd_reader *r = NULL;
	struct shmfd_msg msg, never = { 0 };
	int fd, pfd[2];
	uint64_t t0;

	/* Bad open arguments. */
	expect_err(shmfd_reader_open(&r, NULL, 0), EINVAL);
	expect_err(shmfd_reader_open(&r, "", 0), EINVAL);
	expect_err(shmfd_reader_open(&r, "a/b", 0), EINVAL);
	expect_err(shmfd_reader_open(&r, "..", 0), EINVAL);
	expect_err(shmfd_reader_open(&r, "x", 1 << 5), EINVAL);
	fd = expect_ok(shmfd_chan_share_fd(chan));
	expect_err(shmfd_reader_open_fd(&r, fd, 1 << 5), EINVAL);
	expect_err(shmfd_reader_open_fd(&r, fd, -1), EINVAL);
	/* The fd stays ours after a failure. */
	expect_sys(fcntl(fd, F_GETFD));
	close(fd);

	/* Not a socket, or not an fd at all. */
	expect_sys(pipe2(pfd, O_CLOEXEC));
	expect_err(shmfd_reader_open_fd(&r, pfd[0], 0), EBADF);
	expect_sys(fcntl(pfd[0], F_GETFD));
	close(pfd[0]);
	expect_err(shmfd_reader_open_fd(&r, pfd[0], 0), EBADF);
	close(pfd[1]);
	{
		int ret = shmfd_reader_open_fd(&r, -1, 0);

		ck_assert_msg(ret == -EBADF || ret == -EINVAL,
			      "shmfd_reader_open_fd(-1) = %d (%s)", ret,
			      th_strerr(ret));
	}

	fd = expect_ok(shmfd_chan_share_fd(chan));
	r = th_join(fd, 0);
	close(fd);
	expect_eq(shmfd_chan_readers(chan), 1);

	expect_err(shmfd_recv(r, NULL, 0, 0), EINVAL);
	expect_err(shmfd_recv(r, &msg, 1 << 5, 0), EINVAL);
	expect_err(shmfd_recv(r, &msg, 0, 0), EAGAIN);
	expect_err(shmfd_recv(r, &msg, SHMFD_RECV_LATEST, 0), EAGAIN);

	/* A timeout never returns early. */
	t0 = th_now_ms();
	expect_err(shmfd_recv(r, &msg, 0, 100), ETIMEDOUT);
	ck_assert_msg(th_now_ms() - t0 >= 100, "recv(100 ms) returned after "
		      "%llu ms", (unsigned long long)(th_now_ms() - t0));

	expect_err(shmfd_msg_release(r, NULL), EINVAL);
	expect_err(shmfd_msg_release(r, &never), EINVAL);

	expect_ok(shmfd_send(chan, "hello", 5, 0));
	expect_ok(shmfd_recv(r, &msg, 0, 0));
	expect_eq(msg.len, 5);
	ck_assert_mem_eq(msg.data, "hello", 5);
	expect_eq(msg.seq, 1);
	expect_eq(msg.lost, 0);
	expect_eq(msg.fd, -1);
	expect_eq(msg.flags, 0);
	expect_eq(shmfd_msg_release(r, &msg), 0);
	expect_err(shmfd_msg_release(r, &msg), EINVAL);	/* twice */

	expect_eq(shmfd_reader_set_spin(r, 0), 0);
	expect_eq(shmfd_reader_set_spin(r, 1000000), 0);
	expect_err(shmfd_reader_set_spin(r, 1000001), EINVAL);
	expect_err(shmfd_reader_set_spin(r, UINT_MAX), EINVAL);
	expect_eq(shmfd_reader_set_spin(r, 50), 0);
	expect_err(shmfd_recv(r, &msg, 0, 0), EAGAIN);

	/* pollfd: not there yet (-EOPNOTSUPP) or an fd quiet until a send. */
	fd = shmfd_reader_pollfd(r);
	ck_assert_msg(fd >= 0 || fd == -EOPNOTSUPP,
		      "shmfd_reader_pollfd = %d (%s)", fd, th_strerr(fd));
	if (fd >= 0) {
		ck_assert_msg(!th_readable(fd, 0), "pollfd readable with "
			      "nothing to receive");
		expect_ok(shmfd_send(chan, "x", 1, 0));
		ck_assert_msg(th_readable(fd, DEADLINE_MS), "pollfd not "
			      "readable after a send");
		expect_ok(shmfd_recv(r, &msg, 0, 0));
		expect_eq(shmfd_msg_release(r, &msg), 0);
	}

	shmfd_reader_close(r);
	shmfd_chan_close(chan);
}
END_TEST

/* A reader that joins and then does what the parent says. */
static int reader_idle(int sock, void *arg)
{
	int fd = *(int *)arg;
	struct shmfd_reader *r = NULL;

	expect_ok(shmfd_reader_open_fd(&r, fd, 0));
	th_put(sock, 1);
	th_get(sock);
	shmfd_reader_close(r);
	th_put(sock, 2);
	return 0;
}

START_TEST(test_readers_count)
{
	struct shmfd_chan *chan = make_chan(64 * KiB, 0, 0);
	int fd = expect_ok(shmfd_chan_share_fd(chan));
	struct th_child a, b, c;

	/* Several readers join through the same share fd. */
	a = th_spawn(reader_idle, &fd, 0);
	th_get(a.sock);
	expect_eq(shmfd_chan_readers(chan), 1);
	b = th_spawn(reader_idle, &fd, 0);
	th_get(b.sock);
	c = th_spawn(reader_idle, &fd, 0);
	th_get(c.sock);
	expect_eq(shmfd_chan_readers(chan), 3);

	/* One leaves politely, one is killed: both are dropped. */
	th_put(a.sock, 0);
	th_get(a.sock);
	ck_assert_msg(wait_until(shmfd_chan_readers(chan) == 2),
		      "readers = %d after a reader closed",
		      shmfd_chan_readers(chan));
	kill(b.pid, SIGKILL);
	expect_signal(b.pid, SIGKILL);
	ck_assert_msg(wait_until(shmfd_chan_readers(chan) == 1),
		      "readers = %d after a reader was killed",
		      shmfd_chan_readers(chan));
	th_put(c.sock, 0);
	th_get(c.sock);
	expect_exit(a.pid, 0);
	expect_exit(c.pid, 0);
	ck_assert_msg(wait_until(shmfd_chan_readers(chan) == 0),
		      "readers = %d after every reader left",
		      shmfd_chan_readers(chan));
	close(a.sock);
	close(b.sock);
	close(c.sock);
	close(fd);
	shmfd_chan_close(chan);
}
END_TEST

static int reader_join_once(int sock, void *arg)
{
	int fd = *(int *)arg;
	struct shmfd_reader *r = NULL;
	int ret = shmfd_reader_open_fd(&r, fd, 0);

	th_put(sock, ret);
	if (ret == 0) {
		th_get(sock);
		shmfd_reader_close(r);
	}
	return 0;
}

START_TEST(test_max_readers)
{
	struct shmfd_params p = { .ring_size = 64 * KiB, .max_readers = 2 };
	struct shmfd_chan *chan = NULL;
	struct th_child a, b, c, d;
	int fd;

	expect_ok(shmfd_chan_create(&chan, NULL, &p));
	fd = expect_ok(shmfd_chan_share_fd(chan));
	a = th_spawn(reader_join_once, &fd, 0);
	expect_eq(th_get(a.sock), 0);
	b = th_spawn(reader_join_once, &fd, 0);
	expect_eq(th_get(b.sock), 0);
	c = th_spawn(reader_join_once, &fd, 0);
	expect_err(th_get(c.sock), EUSERS);
	expect_exit(c.pid, 0);
	expect_eq(shmfd_chan_readers(chan), 2);

	/* A slot comes back when its reader leaves. */
	th_put(a.sock, 0);
	expect_exit(a.pid, 0);
	expect_eventually(shmfd_chan_readers(chan) == 1);
	d = th_spawn(reader_join_once, &fd, 0);
	expect_eq(th_get(d.sock), 0);
	expect_eq(shmfd_chan_readers(chan), 2);
	th_put(b.sock, 0);
	th_put(d.sock, 0);
	expect_exit(b.pid, 0);
	expect_exit(d.pid, 0);
	close(a.sock);
	close(b.sock);
	close(c.sock);
	close(d.sock);
	close(fd);
	shmfd_chan_close(chan);
}
END_TEST

/* ---- round trips ---- */

#define RT_COUNT	3000
#define RT_MAX		(8 * KiB)

/* Largest message of the fork round trips: _i picks one. */
static const size_t rt_max[] = {
	RT_MAX,
	32 * KiB - 16,		/* the largest a 64 KiB ring allows */
};

struct rt_arg {
	int share_fd;
	size_t max;
	unsigned int spin_us;
};

/* Receive seq 1..RT_COUNT whole and in order, then -EPIPE. */
static int reader_verify_all(int sock, void *arg)
{
	struct rt_arg *a = arg;
	struct shmfd_reader *r = NULL;
	struct shmfd_msg m;

	expect_ok(shmfd_reader_open_fd(&r, a->share_fd, 0));
	expect_eq(shmfd_reader_set_spin(r, a->spin_us), 0);
	th_put(sock, 1);
	for (uint64_t seq = 1; seq <= RT_COUNT; seq++) {
		long bad;

		expect_ok(shmfd_recv(r, &m, 0, -1));
		expect_eq(m.seq, seq);
		expect_eq(m.lost, 0);
		expect_eq(m.fd, -1);
		expect_eq(m.flags, 0);
		expect_eq(m.len, th_msg_len(seq, a->max));
		bad = th_check(m.data, m.len, seq);
		expect(bad < 0, "message %llu corrupt at byte %ld",
		       (unsigned long long)seq, bad);
		expect_eq(shmfd_msg_release(r, &m), 0);
	}
	expect_err(shmfd_recv(r, &m, 0, -1), EPIPE);
	expect_err(shmfd_recv(r, &m, 0, 0), EPIPE);
	shmfd_reader_close(r);
	return 0;
}

/* Alternate send and reserve/commit; the ring wraps many times. */
static void send_all(struct shmfd_chan *chan, size_t max)
{
	static char buf[32 * KiB];

	for (uint64_t seq = 1; seq <= RT_COUNT; seq++) {
		size_t len = th_msg_len(seq, max);
		void *p;

		if (seq & 1) {
			th_fill(buf, len, seq);
			expect_ok(shmfd_send(chan, buf, len, -1));
		} else {
			/* Reserve more than needed, commit the exact size. */
			size_t extra = len + 100 <= max ? 100 : 0;

			expect_ok(shmfd_reserve(chan, len + extra, &p, -1));
			th_fill(p, len, seq);
			expect_ok(shmfd_commit(chan, len));
		}
	}
}

/* Two readers, one of them spinning before it sleeps. */
START_TEST(test_round_trip_fork)
{
	struct shmfd_chan *chan = make_chan(64 * KiB, rt_max[_i], 0);
	struct rt_arg sleeper = {
		.share_fd = expect_ok(shmfd_chan_share_fd(chan)),
		.max = rt_max[_i],
	};
	struct rt_arg spinner = sleeper;
	struct th_child a, b;

	spinner.spin_us = 200;
	a = th_spawn(reader_verify_all, &sleeper, 0);
	b = th_spawn(reader_verify_all, &spinner, 0);
	th_get(a.sock);
	th_get(b.sock);
	expect_eq(shmfd_chan_readers(chan), 2);
	send_all(chan, rt_max[_i]);
	shmfd_chan_close(chan);
	expect_exit(a.pid, 0);
	expect_exit(b.pid, 0);
	close(a.sock);
	close(b.sock);
	close(sleeper.share_fd);
}
END_TEST

struct exec_arg {
	int share_fd;
	const struct th_fds *before;
};

/* Exec tests/exec-reader with the share fd and a handshake socket: only
 * those two may cross exec; every fd of the library is close-on-exec. */
static int exec_reader(int sock, void *arg)
{
	const struct exec_arg *ea = arg;
	char exe[PATH_MAX], *slash, fdstr[16], sockstr[16], count[16], max[16];
	ssize_t n;

	n = readlink("/proc/self/exe", exe, sizeof(exe) - 32);
	expect(n > 0, "readlink /proc/self/exe: %s", strerror(errno));
	exe[n] = '\0';
	slash = strrchr(exe, '/');
	expect(slash, "no directory in %s", exe);
	strcpy(slash + 1, "exec-reader");

	/* Close what this process had before the channel existed (the test
	 * runner's files): what else crosses exec came from the library. */
	for (int fd = 3; fd < TH_MAX_FDS; fd++)
		if (ea->before->open[fd] && fd != ea->share_fd && fd != sock)
			close(fd);
	expect_sys(fcntl(ea->share_fd, F_SETFD, 0));
	expect_sys(fcntl(sock, F_SETFD, 0));
	snprintf(fdstr, sizeof(fdstr), "%d", ea->share_fd);
	snprintf(sockstr, sizeof(sockstr), "%d", sock);
	snprintf(count, sizeof(count), "%d", RT_COUNT);
	snprintf(max, sizeof(max), "%u", RT_MAX);
	execl(exe, exe, fdstr, sockstr, count, max, (char *)NULL);
	th_fail(__FILE__, __LINE__, "exec %s: %s", exe, strerror(errno));
}

START_TEST(test_round_trip_exec)
{
	struct th_fds before;
	struct shmfd_chan *chan;
	struct exec_arg ea;
	struct th_child c;

	th_fd_snapshot(&before);
	chan = make_chan(64 * KiB, RT_MAX, 0);
	ea.share_fd = expect_ok(shmfd_chan_share_fd(chan));
	ea.before = &before;
	c = th_spawn(exec_reader, &ea, 0);
	expect_eq(th_get(c.sock), 1);
	expect_eq(shmfd_chan_readers(chan), 1);
	send_all(chan, RT_MAX);
	shmfd_chan_close(chan);
	expect_exit(c.pid, 0);
	close(c.sock);
	close(ea.share_fd);
}
END_TEST

/* A reader that joins after shmfd_chan_close() gets -EPIPE and keeps
 * its fd. */
START_TEST(test_open_closed_channel)
{
	struct shmfd_chan *chan = make_chan(64 * KiB, 0, 0);
	struct shmfd_reader *r = NULL;
	int fd = expect_ok(shmfd_chan_share_fd(chan));

	shmfd_chan_close(chan);
	expect_err(shmfd_reader_open_fd(&r, fd, 0), EPIPE);
	expect_sys(fcntl(fd, F_GETFD));
	close(fd);
}
END_TEST

/* ---- io_uring or not, as the environment says ---- */

static bool kernel_has_io_uring(void)
{
	struct io_uring_params p = { 0 };
	int fd = (int)syscall(__NR_io_uring_setup, 4, &p);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

static int reader_count_urings(int sock, void *arg)
{
	int fd = *(int *)arg;
	struct shmfd_reader *r = NULL;
	struct shmfd_msg m;
	/* Copies of the producer's rings came with fork(). */
	int inherited = th_fds_matching("io_uring");

	expect_ok(shmfd_reader_open_fd(&r, fd, 0));
	/* Sleep once: a lazily set up ring exists after this. */
	expect_err(shmfd_recv(r, &m, 0, 20), ETIMEDOUT);
	th_put(sock, th_fds_matching("io_uring") - inherited);
	th_get(sock);
	shmfd_reader_close(r);
	return 0;
}

START_TEST(test_io_uring_mode)
{
	const char *env = getenv("SHMFD_NO_IO_URING");
	bool forced_off = env && strcmp(env, "1") == 0;
	struct shmfd_chan *chan = make_chan(64 * KiB, 0, 0);
	int fd = expect_ok(shmfd_chan_share_fd(chan));
	int64_t reader_rings;
	int producer_rings;
	struct th_child c;

	c = th_spawn(reader_count_urings, &fd, 0);
	reader_rings = th_get(c.sock);
	producer_rings = th_fds_matching("io_uring");
	th_put(c.sock, 0);
	expect_exit(c.pid, 0);
	close(c.sock);
	close(fd);
	shmfd_chan_close(chan);

	if (forced_off) {
		ck_assert_msg(reader_rings == 0 && producer_rings == 0,
			      "SHMFD_NO_IO_URING=1 but the reader holds %lld "
			      "and the producer %d io_uring fds",
			      (long long)reader_rings, producer_rings);
	} else if (kernel_has_io_uring()) {
		ck_assert_msg(reader_rings > 0, "io_uring works here but a "
			      "sleeping reader holds no io_uring fd: the "
			      "fallback path is tested twice");
	} else {
		printf("io_uring unavailable: only the fallback path runs\n");
	}
}
END_TEST

/* ---- the leak check can fail ---- */

START_TEST(leaky)
{
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

	ck_assert_int_ge(fd, 0);
}
END_TEST

START_TEST(not_leaky)
{
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	close(fd);
}
END_TEST

/* Run by test_leak_check_fails in a fresh process: one test leaks. */
static int leak_demo(void)
{
	Suite *s = suite_create("leak-demo");
	TCase *tc = th_tcase("leak-demo");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, leaky);
	tcase_add_test(tc, not_leaky);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed;
}

START_TEST(test_leak_check_fails)
{
	char exe[PATH_MAX], out[8192];
	size_t used = 0;
	ssize_t n;
	int pfd[2], st;
	pid_t pid;

	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	ck_assert_int_gt(n, 0);
	exe[n] = '\0';
	expect_sys(pipe2(pfd, O_CLOEXEC));
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		dup2(pfd[1], 1);
		dup2(pfd[1], 2);
		unsetenv("CK_RUN_SUITE");
		unsetenv("CK_RUN_CASE");
		unsetenv("CK_INCLUDE_TAGS");
		unsetenv("CK_EXCLUDE_TAGS");
		execl(exe, exe, "--leak-demo", (char *)NULL);
		_exit(127);
	}
	th_track(pid);
	close(pfd[1]);
	while (used < sizeof(out) - 1 && th_readable(pfd[0], DEADLINE_MS) &&
	       (n = read(pfd[0], out + used, sizeof(out) - 1 - used)) > 0)
		used += (size_t)n;
	out[used] = '\0';
	close(pfd[0]);
	st = th_wait(pid);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1,
		      "the leak demo should fail exactly one test; status %#x,"
		      " output:\n%s", st, out);
	ck_assert_msg(strstr(out, "leaked") && strstr(out, "/dev/null") &&
		      strstr(out, "leaky"), "the failure does not name the "
		      "leaked fd:\n%s", out);
	ck_assert_msg(!strstr(out, "not_leaky"), "the test that closed its fd"
		      " failed too:\n%s", out);
}
END_TEST

static Suite *basic_suite(void)
{
	Suite *s = suite_create("basic");
	TCase *tc;

	tc = th_tcase("create");
	tcase_add_test(tc, test_version);
	tcase_add_test(tc, test_create_defaults);
	tcase_add_loop_test(tc, test_create_einval, 0,
			    (int)(sizeof(bad_create) / sizeof(bad_create[0])));
	tcase_add_test(tc, test_create_einval_null);
	tcase_add_loop_test(tc, test_create_limits, 0,
			    (int)(sizeof(good_create) /
				  sizeof(good_create[0])));
	tcase_add_test(tc, test_max_inline);
	tcase_add_test(tc, test_name_too_long);
	tcase_add_test(tc, test_null_handles);
	suite_add_tcase(s, tc);

	tc = th_tcase("producer");
	tcase_add_test(tc, test_send_args);
	tcase_add_test(tc, test_reserve_commit_errors);
	tcase_add_test(tc, test_no_reader_never_waits);
	suite_add_tcase(s, tc);

	tc = th_tcase("reader");
	tcase_add_test(tc, test_reader_args);
	tcase_add_test(tc, test_readers_count);
	tcase_add_test(tc, test_max_readers);
	tcase_add_test(tc, test_open_closed_channel);
	tcase_add_test(tc, test_io_uring_mode);
	suite_add_tcase(s, tc);

	tc = th_tcase("round-trip");
	tcase_add_loop_test(tc, test_round_trip_fork, 0,
			    (int)(sizeof(rt_max) / sizeof(rt_max[0])));
	tcase_add_test(tc, test_round_trip_exec);
	suite_add_tcase(s, tc);

	tc = th_tcase("fixture");
	tcase_add_test(tc, test_leak_check_fails);
	suite_add_tcase(s, tc);
	return s;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--leak-demo") == 0)
		return leak_demo();
	return th_run(basic_suite());
}
