/* SPDX-License-Identifier: MIT */
/*
 * Liveness: a producer that is SIGKILLed or closes wakes every blocked
 * reader with -EPIPE (also a reader forked from the producer, which holds
 * copies of the producer's fds so a hang-up alone cannot tell); a reader
 * that is SIGKILLed never stalls a reliable producer; a reader joins a
 * producer that is idle or blocked in a send.  Deadlines are generous:
 * these tests assert what happens, not how fast.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <shmfd.h>

#include "helpers.h"

#define KiB		1024u
#define RING		(64 * KiB)
#define NAME		"live"

static void send_seq(struct shmfd_chan *chan, uint64_t seq, size_t len,
		     int timeout_ms)
{
	static char buf[RING];

	th_fill(buf, len, seq);
	expect_ok(shmfd_send(chan, buf, len, timeout_ms));
}

#define recv_seq(...) recv_seq_at(__FILE__, __LINE__, __VA_ARGS__)
static void recv_seq_at(const char *file, int line, struct shmfd_reader *r,
			uint64_t seq, size_t len, int timeout_ms)
{
	struct shmfd_msg m;
	int ret = shmfd_recv(r, &m, 0, timeout_ms);

	if (ret != 0)
		th_fail(file, line, "shmfd_recv for seq %llu = %d (%s)",
			(unsigned long long)seq, ret, th_strerr(ret));
	if (m.seq != seq || m.lost != 0 || m.len != len ||
	    th_check(m.data, m.len, m.seq) >= 0)
		th_fail(file, line, "got seq %llu lost %llu len %zu (intact: "
			"%s), expected seq %llu len %zu",
			(unsigned long long)m.seq, (unsigned long long)m.lost,
			m.len,
			th_check(m.data, m.len, m.seq) < 0 ? "yes" : "no",
			(unsigned long long)seq, len);
	ret = shmfd_msg_release(r, &m);
	if (ret != 0)
		th_fail(file, line, "release = %d (%s)", ret, th_strerr(ret));
}

static uint64_t fill_ring(struct shmfd_chan *chan, uint64_t seq)
{
	static char buf[KiB];
	uint64_t n = 0;
	int ret;

	for (;;) {
		th_fill(buf, sizeof(buf), seq + n);
		ret = shmfd_send(chan, buf, sizeof(buf), 0);
		if (ret == -EAGAIN)
			break;
		expect(ret == 0, "send = %d (%s)", ret, th_strerr(ret));
		n++;
		expect(n <= RING / KiB, "the producer overwrote unread "
		       "messages");
	}
	expect(n > 0, "an empty ring is full");
	return n;
}

/* ---- the producer goes away ---- */

enum { BY_KILL, BY_CLOSE };
enum { FORKED_FROM_PRODUCER, NAMED_ELSEWHERE };

/*
 * A bystander is another child of the producer, forked after the reader
 * joined: it holds copies of every producer fd, the reader's connection
 * included, so no socket hangs up when the producer goes: only the
 * closed flag and futex wake, or the pidfd, can wake the reader.
 */
static const struct {
	int how;
	int who;
	bool bystander;
	const char *what;
} gone[] = {
	{ BY_KILL, FORKED_FROM_PRODUCER, false,
	  "SIGKILL, reader forked from it" },
	{ BY_CLOSE, FORKED_FROM_PRODUCER, false,
	  "close, reader forked from it" },
	{ BY_KILL, NAMED_ELSEWHERE, false, "SIGKILL, named reader" },
	{ BY_CLOSE, NAMED_ELSEWHERE, false, "close, named reader" },
	{ BY_KILL, FORKED_FROM_PRODUCER, true,
	  "SIGKILL, reader forked from it, a bystander holds its fds" },
	{ BY_CLOSE, FORKED_FROM_PRODUCER, true,
	  "close, reader forked from it, a bystander holds its fds" },
	{ BY_KILL, NAMED_ELSEWHERE, true,
	  "SIGKILL, named reader, a bystander holds its fds" },
	{ BY_CLOSE, NAMED_ELSEWHERE, true,
	  "close, named reader, a bystander holds its fds" },
};

