/* SPDX-License-Identifier: MIT */
/*
 * Nothing is left behind: after hundreds of readers joining and leaving
 * (politely or by SIGKILL), and channels created and closed, the number
 * of open fds, of mappings and of threads is what it was, on the reader
 * side and on the producer side.  Counts are compared after one warm-up
 * cycle, so state the library sets up once per process is not a leak.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <shmfd.h>

#include "helpers.h"

#define KiB		1024u
#define RING		(64 * KiB)
#define CYCLES		300
#define KILLS		50
#define NAME		"leak"

struct counts {
	int fds, maps, threads;
};

static void count(struct counts *c)
{
	c->fds = th_fd_count();
	c->maps = th_map_count();
	c->threads = th_thread_count();
}

static bool same(const struct counts *a)
{
	struct counts now;

	count(&now);
	return now.fds == a->fds && now.maps == a->maps &&
	       now.threads == a->threads;
}

/* Wait (the producer cleans up in its own thread) and compare. */
#define expect_same(before, what)					\
	do {								\
		wait_until(same(before));				\
		expect_same_now(before, what);				\
	} while (0)

/* Compare now: the reader side cleans up before reader_close returns. */
#define expect_same_now(before, what)					\
	do {								\
		struct counts now_;					\
									\
		count(&now_);						\
		expect(same(before), "%s: %d fds, %d mappings, %d "	\
		       "threads before; %d, %d, %d after", what,	\
		       (before)->fds, (before)->maps, (before)->threads,\
		       now_.fds, now_.maps, now_.threads);		\
	} while (0)

static void send_seq(struct shmfd_chan *chan, uint64_t seq)
{
	char buf[100];

	th_fill(buf, sizeof(buf), seq);
	expect_ok(shmfd_send(chan, buf, sizeof(buf), 0));
}

struct cycle_arg {
	int share_fd;		/* or -1: by name */
};

static struct shmfd_reader *join(const struct cycle_arg *a)
{
	struct shmfd_reader *r = NULL;

	if (a->share_fd >= 0)
		return th_join(a->share_fd, 0);
	expect_ok(shmfd_reader_open(&r, NAME, 0));
	return r;
}

/* One cycle: join, maybe sleep in recv, leave. */
static void reader_cycle(const struct cycle_arg *a, int i)
{
	struct shmfd_reader *r = join(a);
	struct shmfd_msg m;

	if (i % 10 == 0)
		expect_err(shmfd_recv(r, &m, 0, 1), ETIMEDOUT);
	else
		expect_err(shmfd_recv(r, &m, 0, 0), EAGAIN);
	shmfd_reader_close(r);
}

static int cycling_reader(int sock, void *arg)
{
	struct cycle_arg *a = arg;
	struct counts before;

	reader_cycle(a, 0);			/* warm-up */
	th_put(sock, 1);
	th_get(sock);
	count(&before);
	for (int i = 0; i < CYCLES; i++)
		reader_cycle(a, i);
	expect_same_now(&before, "reader side, after the cycles");
	th_put(sock, 2);
	return 0;
}

/* _i == 0: through a share fd, 1: by name. */
START_TEST(test_reader_cycles)
{
	struct shmfd_chan *chan = th_chan(_i ? NAME : NULL, RING, 0, 0);
	struct cycle_arg a = { .share_fd = -1 };
	struct counts before;
	struct th_child c;

	if (!_i)
		a.share_fd = expect_ok(shmfd_chan_share_fd(chan));
	/* The producer's once-only state came with the channel. */
	count(&before);
	c = th_spawn(cycling_reader, &a, 0);
	th_get(c.sock);
	th_put(c.sock, 0);
	expect_eq(th_get(c.sock), 2);
	expect_exit(c.pid, 0);
	close(c.sock);
	expect_eventually(shmfd_chan_readers(chan) == 0);
	send_seq(chan, 1);
	expect_same(&before, "producer side, after the readers' cycles");
	if (a.share_fd >= 0)
		close(a.share_fd);
	shmfd_chan_close(chan);
}
END_TEST

/* One channel's life with a reader in this process. */
static void chan_cycle(bool named)
{
	struct shmfd_chan *chan = th_chan(named ? NAME : NULL, RING, 0,
					  SHMFD_LOSSY);
	int fd = expect_ok(shmfd_chan_share_fd(chan));
	struct shmfd_reader *r = th_join(fd, 0);
	struct shmfd_msg m;

	send_seq(chan, 1);
	expect_ok(shmfd_recv(r, &m, 0, 0));
	expect_eq(shmfd_msg_release(r, &m), 0);
	shmfd_chan_close(chan);
	expect_err(shmfd_recv(r, &m, 0, -1), EPIPE);
	shmfd_reader_close(r);
	close(fd);
}

