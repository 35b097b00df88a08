/* SPDX-License-Identifier: MIT */
/*
 * Delivery modes.  Lossy: the producer never waits, a reader that falls
 * behind is told exactly how many messages it lost, and a message the
 * producer overwrote while it was held is flagged -ESTALE.  Reliable: a
 * full ring makes the producer wait for the slowest reader, within its
 * timeout, and space comes back up to the oldest unreleased message.
 * Also SHMFD_FROM_OLDEST, SHMFD_RECV_LATEST and the 256 held messages.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <shmfd.h>

#include "helpers.h"

#define KiB		1024u
#define RING		(64 * KiB)

struct rd {
	int share_fd;
	int flags;			/* shmfd_reader_open_fd() flags */
	uint64_t n;			/* how many, for some tests */
};

/* Receive and check message seq, keep holding it.  Failures name the
 * caller's line. */
#define recv_seq(...) recv_seq_at(__FILE__, __LINE__, __VA_ARGS__)
static void recv_seq_at(const char *file, int line, struct shmfd_reader *r,
			struct shmfd_msg *m, int flags, int timeout_ms,
			uint64_t seq, uint64_t lost, size_t len)
{
	int ret = shmfd_recv(r, m, flags, timeout_ms);
	long bad;

	if (ret != 0)
		th_fail(file, line, "shmfd_recv for seq %llu = %d (%s)",
			(unsigned long long)seq, ret, th_strerr(ret));
	if (m->seq != seq || m->lost != lost || m->len != len || m->fd != -1)
		th_fail(file, line, "got seq %llu lost %llu len %zu fd %d, "
			"expected seq %llu lost %llu len %zu fd -1",
			(unsigned long long)m->seq,
			(unsigned long long)m->lost, m->len, m->fd,
			(unsigned long long)seq, (unsigned long long)lost,
			len);
	bad = th_check(m->data, m->len, m->seq);
	if (bad >= 0)
		th_fail(file, line, "message %llu corrupt at byte %ld",
			(unsigned long long)m->seq, bad);
}

static void send_seq(struct shmfd_chan *chan, uint64_t seq, size_t len,
		     int timeout_ms)
{
	static char buf[64 * KiB];

	th_fill(buf, len, seq);
	expect_ok(shmfd_send(chan, buf, len, timeout_ms));
}

/* Send 1 KiB messages from seq on until the ring is full: their number. */
static uint64_t send_until_full(struct shmfd_chan *chan, uint64_t seq)
{
	static char buf[KiB];
	uint64_t n = 0;
	int ret;

	for (;;) {
		th_fill(buf, sizeof(buf), seq + n);
		ret = shmfd_send(chan, buf, sizeof(buf), 0);
		if (ret == -EAGAIN)
			break;
		expect(ret == 0, "send #%llu = %d (%s)",
		       (unsigned long long)(seq + n), ret, th_strerr(ret));
		n++;
		expect(n <= RING / KiB, "%llu KiB messages fit in a %u byte "
		       "ring: the producer overwrote unread messages",
		       (unsigned long long)n, RING);
	}
	return n;
}

/* The same into an empty ring. */
static uint64_t fill_ring(struct shmfd_chan *chan, uint64_t seq)
{
	uint64_t n = send_until_full(chan, seq);

	/* Records carry a header and alignment, but at least half the ring
	 * holds messages. */
	expect(n >= RING / KiB / 2, "only %llu KiB messages fit in a %u "
	       "byte ring", (unsigned long long)n, RING);
	return n;
}

/* ---- lossy ---- */

#define LOSSY_N		5000
#define LOSSY_MAX	200

/* Join, wait until the producer has sent everything, then read it. */
static int lossy_slow_reader(int sock, void *arg)
{
	struct rd *a = arg;
	struct shmfd_reader *r = th_join(a->share_fd, 0);
	uint64_t prev = 0, received = 0, lost = 0, n;
	struct shmfd_msg m;
	int ret;

	th_put(sock, 1);
	n = (uint64_t)th_get(sock);
	while ((ret = shmfd_recv(r, &m, 0, 0)) == 0) {
		long bad;

		expect(m.seq > prev, "seq %llu after %llu",
		       (unsigned long long)m.seq, (unsigned long long)prev);
		expect(m.lost == m.seq - prev - 1, "seq %llu after %llu "
		       "reports %llu lost", (unsigned long long)m.seq,
		       (unsigned long long)prev, (unsigned long long)m.lost);
		expect_eq(m.len, th_msg_len(m.seq, LOSSY_MAX));
		bad = th_check(m.data, m.len, m.seq);
		expect(bad < 0, "message %llu corrupt at byte %ld",
		       (unsigned long long)m.seq, bad);
		/* The producer is idle: nothing was overwritten. */
		expect_eq(shmfd_msg_release(r, &m), 0);
		prev = m.seq;
		received++;
		lost += m.lost;
	}
	expect_err(ret, EAGAIN);
	expect(received + lost == n, "received %llu + lost %llu != sent %llu",
	       (unsigned long long)received, (unsigned long long)lost,
	       (unsigned long long)n);
	expect_eq(prev, n);		/* the newest is always there */
	expect(received < n, "all %llu messages fit in the ring?",
	       (unsigned long long)n);
	th_put(sock, (int64_t)received);
	th_get(sock);
	expect_err(shmfd_recv(r, &m, 0, -1), EPIPE);
	shmfd_reader_close(r);
	return 0;
}

