/* SPDX-License-Identifier: MIT */
/* The reader API: joining, receiving, releasing, waiting. */
#include "internal.h"

#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/socket.h>

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax()	__builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax()	__asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax()	__asm__ __volatile__("" ::: "memory")
#endif

static void reader_free(struct shmfd_reader *r)
{
	for (uint32_t i = 0; i < SHMFD_HELD_MAX; i++) {
		struct shmfd__held *h = &r->held[i];

		if (h->gen && h->blob_map) {
			munmap(h->blob_map, h->blob_len);
			close(h->blob_fd);
		}
	}
	shmfd__fdq_clear(r);
	shmfd__poll_free(r);
	shmfd__uring_exit(&r->uring);
	if (r->hdr)
		munmap((void *)r->hdr, r->map_size);
	if (r->page)
		munmap(r->page, SHMFD_RPAGE_SIZE);
	if (r->sock >= 0)
		close(r->sock);
	if (r->pidfd >= 0)
		close(r->pidfd);
	free(r);
}

/* A reader with nothing open yet (also the fuzz harness's). */
struct shmfd_reader *shmfd__reader_alloc(void)
{
	struct shmfd_reader *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->sock = r->pidfd = r->share_fd = -1;
	r->poll_fd = r->wake_rx = r->wake_tx = -1;
	r->held_first = r->held_last = HELD_NONE;
	for (uint32_t i = 0; i < SHMFD_HELD_MAX; i++)
		r->held[i].next = (uint16_t)(i + 1 < SHMFD_HELD_MAX ? i + 1
								    : HELD_NONE);
	r->held_free = 0;
	return r;
}

/* Our page: the only shared memory we write.  Sealed so the producer can
 * map it without fear that we shrink it under it (SIGBUS). */