/* Holds what it inherited until killed. */
static int bystander(int sock, void *arg)
{
	for (;;)
		pause();
	return 0;
}

struct gone_arg {
	int variant;
	int share_fd;
	int test_sock;		/* the reader's line to the test */
};

/* Join, tell the test, read the 3 messages it is told of, then block. */
static int blocked_reader(int sock, void *arg)
{
	struct gone_arg *a = arg;
	struct shmfd_reader *r = NULL;
	struct shmfd_msg m;
	int line = a->test_sock >= 0 ? a->test_sock : sock;
	int ret;

	if (a->share_fd >= 0)
		r = th_join(a->share_fd, 0);
	else
		expect_ok(shmfd_reader_open(&r, NAME, 0));
	th_put(line, getpid());
	th_get(line);
	for (uint64_t seq = 1; seq <= 3; seq++)
		recv_seq(r, seq, 100, 0);
	th_put(line, 1);			/* about to block */
	ret = shmfd_recv(r, &m, 0, -1);
	th_put(line, ret);
	expect_err(shmfd_recv(r, &m, 0, 0), EPIPE);
	shmfd_reader_close(r);
	return 0;
}

/* Create, (fork the reader), send 3 when told, then die or close. */
static int producer(int sock, void *arg)
{
	struct gone_arg *a = arg;
	int who = gone[a->variant].who;
	struct shmfd_chan *chan;
	struct th_child r = { .pid = -1, .sock = -1 };

	chan = th_chan(who == NAMED_ELSEWHERE ? NAME : NULL, RING, 0, 0);
	if (who == FORKED_FROM_PRODUCER) {
		a->share_fd = expect_ok(shmfd_chan_share_fd(chan));
		/* The reader must outlive us: no PDEATHSIG. */
		r = th_spawn(blocked_reader, a, TH_ORPHAN);
		close(a->share_fd);
	}
	th_put(sock, 1);			/* ready */
	th_get(sock);
	expect_eq(shmfd_chan_readers(chan), 1);
	for (uint64_t seq = 1; seq <= 3; seq++)
		send_seq(chan, seq, 100, 0);
	if (gone[a->variant].bystander)
		th_put(sock, th_spawn(bystander, NULL, TH_ORPHAN).pid);
	else
		th_put(sock, 0);
	th_get(sock);				/* close (or be killed) */
	shmfd_chan_close(chan);
	th_put(sock, 3);
	th_get(sock);
	if (r.pid > 0)
		expect_exit(r.pid, 0);
	return 0;
}

START_TEST(test_producer_gone)
{
	int how = gone[_i].how, who = gone[_i].who;
	struct gone_arg a = { .variant = _i, .share_fd = -1 };
	struct th_child p, r = { .pid = -1, .sock = -1 };
	int tr[2], line;
	pid_t rpid, bpid;

	th_pair(tr);
	a.test_sock = tr[1];
	p = th_spawn(producer, &a, 0);
	close(tr[1]);
	a.test_sock = -1;
	th_get(p.sock);
	if (who == NAMED_ELSEWHERE) {
		r = th_spawn(blocked_reader, &a, 0);
		line = r.sock;
	} else {
		line = tr[0];
	}
	rpid = (pid_t)th_get(line);
	th_track(rpid);
	th_put(p.sock, 0);			/* send 3 */
	bpid = (pid_t)th_get(p.sock);
	if (bpid > 0)
		th_track(bpid);
	th_put(line, 0);			/* read them and block */
	expect_eq(th_get(line), 1);
	expect_sleeping(rpid);

	if (how == BY_KILL) {
		kill(p.pid, SIGKILL);
		expect_signal(p.pid, SIGKILL);
	} else {
		th_put(p.sock, 0);
		expect_eq(th_get(p.sock), 3);
	}
	ck_assert_msg(th_readable(line, DEADLINE_MS), "%s: the reader "
		      "blocked in recv(-1) did not wake within %d ms",
		      gone[_i].what, DEADLINE_MS);
	expect_err(th_get(line), EPIPE);

	if (how == BY_CLOSE) {
		th_put(p.sock, 0);
		expect_exit(p.pid, 0);		/* it reaps its reader */
	}
	if (who == NAMED_ELSEWHERE || how == BY_KILL)
		expect_exit(rpid, 0);		/* ours, or adopted */
	th_untrack(rpid);
	if (bpid > 0) {
		/* Adopted now that the producer is gone. */
		kill(bpid, SIGKILL);
		expect_signal(bpid, SIGKILL);
	}
	close(tr[0]);
	close(p.sock);
	if (r.sock >= 0)
		close(r.sock);
}
END_TEST