START_TEST(test_lossy_lost_accounting)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, SHMFD_LOSSY);
	struct rd a = { .share_fd = expect_ok(shmfd_chan_share_fd(chan)) };
	struct th_child c = th_spawn(lossy_slow_reader, &a, 0);

	th_get(c.sock);
	/* Lossy never waits, even with a reader that does not read. */
	for (uint64_t seq = 1; seq <= LOSSY_N; seq++)
		send_seq(chan, seq, th_msg_len(seq, LOSSY_MAX), 0);
	th_put(c.sock, LOSSY_N);
	expect(th_get(c.sock) > 0, "the reader received nothing");
	shmfd_chan_close(chan);
	th_put(c.sock, 0);
	expect_exit(c.pid, 0);
	close(c.sock);
	close(a.share_fd);
}
END_TEST

#define RACE_N		200000
#define RACE_MAX	512

/*
 * Read while the producer overwrites: every message is intact or its
 * release says -ESTALE; seq only grows and lost counts each gap.
 */
static int lossy_racing_reader(int sock, void *arg)
{
	struct rd *a = arg;
	struct shmfd_reader *r = th_join(a->share_fd, 0);
	uint64_t prev = 0, received = 0, lost = 0, stale = 0;
	struct shmfd_msg m;
	int ret;

	th_put(sock, 1);
	while ((ret = shmfd_recv(r, &m, 0, -1)) == 0) {
		size_t len = m.len;
		long bad, bad2;

		expect(m.seq > prev, "seq %llu after %llu",
		       (unsigned long long)m.seq, (unsigned long long)prev);
		expect(m.lost == m.seq - prev - 1, "seq %llu after %llu "
		       "reports %llu lost", (unsigned long long)m.seq,
		       (unsigned long long)prev, (unsigned long long)m.lost);
		/* Read twice, with a chance for the producer to run. */
		bad = len <= RACE_MAX ? th_check(m.data, len, m.seq) : 0;
		if (received % 16 == 0)
			sched_yield();
		bad2 = len <= RACE_MAX ? th_check(m.data, len, m.seq) : 0;
		ret = shmfd_msg_release(r, &m);
		if (ret == -ESTALE) {
			stale++;
		} else {
			expect(ret == 0, "release = %d (%s)", ret,
			       th_strerr(ret));
			expect_eq(len, th_msg_len(m.seq, RACE_MAX));
			expect(bad < 0 && bad2 < 0, "message %llu torn at "
			       "byte %ld/%ld but release said 0",
			       (unsigned long long)m.seq, bad, bad2);
		}
		prev = m.seq;
		received++;
		lost += m.lost;
	}
	expect_err(ret, EPIPE);
	expect(received + lost == RACE_N, "received %llu + lost %llu != "
	       "sent %d", (unsigned long long)received,
	       (unsigned long long)lost, RACE_N);
	expect_eq(prev, RACE_N);
	printf("lossy race: %llu received (%llu stale), %llu lost\n",
	       (unsigned long long)received, (unsigned long long)stale,
	       (unsigned long long)lost);
	shmfd_reader_close(r);
	return 0;
}

START_TEST(test_lossy_race)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, SHMFD_LOSSY);
	struct rd a = { .share_fd = expect_ok(shmfd_chan_share_fd(chan)) };
	struct th_child c = th_spawn(lossy_racing_reader, &a, 0);
	static char buf[RACE_MAX];

	th_get(c.sock);
	for (uint64_t seq = 1; seq <= RACE_N; seq++) {
		size_t len = th_msg_len(seq, RACE_MAX);
		void *p;

		if (seq % 3) {
			th_fill(buf, len, seq);
			expect_ok(shmfd_send(chan, buf, len, 0));
		} else {
			expect_ok(shmfd_reserve(chan, len, &p, 0));
			th_fill(p, len, seq);
			expect_ok(shmfd_commit(chan, len));
		}
	}
	shmfd_chan_close(chan);
	expect_exit(c.pid, 0);
	close(c.sock);
	close(a.share_fd);
}
END_TEST

/* Hold message 1 while the producer laps the ring: -ESTALE. */
static int lossy_holder(int sock, void *arg)
{
	struct rd *a = arg;
	struct shmfd_reader *r = th_join(a->share_fd, 0);
	struct shmfd_msg held, m;
	uint64_t prev;
	int ret;

	th_put(sock, 1);
	th_get(sock);
	recv_seq(r, &held, 0, 0, 1, 0, 100);
	th_put(sock, 2);
	th_get(sock);				/* the ring was lapped */
	expect_err(shmfd_msg_release(r, &held), ESTALE);
	/* Released all the same. */
	expect_err(shmfd_msg_release(r, &held), EINVAL);

	expect_ok(shmfd_recv(r, &m, 0, 0));
	expect(m.seq > 2 && m.lost == m.seq - 2, "after the lap: seq %llu "
	       "lost %llu", (unsigned long long)m.seq,
	       (unsigned long long)m.lost);
	prev = m.seq;
	expect_eq(shmfd_msg_release(r, &m), 0);
	while ((ret = shmfd_recv(r, &m, 0, 0)) == 0) {
		expect_next(r, &m, prev + 1);
		prev = m.seq;
	}
	expect_err(ret, EAGAIN);
	expect_eq(prev, a->n);
	shmfd_reader_close(r);
	return 0;
}

