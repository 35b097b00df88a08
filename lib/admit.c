/* SPDX-License-Identifier: MIT */
/*
 * The producer's admission thread.  It answers joining readers while the
 * producer is idle or blocked in a send, and drops a reader the moment it
 * leaves or dies, so the sender never waits on it.  It shares with the
 * sender only the slot table, by the protocol of ring.c (5), and never
 * touches the sender's private state.
 *
 * Events come from one epoll set; each entry's data names its kind in the
 * top byte, a slot generation in the next 24 bits (so a stale event of a
 * dropped reader cannot hit the reader that took its slot since, in the
 * same batch) and an fd or slot index in the lower 32 bits.
 */
#include "internal.h"

#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

enum {
	EV_STOP = 1,
	EV_LISTEN,
	EV_PENDING,		/* named connection, hello not read yet */
	EV_SHARE,		/* our end of a share fd */
	EV_SOCK,		/* a joined reader's socket */
	EV_PIDFD,		/* a joined reader's pidfd */
};

/* How often a thread that ran out of fds tries to accept again, and
 * how often it retries unmapping dropped readers' pages. */
#define LISTEN_RETRY_MS	50

#define EV_DATA(kind, gen, v) \
	(((uint64_t)(kind) << 56) | ((uint64_t)((gen) & 0xffffff) << 32) | (v))

static int ep_add(struct shmfd_chan *c, int fd, uint64_t data,
		  uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.u64 = data };


	if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return shmfd__neg_errno();
	return 0;
}

static void ep_del(struct shmfd_chan *c, int fd)
{
	epoll_ctl(c->epfd, EPOLL_CTL_DEL, fd, NULL);
}

static void reply_error(struct shmfd_chan *c, int sock, int status)
{
	struct shmfd__welcome w = {
		.type = SHMFD_MSG_WELCOME,
		.version = SHMFD_PROTO_VERSION,
		.status = status,
	};

	shmfd__sendmsg(&c->uring, sock, &w, sizeof(w), NULL, 0);
}

/* Unmap a dropped reader's page once the sender cannot be using it. */
static bool try_reclaim(struct shmfd_chan *c, uint32_t i)
{
	struct shmfd__slot *s = &c->slots[i];

	if (LOAD_RELAXED(&s->state) != SLOT_DEAD)
		return false;
	/* ring.c (5), (7): the sender may read slots without a fence. */
	if (c->asym) {
		if (shmfd__membarrier() < 0)
			return false;	/* later, then */
	} else {
		FENCE_FULL();
	}
	if (LOAD_ACQUIRE(&c->epoch) & 1)
		return false;
	if (LOAD_ACQUIRE(&c->wait_slot) == i + 1)
		return false;
	munmap(s->page, SHMFD_RPAGE_SIZE);
	s->page = NULL;
	close(s->sock);
	s->sock = -1;
	if (s->wake_sock >= 0)
		close(s->wake_sock);
	s->wake_sock = -1;
	STORE_RELEASE(&s->state, SLOT_FREE);
	c->ndead--;
	return true;
}

static void reclaim_all(struct shmfd_chan *c)
{
	for (uint32_t i = 0; i < c->nslots && c->ndead; i++)
		try_reclaim(c, i);
}

/* A sender waiting for a reader's space sleeps on its page.wake: change
 * the word and wake it, so it looks at the readers again. */
static void poke_sender(struct shmfd__reader_page *page)
{
	__atomic_fetch_add(&page->wake, 1, __ATOMIC_RELEASE);
	shmfd__futex_wake(&page->wake, INT32_MAX);
}