static int make_page(struct shmfd_reader *r, int *fdp)
{
	int fd, ret;

	ret = shmfd__memfd_create("shmfd-reader", SHMFD_RPAGE_SIZE, &fd);
	if (ret < 0)
		return ret;
	ret = shmfd__map(fd, SHMFD_RPAGE_SIZE, PROT_READ | PROT_WRITE,
			 (void **)&r->page);
	if (ret < 0)
		goto fail;
	if (madvise(r->page, SHMFD_RPAGE_SIZE, MADV_DONTFORK) < 0) {
		ret = shmfd__neg_errno();
		goto fail;
	}
	r->page->magic = SHMFD_RPAGE_MAGIC;
	r->page->version = SHMFD_PROTO_VERSION;
	ret = shmfd__memfd_seal(fd, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	if (ret < 0)
		goto fail;
	*fdp = fd;
	return 0;
fail:
	close(fd);
	return ret;
}

/*
 * Wait for the welcome; a dead producer (pidfd) ends the wait early.
 * Without pidfds (ENOSYS) its pid is looked at every
 * SHMFD_FALLBACK_SLICE_MS instead: a process it forked may hold the share
 * fd, so no hang-up would tell.
 */
static int await_welcome(struct shmfd_reader *r, int sock, int pidfd,
			 struct shmfd__welcome *w, int *ring_fd)
{
	uint64_t deadline = shmfd__deadline(SHMFD_JOIN_TIMEOUT_MS);
	unsigned int nfds;
	int n;

again:
	for (;;) {
		struct pollfd p[2] = {
			{ .fd = sock, .events = POLLIN },
			{ .fd = pidfd, .events = POLLIN },
		};
		uint64_t now = shmfd__now_ns();
		int ms;

		if (now >= deadline)
			return -ETIMEDOUT;
		ms = (int)((deadline - now) / 1000000 + 1);
		if (pidfd < 0 && ms > SHMFD_FALLBACK_SLICE_MS)
			ms = SHMFD_FALLBACK_SLICE_MS;
		n = poll(p, 2, ms);
		if (n < 0 && errno != EINTR)
			return shmfd__neg_errno();
		if (n > 0 && p[0].revents)
			break;
		if (n > 0 && p[1].revents)
			return -EPIPE;
		if (pidfd < 0 && shmfd__peer_gone(-1, r->peer_pid))
			return -EPIPE;
	}
	nfds = 0;
	n = shmfd__recv_fds(sock, w, sizeof(*w), ring_fd, &nfds, 1);
	if (n == 0 && !nfds && shmfd__sock_hung_up(sock))
		return -EPIPE;		/* the producer hung up on us */
	if (n == 0)
		goto proto;		/* an empty datagram, maybe with an fd */
	if (n == -EAGAIN)
		goto again;
	if (n < 0)
		return n == -ECONNRESET ? -EPIPE : n;
	/* A blob sent while we were being registered may come first
	 * (ring.c (6)): keep its fd for when we read its record. */
	if ((size_t)n == sizeof(struct shmfd__blob_fd) && nfds == 1 &&
	    w->type == SHMFD_MSG_BLOB_FD) {
		struct shmfd__blob_fd m;

		memcpy(&m, w, sizeof(m));
		if (shmfd__fdq_push(r, &m, *ring_fd) < 0) {
			close(*ring_fd);
			return -ENOMEM;
		}
		goto again;
	}
	if (shmfd__check_welcome(w, (size_t)n) < 0)
		goto proto;
	if (w->status) {
		if (nfds || w->status > 0 || w->status < -4095)
			goto proto;
		return w->status;
	}
	if (nfds != 1)
		goto proto;
	return 0;
proto:
	if (nfds)
		close(*ring_fd);
	return -EPROTO;
}

/* Check and map the ring the producer sent: it must be a memfd of the
 * announced size that nobody can write, shrink or grow any more. */
static int map_ring(struct shmfd_reader *r, const struct shmfd__welcome *w,
		    int fd)
{
	const struct shmfd__ring_hdr *hdr;
	int seals, ret;

	ret = shmfd__ring_map_size(w->ring_size, &r->map_size);
	if (ret < 0)
		return ret;
	ret = shmfd__memfd_verify(fd, r->map_size,
				  F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL, 0);
	if (ret < 0)
		return ret;
	seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0 || !(seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)))
		return -EPROTO;
	ret = shmfd__map_flags(fd, r->map_size, PROT_READ, MAP_POPULATE,
			       (void **)&hdr);
	if (ret < 0)
		return ret;
	r->hdr = hdr;
	ret = shmfd__check_ring_hdr(hdr, w);
	if (ret < 0)
		return ret;
	r->data = (const uint8_t *)hdr + SHMFD_HDR_SIZE;
	r->size = w->ring_size;
	r->mask = w->ring_size - 1;
	r->max_inline = w->max_inline;
	r->lossy = w->flags & SHMFD_RING_LOSSY;
	r->pos = r->tail = w->start_pos;
	r->join_head = w->join_head;
	r->next_seq = w->start_seq;
	return 0;
}

/*
 * The handshake, common to both ways in.  hello_sock is where the hello
 * goes (the named connection, or the share fd); r->sock is where the
 * answer comes.  pid is the producer's, from SO_PEERCRED.  *extra_fdp,
 * the far end of r->sock for a share-fd join, is closed (and set to -1)
 * once it is on its way: if the producer then drops it unanswered, we
 * see the hang-up at once rather than wait for a welcome until the
 * deadline.
 */