START_TEST(test_chan_cycles)
{
	struct counts before;
	char path[256];

	chan_cycle(_i);				/* warm-up */
	count(&before);
	for (int i = 0; i < CYCLES; i++)
		chan_cycle(_i);
	expect_same(&before, "after the channels' cycles");
	snprintf(path, sizeof(path), "%s/%s", th_dir(), NAME);
	expect_sys_err(access(path, F_OK), ENOENT);
}
END_TEST

/* Join, take a message and hold it (odd rounds), block in recv: to be
 * killed. */
static int doomed_reader(int sock, void *arg)
{
	struct cycle_arg *a = arg;
	struct shmfd_reader *r = join(a);
	struct shmfd_msg m, held;
	int64_t i;
	int ret;

	th_put(sock, 1);
	i = th_get(sock);
	expect_ok(shmfd_recv(r, &held, 0, -1));
	if (!(i & 1))
		expect_eq(shmfd_msg_release(r, &held), 0);
	th_put(sock, 2);
	ret = shmfd_recv(r, &m, 0, -1);
	th_fail(__FILE__, __LINE__, "a blocked recv(-1) returned %d (%s)",
		ret, th_strerr(ret));
}

START_TEST(test_killed_readers)
{
	struct shmfd_chan *chan = th_chan(_i ? NAME : NULL, RING, 0, 0);
	struct cycle_arg a = { .share_fd = -1 };
	struct counts before;

	if (!_i)
		a.share_fd = expect_ok(shmfd_chan_share_fd(chan));
	count(&before);
	for (int i = 0; i < KILLS; i++) {
		struct th_child c = th_spawn(doomed_reader, &a, 0);

		th_get(c.sock);
		send_seq(chan, (uint64_t)i + 1);
		th_put(c.sock, i);
		th_get(c.sock);
		kill(c.pid, SIGKILL);
		expect_signal(c.pid, SIGKILL);
		close(c.sock);
		expect_eventually(shmfd_chan_readers(chan) == 0);
	}
	expect_same(&before, "producer side, after killing readers");
	if (a.share_fd >= 0)
		close(a.share_fd);
	shmfd_chan_close(chan);
}
END_TEST

/* A producer to be killed under a reader. */
static int doomed_producer(int sock, void *arg)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, 0);
	int fd = expect_ok(shmfd_chan_share_fd(chan));

	th_send_fd(sock, fd);
	close(fd);
	th_get(sock);
	send_seq(chan, 1);
	th_put(sock, 1);
	th_get(sock);
	return CHILD_FAILED;
}

START_TEST(test_killed_producers)
{
	struct counts before;

	for (int i = 0; i <= KILLS; i++) {
		struct th_child p = th_spawn(doomed_producer, NULL, 0);
		int fd = th_recv_fd(p.sock);
		struct shmfd_reader *r = th_join(fd, 0);
		struct shmfd_msg m, held;

		th_put(p.sock, 0);
		th_get(p.sock);
		/* Hold a message in odd rounds when the producer dies. */
		if (i & 1)
			expect_ok(shmfd_recv(r, &held, 0, 0));
		kill(p.pid, SIGKILL);
		expect_signal(p.pid, SIGKILL);
		if (!(i & 1))
			expect_ok(shmfd_recv(r, &m, 0, -1));
		else
			expect_eq(shmfd_msg_release(r, &held), 0);
		expect_err(shmfd_recv(r, &m, 0, -1), EPIPE);
		shmfd_reader_close(r);
		close(fd);
		close(p.sock);
		if (i == 0)
			count(&before);		/* after the warm-up */
	}
	expect_same_now(&before, "reader side, after killing producers");
}
END_TEST

static Suite *leaks_suite(void)
{
	Suite *s = suite_create("leaks");
	TCase *tc;

	tc = th_tcase("leaks");
	tcase_add_loop_test(tc, test_reader_cycles, 0, 2);
	tcase_add_loop_test(tc, test_chan_cycles, 0, 2);
	tcase_add_loop_test(tc, test_killed_readers, 0, 2);
	tcase_add_test(tc, test_killed_producers);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return th_run(leaks_suite());
}