START_TEST(test_lossy_estale)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, SHMFD_LOSSY);
	struct rd a = {
		.share_fd = expect_ok(shmfd_chan_share_fd(chan)),
		.n = 1 + 8 * RING / KiB,
	};
	struct th_child c = th_spawn(lossy_holder, &a, 0);

	th_get(c.sock);
	send_seq(chan, 1, 100, 0);
	th_put(c.sock, 1);
	th_get(c.sock);
	/* Eight laps of the ring. */
	for (uint64_t seq = 2; seq <= a.n; seq++)
		send_seq(chan, seq, KiB, 0);
	th_put(c.sock, 2);
	expect_exit(c.pid, 0);
	close(c.sock);
	close(a.share_fd);
	shmfd_chan_close(chan);
}
END_TEST

/* ---- reliable ---- */

/* Join; wait for "go n"; receive 1..n (saying so) and more until -EPIPE. */
static int reliable_reader(int sock, void *arg)
{
	struct rd *a = arg;
	struct shmfd_reader *r = th_join(a->share_fd, 0);
	struct shmfd_msg m;
	uint64_t seq = 0, n;
	int ret;

	th_put(sock, 1);
	n = (uint64_t)th_get(sock);
	while ((ret = shmfd_recv(r, &m, 0, -1)) == 0) {
		expect_eq(m.seq, seq + 1);
		expect_eq(m.lost, 0);
		expect_eq(m.len, KiB);
		expect(th_check(m.data, m.len, m.seq) < 0, "message %llu "
		       "corrupt", (unsigned long long)m.seq);
		expect_eq(shmfd_msg_release(r, &m), 0);
		seq = m.seq;
		if (seq == n)
			th_put(sock, (int64_t)seq);
	}
	expect_err(ret, EPIPE);
	th_put(sock, (int64_t)seq);
	shmfd_reader_close(r);
	return 0;
}

/* A reader that keeps up: tells how far it got when asked. */
static int fast_reader(int sock, void *arg)
{
	struct rd *a = arg;
	struct shmfd_reader *r = th_join(a->share_fd, 0);
	struct shmfd_msg m;
	uint64_t seq = 0;
	int ret;

	th_put(sock, 1);
	for (;;) {
		ret = shmfd_recv(r, &m, 0, 0);
		if (ret == -EAGAIN) {
			/* Caught up: say where, then wait for more. */
			if (th_readable(sock, 0)) {
				th_get(sock);
				th_put(sock, (int64_t)seq);
			}
			ret = shmfd_recv(r, &m, 0, 20);
			if (ret == -ETIMEDOUT)
				continue;
		}
		if (ret != 0)
			break;
		expect_next(r, &m, seq + 1);
		seq = m.seq;
	}
	expect_err(ret, EPIPE);
	th_put(sock, (int64_t)seq);
	shmfd_reader_close(r);
	return 0;
}

/* ---- a producer waiting for more than it needs (ring.c (4)) ---- */

/* Read messages 1..a->n, holding the 4th and releasing the rest, so the
 * tail stops a few records in; then wait for message n + 1 (_i == 0:
 * blocking, 1: polling with timeout 0), which the producer can send only
 * once it knows about that tail. */
static int holding_reader(int sock, void *arg)
{
	struct rd *a = arg;
	struct shmfd_reader *r = th_join(a->share_fd, 0);
	struct shmfd_msg m, held = { 0 };
	uint64_t start;
	int ret;

	th_put(sock, 1);
	/* The ring is full (n messages), and a send of n + 1 blocks. */
	a->n = (uint64_t)th_get(sock);
	for (uint64_t seq = 1; seq <= a->n; seq++) {
		recv_seq(r, &m, 0, DEADLINE_MS, seq, 0, KiB);
		if (seq == 4)
			held = m;
		else
			expect_eq(shmfd_msg_release(r, &m), 0);
	}
	if (a->flags) {
		start = th_now_ms();
		while ((ret = shmfd_recv(r, &m, 0, 0)) == -EAGAIN)
			expect(th_now_ms() - start < DEADLINE_MS,
			       "message %llu never came: the producer sleeps",
			       (unsigned long long)a->n + 1);
		expect_eq(ret, 0);
		expect_eq(m.seq, a->n + 1);
	} else {
		recv_seq(r, &m, 0, DEADLINE_MS, a->n + 1, 0, KiB);
	}
	expect_eq(shmfd_msg_release(r, &m), 0);
	expect_eq(shmfd_msg_release(r, &held), 0);
	th_put(sock, 2);
	shmfd_reader_close(r);
	return 0;
}

/*
 * The producer waits for a chunk more than it needs, and readers wake it
 * when their tail reaches that chunk.  A reader whose tail stops past
 * what it needs but short of the chunk, and that then waits for the next
 * message itself, must wake it: otherwise each waits for the other.
 */
START_TEST(test_wake_for_need)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, 0);
	struct rd a = {
		.share_fd = expect_ok(shmfd_chan_share_fd(chan)),
		.flags = _i,
	};
	struct th_async as;
	struct th_child c;

	c = th_spawn(holding_reader, &a, 0);
	th_get(c.sock);
	a.n = send_until_full(chan, 1);
	th_async_send(&as, chan, a.n + 1, KiB, -1, false);
	/* Asleep for space before the reader frees any. */
	expect(!th_async_done(&as, TH_MS(300)), "a send into a full ring returned");
	th_put(c.sock, (int64_t)a.n);
	expect_eq(th_get(c.sock), 2);
	expect_eq(th_async_join(&as), 0);
	shmfd_chan_close(chan);
	expect_exit(c.pid, 0);
	close(c.sock);
	close(a.share_fd);
}
END_TEST

/* ---- membarrier and fences side by side (ring.c (7)) ---- */

#define MIX_N		6000

/* Read every message until -EPIPE, blocking (so it sleeps between bursts
 * and must be woken), slow now and then (so the producer must wait for
 * its space and be woken); a->flags != 0: as a process without
 * membarrier(2), a fenced reader. */