static int handshake(struct shmfd_reader *r, int hello_sock, pid_t pid,
		     int flags, int *extra_fdp)
{
	int extra_fd = extra_fdp ? *extra_fdp : -1;
	/* Without membarrier(2) we fence ourselves, and ask the producer to
	 * fence for us (ring.c (7)). */
	bool fenced = !shmfd__membarrier_ready();
	struct shmfd__hello h = {
		.type = SHMFD_MSG_HELLO,
		.version = SHMFD_PROTO_VERSION,
		.flags = (uint32_t)flags | (fenced ? SHMFD_HELLO_FENCED : 0),
	};
	struct shmfd__welcome w;
	int fds[2], page_fd, ring_fd = -1, ret;

	r->peer_pid = pid;
	r->pidfd = shmfd__pidfd_open(pid);
	if (r->pidfd < 0 && errno == ESRCH)
		return -EPIPE;
	if (r->pidfd < 0 && errno != ENOSYS)
		return shmfd__neg_errno();
	ret = shmfd__uring_init(&r->uring, 8);
	if (ret < 0)
		return ret;
	ret = make_page(r, &page_fd);
	if (ret < 0)
		return ret;
	fds[0] = page_fd;
	fds[1] = extra_fd;
	h.nfds = extra_fd >= 0 ? 2 : 1;
	ret = shmfd__sendmsg(&r->uring, hello_sock, &h, sizeof(h), fds,
			     h.nfds);
	close(page_fd);
	if (extra_fdp) {
		close(*extra_fdp);
		*extra_fdp = -1;
	}
	if (ret == -ECONNRESET || ret == -ENOTCONN)
		ret = -EPIPE;
	if (ret < 0)
		return ret;
	ret = await_welcome(r, r->sock, r->pidfd, &w, &ring_fd);
	if (ret < 0)
		return ret;
	ret = map_ring(r, &w, ring_fd);
	close(ring_fd);
	r->asym = !fenced && (w.flags & SHMFD_RING_ASYM);
	/* Joining during a blob send, we may have been passed its fd and
	 * still start past its record (ring.c (6)): we will never read it,
	 * and its fd would pin the blob until the next one comes. */
	if (ret == 0)
		shmfd__blob_drain(r, w.start_seq);
	return ret;
}

SHMFD_API int shmfd_reader_open(struct shmfd_reader **readerp,
				const char *name, int flags)
{
	struct shmfd_reader *r;
	uid_t uid;
	gid_t gid;
	pid_t pid;
	int ret;

	if (!readerp || !name || (flags & ~SHMFD_FROM_OLDEST))
		return -EINVAL;
	r = shmfd__reader_alloc();
	if (!r)
		return -ENOMEM;
	ret = shmfd__connect(name, &r->sock);
	if (ret < 0)
		goto fail;
	ret = shmfd__peer_cred(r->sock, &pid, &uid, &gid);
	if (ret < 0)
		goto fail;
	/* Anyone may bind a name in a shared directory: trust only a
	 * producer running as us or as root. */
	if (uid != geteuid() && uid != 0) {
		ret = -EACCES;
		goto fail;
	}
	ret = handshake(r, r->sock, pid, flags, NULL);
	if (ret < 0)
		goto fail;
	*readerp = r;
	return 0;
fail:
	reader_free(r);
	return ret;
}

SHMFD_API int shmfd_reader_open_fd(struct shmfd_reader **readerp, int fd,
				   int flags)
{
	struct shmfd_reader *r;
	int sv[2], type, ret;
	socklen_t len = sizeof(type);
	uid_t uid;
	gid_t gid;
	pid_t pid;

	if (!readerp || (flags & ~SHMFD_FROM_OLDEST))
		return -EINVAL;
	if (fd < 0 || fcntl(fd, F_GETFD) < 0)
		return -EBADF;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
	    type != SOCK_SEQPACKET)
		return -EBADF;
	/* The share fd's peer credentials are the producer's: it made the
	 * pair.  Our own connection is a fresh pair whose far end we hand
	 * over, so many readers can join through one share fd. */
	ret = shmfd__peer_cred(fd, &pid, &uid, &gid);
	if (ret < 0)
		return ret == -ENOTCONN ? -EPIPE : ret;
	r = shmfd__reader_alloc();
	if (!r)
		return -ENOMEM;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		ret = shmfd__neg_errno();
		goto fail;
	}
	r->sock = sv[0];
	ret = handshake(r, fd, pid, flags, &sv[1]);
	if (sv[1] >= 0)
		close(sv[1]);
	if (ret < 0)
		goto fail;
	r->share_fd = fd;
	*readerp = r;
	return 0;
fail:
	reader_free(r);
	return ret;
}