static void drop(struct shmfd_chan *c, uint32_t i)
{
	struct shmfd__slot *s = &c->slots[i];

	if (i >= c->nslots || LOAD_RELAXED(&s->state) != SLOT_LIVE)
		return;
	/* Before its socket closes (try_reclaim): a reader that sees the
	 * hang-up then knows it was dropped, not that we died. */
	STORE_RELEASE(&s->page->dropped, 1);
	__atomic_store_n(&s->state, SLOT_DEAD, __ATOMIC_SEQ_CST);
	__atomic_fetch_sub(&c->nreaders, 1, __ATOMIC_RELAXED);
	if (s->fenced) {
		s->fenced = false;
		__atomic_fetch_sub(&c->nfenced, 1, __ATOMIC_RELAXED);
	}
	c->lost_gone += LOAD_RELAXED(&s->page->lost);
	c->ndead++;
	/* The socket stays open until the slot is reclaimed: a sender
	 * inside the slots bracket may be passing it a blob's fd. */
	ep_del(c, s->sock);
	if (s->pidfd >= 0) {
		ep_del(c, s->pidfd);
		close(s->pidfd);
	}
	s->pidfd = -1;
	poke_sender(s->page);
	try_reclaim(c, i);
}

static int find_free_slot(struct shmfd_chan *c, uint32_t *idx)
{
	for (int pass = 0; pass < 2; pass++) {
		for (uint32_t i = 0; i < c->nslots; i++) {
			if (LOAD_RELAXED(&c->slots[i].state) == SLOT_FREE) {
				*idx = i;
				return 0;
			}
		}
		reclaim_all(c);
	}
	return -EUSERS;
}

/*
 * Where a new reader starts: at head (every message sent from now on), or
 * at the oldest intact record; and the seq it will find there, so that its
 * first message's lost count is exact even if it falls a lap behind before
 * it reads anything.  head and seq change together under commit_gen.
 */
static void join_point(struct shmfd_chan *c, bool from_oldest,
		       uint64_t *startp, uint64_t *seqp, uint64_t *headp)
{
	const struct shmfd__ring_hdr *hdr = c->hdr;

	for (;;) {
		uint32_t g = LOAD_ACQUIRE(&hdr->commit_gen);
		uint64_t o, h, s, p;

		if (g & 1) {
			sched_yield();
			continue;
		}
		o = LOAD_ACQUIRE(&hdr->oldest);
		h = LOAD_ACQUIRE(&hdr->head);
		s = LOAD_ACQUIRE(&hdr->seq);
		FENCE_ACQUIRE();
		if (LOAD_RELAXED(&hdr->commit_gen) != g)
			continue;
		*headp = h;
		*startp = h;
		*seqp = s + 1;
		if (!from_oldest || o >= h)
			return;
		/* The record at oldest, past a PAD if it is one. */
		p = o;
		for (int i = 0; i < 2 && p < h; i++) {
			const struct shmfd__rec *r =
				(const void *)(c->data + (p & c->mask));

			if (LOAD_RELAXED(&r->type) != SHMFD_REC_PAD) {
				s = LOAD_RELAXED(&r->seq);
				FENCE_ACQUIRE();
				if (LOAD_RELAXED(&hdr->oldest) != o)
					break;	/* overwritten: again */
				*startp = o;
				*seqp = s;
				return;
			}
			p += sizeof(*r) + LOAD_RELAXED(&r->len);
		}
		if (p >= h && LOAD_RELAXED(&hdr->oldest) == o)
			return;		/* only a PAD: start at head */
	}
}

/*
 * Register a reader: check who it is and what it sent, give it a slot,
 * answer with the ring.  Consumes sock and page_fd whatever happens.
 */