static int mixed_reader(int sock, void *arg)
{
	struct rd *a = arg;
	struct shmfd_reader *r;
	struct shmfd_msg m;
	uint64_t seq = 0;
	int ret;

	if (a->flags)
		setenv("SHMFD_NO_MEMBARRIER", "1", 1);
	r = th_join(a->share_fd, 0);
	th_put(sock, 1);
	while ((ret = shmfd_recv(r, &m, 0, DEADLINE_MS)) == 0) {
		expect_next(r, &m, seq + 1);
		seq = m.seq;
		if (seq % 700 == (a->flags ? 350u : 0u))
			usleep(3000);
	}
	expect_err(ret, EPIPE);
	th_put(sock, (int64_t)seq);
	shmfd_reader_close(r);
	return 0;
}

/*
 * A reader that cannot use membarrier(2) joins beside one that can: the
 * producer fences for the first while it is there and not after, and
 * neither misses a wake-up, whether it sleeps for messages or the
 * producer sleeps for space.  (Without membarrier in this process -- the
 * .nouring run -- everybody fences, and the test still must pass.)
 */
START_TEST(test_fenced_and_membarrier)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, 0);
	struct rd a = { .share_fd = expect_ok(shmfd_chan_share_fd(chan)) };
	struct rd b = a;
	struct th_child ca, cb;
	uint64_t seq = 0;

	b.flags = 1;
	ca = th_spawn(mixed_reader, &a, 0);
	cb = th_spawn(mixed_reader, &b, 0);
	th_get(ca.sock);
	th_get(cb.sock);
	while (seq < MIX_N) {
		/* Bursts that fill the ring, then pauses long enough for
		 * both readers to catch up and sleep. */
		for (int i = 0; i < 300 && seq < MIX_N; i++) {
			seq++;
			send_seq(chan, seq, th_msg_len(seq, 1000), -1);
		}
		if (seq % 900 == 0)
			usleep(2000);
	}
	shmfd_chan_close(chan);
	expect_eq(th_get(ca.sock), MIX_N);
	expect_eq(th_get(cb.sock), MIX_N);
	expect_exit(ca.pid, 0);
	expect_exit(cb.pid, 0);
	close(ca.sock);
	close(cb.sock);
	close(a.share_fd);
}
END_TEST

/*
 * _i == 0: the blocked call is shmfd_send, 1: shmfd_reserve.
 * A slow reader that has not read anything and a fast one that read
 * everything: the slow one governs.
 */
START_TEST(test_reliable_backpressure)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, 0);
	struct rd a = { .share_fd = expect_ok(shmfd_chan_share_fd(chan)) };
	struct th_child slow, fast;
	struct th_async async;
	static char probe[KiB];
	uint64_t k, t0;
	void *p;

	slow = th_spawn(reliable_reader, &a, 0);
	fast = th_spawn(fast_reader, &a, 0);
	th_get(slow.sock);
	th_get(fast.sock);

	k = fill_ring(chan, 1);
	/* The fast reader has everything; the ring stays full. */
	th_put(fast.sock, 0);
	while ((uint64_t)th_get(fast.sock) != k)
		th_put(fast.sock, 0);
	expect_err(shmfd_send(chan, probe, KiB, 0), EAGAIN);
	expect_err(shmfd_reserve(chan, KiB, &p, 0), EAGAIN);
	t0 = th_now_ms();
	expect_err(shmfd_send(chan, probe, KiB, 100), ETIMEDOUT);
	ck_assert_msg(th_now_ms() - t0 >= 100, "send(100 ms) timed out after "
		      "%llu ms", (unsigned long long)(th_now_ms() - t0));
	t0 = th_now_ms();
	expect_err(shmfd_reserve(chan, KiB, &p, 50), ETIMEDOUT);
	ck_assert_msg(th_now_ms() - t0 >= 50, "reserve(50 ms) timed out "
		      "after %llu ms", (unsigned long long)(th_now_ms() - t0));

	/* Forever: blocked until the slow reader releases. */
	th_async_send(&async, chan, k + 1, KiB, -1, _i == 1);
	ck_assert_msg(!th_async_done(&async, TH_MS(200)), "a send into a "
		      "full ring returned %d while every message was unread",
		      th_async_join(&async));
	th_put(slow.sock, (int64_t)(k + 1));
	expect_eq(th_async_join(&async), 0);
	expect_eq(th_get(slow.sock), k + 1);

	shmfd_chan_close(chan);
	expect_eq(th_get(slow.sock), k + 1);
	expect_eq(th_get(fast.sock), k + 1);
	expect_exit(slow.pid, 0);
	expect_exit(fast.pid, 0);
	close(slow.sock);
	close(fast.sock);
	close(a.share_fd);
}
END_TEST

/*
 * Hold every message of a full ring, release all but one in the middle,
 * out of order: space comes back up to the held one, and the held one is
 * never overwritten.
 */
