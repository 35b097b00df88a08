/* SPDX-License-Identifier: MIT */
/*
 * shmfd_reader_pollfd: readable whenever shmfd_recv(..., 0) would not say
 * -EAGAIN -- a message, the producer's close, death or our eviction -- and
 * quiet otherwise, however polls and receives are mixed.  Run as itself
 * (io_uring's futex wait behind the fd, where the kernel has it) and as
 * test-poll.nouring (an epoll fd over the producer's wake socket).
 *
 * "Quiet" is checked by polling for QUIET_MS: a fd that stays readable
 * while recv says -EAGAIN (busy readiness) fails at once.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <shmfd.h>

#include "helpers.h"

#define KiB		1024u
#define RING		(64 * KiB)
#define NAME		"poll"
#define QUIET_MS	50

static void send_seq(struct shmfd_chan *chan, uint64_t seq, size_t len)
{
	static char buf[RING];

	th_fill(buf, len, seq);
	expect_ok(shmfd_send(chan, buf, len, 0));
}

static void recv_seq(struct shmfd_reader *r, uint64_t seq)
{
	struct shmfd_msg m;

	expect_ok(shmfd_recv(r, &m, 0, 0));
	expect_next(r, &m, seq);
}

#define expect_quiet(fd)						\
	expect(!th_readable((fd), QUIET_MS),				\
	       "poll fd readable with nothing to receive")
#define expect_ready(fd)						\
	expect(th_readable((fd), DEADLINE_MS),				\
	       "poll fd not readable within %d ms", DEADLINE_MS)

static uint32_t mode_flags(int i)
{
	return i ? SHMFD_LOSSY : 0;
}

/* A channel and a reader of it in this process, and the reader's fd. */
struct pair {
	struct shmfd_chan *chan;
	int share;
	struct shmfd_reader *r;
	int fd;
};

static struct pair pair_open(uint32_t flags)
{
	struct pair p;

	p.chan = th_chan(NULL, RING, 0, flags);
	p.share = expect_ok(shmfd_chan_share_fd(p.chan));
	p.r = th_join(p.share, 0);
	p.fd = expect_ok(shmfd_reader_pollfd(p.r));
	return p;
}

static void pair_close(struct pair *p)
{
	shmfd_reader_close(p->r);
	close(p->share);
	shmfd_chan_close(p->chan);
}

/* Nothing more to receive: recv says so, and the fd goes quiet. */
static void expect_drained(struct shmfd_reader *r, int fd)
{
	struct shmfd_msg m;

	expect_err(shmfd_recv(r, &m, 0, 0), EAGAIN);
	expect_quiet(fd);
}

/* Quiet until a message, quiet again once recv said -EAGAIN; the same fd
 * every time; and usable from the application's own epoll set. */
START_TEST(test_quiet_until_message)
{
	struct pair p = pair_open(mode_flags(_i));
	struct epoll_event ev = { .events = EPOLLIN };
	int ep;

	expect_eq(shmfd_reader_pollfd(p.r), p.fd);
	expect_quiet(p.fd);
	expect_drained(p.r, p.fd);

	for (uint64_t seq = 1; seq <= 20; seq++) {
		send_seq(p.chan, seq, th_msg_len(seq, 1000));
		expect_ready(p.fd);
		recv_seq(p.r, seq);
		expect_drained(p.r, p.fd);
	}

	ep = expect_sys(epoll_create1(EPOLL_CLOEXEC));
	expect_sys(epoll_ctl(ep, EPOLL_CTL_ADD, p.fd, &ev));
	expect_eq(epoll_wait(ep, &ev, 1, QUIET_MS), 0);
	send_seq(p.chan, 21, 100);
	expect_eq(epoll_wait(ep, &ev, 1, DEADLINE_MS), 1);
	recv_seq(p.r, 21);
	expect_drained(p.r, p.fd);
	expect_eq(epoll_wait(ep, &ev, 1, QUIET_MS), 0);
	close(ep);
	pair_close(&p);
}
END_TEST

/* Several messages between polls: readable until the last is taken. */
START_TEST(test_level_several)
{
	struct pair p = pair_open(mode_flags(_i));

	/* Before the first poll, and again after a round. */
	for (int round = 0; round < 2; round++) {
		uint64_t base = (uint64_t)round * 5;

		for (uint64_t seq = base + 1; seq <= base + 5; seq++)
			send_seq(p.chan, seq, 64);
		for (uint64_t seq = base + 1; seq <= base + 5; seq++) {
			expect_ready(p.fd);
			recv_seq(p.r, seq);
		}
		expect_drained(p.r, p.fd);
	}
	pair_close(&p);
}
END_TEST