/* A reader forked from the producer joins after the producer died: its
 * copies of the producer's sockets must not make it wait for an answer. */
struct late_arg {
	int share_fd;
	int line;		/* to the test process */
};

static int late_joiner(int sock, void *arg)
{
	struct late_arg *a = arg;
	struct shmfd_reader *r = NULL;
	int ret;

	th_put(a->line, getpid());
	th_get(a->line);
	ret = shmfd_reader_open_fd(&r, a->share_fd, 0);
	th_put(a->line, ret);
	if (ret == 0)
		shmfd_reader_close(r);
	else
		expect_sys(fcntl(a->share_fd, F_GETFD));	/* still ours */
	return 0;
}

static int producer_with_late_joiner(int sock, void *arg)
{
	struct late_arg *a = arg;
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, 0);

	a->share_fd = expect_ok(shmfd_chan_share_fd(chan));
	th_spawn(late_joiner, a, TH_ORPHAN);
	th_put(sock, 1);
	th_get(sock);				/* wait to be killed */
	shmfd_chan_close(chan);
	return 0;
}

START_TEST(test_join_dead_producer)
{
	struct late_arg a;
	struct th_child p;
	int tr[2];
	pid_t rpid;
	int64_t ret;

	th_pair(tr);
	a.line = tr[1];
	p = th_spawn(producer_with_late_joiner, &a, 0);
	close(tr[1]);
	th_get(p.sock);
	rpid = (pid_t)th_get(tr[0]);
	th_track(rpid);
	kill(p.pid, SIGKILL);
	expect_signal(p.pid, SIGKILL);
	th_put(tr[0], 0);
	ret = th_get(tr[0]);
	ck_assert_msg(ret == -EPIPE, "joining a dead producer through a share "
		      "fd: %lld (%s), expected -EPIPE", (long long)ret,
		      th_strerr(ret));
	expect_exit(rpid, 0);
	close(tr[0]);
	close(p.sock);
}
END_TEST

/* ---- a reader dies ---- */

/* Join, hold every message of the full ring, then wait to be killed. */
static int holder(int sock, void *arg)
{
	int fd = *(int *)arg;
	struct shmfd_reader *r = th_join(fd, 0);
	struct shmfd_msg m;
	uint64_t n;

	th_put(sock, 1);
	n = (uint64_t)th_get(sock);
	for (uint64_t i = 1; i <= n; i++)
		expect_ok(shmfd_recv(r, &m, 0, 0));
	th_put(sock, 2);
	th_get(sock);
	return 0;
}

/* Read everything until -EPIPE, checking order; report the last seq. */
static int follower(int sock, void *arg)
{
	int fd = *(int *)arg;
	struct shmfd_reader *r = th_join(fd, 0);
	struct shmfd_msg m;
	uint64_t seq = 0;
	int ret;

	th_put(sock, 1);
	while ((ret = shmfd_recv(r, &m, 0, -1)) == 0) {
		expect_next(r, &m, seq + 1);
		seq = m.seq;
	}
	expect_err(ret, EPIPE);
	th_put(sock, (int64_t)seq);
	shmfd_reader_close(r);
	return 0;
}