static int out_of_order_reader(int sock, void *arg)
{
	struct rd *a = arg;
	struct shmfd_reader *r = th_join(a->share_fd, 0);
	struct shmfd_msg *m, extra;
	uint64_t k, mid, j, i;

	th_put(sock, 1);
	k = (uint64_t)th_get(sock);
	m = calloc(k + 1, sizeof(*m));
	expect(m, "calloc");
	for (i = 1; i <= k; i++)
		recv_seq(r, &m[i], 0, 0, i, 0, KiB);
	mid = k / 2;
	/* Odd ones from the newest down, then even ones from the oldest. */
	for (i = k; i >= 1; i--)
		if ((i & 1) && i != mid)
			expect_eq(shmfd_msg_release(r, &m[i]), 0);
	for (i = 2; i <= k; i += 2)
		if (i != mid)
			expect_eq(shmfd_msg_release(r, &m[i]), 0);
	th_put(sock, (int64_t)mid);

	j = (uint64_t)th_get(sock);		/* j more were sent */
	expect(th_check(m[mid].data, m[mid].len, mid) < 0, "held message "
	       "%llu was overwritten", (unsigned long long)mid);
	expect_eq(shmfd_msg_release(r, &m[mid]), 0);
	for (i = k + 1; i <= k + j; i++) {
		recv_seq(r, &extra, 0, 0, i, 0, KiB);
		expect_eq(shmfd_msg_release(r, &extra), 0);
	}
	expect_err(shmfd_recv(r, &extra, 0, 0), EAGAIN);
	th_put(sock, 0);
	/* The producer fills a whole free ring, then closes. */
	recv_seq(r, &extra, 0, -1, k + j + 1, 0, KiB);
	expect_eq(shmfd_msg_release(r, &extra), 0);
	expect_err(shmfd_recv(r, &extra, 0, -1), EPIPE);
	free(m);
	shmfd_reader_close(r);
	return 0;
}

START_TEST(test_reliable_out_of_order)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, 0);
	struct rd a = { .share_fd = expect_ok(shmfd_chan_share_fd(chan)) };
	struct th_child c = th_spawn(out_of_order_reader, &a, 0);
	uint64_t k, mid, j;

	th_get(c.sock);
	k = fill_ring(chan, 1);
	th_put(c.sock, (int64_t)k);
	mid = (uint64_t)th_get(c.sock);
	/* Everything before mid is free again, nothing from mid on. */
	j = send_until_full(chan, k + 1);
	expect(j >= 1 && j + 2 >= mid - 1 && j <= mid, "%llu messages fit "
	       "after releasing the %llu before the held one",
	       (unsigned long long)j, (unsigned long long)(mid - 1));
	th_put(c.sock, (int64_t)j);
	th_get(c.sock);
	/* All released: the ring is free again. */
	send_seq(chan, k + j + 1, KiB, 0);
	shmfd_chan_close(chan);
	expect_exit(c.pid, 0);
	close(c.sock);
	close(a.share_fd);
}
END_TEST

/* The 257th held message is refused until one is released: the oldest,
 * or any other (the limit counts unreleased messages). */
static int hoarder(int sock, void *arg)
{
	struct rd *a = arg;
	struct shmfd_reader *r = th_join(a->share_fd, 0);
	static struct shmfd_msg m[257];
	struct shmfd_msg more;
	uint64_t i;

	th_put(sock, 1);
	th_get(sock);
	for (i = 1; i <= 256; i++)
		recv_seq(r, &m[i], 0, 0, i, 0, 16);
	expect_err(shmfd_recv(r, &more, 0, 0), ENOBUFS);
	expect_err(shmfd_recv(r, &more, 0, -1), ENOBUFS);
	expect_eq(shmfd_msg_release(r, &m[1]), 0);
	recv_seq(r, &m[1], 0, 0, 257, 0, 16);
	expect_err(shmfd_recv(r, &more, 0, 0), ENOBUFS);
	/* 255 unreleased after this: room for one more. */
	expect_eq(shmfd_msg_release(r, &m[100]), 0);
	recv_seq(r, &m[100], 0, 0, 258, 0, 16);
	expect_err(shmfd_recv(r, &more, 0, 0), ENOBUFS);
	for (i = 256; i >= 1; i--)
		expect_eq(shmfd_msg_release(r, &m[i]), 0);
	for (i = 259; i <= 300; i++) {
		recv_seq(r, &more, 0, 0, i, 0, 16);
		expect_eq(shmfd_msg_release(r, &more), 0);
	}
	expect_err(shmfd_recv(r, &more, 0, 0), EAGAIN);
	shmfd_reader_close(r);
	return 0;
}

START_TEST(test_held_limit)
{
	struct shmfd_chan *chan = th_chan(NULL, 0, 0, _i ? SHMFD_LOSSY : 0);
	struct rd a = { .share_fd = expect_ok(shmfd_chan_share_fd(chan)) };
	struct th_child c = th_spawn(hoarder, &a, 0);

	th_get(c.sock);
	for (uint64_t seq = 1; seq <= 300; seq++)
		send_seq(chan, seq, 16, 0);
	th_put(c.sock, 0);
	expect_exit(c.pid, 0);
	close(c.sock);
	close(a.share_fd);
	shmfd_chan_close(chan);
}
END_TEST

/* Hold a full ring, then close the reader without releasing. */
static int close_holding(int sock, void *arg)
{
	struct rd *a = arg;
	struct shmfd_reader *r = th_join(a->share_fd, 0);
	struct shmfd_msg m;
	uint64_t n;

	th_put(sock, 1);
	n = (uint64_t)th_get(sock);
	for (uint64_t i = 1; i <= n; i++)
		expect_ok(shmfd_recv(r, &m, 0, 0));
	shmfd_reader_close(r);
	th_put(sock, 2);
	th_get(sock);
	return 0;
}