/* The application receives without polling, then polls again. */
START_TEST(test_recv_without_polling)
{
	struct pair p = pair_open(mode_flags(_i));
	struct shmfd_msg m;

	for (uint64_t seq = 1; seq <= 3; seq++)
		send_seq(p.chan, seq, 64);
	for (uint64_t seq = 1; seq <= 3; seq++)
		recv_seq(p.r, seq);
	expect_drained(p.r, p.fd);
	send_seq(p.chan, 4, 64);
	expect_ready(p.fd);
	recv_seq(p.r, 4);

	/* A recv that times out must leave the fd armed all the same. */
	expect_err(shmfd_recv(p.r, &m, 0, 20), ETIMEDOUT);
	expect_quiet(p.fd);
	send_seq(p.chan, 5, 64);
	expect_ready(p.fd);
	recv_seq(p.r, 5);
	expect_drained(p.r, p.fd);
	pair_close(&p);
}
END_TEST

/* A lossy reader overtaken by the producer: readable, the gap counted,
 * quiet once it caught up.  A blob wakes the fd as a message does. */
START_TEST(test_lossy_overrun_and_blob)
{
	struct pair p = pair_open(SHMFD_LOSSY);
	static char big[3 * RING];
	struct shmfd_msg m;
	uint64_t seq, got = 0, lost = 0;

	for (seq = 1; seq <= 400; seq++)
		send_seq(p.chan, seq, 1000);
	expect_ready(p.fd);
	while (shmfd_recv(p.r, &m, 0, 0) == 0) {
		got++;
		lost += m.lost;
		expect(th_check(m.data, m.len, m.seq) < 0, "torn message");
		expect_eq(shmfd_msg_release(p.r, &m), 0);
	}
	expect(lost > 0, "the ring should have been overrun");
	expect_eq(got + lost, 400);
	expect_quiet(p.fd);

	th_fill(big, sizeof(big), 401);
	expect_ok(shmfd_send(p.chan, big, sizeof(big), 0));
	expect_ready(p.fd);
	expect_ok(shmfd_recv(p.r, &m, 0, 0));
	expect(m.flags & SHMFD_MSG_BLOB, "a blob expected");
	expect_eq(m.len, sizeof(big));
	expect(th_check(m.data, m.len, 401) < 0, "blob corrupt");
	expect_eq(shmfd_msg_release(p.r, &m), 0);
	expect_drained(p.r, p.fd);
	pair_close(&p);
}
END_TEST

/* ---- a producer in another process ---- */

enum { CMD_SEND1, CMD_SEND2, CMD_CLOSE, CMD_WAIT_GONE, CMD_WRAP, CMD_EXIT };

/* Makes a channel (named when arg says so), hands its share fd over,
 * then obeys commands; answers each with 0 once done. */
static int producer(int sock, void *arg)
{
	bool named = arg != NULL;
	struct shmfd_chan *chan = th_chan(named ? NAME : NULL, RING, 0, 0);
	int share = expect_ok(shmfd_chan_share_fd(chan));
	uint64_t seq = 0;

	th_send_fd(sock, share);
	close(share);
	for (;;) {
		switch (th_get(sock)) {
		case CMD_SEND1:
			send_seq(chan, ++seq, 64);
			break;
		case CMD_SEND2:
			th_msleep(QUIET_MS);	/* the reader is asleep */
			send_seq(chan, ++seq, 64);
			send_seq(chan, ++seq, 64);
			break;
		case CMD_CLOSE:
			shmfd_chan_close(chan);
			chan = NULL;
			break;
		case CMD_WAIT_GONE:
			expect_eventually(shmfd_chan_readers(chan) == 0);
			break;
		case CMD_WRAP:
			/* Four rings' worth: whatever a dropped reader
			 * held is overwritten. */
			for (int i = 0; i < 4 * (int)(RING / 1024); i++)
				send_seq(chan, ++seq, 1000);
			break;
		default:
			if (chan)
				shmfd_chan_close(chan);
			return 0;
		}
		th_put(sock, 0);
	}
}

static void command(struct th_child *p, int cmd)
{
	th_put(p->sock, cmd);
	expect_eq(th_get(p->sock), 0);
}

