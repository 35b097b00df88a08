/* SPDX-License-Identifier: MIT */
/*
 * Sealed blobs: a message in its own memfd.  The producer fills it through
 * a writable mapping, then send unmaps it, seals it WRITE|SHRINK|GROW|SEAL
 * (F_SEAL_WRITE needs every writable mapping gone) and passes the fd to
 * each reader's socket before publishing a small record that names it
 * (layout.h, ring.c (6)).  A reader matches the record with the fd, checks
 * the seals and the size, and maps it read-only: the kernel guarantees
 * that nobody, the producer included, can change the bytes any more.
 */
#include "internal.h"

#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>

#define BLOB_SEALS (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
#define TX_URING_ENTRIES	64
/* A blob this large asks for huge pages (x86-64's PMD size). */
#define SHMFD__HUGE_MIN		((size_t)2 << 20)
/* Reliable sends re-check a reader that stays full this often. */
#define TX_SLICE_MS		10

struct shmfd_blob {
	int fd;
	void *data;			/* writable mapping until sealed */
	size_t size;
	bool sealed;
};

SHMFD_API int shmfd_blob_create(struct shmfd_blob **blobp, size_t size)
{
	struct shmfd_blob *b;
	int ret;

	if (!blobp || !size || size > (size_t)INT64_MAX)
		return -EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->size = size;
	ret = shmfd__memfd_create("shmfd-blob", size, &b->fd);
	if (ret < 0)
		goto fail_free;
	ret = shmfd__map(b->fd, size, PROT_READ | PROT_WRITE, &b->data);
	if (ret < 0)
		goto fail_fd;
	/* A child forked before the send would keep a writable mapping and
	 * make the seal fail: it never inherits one. */
	if (madvise(b->data, size, MADV_DONTFORK) < 0) {
		ret = shmfd__neg_errno();
		munmap(b->data, size);
		goto fail_fd;
	}
	/* Huge pages where the system lets shared memory have them on request
	 * (shmem_enabled "advise", or per-size "advise"): a gigabyte is then
	 * 512 page-table entries instead of 262,144, so filling it faults 512
	 * times and the send's munmap and seal, which walk every entry, take
	 * well under a millisecond instead of tens.  Where huge pages are off
	 * the kernel ignores the advice (EINVAL only without THP at all). */
	if (size >= SHMFD__HUGE_MIN)
		(void)madvise(b->data, size, MADV_HUGEPAGE);
	*blobp = b;
	return 0;
fail_fd:
	close(b->fd);
fail_free:
	free(b);
	return ret;
}

/*
 * shmfd_send() of a large message: the bytes go in with pwrite(2), never
 * through a mapping.  The kernel allocates the pages as it copies, with
 * no page fault per page, and the send has no mapping to tear down before
 * it can seal: both cost far more than the copy on a VM.
 */