/* _i == 0: killed before the send, 1: while the producer is blocked. */
START_TEST(test_reader_killed)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, 0);
	int fd = expect_ok(shmfd_chan_share_fd(chan));
	struct th_child h, f;
	struct th_async async;
	uint64_t n, seq;

	h = th_spawn(holder, &fd, 0);
	f = th_spawn(follower, &fd, 0);
	th_get(h.sock);
	th_get(f.sock);
	n = fill_ring(chan, 1);
	th_put(h.sock, (int64_t)n);
	expect_eq(th_get(h.sock), 2);

	if (_i == 0) {
		kill(h.pid, SIGKILL);
		expect_signal(h.pid, SIGKILL);
		th_async_send(&async, chan, n + 1, KiB, -1, false);
	} else {
		th_async_send(&async, chan, n + 1, KiB, -1, false);
		ck_assert_msg(!th_async_done(&async, TH_MS(200)), "send into "
			      "a ring held full by a reader returned %d",
			      th_async_join(&async));
		kill(h.pid, SIGKILL);
		expect_signal(h.pid, SIGKILL);
	}
	ck_assert_msg(th_async_done(&async, DEADLINE_MS), "send(-1) still "
		      "blocked %d ms after the reader holding the ring was "
		      "killed", DEADLINE_MS);
	expect_eq(th_async_join(&async), 0);
	ck_assert_msg(wait_until(shmfd_chan_readers(chan) == 1),
		      "readers = %d after one of two was killed",
		      shmfd_chan_readers(chan));

	/* The survivor still gets everything, in order. */
	for (seq = n + 2; seq <= 4 * n; seq++)
		send_seq(chan, seq, KiB, -1);
	shmfd_chan_close(chan);
	expect_eq(th_get(f.sock), 4 * n);
	expect_exit(f.pid, 0);
	close(h.sock);
	close(f.sock);
	close(fd);
}
END_TEST

/* A reader killed while blocked in recv is dropped too. */
static int sleeper(int sock, void *arg)
{
	int fd = *(int *)arg;
	struct shmfd_reader *r = th_join(fd, 0);
	struct shmfd_msg m;

	th_put(sock, 1);
	shmfd_recv(r, &m, 0, -1);
	return CHILD_FAILED;
}

START_TEST(test_sleeping_reader_killed)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, 0);
	int fd = expect_ok(shmfd_chan_share_fd(chan));
	struct th_child c = th_spawn(sleeper, &fd, 0);
	uint64_t seq;

	th_get(c.sock);
	expect_sleeping(c.pid);
	kill(c.pid, SIGKILL);
	expect_signal(c.pid, SIGKILL);
	expect_eventually(shmfd_chan_readers(chan) == 0);
	/* Nobody holds the ring: sends never wait. */
	for (seq = 1; seq <= 4 * RING / KiB; seq++)
		send_seq(chan, seq, KiB, 0);
	close(c.sock);
	close(fd);
	shmfd_chan_close(chan);
}
END_TEST

/*
 * A reader whose process forked after it joined: the child holds copies
 * of the reader's socket, so the producer sees no hang-up when the
 * reader leaves.  Closed or killed, it must be dropped all the same, or a
 * reliable producer waits for its space forever.
 */
static int forking_holder(int sock, void *arg)
{
	int fd = *(int *)arg;
	struct shmfd_reader *r = th_join(fd, 0);
	struct shmfd_msg m;
	uint64_t n;

	th_put(sock, 1);
	n = (uint64_t)th_get(sock);
	for (uint64_t i = 1; i <= n; i++)
		expect_ok(shmfd_recv(r, &m, 0, 0));
	/* The child only holds what it inherited, until killed. */
	th_put(sock, th_spawn(bystander, NULL, TH_ORPHAN).pid);
	if (th_get(sock) == 1)
		shmfd_reader_close(r);
	th_put(sock, 2);
	th_get(sock);
	return 0;
}