START_TEST(test_reader_close_releases)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, 0);
	struct rd a = { .share_fd = expect_ok(shmfd_chan_share_fd(chan)) };
	struct th_child holder, other;
	uint64_t n;

	holder = th_spawn(close_holding, &a, 0);
	th_get(holder.sock);
	/* A second reader that reads everything keeps the producer honest:
	 * with no reader at all it would never wait anyway. */
	other = th_spawn(fast_reader, &a, 0);
	th_get(other.sock);
	n = fill_ring(chan, 1);
	th_put(holder.sock, (int64_t)n);
	th_get(holder.sock);
	th_put(holder.sock, 0);
	expect_exit(holder.pid, 0);
	/* The closed reader's messages no longer hold the ring. */
	send_seq(chan, n + 1, KiB, DEADLINE_MS);
	expect_eventually(shmfd_chan_readers(chan) == 1);
	for (uint64_t seq = n + 2; seq <= 3 * n; seq++)
		send_seq(chan, seq, KiB, DEADLINE_MS);
	shmfd_chan_close(chan);
	expect_eq(th_get(other.sock), 3 * n);
	expect_exit(other.pid, 0);
	close(holder.sock);
	close(other.sock);
	close(a.share_fd);
}
END_TEST

/* ---- where a reader starts, and RECV_LATEST ---- */

/* Expect seq first..last in order after joining with a->flags. */
static int join_and_check(int sock, void *arg)
{
	struct rd *a = arg;
	struct shmfd_reader *r = th_join(a->share_fd, a->flags);
	struct shmfd_msg m;
	uint64_t first, last, seq;

	th_put(sock, 1);
	first = (uint64_t)th_get(sock);
	last = (uint64_t)th_get(sock);
	for (seq = first; seq <= last; seq++) {
		recv_seq(r, &m, 0, -1, seq, seq == first ? a->n : 0,
			 th_msg_len(seq, 100));
		expect_eq(shmfd_msg_release(r, &m), 0);
	}
	expect_err(shmfd_recv(r, &m, 0, 0), EAGAIN);
	shmfd_reader_close(r);
	return 0;
}

/* A reader receives what is sent after it joined; FROM_OLDEST also what
 * is still in the ring. */
START_TEST(test_join_position)
{
	uint32_t mode = _i ? SHMFD_LOSSY : 0;
	struct shmfd_chan *chan = th_chan(NULL, 0, 0, mode);
	struct rd from_now = { .flags = 0, .n = 0 };
	struct rd from_oldest = { .flags = SHMFD_FROM_OLDEST, .n = 0 };
	struct th_child now, oldest;
	uint64_t seq;

	from_now.share_fd = expect_ok(shmfd_chan_share_fd(chan));
	from_oldest.share_fd = from_now.share_fd;
	for (seq = 1; seq <= 5; seq++)
		send_seq(chan, seq, th_msg_len(seq, 100), 0);
	now = th_spawn(join_and_check, &from_now, 0);
	oldest = th_spawn(join_and_check, &from_oldest, 0);
	th_get(now.sock);
	th_get(oldest.sock);
	for (; seq <= 10; seq++)
		send_seq(chan, seq, th_msg_len(seq, 100), 0);
	th_put(now.sock, 6);
	th_put(now.sock, 10);
	th_put(oldest.sock, 1);
	th_put(oldest.sock, 10);
	expect_exit(now.pid, 0);
	expect_exit(oldest.pid, 0);
	close(now.sock);
	close(oldest.sock);
	close(from_now.share_fd);
	shmfd_chan_close(chan);
}
END_TEST

/* The ring was lapped before the reader joined: FROM_OLDEST starts at
 * the oldest intact message.  What went before the join is not "lost" to
 * this reader: lost counts what it skipped after joining. */
static int join_oldest_lapped(int sock, void *arg)
{
	struct rd *a = arg;
	struct shmfd_reader *r = th_join(a->share_fd, SHMFD_FROM_OLDEST);
	struct shmfd_msg m;
	uint64_t first, seq;

	expect_ok(shmfd_recv(r, &m, 0, 0));
	first = m.seq;
	expect(first > 1 && m.lost == 0, "first seq %llu, lost %llu",
	       (unsigned long long)first, (unsigned long long)m.lost);
	/* At least half a ring of 1 KiB messages is still there. */
	expect(a->n - first + 1 >= RING / KiB / 2, "only %llu of %llu "
	       "messages kept", (unsigned long long)(a->n - first + 1),
	       (unsigned long long)a->n);
	for (seq = first; seq <= a->n; seq++) {
		if (seq != first)
			recv_seq(r, &m, 0, 0, seq, 0, KiB);
		expect(th_check(m.data, m.len, seq) < 0, "message %llu "
		       "corrupt", (unsigned long long)seq);
		expect_eq(shmfd_msg_release(r, &m), 0);
	}
	expect_err(shmfd_recv(r, &m, 0, 0), EAGAIN);
	th_put(sock, (int64_t)first);
	shmfd_reader_close(r);
	return 0;
}

START_TEST(test_from_oldest_lapped)
{
	uint32_t mode = _i ? SHMFD_LOSSY : 0;
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, mode);
	struct rd a = { .share_fd = expect_ok(shmfd_chan_share_fd(chan)) };
	struct th_child c;

	a.n = 10 * RING / KiB;
	for (uint64_t seq = 1; seq <= a.n; seq++)
		send_seq(chan, seq, KiB, 0);
	c = th_spawn(join_oldest_lapped, &a, 0);
	th_get(c.sock);
	expect_exit(c.pid, 0);
	close(c.sock);
	close(a.share_fd);
	shmfd_chan_close(chan);
}
END_TEST

/* Lossy: join FROM_OLDEST, fall a lap behind before reading: the first
 * message's lost counts from the oldest message at the join. */