static void join(struct shmfd_chan *c, int sock, int page_fd,
		 uint32_t flags, bool named)
{
	struct shmfd__welcome w = {
		.type = SHMFD_MSG_WELCOME,
		.version = SHMFD_PROTO_VERSION,
	};
	struct shmfd__reader_page *page = NULL;
	struct shmfd__slot *s;
	uint64_t start, start_seq, head, start2, seq2, head2;
	uid_t uid;
	gid_t gid;
	pid_t pid;
	uint32_t idx;
	int pidfd = -1, ret;

	ret = shmfd__peer_cred(sock, &pid, &uid, &gid);
	if (ret < 0)
		goto refuse;
	if (named) {
		ret = shmfd__peer_allowed(sock, c->mode, uid, gid);
		if (ret == 0)
			ret = -EACCES;
		if (ret < 0)
			goto refuse;
	}
	/* The page must stay 4096 bytes (no SIGBUS for us) and stay
	 * writable by the reader, who owns it. */
	ret = shmfd__memfd_verify(page_fd, SHMFD_RPAGE_SIZE,
				  F_SEAL_SHRINK | F_SEAL_GROW,
				  F_SEAL_WRITE | F_SEAL_FUTURE_WRITE);
	if (ret < 0)
		goto refuse;
	ret = shmfd__map(page_fd, SHMFD_RPAGE_SIZE, PROT_READ | PROT_WRITE,
			 (void **)&page);
	/* An fd opened read-only, or a write seal added since the check
	 * (the page need not carry F_SEAL_SEAL): the reader's doing, not a
	 * question of permissions, which -EACCES would suggest. */
	if (ret == -EACCES || ret == -EPERM)
		ret = -EPROTO;
	if (ret < 0)
		goto refuse;
	if (madvise(page, SHMFD_RPAGE_SIZE, MADV_DONTFORK) < 0 ||
	    LOAD_RELAXED(&page->magic) != SHMFD_RPAGE_MAGIC ||
	    LOAD_RELAXED(&page->version) != SHMFD_PROTO_VERSION) {
		ret = -EPROTO;
		goto refuse;
	}
	/* Without pidfds (before Linux 5.3, or under valgrind) the thread
	 * polls the reader's pid: check_pids(). */
	pidfd = shmfd__pidfd_open(pid);
	if (pidfd < 0 && errno != ENOSYS) {
		ret = shmfd__neg_errno();
		goto refuse;
	}
	if (pidfd < 0)
		c->watch_pids = true;
	ret = find_free_slot(c, &idx);
	if (ret < 0)
		goto refuse;

	/* A provisional join point: the sender may use the slot as soon as
	 * it is LIVE, and must then find a tail it can trust. */
	s = &c->slots[idx];
	join_point(c, flags & SHMFD_FROM_OLDEST, &start, &start_seq, &head);
	s->gen++;
	s->page = page;
	s->woken = 0;
	s->blob_sent = 0;
	s->sock = sock;
	s->pidfd = pidfd;
	STORE_RELAXED(&s->wake_sock, -1);
	s->pid = pid;
	STORE_RELAXED(&s->start, start);
	STORE_RELEASE(&page->tail, start);

	ret = ep_add(c, sock, EV_DATA(EV_SOCK, s->gen, idx),
		     EPOLLIN | EPOLLRDHUP);
	if (ret == 0 && pidfd >= 0) {
		ret = ep_add(c, pidfd, EV_DATA(EV_PIDFD, s->gen, idx),
			     EPOLLIN);
		if (ret < 0)
			ep_del(c, sock);
	}
	if (ret < 0) {
		s->page = NULL;
		goto refuse;
	}
	/* ring.c (6): LIVE, FULL FENCE, then the join point for real: a
	 * blob the sender did not see us for is published before it.  A
	 * reader starting at head receives every message whose send starts
	 * after this point.  Tails only grow: a later point replaces the
	 * provisional one, an earlier one (FROM_OLDEST past a PAD) does not. */
	if (idx >= LOAD_RELAXED(&c->slot_hi))
		STORE_RELEASE(&c->slot_hi, idx + 1);	/* ring.c (5) */
	/* ring.c (7): counted before the barrier below. */
	s->fenced = false;
	if (flags & SHMFD_HELLO_FENCED) {
		s->fenced = true;
		__atomic_fetch_add(&c->nfenced, 1, __ATOMIC_RELAXED);
	}
	__atomic_store_n(&s->state, SLOT_LIVE, __ATOMIC_SEQ_CST);
	FENCE_FULL();
	join_point(c, flags & SHMFD_FROM_OLDEST, &start2, &seq2, &head2);
	if (start2 > start) {
		start = start2;
		start_seq = seq2;
		STORE_RELAXED(&s->start, start);
		STORE_RELEASE(&page->tail, start);
		poke_sender(page);
	}
	if (head2 > head)
		head = head2;
	__atomic_fetch_add(&c->nreaders, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&c->joins, 1, __ATOMIC_RELEASE);
	close(page_fd);
	/* ring.c (7): every publish from here on fences for this reader,
	 * and it may sleep only once it has the welcome. */
	if (s->fenced && c->asym) {
		ret = shmfd__membarrier();
		if (ret < 0) {
			reply_error(c, sock, ret);
			drop(c, idx);
			return;
		}
	}

	w.flags = c->hdr->flags;	/* LOSSY, ASYM */
	w.ring_size = c->size;
	w.max_inline = c->max_inline;
	w.start_pos = start;
	w.start_seq = start_seq;
	w.join_head = head;
	w.slot = idx;
	w.producer_pid = (int32_t)c->pid;
	/* joins above tells the sender to look at the tails again, so it
	 * counts every registration; shmfd_chan_stat() counts only readers
	 * that were told they joined. */
	if (shmfd__sendmsg(&c->uring, sock, &w, sizeof(w), &c->ring_fd, 1) < 0)
		drop(c, idx);
	else
		c->welcomed++;
	return;

refuse:
	reply_error(c, sock, ret);
	if (pidfd >= 0)
		close(pidfd);
	if (page)
		munmap(page, SHMFD_RPAGE_SIZE);
	close(page_fd);
	close(sock);
}

