/* SPDX-License-Identifier: MIT */
/*
 * A reader's pollable fd, for event loops (ring.c (8) has the protocol).
 *
 * The fd is readable whenever shmfd_recv(..., 0) would not return -EAGAIN,
 * and quiet otherwise, however the application mixes polls and receives.
 * Two ways to get there:
 *
 *   io_uring with IORING_OP_FUTEX_WAIT (6.7) and a pidfd: the reader's own
 *   ring fd.  It is readable while completions wait in it: the futex wait
 *   on hdr.futex, the poll on the producer's pidfd, the hang-up poll on
 *   our socket, or a NOP we post to say "look".
 *
 *   otherwise: an epoll fd over a socket the producer sends a byte on when
 *   it wakes us, the producer's pidfd, and our socket's hang-up.
 *
 * In both, "armed" means: a sleep is announced at some position p
 * (page.sleep_pos = p + 1, after the fence of ring.c (3) head was still
 * p) and, with io_uring, the futex wait is in flight.  Then the producer
 * wakes us once head passes p, which turns the fd readable.  The rules:
 *
 *   - recv about to say -EAGAIN or -ETIMEDOUT drops what readiness there
 *     is (reaps the completions, reads the wake socket dry), then arms at
 *     its position: nothing is ready, and the next message is signalled.
 *   - recv returning a message or a final error leaves the fd as it is if
 *     it is readable or armed; if neither (a blocking recv took the
 *     completion and cleared sleep_pos), it arms, or, when a message or a
 *     final state is there already, makes the fd readable.
 *
 * Readiness is cleared only by a recv that found nothing, so a readable fd
 * whose recv says -EAGAIN is quiet right after: spurious readiness at
 * most once per wake, never busy.
 */
#include "internal.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>

static bool final_state(const struct shmfd_reader *r)
{
	return r->peer_dead || r->hangup || LOAD_ACQUIRE(&r->hdr->closed);
}