/* Our socket hung up: did the producer drop us, or is it gone?  It
 * marks our page before it closes a reader it drops (ring.c (8)); any
 * other hang-up is its exit, whether or not it is a zombie yet. */
static int gone_reason(struct shmfd_reader *r)
{
	if (r->peer_dead || LOAD_ACQUIRE(&r->hdr->closed))
		return -EPIPE;
	if (LOAD_ACQUIRE(&r->page->dropped))
		return -ECONNRESET;
	return -EPIPE;
}

static void hold(struct shmfd_reader *r, struct shmfd_msg *msg, uint64_t pos)
{
	uint16_t idx = r->held_free;
	struct shmfd__held *h = &r->held[idx];

	r->held_free = h->next;
	h->pos = pos;
	h->blob_map = NULL;
	if (++r->gen == 0)		/* 0 marks a free entry */
		r->gen = 1;
	h->gen = r->gen;
	h->prev = r->held_last;
	h->next = HELD_NONE;
	if (r->held_last != HELD_NONE)
		r->held[r->held_last].next = idx;
	else
		r->held_first = idx;
	r->held_last = idx;
	r->held_count++;
	msg->reserved[0] = pos;
	msg->reserved[1] = ((uint64_t)h->gen << 32) | idx;
	msg->reserved[2] = (uint64_t)(uintptr_t)r;
}

/* A blob is held by its own mapping, not by ring space: its entry is not
 * on the position list, so it never holds the tail back. */
static void hold_blob(struct shmfd_reader *r, struct shmfd_msg *msg,
		      uint64_t pos, void *map, size_t len, int fd)
{
	uint16_t idx = r->held_free;
	struct shmfd__held *h = &r->held[idx];

	r->held_free = h->next;
	h->pos = pos;
	if (++r->gen == 0)
		r->gen = 1;
	h->gen = r->gen;
	h->prev = h->next = HELD_NONE;
	h->blob_map = map;
	h->blob_len = len;
	h->blob_fd = fd;
	r->held_count++;
	msg->data = map;
	msg->len = len;
	msg->flags = SHMFD_MSG_BLOB;
	msg->fd = fd;
	msg->reserved[0] = pos;
	msg->reserved[1] = ((uint64_t)h->gen << 32) | idx;
	msg->reserved[2] = (uint64_t)(uintptr_t)r;
}

/* The record taken is a blob: find its fd, check it, map it.  0: msg is
 * the blob; -ENOENT: its fd never came, skip it; other: refused. */
static int recv_blob(struct shmfd_reader *r, struct shmfd_msg *msg,
		     const struct shmfd__taken *t)
{
	void *map;
	int fd, ret;

	ret = shmfd__blob_take(r, t, &fd, &map);
	/* Whatever happened, the record is done with. */
	if (r->held_first == HELD_NONE)
		shmfd__ring_publish_tail(r, r->pos);
	if (ret < 0)
		return ret;
	hold_blob(r, msg, t->pos, map, (size_t)t->blob.size, fd);
	return 0;
}

/* Watch head for up to usec (not past deadline): true once it moved or
 * the channel closed, false if the time ran out first.  yield: between
 * looks, let a producer that shares our CPU run, or we would keep it
 * from the commit we wait for. */
static bool spin_for_head(struct shmfd_reader *r, unsigned int usec,
			  uint64_t deadline, bool yield)
{
	uint64_t until = shmfd__now_ns() + usec * 1000ull;

	if (until > deadline)
		until = deadline;
	do {
		for (int i = 0; i < 64; i++) {
			if (LOAD_ACQUIRE(&r->hdr->head) != r->pos ||
			    LOAD_RELAXED(&r->hdr->closed))
				return true;
			cpu_relax();
		}
		if (yield)
			sched_yield();
	} while (shmfd__now_ns() < until);
	return false;
}