static void close_fds(int *fds, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		close(fds[i]);
}

static bool is_seqpacket_unix(int fd)
{
	int v;
	socklen_t len = sizeof(v);

	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len) < 0 || v != AF_UNIX)
		return false;
	len = sizeof(v);
	return getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) == 0 &&
	       v == SOCK_SEQPACKET;
}

/*
 * A joined reader's socket is readable: a goodbye, a hang-up, or a
 * poll socket (ring.c (8)).  Anything else breaks the protocol and
 * drops the reader, as a hang-up does.
 */
static void on_reader_msg(struct shmfd_chan *c, uint32_t i)
{
	struct shmfd__slot *s = &c->slots[i];

	for (;;) {
		struct shmfd__poll_fd m;
		unsigned int nfds = 0;
		int fd = -1, n;

		if (LOAD_RELAXED(&s->state) != SLOT_LIVE)
			return;
		n = shmfd__recv_fds(s->sock, &m, sizeof(m), &fd, &nfds, 1);
		if (n == -EAGAIN)
			return;
		if (n == -EMFILE)
			continue;	/* our shortage: its pollfd times out */
		if (n == (int)sizeof(m) && m.type == SHMFD_MSG_POLL_FD &&
		    nfds == 1 && s->wake_sock < 0 && is_seqpacket_unix(fd)) {
			static const char one = 1;

			/* The sender loads it after a reader's sleep_pos
			 * (release-acquire, ring.c (8)); the datagram
			 * covers wakes it sent before it could see it. */
			STORE_RELEASE(&s->wake_sock, fd);
			send(fd, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
			continue;
		}
		if (nfds)
			close(fd);
		drop(c, i);
		return;
	}
}

static bool pending_has(const struct shmfd_chan *c, int fd)
{
	for (uint32_t i = 0; i < c->npending; i++)
		if (c->pending[i] == fd)
			return true;
	return false;
}

static void pending_remove(struct shmfd_chan *c, int fd)
{
	for (uint32_t i = 0; i < c->npending; i++) {
		if (c->pending[i] == fd) {
			c->pending[i] = c->pending[--c->npending];
			break;
		}
	}
	ep_del(c, fd);
}

/*
 * The figures shmfd_chan_stat() shows, from what this thread owns (the
 * slot table, the counters of joins and of dropped readers' losses) and
 * from the shared header; the sender is not asked.  Consumes sock.
 */
static void answer_stats(struct shmfd_chan *c, int sock, int status)
{
	struct shmfd__stats a = {
		.type = SHMFD_MSG_STATS,
		.version = SHMFD_PROTO_VERSION,
	};
	uid_t uid;
	gid_t gid;
	pid_t pid;
	int ret = status;

	if (ret == 0)
		ret = shmfd__peer_cred(sock, &pid, &uid, &gid);
	if (ret == 0) {
		ret = shmfd__peer_allowed(sock, c->mode, uid, gid);
		if (ret == 0)
			ret = -EACCES;
	}
	if (ret < 0) {
		a.status = ret;
		goto out;
	}
	a.flags = c->lossy ? SHMFD_RING_LOSSY : 0;
	a.ring_size = c->size;
	a.max_inline = c->max_inline;
	a.max_readers = c->nslots;
	a.producer_pid = (int32_t)c->pid;
	a.lost = c->lost_gone;
	for (uint32_t i = 0; i < c->nslots; i++) {
		struct shmfd__slot *s = &c->slots[i];

		if (LOAD_RELAXED(&s->state) != SLOT_LIVE)
			continue;
		a.readers++;
		a.lost += LOAD_RELAXED(&s->page->lost);
	}
	a.published = LOAD_ACQUIRE(&c->hdr->seq);
	a.joins = c->welcomed;
out:
	shmfd__sendmsg(&c->uring, sock, &a, sizeof(a), NULL, 0);
	close(sock);
}

/* A hello or stat request of another version may be longer than ours:
 * room for one that still gets its -EPROTONOSUPPORT answer. */
#define FIRST_MSG_MAX	256

/* A named connection spoke: its first message must be a hello, or a
 * request for the channel's figures. */
static void on_pending(struct shmfd_chan *c, int fd)
{
	union {
		struct shmfd__hello h;
		struct shmfd__stat_req q;
		char raw[FIRST_MSG_MAX];
	} u;
	struct shmfd__hello h;
	unsigned int nfds = 0;
	int fds[2];
	int n;

	/* An fd closed earlier in this batch may have been reused. */
	if (!pending_has(c, fd))
		return;
	n = shmfd__recv_fds(fd, &u, sizeof(u), fds, &nfds, 1);
	if (n == -EAGAIN)
		return;
	pending_remove(c, fd);
	if (n == -EMFILE) {
		reply_error(c, fd, n);	/* we are out of fds, not it */
		close(fd);
		return;
	}
	if (n == -EPROTO) {
		/* Too many fds, or a truncated message: refused, and told
		 * so, like any other malformed hello (recv_fds closed the
		 * fds). */
		reply_error(c, fd, -EPROTO);
		close(fd);
		return;
	}
	if (n <= 0) {
		/* A hang-up, or an empty datagram, which reads the same on
		 * SOCK_SEQPACKET: either way the end of it, and of any fd
		 * that came with it. */
		close_fds(fds, nfds);
		close(fd);
		return;
	}
	/* A stat request, even a malformed one, is answered in kind: an
	 * observer reads only a stats message. */
	if ((size_t)n >= sizeof(u.q) && u.q.type == SHMFD_MSG_STAT_REQ) {
		close_fds(fds, nfds);
		answer_stats(c, fd, u.q.version != SHMFD_PROTO_VERSION ?
				    -EPROTONOSUPPORT :
				    (size_t)n != sizeof(u.q) || nfds ? -EPROTO
								     : 0);
		return;
	}
	memcpy(&h, &u.h, sizeof(h));
	n = shmfd__check_hello(&h, (size_t)n, nfds);
	if (n == 0 && nfds != 1)
		n = -EPROTO;
	if (n < 0) {
		reply_error(c, fd, n);
		close_fds(fds, nfds);
		close(fd);
		return;
	}
	join(c, fd, fds[0], h.flags, true);
}

static void accept_all(struct shmfd_chan *c)
{
	for (;;) {
		int fd = accept4(c->listen_fd, NULL, NULL,
				 SOCK_CLOEXEC | SOCK_NONBLOCK);

		if (fd < 0 && errno == EINTR)
			continue;
		if (fd < 0 && errno != EAGAIN && errno != ECONNABORTED) {
			/* Out of fds or memory: the connection stays queued
			 * and the socket readable.  Stop watching it, or the
			 * level-triggered wait would spin; admit_main looks
			 * again every LISTEN_RETRY_MS. */
			struct epoll_event ev = { .events = 0 };

			ev.data.u64 = EV_DATA(EV_LISTEN, 0, 0);
			epoll_ctl(c->epfd, EPOLL_CTL_MOD, c->listen_fd, &ev);
			c->listen_paused = true;
			return;
		}
		if (fd < 0)
			return;		/* nothing more queued */
		/* A peer that connects and never speaks holds one of a
		 * bounded number of places; the oldest gives way. */
		if (c->npending == ARRAY_SIZE(c->pending)) {
			int old = c->pending[0];

			pending_remove(c, old);
			close(old);
		}
		if (ep_add(c, fd, EV_DATA(EV_PENDING, 0, (uint32_t)fd),
			   EPOLLIN | EPOLLRDHUP) < 0) {
			close(fd);
			continue;
		}
		c->pending[c->npending++] = fd;
	}
}

static void share_remove(struct shmfd_chan *c, int fd)
{
	pthread_mutex_lock(&c->lock);
	for (uint32_t i = 0; i < c->nshares; i++) {
		if (c->shares[i] == fd) {
			c->shares[i] = c->shares[--c->nshares];
			break;
		}
	}
	pthread_mutex_unlock(&c->lock);
	ep_del(c, fd);
	close(fd);
}

/* Through a share fd a reader sends its hello, its page and the socket
 * it wants the answer on. */
static void on_share(struct shmfd_chan *c, int fd, uint32_t events)
{
	union {
		struct shmfd__hello h;
		char raw[FIRST_MSG_MAX];
	} u;
	unsigned int nfds = 0;
	int fds[2];
	bool known = false;
	int n, ret;

	pthread_mutex_lock(&c->lock);
	for (uint32_t i = 0; i < c->nshares && !known; i++)
		known = c->shares[i] == fd;
	pthread_mutex_unlock(&c->lock);
	if (!known)
		return;		/* closed earlier in this batch */
	n = shmfd__recv_fds(fd, &u, sizeof(u), fds, &nfds, 2);
	if (n == -EAGAIN)
		return;
	if (n == 0) {
		/* A SOCK_SEQPACKET read of 0 is a hang-up, or an empty
		 * datagram that anyone holding the share fd can send: only
		 * the socket's state tells, and only a hang-up ends it. */
		close_fds(fds, nfds);
		if (shmfd__sock_hung_up(fd))
			share_remove(c, fd);
		return;
	}
	if (n < 0 && n != -EPROTO && n != -EMFILE) {
		share_remove(c, fd);	/* the socket itself failed */
		return;
	}
	if (n < 0)
		return;
	ret = shmfd__check_hello(&u.h, (size_t)n, nfds);
	if (ret < 0 || nfds != 2 || !is_seqpacket_unix(fds[1])) {
		if (nfds == 2 && is_seqpacket_unix(fds[1]))
			reply_error(c, fds[1], ret < 0 ? ret : -EPROTO);
		close_fds(fds, nfds);
		return;
	}
	if (fcntl(fds[1], F_SETFL, O_NONBLOCK) < 0) {
		close_fds(fds, nfds);
		return;
	}
	join(c, fds[1], fds[0], u.h.flags, false);
}

/*
 * A reader that dies while a process it forked holds copies of its
 * socket never hangs up: without a pidfd, only its pid tells.  Looked at
 * every SHMFD_FALLBACK_SLICE_MS, as a reader without pidfds looks at the
 * producer's (uring.c).  A zombie still counts as alive until reaped.
 */
static void check_pids(struct shmfd_chan *c)
{
	for (uint32_t i = 0; i < c->nslots; i++) {
		struct shmfd__slot *s = &c->slots[i];

		if (LOAD_RELAXED(&s->state) == SLOT_LIVE && s->pidfd < 0 &&
		    shmfd__peer_gone(-1, s->pid))
			drop(c, i);
	}
}

static int wait_ms(const struct shmfd_chan *c, uint64_t pids_due)
{
	int ms = c->ndead || c->listen_paused ? LISTEN_RETRY_MS : -1;

	if (c->watch_pids) {
		uint64_t now = shmfd__now_ns();
		int left = pids_due > now ?
			   (int)((pids_due - now + 999999) / 1000000) : 0;

		if (ms < 0 || left < ms)
			ms = left;
	}
	return ms;
}

static void *admit_main(void *arg)
{
	struct shmfd_chan *c = arg;
	struct epoll_event evs[16];
	uint64_t pids_due = 0;

	for (;;) {
		int n = epoll_wait(c->epfd, evs, ARRAY_SIZE(evs),
				   wait_ms(c, pids_due));

		if (n < 0 && errno != EINTR)
			return NULL;
		for (int i = 0; i < n; i++) {
			uint64_t d = evs[i].data.u64;
			uint32_t kind = (uint32_t)(d >> 56);
			uint32_t gen = (uint32_t)(d >> 32) & 0xffffff;
			uint32_t v = (uint32_t)d;

			if ((kind == EV_SOCK || kind == EV_PIDFD) &&
			    (v >= c->nslots ||
			     (c->slots[v].gen & 0xffffff) != gen))
				continue;

			switch (kind) {
			case EV_STOP:
				return NULL;
			case EV_LISTEN:
				accept_all(c);
				break;
			case EV_PENDING:
				on_pending(c, (int)v);
				break;
			case EV_SHARE:
				on_share(c, (int)v, evs[i].events);
				break;
			case EV_SOCK:
				on_reader_msg(c, v);
				break;
			case EV_PIDFD:
				drop(c, v);
				break;
			}
		}
		if (c->watch_pids && shmfd__now_ns() >= pids_due) {
			check_pids(c);
			pids_due = shmfd__now_ns() +
				   SHMFD_FALLBACK_SLICE_MS * 1000000ull;
		}
		if (c->ndead)
			reclaim_all(c);
		if (c->listen_paused) {
			struct epoll_event ev = { .events = EPOLLIN };

			ev.data.u64 = EV_DATA(EV_LISTEN, 0, 0);
			c->listen_paused = false;
			epoll_ctl(c->epfd, EPOLL_CTL_MOD, c->listen_fd, &ev);
			accept_all(c);
		}
	}
}

int shmfd__admit_start(struct shmfd_chan *c)
{
	sigset_t all, old;
	int ret;

	c->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (c->epfd < 0)
		return shmfd__neg_errno();
	c->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->stop_fd < 0)
		return shmfd__neg_errno();
	ret = ep_add(c, c->stop_fd, EV_DATA(EV_STOP, 0, 0), EPOLLIN);
	if (ret < 0)
		return ret;
	if (c->listen_fd >= 0) {
		ret = ep_add(c, c->listen_fd, EV_DATA(EV_LISTEN, 0, 0),
			     EPOLLIN);
		if (ret < 0)
			return ret;
	}
	/* The thread must never take the application's signals. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = -pthread_create(&c->thread, NULL, admit_main, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret < 0)
		return ret;
	c->thread_running = true;
	return 0;
}

void shmfd__admit_stop(struct shmfd_chan *c)
{
	uint64_t one = 1;

	if (c->thread_running) {
		if (write(c->stop_fd, &one, sizeof(one)) < 0) {
			/* An eventfd write fails only on overflow, which
			 * still leaves it readable: the thread stops. */
		}
		pthread_join(c->thread, NULL);
		c->thread_running = false;
	}
	for (uint32_t i = 0; i < c->npending; i++)
		close(c->pending[i]);
	c->npending = 0;
	for (uint32_t i = 0; i < c->nshares; i++)
		close(c->shares[i]);
	free(c->shares);
	c->shares = NULL;
	c->nshares = 0;
	if (c->stop_fd >= 0)
		close(c->stop_fd);
	if (c->epfd >= 0)
		close(c->epfd);
	c->stop_fd = c->epfd = -1;
}

int shmfd__admit_add_share(struct shmfd_chan *c, int fd)
{
	int ret = 0;

	pthread_mutex_lock(&c->lock);
	if (c->nshares == c->cap_shares) {
		uint32_t cap = c->cap_shares ? c->cap_shares * 2 : 8;
		int *n = realloc(c->shares, cap * sizeof(*n));

		if (!n) {
			ret = -ENOMEM;
			goto out;
		}
		c->shares = n;
		c->cap_shares = cap;
	}
	c->shares[c->nshares++] = fd;
	ret = ep_add(c, fd, EV_DATA(EV_SHARE, 0, (uint32_t)fd),
		     EPOLLIN | EPOLLRDHUP);
	if (ret < 0)
		c->nshares--;
out:
	pthread_mutex_unlock(&c->lock);
	return ret;
}