int shmfd__blob_copy(struct shmfd_blob **blobp, const void *data, size_t len)
{
	struct shmfd_blob *b;
	size_t done = 0;
	int ret;

	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->size = len;
	ret = shmfd__memfd_create("shmfd-blob", len, &b->fd);
	if (ret < 0) {
		free(b);
		return ret;
	}
	while (done < len) {
		ssize_t n = pwrite(b->fd, (const char *)data + done, len - done,
				   (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = n < 0 ? shmfd__neg_errno() : -EIO;
			shmfd_blob_free(b);
			return ret;
		}
		done += (size_t)n;
	}
	*blobp = b;
	return 0;
}

SHMFD_API void *shmfd_blob_data(struct shmfd_blob *b)
{
	return b ? b->data : NULL;
}

SHMFD_API void shmfd_blob_free(struct shmfd_blob *b)
{
	if (!b)
		return;
	if (b->data)
		munmap(b->data, b->size);
	close(b->fd);
	free(b);
}

/* Drop our writable mapping and seal.  Once done, stays done. */
static int blob_seal(struct shmfd_blob *b)
{
	if (b->sealed)
		return 0;
	if (b->data) {
		munmap(b->data, b->size);
		b->data = NULL;
	}
	/* EBUSY: someone still maps it writable (a mapping made through
	 * /proc/PID/fd); nothing we can undo. */
	if (shmfd__memfd_seal(b->fd, BLOB_SEALS) < 0)
		return shmfd__neg_errno();
	b->sealed = true;
	return 0;
}

static int tx_setup(struct shmfd_chan *c)
{
	int ret;

	if (c->tx_slot)
		return 0;
	c->tx_sock = calloc(c->nslots, sizeof(*c->tx_sock));
	c->tx_res = calloc(c->nslots, sizeof(*c->tx_res));
	c->tx_slot = calloc(c->nslots, sizeof(*c->tx_slot));
	if (!c->tx_sock || !c->tx_res || !c->tx_slot) {
		shmfd__blob_send_cleanup(c);
		return -ENOMEM;
	}
	ret = shmfd__uring_init(&c->tx_uring, TX_URING_ENTRIES);
	if (ret < 0) {
		shmfd__blob_send_cleanup(c);
		return ret;
	}
	return 0;
}

void shmfd__blob_send_cleanup(struct shmfd_chan *c)
{
	shmfd__uring_exit(&c->tx_uring);
	free(c->tx_sock);
	free(c->tx_res);
	free(c->tx_slot);
	c->tx_sock = c->tx_res = NULL;
	c->tx_slot = NULL;
}

/* Errors after which a reader may still take the fd later. */
static bool transient(int err)
{
	return err == -EAGAIN || err == -ENOBUFS || err == -ENOMEM ||
	       err == -ETOOMANYREFS;
}

/* Reliable mode: one reader's socket is full.  Wait for room (the reader
 * takes earlier fds), for the reader to go, or for the deadline. */
static int deliver_one(struct shmfd_chan *c, uint32_t i,
		       const struct shmfd__blob_fd *m, int fd,
		       uint64_t deadline, int err)
{
	struct shmfd__slot *s = &c->slots[i];

	for (;;) {
		struct pollfd p = { .fd = s->sock, .events = POLLOUT };
		uint64_t now = shmfd__now_ns();
		uint64_t left;

		if (LOAD_ACQUIRE(&s->state) != SLOT_LIVE)
			return 0;		/* dropped: owed nothing */
		if (now >= deadline)
			return deadline ? -ETIMEDOUT : -EAGAIN;
		left = (deadline - now) / 1000000 + 1;
		if (left > TX_SLICE_MS)
			left = TX_SLICE_MS;
		/* Too many fds in flight for this user, or no memory: room
		 * in this socket would not help, only time. */
		if (err == -EAGAIN)
			poll(&p, 1, (int)left);
		else
			poll(NULL, 0, (int)left);
		err = shmfd__sendmsg(NULL, s->sock, m, sizeof(*m), &fd, 1);
		if (err == 0) {
			s->blob_sent = m->id;
			return 0;
		}
		if (!transient(err))
			return 0;		/* the reader is gone */
	}
}

/*
 * Pass the fd to every LIVE reader that does not have it.  first: the
 * send proper, which in reliable mode waits for full sockets.  Otherwise
 * (the commit is open) only readers that joined meanwhile, never waiting:
 * their sockets are empty.  Inside the slots bracket.
 */
static int deliver(struct shmfd_chan *c, const struct shmfd__blob_fd *m,
		   int fd, uint64_t deadline, bool first)
{
	unsigned int n = 0, waiting = 0;
	uint32_t hi = LOAD_ACQUIRE(&c->slot_hi);	/* after a fence: (5) */
	int ret;

	for (uint32_t i = 0; i < hi; i++) {
		struct shmfd__slot *s = &c->slots[i];

		if (LOAD_ACQUIRE(&s->state) != SLOT_LIVE ||
		    s->blob_sent == m->id)
			continue;
		c->tx_slot[n] = i;
		c->tx_sock[n] = s->sock;
		n++;
	}
	if (!n)
		return 0;
	ret = shmfd__sendmsg_many(&c->tx_uring, c->tx_sock, c->tx_res, n, m,
				  sizeof(*m), fd);
	if (ret < 0)
		return ret;
	for (unsigned int k = 0; k < n; k++) {
		if (c->tx_res[k] == 0)
			c->slots[c->tx_slot[k]].blob_sent = m->id;
		else if (first && !c->lossy && transient(c->tx_res[k])) {
			c->tx_slot[waiting] = c->tx_slot[k];
			c->tx_res[waiting] = c->tx_res[k];
			waiting++;
		}
		/* Else the reader is gone (the thread drops it), or this is
		 * lossy mode: the reader counts the blob as lost. */
	}
	for (unsigned int k = 0; k < waiting; k++) {
		ret = deliver_one(c, c->tx_slot[k], m, fd, deadline,
				  c->tx_res[k]);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int ms_left(uint64_t deadline)
{
	uint64_t now = shmfd__now_ns(), ms;

	if (deadline == UINT64_MAX)
		return -1;
	if (now >= deadline)
		return 0;
	ms = (deadline - now + 999999) / 1000000;
	return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

SHMFD_API int shmfd_send_blob(struct shmfd_chan *c, struct shmfd_blob *b,
			      int timeout_ms)
{
	struct shmfd__blob_fd m = { .type = SHMFD_MSG_BLOB_FD };
	uint64_t deadline;
	void *buf;
	int ret;

	if (!c || !b)
		return -EINVAL;
	if (c->resv_pos != UINT64_MAX)
		return -EBUSY;
	deadline = shmfd__deadline(timeout_ms);
	ret = tx_setup(c);
	if (ret < 0)
		return ret;
	ret = blob_seal(b);
	if (ret < 0)
		return ret;
	/* Ring space first: a send that times out there has passed no fd. */
	ret = shmfd__ring_reserve(c, sizeof(struct shmfd__blob_desc), &buf,
				  timeout_ms == 0 ? 0 : ms_left(deadline));
	if (ret < 0)
		return ret;

	m.id = ++c->blob_id;
	m.seq = c->seq + 1;
	m.size = b->size;
	shmfd__slots_enter(c);
	ret = deliver(c, &m, b->fd, deadline, true);
	if (ret < 0) {
		shmfd__slots_exit(c);
		shmfd__ring_cancel(c);
		return ret;
	}
	shmfd__ring_commit_open(c);
	deliver(c, &m, b->fd, 0, false);
	shmfd__slots_exit(c);
	shmfd__ring_commit_blob(c, m.id, b->size);

	close(b->fd);
	free(b);
	return 0;
}

/* ---- reader side ---- */

int shmfd__fdq_push(struct shmfd_reader *r, const struct shmfd__blob_fd *m,
		    int fd)
{
	struct shmfd__queued_fd *q;

	if (r->fdq_head + r->fdq_count == r->fdq_cap) {
		if (r->fdq_head) {
			memmove(r->fdq, r->fdq + r->fdq_head,
				r->fdq_count * sizeof(*r->fdq));
			r->fdq_head = 0;
		} else {
			uint32_t cap = r->fdq_cap ? r->fdq_cap * 2 : 4;

			q = realloc(r->fdq, cap * sizeof(*q));
			if (!q)
				return -ENOMEM;
			r->fdq = q;
			r->fdq_cap = cap;
		}
	}
	q = &r->fdq[r->fdq_head + r->fdq_count++];
	q->id = m->id;
	q->seq = m->seq;
	q->size = m->size;
	q->fd = fd;
	return 0;
}

static void fdq_pop(struct shmfd_reader *r)
{
	if (--r->fdq_count == 0)
		r->fdq_head = 0;
	else
		r->fdq_head++;
}

void shmfd__fdq_clear(struct shmfd_reader *r)
{
	while (r->fdq_count) {
		close(r->fdq[r->fdq_head].fd);
		fdq_pop(r);
	}
	free(r->fdq);
	r->fdq = NULL;
	r->fdq_cap = 0;
}

/* The oldest blob fd not yet matched: queued, or the next one on the
 * socket.  NULL when none is there.  Anything else the socket carries is
 * a producer breaking the protocol: dropped, fds closed, and noted, so
 * that the blob whose fd it may have stood for is refused, not lost. */
static struct shmfd__queued_fd *fdq_peek(struct shmfd_reader *r)
{
	while (!r->fdq_count) {
		struct shmfd__blob_fd m;
		unsigned int nfds = 0;
		int fd, n;

		n = shmfd__recv_fds(r->sock, &m, sizeof(m), &fd, &nfds, 1);
		if (n == -EMFILE)
			continue;	/* no room here for its fd: lost */
		if (n == -EPROTO) {
			r->fdq_garbage = true;	/* fds already closed */
			continue;
		}
		if (n == 0 && (nfds || !shmfd__sock_hung_up(r->sock))) {
			if (nfds)
				close(fd);
			continue;	/* an empty datagram, not a hang-up */
		}
		if (n <= 0)
			return NULL;	/* nothing now, or hung up */
		if ((size_t)n != sizeof(m) || m.type != SHMFD_MSG_BLOB_FD ||
		    nfds != 1) {
			if (nfds)
				close(fd);
			r->fdq_garbage = true;
			continue;
		}
		if (shmfd__fdq_push(r, &m, fd) < 0) {
			close(fd);
			return NULL;
		}
	}
	return &r->fdq[r->fdq_head];
}

/* Close the fds of blobs this reader skipped: those of records before
 * seq.  An fd for a record not yet published has a larger seq. */
void shmfd__blob_drain(struct shmfd_reader *r, uint64_t seq)
{
	struct shmfd__queued_fd *q;

	while ((q = fdq_peek(r)) && q->seq < seq) {
		close(q->fd);
		fdq_pop(r);
	}
	/* What was discarded stood for records passed over. */
	r->fdq_garbage = false;
}

/* Before 6.7 the kernel refuses a shared mapping of a write-sealed memfd
 * even read-only: map it private then (no copy while nobody writes). */
static int shared_state;		/* 0 unknown, 1 works, -1 EPERM */

static int map_blob(int fd, size_t size, void **mapp)
{
	void *p = MAP_FAILED;

	if (LOAD_RELAXED(&shared_state) >= 0) {
		p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
		if (p != MAP_FAILED)
			STORE_RELAXED(&shared_state, 1);
		else if (errno == EPERM)
			STORE_RELAXED(&shared_state, -1);
		else
			return shmfd__neg_errno();
	}
	if (p == MAP_FAILED)
		p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED)
		return shmfd__neg_errno();
	*mapp = p;
	return 0;
}

/*
 * The fd of the blob record t: 0 and the fd and a read-only mapping;
 * -ENOENT when its fd never came (the reader joined after it was sent,
 * or, lossy, its socket was full); -EPROTO when the fd is not a memfd
 * sealed against every change, of exactly the record's size, or when a
 * malformed message came where its fd should have been; -ENOMEM (or
 * another mmap error) when it cannot be mapped.  On those errors the blob
 * counts as lost (the caller counts -ENOENT itself).
 */
int shmfd__blob_take(struct shmfd_reader *r, const struct shmfd__taken *t,
		     int *fdp, void **mapp)
{
	struct shmfd__queued_fd *q;
	uint64_t size;
	int fd, ret;

	for (;;) {
		q = fdq_peek(r);
		if (!q || q->id > t->blob.id) {
			if (!r->fdq_garbage)
				return -ENOENT;
			/* Refused, and counted as below. */
			r->fdq_garbage = false;
			r->extra_lost++;
			return -EPROTO;
		}
		if (q->id == t->blob.id)
			break;
		close(q->fd);		/* a send that failed half-way */
		fdq_pop(r);
	}
	r->fdq_garbage = false;
	fd = q->fd;
	size = q->size;
	fdq_pop(r);
	if (size != t->blob.size || size > SIZE_MAX) {
		ret = -EPROTO;
		goto fail;
	}
	ret = shmfd__memfd_verify(fd, (size_t)t->blob.size, BLOB_SEALS, 0);
	if (ret < 0)
		goto fail;
	ret = map_blob(fd, (size_t)t->blob.size, mapp);
	if (ret < 0)
		goto fail;
	*fdp = fd;
	return 0;
fail:
	close(fd);
	/* The record is consumed: the reader will never see this blob.
	 * Count it in the next message's lost, as one whose fd never came,
	 * or a reliable reader's stream would have a gap nothing accounts
	 * for (DESIGN §4.1). */
	r->extra_lost++;
	return ret;
}