static int recv_loop(struct shmfd_reader *r, struct shmfd_msg *msg,
		     int flags, int timeout_ms)
{
	struct shmfd__taken t;
	uint64_t deadline = 0;
	bool have_deadline = false, timed_out = false, sliced;
	int ret;

	for (;;) {
		uint64_t ahead;
		uint32_t v;
		int mask;

		ret = shmfd__ring_take(r, msg, (unsigned int)flags, &t);
		if (ret == 0) {
			/* Records passed over may have left blob fds on our
			 * socket: close them, they would pin memory. */
			if (t.skipped && LOAD_RELAXED(&r->hdr->blob_id))
				shmfd__blob_drain(r, msg->seq);
			if (t.type == SHMFD_REC_BLOB) {
				ret = recv_blob(r, msg, &t);
				if (ret == -ENOENT) {
					r->extra_lost++;
					continue;
				}
				if (ret < 0)
					return ret;
			} else {
				hold(r, msg, t.pos);
			}
			msg->lost += r->extra_lost;
			r->extra_lost = 0;
			if (msg->lost) {
				r->lost_total += msg->lost;
				STORE_RELAXED(&r->page->lost, r->lost_total);
			}
			return 0;
		}
		if (ret != -EAGAIN)
			return ret;

		/* Nothing to read.  closed is stored after the last head,
		 * so once we see it a re-check of head is final. */
		if (LOAD_ACQUIRE(&r->hdr->closed) || r->peer_dead) {
			if (LOAD_ACQUIRE(&r->hdr->head) != r->pos)
				continue;
			return -EPIPE;
		}
		/* Dropped: no need to wait for the hang-up (ring.c (8)). */
		if (r->hangup || LOAD_ACQUIRE(&r->page->dropped))
			return gone_reason(r);
		if (timed_out)
			return -ETIMEDOUT;
		if (timeout_ms == 0) {
			/* A polling reader's io_uring watches both already:
			 * poll.c reaps what it saw. */
			if (r->poll_mode != SHMFD_POLL_URING &&
			    shmfd__peer_gone(r->pidfd, r->peer_pid)) {
				r->peer_dead = true;
				continue;
			}
			if (r->poll_mode != SHMFD_POLL_URING &&
			    shmfd__sock_hung_up(r->sock)) {
				r->hangup = true;
				continue;
			}
			shmfd__ring_wake_needy(r);	/* ring.c (4) */
			return -EAGAIN;
		}
		if (!have_deadline) {
			deadline = shmfd__deadline(timeout_ms);
			have_deadline = true;
		}

		if (r->spin_us && spin_for_head(r, r->spin_us, deadline, false))
			continue;
		/* ring.c (9): a large record is being built where we
		 * stand; watch for its commit instead of sleeping through
		 * it, once for each such record. */
		ahead = LOAD_RELAXED(&r->hdr->ahead);
		if (ahead == r->pos + 1 && ahead != r->ahead_seen) {
			r->ahead_seen = ahead;
			if (spin_for_head(r, SHMFD_AHEAD_SPIN_US, deadline,
					  true))
				continue;
		}

		/* ring.c (3): announce, fence, re-check, sleep; (7): the
		 * fence is a membarrier, which also covers a producer that
		 * publishes without one.  Should it fail, sleep in slices. */
		v = LOAD_ACQUIRE(&r->hdr->futex);
		STORE_RELEASE(&r->page->sleep_pos, r->pos + 1);	/* (8) */
		sliced = false;
		if (r->asym)
			sliced = shmfd__membarrier() < 0;
		else
			FENCE_FULL();
		if (LOAD_ACQUIRE(&r->hdr->head) != r->pos ||
		    LOAD_ACQUIRE(&r->hdr->closed)) {
			STORE_RELAXED(&r->page->sleep_pos, 0);
			continue;
		}
		shmfd__ring_wake_needy(r);		/* ring.c (4) */
		mask = shmfd__sleep(&r->uring, &r->hdr->futex, v,
				    SHMFD_FUTEX_BLOCK,
				    r->peer_dead ? -1 : r->pidfd,
				    r->peer_dead ? 0 : r->peer_pid,
				    r->hangup ? -1 : r->sock,
				    sliced ? shmfd__slice_end(deadline) : deadline);
		STORE_RELAXED(&r->page->sleep_pos, 0);
		if (mask < 0)
			return mask;
		if (mask & SHMFD_WAKE_PEER_DEAD)
			r->peer_dead = true;
		if (mask & SHMFD_WAKE_HANGUP)
			r->hangup = true;
		if ((mask & SHMFD_WAKE_TIMEOUT) && shmfd__now_ns() >= deadline)
			timed_out = true;
	}
}