/* A blocking recv takes the wake-up the poll fd rested on: the fd must be
 * armed again afterwards, or a message left behind would go unnoticed. */
START_TEST(test_blocking_recv_mixed)
{
	struct th_child p = th_spawn(producer, NULL, 0);
	int share = th_recv_fd(p.sock);
	struct shmfd_reader *r = th_join(share, 0);
	struct shmfd_msg m;
	int fd = expect_ok(shmfd_reader_pollfd(r));

	th_put(p.sock, CMD_SEND2);		/* after we block */
	expect_ok(shmfd_recv(r, &m, 0, -1));
	expect_next(r, &m, 1);
	expect_eq(th_get(p.sock), 0);
	expect_ready(fd);			/* seq 2 waits */
	recv_seq(r, 2);
	expect_drained(r, fd);

	th_put(p.sock, CMD_SEND2);
	expect_ok(shmfd_recv(r, &m, 0, DEADLINE_MS));
	expect_next(r, &m, 3);
	expect_eq(th_get(p.sock), 0);
	expect_ready(fd);
	recv_seq(r, 4);
	expect_drained(r, fd);

	shmfd_reader_close(r);
	close(share);
	th_put(p.sock, CMD_EXIT);
	expect_exit(p.pid, 0);
	close(p.sock);
}
END_TEST

/* The producer closes, or is killed: readable at once and for good, recv
 * says -EPIPE once what was published is read. */
START_TEST(test_producer_gone)
{
	bool kill_it = _i;
	struct th_child p = th_spawn(producer, NULL, 0);
	int share = th_recv_fd(p.sock);
	struct shmfd_reader *r = th_join(share, 0);
	struct shmfd_msg m;
	int fd = expect_ok(shmfd_reader_pollfd(r));

	command(&p, CMD_SEND1);
	expect_ready(fd);
	recv_seq(r, 1);
	expect_drained(r, fd);

	if (kill_it) {
		kill(p.pid, SIGKILL);
		expect_signal(p.pid, SIGKILL);
	} else {
		command(&p, CMD_SEND1);
		command(&p, CMD_CLOSE);
	}
	expect_ready(fd);
	if (!kill_it)
		recv_seq(r, 2);
	expect_err(shmfd_recv(r, &m, 0, 0), EPIPE);
	expect(th_readable(fd, 0), "not readable any more after -EPIPE");
	expect_err(shmfd_recv(r, &m, 0, 0), EPIPE);
	expect(th_readable(fd, 0), "not readable any more after -EPIPE");

	shmfd_reader_close(r);
	close(share);
	if (!kill_it) {
		th_put(p.sock, CMD_EXIT);
		expect_exit(p.pid, 0);
	}
	close(p.sock);
}
END_TEST

/* A reader forked from the producer holds copies of the producer's
 * sockets, so no hang-up comes when it dies: the pidfd must do. */
static int forked_poller(int sock, void *arg)
{
	int share = *(int *)arg;
	struct shmfd_reader *r = th_join(share, 0);
	struct shmfd_msg m;
	int fd = expect_ok(shmfd_reader_pollfd(r));

	expect_quiet(fd);
	th_put(sock, 1);
	expect_ready(fd);
	expect_err(shmfd_recv(r, &m, 0, 0), EPIPE);
	shmfd_reader_close(r);
	return 0;
}

static int producer_with_child(int sock, void *arg)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, 0);
	int share = expect_ok(shmfd_chan_share_fd(chan));
	struct th_child c = th_spawn(forked_poller, &share, TH_ORPHAN);

	th_put(sock, c.pid);
	th_put(sock, th_get(c.sock));		/* it polls */
	th_get(sock);				/* killed here */
	return 0;
}

START_TEST(test_producer_killed_forked_reader)
{
	struct th_child p = th_spawn(producer_with_child, NULL, 0);
	pid_t child = (pid_t)th_get(p.sock);

	th_track(child);
	expect_eq(th_get(p.sock), 1);
	kill(p.pid, SIGKILL);
	expect_signal(p.pid, SIGKILL);
	expect_exit(child, 0);			/* adopted by us */
	th_untrack(child);
	close(p.sock);
}
END_TEST