static int oldest_then_lapped(int sock, void *arg)
{
	struct rd *a = arg;
	struct shmfd_reader *r = th_join(a->share_fd, SHMFD_FROM_OLDEST);
	struct shmfd_msg m;
	uint64_t seq;

	th_put(sock, 1);
	th_get(sock);
	expect_ok(shmfd_recv(r, &m, 0, 0));
	expect(m.seq > 10 && m.lost == m.seq - 1, "first seq %llu, lost %llu"
	       " (the reader started at seq 1)", (unsigned long long)m.seq,
	       (unsigned long long)m.lost);
	for (seq = m.seq; seq < a->n; seq++) {
		expect_eq(shmfd_msg_release(r, &m), 0);
		recv_seq(r, &m, 0, 0, seq + 1, 0, KiB);
	}
	expect_eq(shmfd_msg_release(r, &m), 0);
	expect_err(shmfd_recv(r, &m, 0, 0), EAGAIN);
	shmfd_reader_close(r);
	return 0;
}

START_TEST(test_from_oldest_falls_behind)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, SHMFD_LOSSY);
	struct rd a = {
		.share_fd = expect_ok(shmfd_chan_share_fd(chan)),
		.n = 10 + 4 * RING / KiB,
	};
	struct th_child c;
	uint64_t seq;

	for (seq = 1; seq <= 10; seq++)
		send_seq(chan, seq, KiB, 0);
	c = th_spawn(oldest_then_lapped, &a, 0);
	th_get(c.sock);
	for (; seq <= a.n; seq++)
		send_seq(chan, seq, KiB, 0);
	th_put(c.sock, 0);
	expect_exit(c.pid, 0);
	close(c.sock);
	close(a.share_fd);
	shmfd_chan_close(chan);
}
END_TEST

static int latest_reader(int sock, void *arg)
{
	struct rd *a = arg;
	struct shmfd_reader *r = th_join(a->share_fd, 0);
	struct shmfd_msg m;

	th_put(sock, 1);
	a->n = (uint64_t)th_get(sock);		/* 1..n were sent */
	recv_seq(r, &m, SHMFD_RECV_LATEST, 0, a->n, a->n - 1, KiB);
	expect_eq(shmfd_msg_release(r, &m), 0);
	expect_err(shmfd_recv(r, &m, 0, 0), EAGAIN);
	expect_err(shmfd_recv(r, &m, SHMFD_RECV_LATEST, 0), EAGAIN);
	th_put(sock, 2);

	th_get(sock);				/* n+1..n+3 were sent */
	recv_seq(r, &m, 0, 0, a->n + 1, 0, KiB);
	expect_eq(shmfd_msg_release(r, &m), 0);
	recv_seq(r, &m, SHMFD_RECV_LATEST, -1, a->n + 3, 1, KiB);
	expect_eq(shmfd_msg_release(r, &m), 0);
	expect_err(shmfd_recv(r, &m, SHMFD_RECV_LATEST, 0), EAGAIN);
	th_put(sock, 3);

	/* A blocked RECV_LATEST wakes for the next message. */
	recv_seq(r, &m, SHMFD_RECV_LATEST, -1, a->n + 4, 0, KiB);
	expect_eq(shmfd_msg_release(r, &m), 0);
	th_put(sock, 4);
	/* Stay joined while the producer checks the ring is free. */
	th_get(sock);
	shmfd_reader_close(r);
	return 0;
}

/* _i == 0 reliable, 1 lossy.  In reliable mode the ring is full before
 * the skip, and the skip must give all of it back. */
START_TEST(test_recv_latest)
{
	uint32_t mode = _i ? SHMFD_LOSSY : 0;
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, mode);
	struct rd a = { .share_fd = expect_ok(shmfd_chan_share_fd(chan)) };
	struct th_child c = th_spawn(latest_reader, &a, 0);
	uint64_t n;

	th_get(c.sock);
	if (mode) {
		n = 10;
		for (uint64_t seq = 1; seq <= n; seq++)
			send_seq(chan, seq, KiB, 0);
	} else {
		n = fill_ring(chan, 1);
	}
	th_put(c.sock, (int64_t)n);
	expect_eq(th_get(c.sock), 2);
	for (uint64_t seq = n + 1; seq <= n + 3; seq++)
		send_seq(chan, seq, KiB, 0);
	th_put(c.sock, 0);
	expect_eq(th_get(c.sock), 3);
	send_seq(chan, n + 4, KiB, 0);
	expect_eq(th_get(c.sock), 4);
	if (!mode) {
		/* Everything was skipped or released: a whole ring fits
		 * (but for one record lost to padding at the wrap). */
		uint64_t again = fill_ring(chan, n + 5);

		expect(again + 1 >= n && again <= n, "%llu messages fit "
		       "after the skip, %llu before",
		       (unsigned long long)again, (unsigned long long)n);
	}
	th_put(c.sock, 0);
	expect_exit(c.pid, 0);
	close(c.sock);
	close(a.share_fd);
	shmfd_chan_close(chan);
}
END_TEST

/* Reliable: a reader that joins FROM_OLDEST owns the messages it starts
 * at; the producer may not overwrite them before it has read them. */