/* Make the fd readable now. */
static void make_ready(struct shmfd_reader *r)
{
	static const char one = 1;

	if (r->poll_mode == SHMFD_POLL_URING)
		shmfd__uring_nop(&r->uring);
	else
		send(r->wake_tx, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
}

static bool armed(struct shmfd_reader *r)
{
	if (!LOAD_RELAXED(&r->page->sleep_pos))
		return false;
	return r->poll_mode == SHMFD_POLL_SOCK || r->uring.futex_armed;
}

/* Announce a sleep at r->pos as ring.c (3) and (7) do, then leave the
 * wake in flight.  1 if something is ready already, 0 if armed. */
static int arm(struct shmfd_reader *r)
{
	uint32_t v;
	int ret;

	if (final_state(r))
		return 1;
	v = LOAD_ACQUIRE(&r->hdr->futex);
	STORE_RELEASE(&r->page->sleep_pos, r->pos + 1);	/* (8) */
	if (r->asym) {
		/* Without the barrier a publish could slip past us
		 * unseen: stay readable rather than risk that. */
		if (shmfd__membarrier() < 0)
			return 1;
	} else {
		FENCE_FULL();
	}
	if (LOAD_ACQUIRE(&r->hdr->head) != r->pos ||
	    LOAD_ACQUIRE(&r->hdr->closed))
		return 1;
	shmfd__ring_wake_needy(r);		/* ring.c (4) */
	if (r->poll_mode != SHMFD_POLL_URING)
		return 0;
	ret = shmfd__uring_arm(&r->uring, &r->hdr->futex, v, SHMFD_FUTEX_POLL,
			       r->peer_dead ? -1 : r->pidfd,
			       r->hangup ? -1 : r->sock);
	if (ret == 0) {
		do {
			ret = io_uring_submit(&r->uring.ring);
		} while (ret == -EINTR);
	}
	return ret < 0 ? ret : 0;
}

int shmfd__poll_rearm(struct shmfd_reader *r)
{
	int ret;

	if (r->poll_mode == SHMFD_POLL_URING) {
		unsigned int mask = shmfd__uring_reap(&r->uring);

		if (mask & SHMFD_WAKE_PEER_DEAD)
			r->peer_dead = true;
		if (mask & SHMFD_WAKE_HANGUP)
			r->hangup = true;
	} else {
		char buf[64];

		while (recv(r->wake_rx, buf, sizeof(buf), MSG_DONTWAIT) > 0)
			;
	}
	ret = arm(r);
	if (ret < 0)
		make_ready(r);	/* not armed: readable, never deaf */
	return ret;
}

void shmfd__poll_settle(struct shmfd_reader *r, bool final)
{
	if (!final) {
		if (r->poll_mode == SHMFD_POLL_URING &&
		    shmfd__uring_ready(&r->uring))
			return;
		if (armed(r))
			return;
	}
	if (final || arm(r) != 0)
		make_ready(r);
}

/* The producer's thread answers our socket with one byte once the sender
 * can see it (ring.c (8)).  Wait for it and read it, so the fd we return
 * is quiet; a producer that is gone ends the wait too. */
static int await_ack(struct shmfd_reader *r)
{
	uint64_t deadline = shmfd__deadline(SHMFD_JOIN_TIMEOUT_MS);
	char b;

	for (;;) {
		struct pollfd p[3] = {
			{ .fd = r->wake_rx, .events = POLLIN },
			{ .fd = r->pidfd, .events = POLLIN },
			{ .fd = r->sock, .events = POLLRDHUP },
		};
		uint64_t now = shmfd__now_ns();
		int n;

		if (now >= deadline)
			return -ETIMEDOUT;
		n = poll(p, 3, (int)((deadline - now) / 1000000 + 1));
		if (n < 0 && errno != EINTR)
			return shmfd__neg_errno();
		if (n <= 0)
			continue;
		if (p[0].revents) {
			while (recv(r->wake_rx, &b, 1, MSG_DONTWAIT) > 0)
				;
			return 0;
		}
		return 0;	/* gone: recv will say how */
	}
}

static int sock_setup(struct shmfd_reader *r)
{
	struct shmfd__poll_fd m = { .type = SHMFD_MSG_POLL_FD };
	struct epoll_event ev;
	int sv[2], ret;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK,
		       0, sv) < 0)
		return shmfd__neg_errno();
	r->wake_rx = sv[0];
	r->wake_tx = sv[1];
	r->poll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (r->poll_fd < 0)
		return shmfd__neg_errno();
	ev.events = EPOLLIN;
	ev.data.u64 = 0;
	if (epoll_ctl(r->poll_fd, EPOLL_CTL_ADD, r->wake_rx, &ev) < 0)
		return shmfd__neg_errno();
	if (r->pidfd >= 0 &&
	    epoll_ctl(r->poll_fd, EPOLL_CTL_ADD, r->pidfd, &ev) < 0)
		return shmfd__neg_errno();
	ev.events = EPOLLRDHUP;
	if (epoll_ctl(r->poll_fd, EPOLL_CTL_ADD, r->sock, &ev) < 0)
		return shmfd__neg_errno();
	/* A producer that is gone cannot take it: the hang-up or the pidfd
	 * already makes the fd readable, and recv says why. */
	ret = shmfd__sendmsg(&r->uring, r->sock, &m, sizeof(m), &r->wake_tx, 1);
	if (ret == -EPIPE || ret == -ECONNRESET || ret == -ENOTCONN)
		return 0;
	if (ret < 0)
		return ret;
	return await_ack(r);
}

void shmfd__poll_free(struct shmfd_reader *r)
{
	/* The io_uring fd is the reader's, closed with its ring. */
	if (r->poll_mode != SHMFD_POLL_URING && r->poll_fd >= 0)
		close(r->poll_fd);
	if (r->wake_rx >= 0)
		close(r->wake_rx);
	if (r->wake_tx >= 0)
		close(r->wake_tx);
	r->poll_fd = r->wake_rx = r->wake_tx = -1;
	r->poll_mode = SHMFD_POLL_NONE;
}

SHMFD_API int shmfd_reader_pollfd(struct shmfd_reader *r)
{
	int ret;

	if (!r)
		return -EINVAL;
	if (r->poll_mode != SHMFD_POLL_NONE)
		return r->poll_fd;
	/* The io_uring way needs the futex wait and a pidfd to poll (a
	 * reader forked from the producer never sees it hang up). */
	if (r->uring.ok && r->uring.futex_ok && r->pidfd >= 0) {
		r->poll_mode = SHMFD_POLL_URING;
		r->poll_fd = r->uring.ring.ring_fd;
	} else {
		ret = sock_setup(r);
		if (ret < 0) {
			shmfd__poll_free(r);
			return ret;
		}
		r->poll_mode = SHMFD_POLL_SOCK;
	}
	/* ring.c (9): early wakes are for readers blocked in recv. */
	STORE_RELAXED(&r->page->polls, 1);
	shmfd__poll_settle(r, false);
	return r->poll_fd;
}