/* The one Unix socket of ours that is connected to pid. */
static int socket_to(pid_t pid)
{
	for (int fd = 3; fd < TH_MAX_FDS; fd++) {
		struct ucred cred;
		socklen_t len = sizeof(cred);

		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
		    cred.pid == pid)
			return fd;
	}
	return -1;
}

/*
 * A reader the producer drops (here for a datagram the protocol does not
 * have): its poll fd turns readable, recv says -ECONNRESET at once rather
 * than wait to see whether the producer dies, and a message it held while
 * the producer wrote over it is reported stale, not handed out as good.
 */
START_TEST(test_evicted)
{
	struct th_child p = th_spawn(producer, (void *)1, 0);
	int share = th_recv_fd(p.sock);
	struct shmfd_reader *r = NULL;
	struct shmfd_msg held, m;
	uint64_t t0;
	int fd, sock;

	close(share);
	expect_ok(shmfd_reader_open(&r, NAME, 0));
	fd = expect_ok(shmfd_reader_pollfd(r));
	command(&p, CMD_SEND1);
	expect_ready(fd);
	expect_ok(shmfd_recv(r, &held, 0, 0));
	expect_eq(held.seq, 1);

	sock = socket_to(p.pid);
	expect(sock >= 0, "no socket to the producer");
	expect_sys(send(sock, "bad", 3, MSG_NOSIGNAL));
	command(&p, CMD_WAIT_GONE);
	command(&p, CMD_WRAP);			/* nothing holds it back now */
	expect_ready(fd);

	expect_err(shmfd_msg_release(r, &held), ESTALE);
	t0 = th_now_ms();
	expect_err(shmfd_recv(r, &m, 0, 0), ECONNRESET);
	expect(th_now_ms() - t0 < 500, "recv(0) took %llu ms",
	       (unsigned long long)(th_now_ms() - t0));
	expect(th_readable(fd, 0), "not readable after -ECONNRESET");
	expect_err(shmfd_recv(r, &m, 0, 0), ECONNRESET);

	shmfd_reader_close(r);
	th_put(p.sock, CMD_EXIT);
	expect_exit(p.pid, 0);
	close(p.sock);
}
END_TEST

/* Dropped and told by the hang-up alone (nothing was overwritten): still
 * -ECONNRESET, and at once, with or without a poll fd. */
START_TEST(test_dropped_hangup)
{
	struct th_child p = th_spawn(producer, (void *)1, 0);
	int share = th_recv_fd(p.sock);
	struct shmfd_reader *r = NULL;
	struct shmfd_msg m;
	uint64_t t0;
	int sock;

	close(share);
	expect_ok(shmfd_reader_open(&r, NAME, 0));
	if (_i)
		expect_ok(shmfd_reader_pollfd(r));
	sock = socket_to(p.pid);
	expect(sock >= 0, "no socket to the producer");
	expect_sys(send(sock, "bad", 3, MSG_NOSIGNAL));
	command(&p, CMD_WAIT_GONE);
	t0 = th_now_ms();
	expect_err(shmfd_recv(r, &m, 0, DEADLINE_MS), ECONNRESET);
	expect_err(shmfd_recv(r, &m, 0, 0), ECONNRESET);
	expect(th_now_ms() - t0 < 500, "recv took %llu ms",
	       (unsigned long long)(th_now_ms() - t0));

	shmfd_reader_close(r);
	th_put(p.sock, CMD_EXIT);
	expect_exit(p.pid, 0);
	close(p.sock);
}
END_TEST

START_TEST(test_args)
{
	expect_err(shmfd_reader_pollfd(NULL), EINVAL);
}
END_TEST

static Suite *poll_suite(void)
{
	Suite *s = suite_create("poll");
	TCase *tc;

	tc = th_tcase("readiness");
	tcase_add_test(tc, test_args);
	tcase_add_loop_test(tc, test_quiet_until_message, 0, 2);
	tcase_add_loop_test(tc, test_level_several, 0, 2);
	tcase_add_loop_test(tc, test_recv_without_polling, 0, 2);
	tcase_add_test(tc, test_lossy_overrun_and_blob);
	tcase_add_test(tc, test_blocking_recv_mixed);
	suite_add_tcase(s, tc);

	tc = th_tcase("gone");
	tcase_add_loop_test(tc, test_producer_gone, 0, 2);
	tcase_add_test(tc, test_producer_killed_forked_reader);
	tcase_add_test(tc, test_evicted);
	tcase_add_loop_test(tc, test_dropped_hangup, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return th_run(poll_suite());
}