static int oldest_holds_ring(int sock, void *arg)
{
	struct rd *a = arg;
	struct shmfd_reader *r = th_join(a->share_fd, SHMFD_FROM_OLDEST);
	struct shmfd_msg m;
	uint64_t seq, last;

	th_put(sock, 1);
	last = (uint64_t)th_get(sock);		/* the producer is done */
	expect_ok(shmfd_recv(r, &m, 0, 0));
	expect(m.seq > 1 && m.lost == 0, "reliable channel: the first "
	       "message is seq %llu with %llu lost: the producer overwrote "
	       "what this FROM_OLDEST reader joined at",
	       (unsigned long long)m.seq, (unsigned long long)m.lost);
	for (seq = m.seq; seq <= last; seq++) {
		if (seq != m.seq)
			recv_seq(r, &m, 0, 0, seq, 0, KiB);
		expect(th_check(m.data, m.len, seq) < 0, "message %llu was "
		       "overwritten before this reader read it",
		       (unsigned long long)seq);
		expect_eq(shmfd_msg_release(r, &m), 0);
	}
	expect_err(shmfd_recv(r, &m, 0, 0), EAGAIN);
	shmfd_reader_close(r);
	return 0;
}

START_TEST(test_from_oldest_holds_ring)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, 0);
	struct rd a = { .share_fd = expect_ok(shmfd_chan_share_fd(chan)) };
	uint64_t seq, n = 10 * RING / KiB;
	static char probe[KiB];
	struct th_child c;

	/* No reader yet: the ring wraps freely. */
	for (seq = 1; seq <= n; seq++)
		send_seq(chan, seq, KiB, 0);
	c = th_spawn(oldest_holds_ring, &a, 0);
	th_get(c.sock);
	/* The ring is full of what the new reader has not read. */
	n += send_until_full(chan, n + 1);
	expect_err(shmfd_send(chan, probe, KiB, 0), EAGAIN);
	th_put(c.sock, (int64_t)n);
	expect_exit(c.pid, 0);
	close(c.sock);
	close(a.share_fd);
	shmfd_chan_close(chan);
}
END_TEST

/*
 * Reliable: hold message 1, skip to the newest with RECV_LATEST: what was
 * skipped comes back as soon as message 1 is released, the rest when the
 * newest is.
 */
static int latest_while_holding(int sock, void *arg)
{
	struct rd *a = arg;
	struct shmfd_reader *r = th_join(a->share_fd, 0);
	struct shmfd_msg first, newest;
	uint64_t n;

	th_put(sock, 1);
	n = (uint64_t)th_get(sock);
	recv_seq(r, &first, 0, 0, 1, 0, KiB);
	recv_seq(r, &newest, SHMFD_RECV_LATEST, 0, n, n - 2, KiB);
	th_put(sock, 2);
	th_get(sock);				/* the ring is still full */
	expect_eq(shmfd_msg_release(r, &first), 0);
	th_put(sock, 3);
	th_get(sock);				/* the skipped space is back */
	expect(th_check(newest.data, newest.len, n) < 0, "held message %llu "
	       "was overwritten", (unsigned long long)n);
	expect_eq(shmfd_msg_release(r, &newest), 0);
	th_put(sock, 4);
	th_get(sock);
	shmfd_reader_close(r);
	return 0;
}

START_TEST(test_latest_while_holding)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, 0);
	struct rd a = { .share_fd = expect_ok(shmfd_chan_share_fd(chan)) };
	struct th_child c = th_spawn(latest_while_holding, &a, 0);
	static char probe[KiB];
	uint64_t n, j, k;

	th_get(c.sock);
	n = fill_ring(chan, 1);
	th_put(c.sock, (int64_t)n);
	expect_eq(th_get(c.sock), 2);
	/* Message 1 is held: nothing before it or after it is free. */
	expect_err(shmfd_send(chan, probe, KiB, 0), EAGAIN);
	th_put(c.sock, 0);
	expect_eq(th_get(c.sock), 3);
	/* Everything up to the held newest is free: n - 1 messages, give
	 * or take the padding at the wrap. */
	j = send_until_full(chan, n + 1);
	expect(j + 2 >= n - 1 && j <= n - 1, "%llu messages fit once the "
	       "%llu before the newest were free", (unsigned long long)j,
	       (unsigned long long)(n - 1));
	th_put(c.sock, 0);
	expect_eq(th_get(c.sock), 4);
	/* The reader is at the head: all of the ring but the j new ones. */
	k = send_until_full(chan, n + j + 1);
	expect(k >= 1, "nothing fits after the newest was released");
	th_put(c.sock, 0);
	expect_exit(c.pid, 0);
	close(c.sock);
	close(a.share_fd);
	shmfd_chan_close(chan);
}
END_TEST

static Suite *modes_suite(void)
{
	Suite *s = suite_create("modes");
	TCase *tc;

	tc = th_tcase("lossy");
	tcase_add_test(tc, test_lossy_lost_accounting);
	tcase_add_test(tc, test_lossy_race);
	tcase_add_test(tc, test_lossy_estale);
	suite_add_tcase(s, tc);

	tc = th_tcase("reliable");
	tcase_add_loop_test(tc, test_reliable_backpressure, 0, 2);
	tcase_add_test(tc, test_reliable_out_of_order);
	tcase_add_loop_test(tc, test_held_limit, 0, 2);
	tcase_add_test(tc, test_reader_close_releases);
	tcase_add_test(tc, test_fenced_and_membarrier);
	tcase_add_loop_test(tc, test_wake_for_need, 0, 2);
	suite_add_tcase(s, tc);

	tc = th_tcase("position");
	tcase_add_loop_test(tc, test_join_position, 0, 2);
	tcase_add_loop_test(tc, test_from_oldest_lapped, 0, 2);
	tcase_add_test(tc, test_from_oldest_falls_behind);
	tcase_add_test(tc, test_from_oldest_holds_ring);
	tcase_add_test(tc, test_latest_while_holding);
	tcase_add_loop_test(tc, test_recv_latest, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return th_run(modes_suite());
}