/* _i == 0: the reader closes, 1: it is killed. */
START_TEST(test_reader_gone_child_holds_fds)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, 0);
	int fd = expect_ok(shmfd_chan_share_fd(chan));
	struct th_child h = th_spawn(forking_holder, &fd, 0);
	struct th_async async;
	uint64_t n;
	pid_t kid;

	th_get(h.sock);
	n = fill_ring(chan, 1);
	th_put(h.sock, (int64_t)n);
	kid = (pid_t)th_get(h.sock);
	th_track(kid);
	th_async_send(&async, chan, n + 1, KiB, -1, false);
	ck_assert_msg(!th_async_done(&async, TH_MS(200)), "send into a ring "
		      "held full by a reader returned %d",
		      th_async_join(&async));
	if (_i == 0) {
		th_put(h.sock, 1);		/* close the reader */
		expect_eq(th_get(h.sock), 2);
	} else {
		kill(h.pid, SIGKILL);
		expect_signal(h.pid, SIGKILL);
	}
	ck_assert_msg(th_async_done(&async, DEADLINE_MS), "send(-1) still "
		      "blocked %d ms after the reader holding the ring %s "
		      "(its child still holds its fds)", DEADLINE_MS,
		      _i ? "was killed" : "closed");
	expect_eq(th_async_join(&async), 0);
	expect_eventually(shmfd_chan_readers(chan) == 0);
	if (_i == 0) {
		th_put(h.sock, 0);
		expect_exit(h.pid, 0);
	}
	kill(kid, SIGKILL);
	expect_signal(kid, SIGKILL);		/* ours now: adopted */
	close(h.sock);
	close(fd);
	shmfd_chan_close(chan);
}
END_TEST

/* ---- readers join a producer that does not call the library ---- */

struct idle_arg {
	bool named;
	bool blocked;		/* fill the ring and block in send(-1) */
};

static int idle_producer(int sock, void *arg)
{
	struct idle_arg *a = arg;
	struct shmfd_chan *chan = th_chan(a->named ? NAME : NULL, RING, 0, 0);
	uint64_t n = 0;

	if (!a->named) {
		int fd = expect_ok(shmfd_chan_share_fd(chan));

		th_send_fd(sock, fd);
		close(fd);
	}
	th_put(sock, 1);
	if (a->blocked) {
		/* A first reader (the test's) holds the ring. */
		th_get(sock);
		expect_eq(shmfd_chan_readers(chan), 1);
		n = fill_ring(chan, 1);
		th_put(sock, (int64_t)n);
		/* Blocked here until the first reader releases. */
		send_seq(chan, n + 1, KiB, -1);
		th_put(sock, 2);
	}
	/* Idle: not in the library at all until told. */
	th_get(sock);
	th_put(sock, shmfd_chan_readers(chan));
	th_get(sock);
	/* One more message, sent after the late reader joined. */
	send_seq(chan, a->blocked ? n + 2 : 1, KiB, -1);
	shmfd_chan_close(chan);
	return 0;
}

struct joiner_arg {
	int fd;			/* share fd, or -1: by name */
};