SHMFD_API int shmfd_recv(struct shmfd_reader *r, struct shmfd_msg *msg,
			 int flags, int timeout_ms)
{
	int ret, nothing = 0;

	if (!r || !msg || (flags & ~SHMFD_RECV_LATEST))
		return -EINVAL;
	if (r->held_count == SHMFD_HELD_MAX)
		return -ENOBUFS;

	for (;;) {
		ret = recv_loop(r, msg, flags, timeout_ms);
		if (r->poll_mode == SHMFD_POLL_NONE)
			return ret;
		if (ret != -EAGAIN && ret != -ETIMEDOUT)
			break;
		/* poll.c: nothing here, so the poll fd must go quiet and
		 * stay armed -- unless a message slipped in meanwhile. */
		if (!nothing)
			nothing = ret;
		if (shmfd__poll_rearm(r) != 1)
			return nothing;
		timeout_ms = 0;
	}
	shmfd__poll_settle(r, ret == -EPIPE || ret == -ECONNRESET);
	return ret;
}

SHMFD_API int shmfd_msg_release(struct shmfd_reader *r, struct shmfd_msg *msg)
{
	struct shmfd__held *h;
	uint32_t idx, gen;
	int ret = 0;

	if (!r || !msg || msg->reserved[2] != (uint64_t)(uintptr_t)r)
		return -EINVAL;
	idx = (uint32_t)msg->reserved[1];
	gen = (uint32_t)(msg->reserved[1] >> 32);
	if (idx >= SHMFD_HELD_MAX)
		return -EINVAL;
	h = &r->held[idx];
	if (!h->gen || h->gen != gen || h->pos != msg->reserved[0])
		return -EINVAL;

	msg->reserved[2] = 0;
	if (h->blob_map) {
		munmap(h->blob_map, h->blob_len);
		close(h->blob_fd);
		h->blob_map = NULL;
		h->gen = 0;
		h->next = r->held_free;
		r->held_free = (uint16_t)idx;
		r->held_count--;
		return 0;
	}
	if (shmfd__ring_stale(r, h->pos))
		ret = -ESTALE;
	if (h->prev != HELD_NONE)
		r->held[h->prev].next = h->next;
	else
		r->held_first = h->next;
	if (h->next != HELD_NONE)
		r->held[h->next].prev = h->prev;
	else
		r->held_last = h->prev;
	h->gen = 0;
	h->next = r->held_free;
	r->held_free = (uint16_t)idx;
	r->held_count--;
	/* Space is reclaimed up to the oldest message still held. */
	shmfd__ring_publish_tail(r, r->held_first != HELD_NONE
				    ? r->held[r->held_first].pos : r->pos);
	return ret;
}

SHMFD_API int shmfd_reader_set_spin(struct shmfd_reader *r, unsigned int usec)
{
	if (!r || usec > 1000000)
		return -EINVAL;
	r->spin_us = usec;
	return 0;
}

SHMFD_API void shmfd_reader_close(struct shmfd_reader *r)
{
	struct shmfd__bye bye = { .type = SHMFD_MSG_BYE };

	if (!r)
		return;
	/* Tell the producer at once, even if a forked child of ours keeps
	 * a copy of the socket open; the hang-up covers the rest. */
	if (r->sock >= 0)
		send(r->sock, &bye, sizeof(bye), MSG_NOSIGNAL | MSG_DONTWAIT);
	if (r->share_fd >= 0)
		close(r->share_fd);
	reader_free(r);
}