/* Join, say so, receive until -EPIPE: report the first and last seq. */
static int joiner(int sock, void *arg)
{
	struct joiner_arg *a = arg;
	struct shmfd_reader *r = NULL;
	struct shmfd_msg m;
	uint64_t first = 0, last = 0;
	int ret;

	if (a->fd >= 0)
		ret = shmfd_reader_open_fd(&r, a->fd, 0);
	else
		ret = shmfd_reader_open(&r, NAME, 0);
	th_put(sock, ret);
	if (ret < 0)
		return 0;
	th_get(sock);
	while ((ret = shmfd_recv(r, &m, 0, -1)) == 0) {
		expect(!last || m.seq == last + 1, "seq %llu after %llu",
		       (unsigned long long)m.seq, (unsigned long long)last);
		expect_eq(m.lost, 0);
		expect(th_check(m.data, m.len, m.seq) < 0, "message %llu "
		       "corrupt", (unsigned long long)m.seq);
		if (!first)
			first = m.seq;
		last = m.seq;
		expect_eq(shmfd_msg_release(r, &m), 0);
	}
	expect_err(ret, EPIPE);
	th_put(sock, (int64_t)first);
	th_put(sock, (int64_t)last);
	shmfd_reader_close(r);
	return 0;
}

/* _i: bit 0 named, bit 1 producer blocked in a send. */
START_TEST(test_join_idle_producer)
{
	struct idle_arg ia = { .named = _i & 1, .blocked = _i & 2 };
	struct joiner_arg first = { .fd = -1 }, late = { .fd = -1 };
	struct th_child p, r1 = { .pid = -1, .sock = -1 }, r2;
	int64_t ret;
	uint64_t n = 0, last;

	p = th_spawn(idle_producer, &ia, 0);
	if (!ia.named)
		first.fd = late.fd = th_recv_fd(p.sock);
	th_get(p.sock);
	if (ia.blocked) {
		r1 = th_spawn(joiner, &first, 0);
		expect_eq(th_get(r1.sock), 0);
		th_put(p.sock, 0);
		n = (uint64_t)th_get(p.sock);
		expect_sleeping(p.pid);		/* in send(-1) */
	} else {
		expect_sleeping(p.pid);		/* in our handshake */
	}

	r2 = th_spawn(joiner, &late, 0);
	ret = th_get(r2.sock);
	ck_assert_msg(ret == 0, "joining a producer %s: %lld (%s)",
		      ia.blocked ? "blocked in send" : "that is idle",
		      (long long)ret, th_strerr(ret));
	th_put(r2.sock, 0);
	if (ia.blocked) {
		th_put(r1.sock, 0);		/* release: the send ends */
		expect_eq(th_get(p.sock), 2);
	}
	th_put(p.sock, 0);
	expect_eq(th_get(p.sock), ia.blocked ? 2 : 1);
	th_put(p.sock, 0);			/* one more message, close */
	expect_exit(p.pid, 0);
	last = ia.blocked ? n + 2 : 1;

	/* The late reader got the message sent after it joined, and no
	 * message from before it joined. */
	ret = th_get(r2.sock);
	expect(ret > (int64_t)n, "late reader's first message: %lld",
	       (long long)ret);
	expect_eq(th_get(r2.sock), last);
	expect_exit(r2.pid, 0);
	if (ia.blocked) {
		expect_eq(th_get(r1.sock), 1);
		expect_eq(th_get(r1.sock), last);
		expect_exit(r1.pid, 0);
		close(r1.sock);
	}
	if (first.fd >= 0)
		close(first.fd);
	close(r2.sock);
	close(p.sock);
}
END_TEST

static Suite *liveness_suite(void)
{
	Suite *s = suite_create("liveness");
	TCase *tc;

	tc = th_tcase("producer-gone");
	tcase_add_loop_test(tc, test_producer_gone, 0,
			    (int)(sizeof(gone) / sizeof(gone[0])));
	tcase_add_test(tc, test_join_dead_producer);
	suite_add_tcase(s, tc);

	tc = th_tcase("reader-gone");
	tcase_add_loop_test(tc, test_reader_killed, 0, 2);
	tcase_add_test(tc, test_sleeping_reader_killed);
	tcase_add_loop_test(tc, test_reader_gone_child_holds_fds, 0, 2);
	suite_add_tcase(s, tc);

	tc = th_tcase("join");
	tcase_add_loop_test(tc, test_join_idle_producer, 0, 4);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return th_run(liveness_suite());
}
