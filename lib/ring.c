/* SPDX-License-Identifier: MIT */
/*
 * The ring: publish and consume protocol, both sides.
 *
 * Who writes what (layout.h has the words):
 *
 *   producer   ring records, hdr.head, hdr.latest, hdr.seq, hdr.oldest,
 *              hdr.futex, hdr.closed, hdr.want; and, once at join,
 *              page.tail of a new reader
 *   reader     its own page: page.tail, page.sleep_pos, page.wake
 *   thread     (the producer's admission thread) chan.slots[].state,
 *              and page.wake of a reader it drops
 *
 * Memory ordering (C11 terms; on x86 only the two full fences cost):
 *
 * (1) Publish.  The producer writes a record (payload, then its header),
 *     then store-releases hdr.head.  A reader load-acquires hdr.head and
 *     reads only records that end at or before it, so it sees them whole.
 *
 * (2) Overwrite (both modes; lossy readers depend on it).  Before the
 *     producer writes over bytes that held older records it advances
 *     hdr.oldest past every record it is about to touch (store, then a
 *     release fence, then the overwriting stores).  A reader reads a record
 *     header or payload, issues an acquire fence, and re-loads hdr.oldest:
 *     if the record's start is now below it, something it read may be torn
 *     (seqlock argument: had it read an overwriting store, the acquire
 *     fence would make the earlier oldest store visible).  recv retries the
 *     header; msg_release reports -ESTALE for the payload.
 *
 * (3) Reader sleep (Dekker pair, no lost wake-up).  Reader: load-acquire
 *     v = hdr.futex; store page.sleep_pos = pos + 1; FULL FENCE; load
 *     hdr.head; sleep on hdr.futex only if head is still pos, expecting v.
 *     Producer: store-release hdr.head; FULL FENCE (slots_enter); load
 *     page.sleep_pos.  With both fences, at least one side sees the
 *     other's store: either the reader sees the new head and does not
 *     sleep, or the producer sees the announcement, bumps hdr.futex and
 *     calls FUTEX_WAKE.  The bump happens before the wake, so a reader
 *     that has not yet entered the kernel finds hdr.futex != v and returns
 *     at once.  The announcement carries the position: the producer wakes
 *     a given sleep_pos at most once (slot.woken), because head only grows
 *     and a reader never sleeps again at a position head has passed.
 *
 * (4) Producer waits for space (reliable mode).  Producer: load w =
 *     page.wake of the slowest reader; store hdr.want = target; FULL
 *     FENCE; re-load the tails; sleep on page.wake expecting w only if
 *     still short.  Reader: store-release page.tail; FULL FENCE; load
 *     hdr.want; if its tail reached want, bump page.wake and FUTEX_WAKE.
 *     Same Dekker argument as (3).  A reader wakes a given want value at
 *     most once (last_want): tails only grow.  want is a chunk past what
 *     the producer needs (hdr.need, stored before want), so a reader
 *     that stops short of want and waits itself -- sleeping for the next
 *     message, or returning -EAGAIN -- first wakes the producer if its
 *     tail reached need; else each would wait for the other.  Its tail
 *     was stored before the fence of its last publish (or the producer's
 *     membarrier (7) covers it), so the same argument holds.
 *
 * (5) Slots.  The thread fills a slot, then store-releases state = LIVE;
 *     the sender load-acquires state before using slot fields.  To drop a
 *     reader the thread stores state = DEAD, FULL FENCE, loads chan.epoch.
 *     The sender increments chan.epoch (odd) and FULL FENCEs before it
 *     reads any slot, and store-releases it (even) after.  Either the
 *     sender sees DEAD, or the thread sees an odd epoch and defers the
 *     unmap; an even epoch read by the thread synchronizes with the
 *     sender's last release, after which it holds no page pointer except
 *     the one it sleeps on, which it names in chan.wait_slot first.
 *     The sender scans slots below chan.slot_hi only: the thread raises
 *     it (store-release) before it stores LIVE and fences, and the sender
 *     loads it after its fence, so a LIVE the sender must see (this
 *     Dekker pair, and (6)) lies below the slot_hi it sees.  slot_hi
 *     never falls: slots are taken lowest first, so it stays small.
 *     After publishing a slot the thread store-releases chan.joins + 1;
 *     the sender load-acquires it on each reliable reserve and drops its
 *     cached minimum tail when it changed, so a reader that joined below
 *     that minimum (FROM_OLDEST) is honoured from its first reserve on.
 *
 * (7) Asymmetric fences (SHMFD_RING_ASYM, where membarrier(2) works).
 *     The full fences of the hot paths -- the sender's in (3) and (5),
 *     the reader's in (4) -- become compiler barriers, and the side that
 *     is about to sleep or reclaim calls membarrier(GLOBAL_EXPEDITED)
 *     instead of its own fence.  Every process that skips a fence is
 *     registered, so that call runs a full barrier on its CPU at some
 *     point B, or it is not running and the context switch was one.
 *     For (3): the reader stores sleep_pos, calls membarrier, loads head;
 *     the sender stores head, then loads the slots and sleep_pos.  If B
 *     falls after the sender's loads, its head store came before B and
 *     the reader's load sees it; if before, the reader's store, made
 *     before the call, is what the sender's loads see.  (4) is the same
 *     with the producer in wait_space calling membarrier after its want
 *     store and fence, the reader storing its tail and loading want; (5)
 *     with the thread calling it between storing DEAD and loading epoch.
 *     A reader that cannot use membarrier joins FENCED: it keeps its own
 *     fences, and the thread counts it in chan.nfenced before it stores
 *     LIVE, then calls membarrier before it answers the reader.  A publish
 *     that loaded nfenced == 0 did so after its head store; if that load
 *     came before B, so did the head store, which the reader then sees;
 *     after B, it sees nfenced > 0 and fences.  So the sender fences for
 *     every publish a fenced reader could sleep through.
 *
 * (8) Poll fds (poll.c).  A reader that hands out a pollable fd keeps a
 *     sleep announced (3) while it is away from recv: before recv says
 *     -EAGAIN it arms exactly as for a sleep -- load v, store sleep_pos,
 *     fence or membarrier, re-check head -- but returns instead of
 *     sleeping.  The producer wakes it as any sleeper: with io_uring the
 *     FUTEX_WAIT the reader left in flight completes and its ring fd
 *     turns readable; without, the sender also sends one byte on the
 *     socket the reader gave it (SHMFD_MSG_POLL_FD), which the reader
 *     polls.  The thread store-releases that socket in slot.wake_sock,
 *     then sends one byte on it; shmfd_reader_pollfd waits for that byte
 *     before it arms.  The reader store-releases sleep_pos and the sender
 *     load-acquires it before it loads wake_sock, so an arm made after
 *     the byte is seen together with the socket.  The thread stores
 *     page.dropped before it closes a dropped reader's socket, so the
 *     hang-up the reader sees then says it was dropped (-ECONNRESET)
 *     and not that we died (-EPIPE).
 *
 * (9) Early wake (a hint: nothing above depends on it).  A reader's
 *     wake-up costs tens of microseconds on a VM, and building a large
 *     record in place can take as long, so the two should overlap.  When
 *     the producer reserves SHMFD_AHEAD_MIN bytes or more, it stores
 *     hdr.ahead = head + 1, then, if a LIVE reader announced a sleep at
 *     head (sleep_pos == head + 1) and does not poll (page.polls == 0),
 *     bumps hdr.futex and wakes with FUTEX_WAKE_BITSET(SHMFD_FUTEX_BLOCK).
 *     Readers blocked in recv wait with that bit, and waits left in
 *     flight for a poll fd with SHMFD_FUTEX_POLL, so an early wake never
 *     makes a poll fd readable; a commit's wake (3) matches every bit.  A
 *     reader that finds nothing at pos and sees ahead == pos + 1 watches
 *     head for up to SHMFD_AHEAD_SPIN_US, once per ahead value, before it
 *     announces a sleep.  Safety: the early wake neither reads nor writes
 *     slot.woken, so a reader that gives up and sleeps again at the same
 *     sleep_pos is still owed the commit's wake; the bump before the wake
 *     only makes a racing sleeper return at once, as in (3).  Every load
 *     of ahead, polls and sleep_pos here may be stale: the cost is a
 *     missed early wake or a wasted spin, never a lost message.
 *
 * Records never wrap.  When the rest of the data area is too short the
 * producer writes a PAD record up to its end; readers skip it.
 */
#include "internal.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/socket.h>

#define NO_RESV		UINT64_MAX

static inline struct shmfd__rec *rec_at(uint8_t *data, uint64_t mask,
					uint64_t pos)
{
	return (struct shmfd__rec *)(data + (pos & mask));
}

int shmfd__ring_init(struct shmfd_chan *c, size_t ring_size,
		     size_t max_inline, uint32_t max_readers, bool lossy)
{
	struct shmfd__ring_hdr *hdr;
	void *map;
	int fd, ret;

	ret = shmfd__ring_map_size(ring_size, &c->map_size);
	if (ret < 0)
		return ret;
	ret = shmfd__memfd_create("shmfd-ring", c->map_size, &fd);
	if (ret < 0)
		return ret;
	ret = shmfd__map_flags(fd, c->map_size, PROT_READ | PROT_WRITE,
			       MAP_POPULATE, &map);
	if (ret < 0)
		goto fail_fd;
	/* A child forked from the producer must not inherit the one
	 * writable mapping: it would be a reader that can scribble. */
	if (madvise(map, c->map_size, MADV_DONTFORK) < 0) {
		ret = shmfd__neg_errno();
		goto fail_map;
	}
	hdr = map;
	hdr->magic = SHMFD_RING_MAGIC;
	hdr->version = SHMFD_PROTO_VERSION;
	hdr->hdr_size = SHMFD_HDR_SIZE;
	hdr->ring_size = ring_size;
	hdr->max_inline = max_inline;
	c->asym = shmfd__membarrier_ready();
	hdr->flags = (lossy ? SHMFD_RING_LOSSY : 0) |
		     (c->asym ? SHMFD_RING_ASYM : 0);
	hdr->max_readers = max_readers;
	hdr->producer_pid = (int32_t)getpid();

	/* From here on nobody can map the ring writable, write(2) it, or
	 * change its size; our own mapping keeps working. */
	ret = shmfd__memfd_seal(fd, F_SEAL_SHRINK | F_SEAL_GROW |
				    F_SEAL_FUTURE_WRITE | F_SEAL_SEAL);
	if (ret < 0)
		goto fail_map;

	c->slots = calloc(max_readers, sizeof(*c->slots));
	if (!c->slots) {
		ret = -ENOMEM;
		goto fail_map;
	}
	c->nslots = max_readers;
	c->ring_fd = fd;
	c->hdr = hdr;
	c->data = (uint8_t *)map + SHMFD_HDR_SIZE;
	c->size = ring_size;
	c->mask = ring_size - 1;
	c->chunk = ring_size / SHMFD_BOUNDS;
	c->max_inline = max_inline;
	c->lossy = lossy;
	c->resv_pos = NO_RESV;
	return 0;

fail_map:
	munmap(map, c->map_size);
fail_fd:
	close(fd);
	return ret;
}

static void slots_enter(struct shmfd_chan *c)
{
	STORE_RELAXED(&c->epoch, c->epoch + 1);
	FENCE_FULL();
}

static void slots_exit(struct shmfd_chan *c)
{
	STORE_RELEASE(&c->epoch, c->epoch + 1);
}

/* The sender's way in: (7) no fence unless a fenced reader is joined. */
static void sender_slots_enter(struct shmfd_chan *c)
{
	if (c->asym && !LOAD_RELAXED(&c->nfenced)) {
		STORE_RELAXED(&c->epoch, c->epoch + 1);
		COMPILER_BARRIER();
	} else {
		slots_enter(c);
	}
}

void shmfd__slots_enter(struct shmfd_chan *c)
{
	slots_enter(c);
}

void shmfd__slots_exit(struct shmfd_chan *c)
{
	slots_exit(c);
}

/* A reader's tail as the producer may trust it: never below where the
 * reader started, never past what was published. */
static uint64_t slot_tail(const struct shmfd_chan *c,
			  const struct shmfd__slot *s)
{
	uint64_t t = LOAD_ACQUIRE(&s->page->tail);
	uint64_t start = LOAD_RELAXED(&s->start);

	if (t < start)
		t = start;
	if (t > c->head)
		t = c->head;
	return t;
}

/* Inside a slots bracket: the smallest tail, and whose it is. */
static uint64_t scan_min_tail(struct shmfd_chan *c, uint32_t *slowest)
{
	uint64_t min = c->head;
	uint32_t hi = LOAD_ACQUIRE(&c->slot_hi);

	*slowest = UINT32_MAX;
	for (uint32_t i = 0; i < hi; i++) {
		struct shmfd__slot *s = &c->slots[i];
		uint64_t t;

		if (LOAD_ACQUIRE(&s->state) != SLOT_LIVE)
			continue;
		t = slot_tail(c, s);
		if (t < min || *slowest == UINT32_MAX) {
			min = t;
			*slowest = i;
		}
	}
	return min;
}

/* The end of a 1 ms slice, or deadline if sooner: a wait whose other
 * side may have missed our barrier (7) looks again that often. */
uint64_t shmfd__slice_end(uint64_t deadline)
{
	uint64_t t = shmfd__now_ns() + 1000000;

	return t < deadline ? t : deadline;
}

/* The first record start at or past upto, walking the records from o
 * (a record start).  Reads the headers of old records: cold lines. */
static uint64_t walk_records(const struct shmfd_chan *c, uint64_t o,
			     uint64_t upto)
{
	while (o < upto) {
		const struct shmfd__rec *r = rec_at(c->data, c->mask, o);

		o += ALIGN_UP((uint64_t)r->len + sizeof(*r), SHMFD_REC_ALIGN);
	}
	return o;
}

/* publish: note, for the chunk boundaries the records from prev to end
 * crossed, the first record start at or past each (start, or end). */
static inline void note_bounds(struct shmfd_chan *c, uint64_t prev,
			       uint64_t start, uint64_t end)
{
	uint64_t cb = (prev | (c->chunk - 1)) + 1;	/* first past prev */

	for (; cb <= end; cb += c->chunk)
		c->bounds[(cb / c->chunk) % SHMFD_BOUNDS] =
			cb <= start ? start : end;
}

/*
 * Reliable mode, (2): how far to retire, at least to limit.  Lossy
 * readers need oldest exact; reliable readers only see it move past them
 * once dropped, and a FROM_OLDEST join starts there.  So retire an eighth
 * of the ring at a time, up to what every reader has released: one store
 * to the shared line per chunk, not one per message.  The record start
 * comes from the bounds note, not from walking a chunk's cold headers.
 * Every position from limit up is a record start at or below head (the
 * sender's own, whatever the readers' tails say), so nothing a reader
 * writes can make oldest fall between records.
 */
static uint64_t retire_point(struct shmfd_chan *c, uint64_t limit)
{
	uint64_t want = limit, cb, o;
	uint32_t slowest;

	for (int pass = 0; pass < 2; pass++) {
		want = limit + c->size / 8;
		if (want > c->min_tail)
			want = c->min_tail;
		if (want < limit)
			want = limit;	/* a FROM_OLDEST join: (5) */
		/* A boundary in [limit, want]: the record start past it is
		 * no further than the slowest tail, a record start. */
		cb = want & ~(c->chunk - 1);
		if (cb >= limit && cb <= c->head) {
			/* Noted when head crossed cb, less than a ring ago. */
			o = c->bounds[(cb / c->chunk) % SHMFD_BOUNDS];
			if (o >= cb && o <= c->head)
				return o;
		}
		if (pass)
			break;
		/* The slowest tail we know of is within a chunk: it has
		 * likely moved on since we looked. */
		slots_enter(c);
		c->min_tail = scan_min_tail(c, &slowest);
		slots_exit(c);
	}
	return walk_records(c, c->oldest, want);
}

/*
 * Reliable mode: wait until every reader has released everything below
 * limit.  The producer asks for a chunk more than it needs (an eighth of
 * the ring), so a stream of small messages sleeps once per chunk instead
 * of once per message; readers wake it when their tail reaches that mark.
 */
static int wait_space(struct shmfd_chan *c, uint64_t limit, int timeout_ms)
{
	uint64_t deadline = 0;
	bool have_deadline = false;

	for (;;) {
		struct shmfd__reader_page *page;
		uint64_t target;
		uint32_t slowest, w;
		bool sliced;
		int ret;

		slots_enter(c);
		c->min_tail = scan_min_tail(c, &slowest);
		if (c->min_tail >= limit) {
			slots_exit(c);
			return 0;
		}
		if (slowest == UINT32_MAX) {
			slots_exit(c);	/* limit <= head: cannot be */
			return -EPROTO;
		}
		if (timeout_ms == 0) {
			slots_exit(c);
			return -EAGAIN;
		}
		page = c->slots[slowest].page;
		w = LOAD_ACQUIRE(&page->wake);
		target = limit + c->size / 8;
		if (target > c->head)
			target = c->head;
		STORE_RELAXED(&c->hdr->need, limit);
		STORE_RELEASE(&c->hdr->want, target);
		FENCE_FULL();
		/* (7): readers store their tails without a fence.  Should
		 * the barrier ever fail, sleep in short slices instead. */
		sliced = c->asym && shmfd__membarrier() < 0;
		c->min_tail = scan_min_tail(c, &slowest);
		if (c->min_tail >= limit) {
			STORE_RELAXED(&c->hdr->want, 0);
			slots_exit(c);
			return 0;
		}
		/* Name the page we sleep on before leaving the bracket, so
		 * the thread keeps it mapped while we are on it. */
		STORE_RELAXED(&c->wait_slot, slowest + 1);
		slots_exit(c);

		if (!have_deadline) {
			deadline = shmfd__deadline(timeout_ms);
			have_deadline = true;
		}
		ret = shmfd__futex_wait(&page->wake, w, SHMFD_FUTEX_ANY,
					sliced ? shmfd__slice_end(deadline)
					       : deadline);
		STORE_RELEASE(&c->wait_slot, 0);
		if (ret == -ETIMEDOUT && shmfd__now_ns() >= deadline) {
			STORE_RELAXED(&c->hdr->want, 0);
			return -ETIMEDOUT;
		}
		/* 0, -EINTR, or -EFAULT if that reader's page went away:
		 * in every case look at the readers again. */
	}
}

/* (9): a record this large takes a while to build: wake the readers
 * blocked at head now, so that their wake-up overlaps the build. */
static void wake_ahead(struct shmfd_chan *c)
{
	bool wake = false;
	uint32_t hi;

	STORE_RELAXED(&c->hdr->ahead, c->head + 1);
	sender_slots_enter(c);
	hi = LOAD_ACQUIRE(&c->slot_hi);
	for (uint32_t i = 0; i < hi && !wake; i++) {
		struct shmfd__slot *s = &c->slots[i];

		if (LOAD_ACQUIRE(&s->state) != SLOT_LIVE)
			continue;
		wake = LOAD_RELAXED(&s->page->sleep_pos) == c->head + 1 &&
		       !LOAD_RELAXED(&s->page->polls);
	}
	slots_exit(c);

	if (wake) {
		STORE_RELEASE(&c->hdr->futex, c->hdr->futex + 1);
		shmfd__futex_wake_bits(&c->hdr->futex, INT_MAX,
				       SHMFD_FUTEX_BLOCK);
	}
}

int shmfd__ring_reserve(struct shmfd_chan *c, size_t len, void **bufp,
			int timeout_ms)
{
	uint64_t need, pad, end, limit, p = c->head;
	uint64_t off = p & c->mask;

	if (c->resv_pos != NO_RESV)
		return -EBUSY;

	need = ALIGN_UP((uint64_t)len + sizeof(struct shmfd__rec),
			SHMFD_REC_ALIGN);
	pad = off + need > c->size ? c->size - off : 0;
	end = p + pad + need;
	limit = end > c->size ? end - c->size : 0;

	if (!c->lossy) {
		/* A reader that joined FROM_OLDEST starts below the cached
		 * minimum: after any join, look at the tails again. */
		uint32_t joins = LOAD_ACQUIRE(&c->joins);

		if (joins != c->seen_joins) {
			c->seen_joins = joins;
			c->min_tail = 0;
		}
		if (c->min_tail < limit) {
			int ret = wait_space(c, limit, timeout_ms);

			if (ret < 0)
				return ret;
		}
	}

	/* (2): retire every record we are about to overwrite, then write. */
	if (c->oldest < limit) {
		c->oldest = c->lossy ? walk_records(c, c->oldest, limit)
				     : retire_point(c, limit);
		STORE_RELAXED(&c->hdr->oldest, c->oldest);
		FENCE_RELEASE();
	}

	if (pad) {
		struct shmfd__rec *r = rec_at(c->data, c->mask, p);

		r->len = (uint32_t)(pad - sizeof(*r));
		r->type = SHMFD_REC_PAD;
		r->seq = 0;
	}
	c->resv_pos = p + pad;
	c->resv_len = len;
	*bufp = rec_at(c->data, c->mask, c->resv_pos) + 1;
	if (len >= SHMFD_AHEAD_MIN)
		wake_ahead(c);
	return 0;
}

/* (8): a reader polling without io_uring learns of a wake here. */
static inline void wake_sock(const struct shmfd__slot *s)
{
	static const char one = 1;
	int fd = LOAD_ACQUIRE(&s->wake_sock);

	if (fd >= 0)
		send(fd, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* (3): after publishing, wake every reader that announced a sleep at a
 * position head has now passed, once.  (7): no fence unless a fenced
 * reader is joined. */
static void wake_readers(struct shmfd_chan *c)
{
	bool wake = false;
	uint32_t hi;

	sender_slots_enter(c);
	hi = LOAD_ACQUIRE(&c->slot_hi);
	for (uint32_t i = 0; i < hi; i++) {
		struct shmfd__slot *s = &c->slots[i];
		uint64_t sp;

		if (LOAD_ACQUIRE(&s->state) != SLOT_LIVE)
			continue;
		sp = LOAD_ACQUIRE(&s->page->sleep_pos);
		if (sp && sp <= c->head && sp != s->woken) {
			s->woken = sp;
			wake = true;
			wake_sock(s);		/* (8) */
		}
	}
	slots_exit(c);

	if (wake) {
		STORE_RELEASE(&c->hdr->futex, c->hdr->futex + 1);
		shmfd__futex_wake(&c->hdr->futex, INT_MAX);
	}
}

/* Write the reserved record's header and publish it; commit_gen is odd
 * already when the caller opened the commit (blobs). */
static void publish(struct shmfd_chan *c, size_t len, uint32_t type,
		    bool opened)
{
	struct shmfd__rec *r;
	uint64_t p = c->resv_pos, prev = c->head;

	r = rec_at(c->data, c->mask, p);
	r->len = (uint32_t)len;
	r->type = type;
	r->seq = ++c->seq;
	c->head = p + ALIGN_UP((uint64_t)len + sizeof(*r), SHMFD_REC_ALIGN);
	if (!c->lossy)
		note_bounds(c, prev, p, c->head);
	c->resv_pos = NO_RESV;

	if (!opened) {
		STORE_RELAXED(&c->hdr->commit_gen, c->hdr->commit_gen + 1);
		FENCE_RELEASE();
	}
	STORE_RELAXED(&c->hdr->latest, p);
	STORE_RELAXED(&c->hdr->seq, c->seq);
	STORE_RELEASE(&c->hdr->head, c->head);	/* (1) */
	STORE_RELEASE(&c->hdr->commit_gen, c->hdr->commit_gen + 1);
	wake_readers(c);
}

int shmfd__ring_commit(struct shmfd_chan *c, size_t len)
{
	if (c->resv_pos == NO_RESV || len > c->resv_len)
		return -EINVAL;
	publish(c, len, SHMFD_REC_MSG, false);
	return 0;
}

/*
 * (6) Blobs.  The sender sends a blob's fd to every LIVE reader, then
 * opens the commit: commit_gen odd, FULL FENCE, and sends it to every
 * LIVE reader that did not get it yet, then publishes.  The admission
 * thread registers a reader by storing state = LIVE, FULL FENCE, and only
 * then taking its join point under commit_gen (admit.c join).  Either the
 * sender sees the reader LIVE and sends it the fd, or the thread sees the
 * odd commit_gen, waits for it to become even and starts the reader past
 * the blob's record.  No reader finds a blob record whose fd it was owed
 * and not sent.
 */
void shmfd__ring_commit_open(struct shmfd_chan *c)
{
	STORE_RELAXED(&c->hdr->commit_gen, c->hdr->commit_gen + 1);
	FENCE_FULL();
}

void shmfd__ring_commit_blob(struct shmfd_chan *c, uint64_t id, uint64_t size)
{
	struct shmfd__blob_desc *d =
		(void *)(rec_at(c->data, c->mask, c->resv_pos) + 1);

	d->id = id;
	d->size = size;
	STORE_RELAXED(&c->hdr->blob_id, id);
	publish(c, sizeof(*d), SHMFD_REC_BLOB, true);
}

void shmfd__ring_cancel(struct shmfd_chan *c)
{
	c->resv_pos = NO_RESV;
}

void shmfd__ring_close(struct shmfd_chan *c)
{
	uint32_t hi;

	STORE_RELEASE(&c->hdr->closed, 1);
	STORE_RELEASE(&c->hdr->futex, c->hdr->futex + 1);
	shmfd__futex_wake(&c->hdr->futex, INT_MAX);
	/* (8): every polling reader, asleep or not. */
	slots_enter(c);
	hi = LOAD_ACQUIRE(&c->slot_hi);
	for (uint32_t i = 0; i < hi; i++)
		if (LOAD_ACQUIRE(&c->slots[i].state) == SLOT_LIVE)
			wake_sock(&c->slots[i]);
	slots_exit(c);
}

/* ---- reader side ---- */

/* (4): before this reader waits itself, wake a producer that waits for
 * more than it needs, if this reader's tail already gives it that. */
void shmfd__ring_wake_needy(struct shmfd_reader *r)
{
	uint64_t want;

	if (r->lossy)
		return;
	want = LOAD_ACQUIRE(&r->hdr->want);
	if (!want || want == r->last_want ||
	    r->tail < LOAD_RELAXED(&r->hdr->need))
		return;
	r->last_want = want;
	__atomic_fetch_add(&r->page->wake, 1, __ATOMIC_RELEASE);
	shmfd__futex_wake(&r->page->wake, 1);
}

/* (4): publish how far this reader is done; wake a waiting producer. */
void shmfd__ring_publish_tail(struct shmfd_reader *r, uint64_t tail)
{
	uint64_t want;

	if (r->lossy || tail == r->tail)
		return;
	r->tail = tail;
	STORE_RELEASE(&r->page->tail, tail);
	if (r->asym)
		COMPILER_BARRIER();	/* (7): a waiting producer fences us */
	else
		FENCE_FULL();
	want = LOAD_ACQUIRE(&r->hdr->want);
	if (want && tail >= want && want != r->last_want) {
		r->last_want = want;
		__atomic_fetch_add(&r->page->wake, 1, __ATOMIC_RELEASE);
		shmfd__futex_wake(&r->page->wake, 1);
	}
}

/*
 * Take the next record.  0: msg filled, *posp and *endp set.  -EAGAIN:
 * nothing published past pos.  -EPROTO: the producer broke the protocol
 * (a record that cannot be, a head going backwards).
 */
int shmfd__ring_take(struct shmfd_reader *r, struct shmfd_msg *msg,
		     unsigned int flags, struct shmfd__taken *t)
{
	const struct shmfd__ring_hdr *hdr = r->hdr;

	t->skipped = false;
	for (;;) {
		const struct shmfd__rec *rec;
		uint64_t h, o, p = r->pos, off, span, seq;
		uint32_t len, type;

		if (flags & SHMFD_RECV_LATEST) {
			/* latest is stored before head, so a latest below
			 * the head we load next is a published record. */
			uint64_t l = LOAD_ACQUIRE(&hdr->latest);

			h = LOAD_ACQUIRE(&hdr->head);
			if (l > p && l < h) {
				p = l;
				t->skipped = true;
			}
		} else if (r->pos < r->head) {
			/* Behind: records up to the head we loaded last are
			 * published already; the shared line stays alone. */
			h = r->head;
		} else {
			h = LOAD_ACQUIRE(&hdr->head);
		}
		if (h == r->pos)
			return -EAGAIN;
		if (h < r->pos || h % SHMFD_REC_ALIGN)
			return -EPROTO;
		r->head = h;
		/* (2).  A reliable reader's records stay in place from
		 * join_head on while it is LIVE (its tail holds them), so
		 * oldest passes it only once the producer has dropped it:
		 * what it would read may be overwritten, and nothing more
		 * will come.  Before join_head (FROM_OLDEST) the sender may
		 * overwrite before it sees us: skip that, as lossy does. */
		o = LOAD_ACQUIRE(&hdr->oldest);
		if (p < o) {
			if (!r->lossy && p >= r->join_head)
				return -ECONNRESET;
			p = o;	/* overrun: skip what was overwritten */
			t->skipped = true;
		}
		if (p >= h) {
			/* oldest never passes head: an h loaded after o
			 * must cover it, unless the producer lies. */
			h = LOAD_ACQUIRE(&hdr->head);
			if (o > h)
				return -EPROTO;
			if (o == h) {
				/* All we had not read is gone, and nothing
				 * newer is published: wait there, or we
				 * would spin here. */
				r->pos = r->head = o;
				return -EAGAIN;
			}
			r->head = 0;	/* ours is behind: load it */
			continue;
		}
		if (p % SHMFD_REC_ALIGN || h - p > r->size)
			return -EPROTO;

		off = p & r->mask;
		rec = (const struct shmfd__rec *)(r->data + off);
		len = LOAD_RELAXED(&rec->len);
		type = LOAD_RELAXED(&rec->type);
		seq = LOAD_RELAXED(&rec->seq);
		/* A descriptor that would lie past the data area is not
		 * read: zeros, refused below. */
		t->blob.id = t->blob.size = 0;
		if (type == SHMFD_REC_BLOB && len == sizeof(t->blob) &&
		    off + sizeof(*rec) + len <= r->size) {
			const struct shmfd__blob_desc *d = (const void *)(rec + 1);

			t->blob.id = LOAD_RELAXED(&d->id);
			t->blob.size = LOAD_RELAXED(&d->size);
		}
		FENCE_ACQUIRE();	/* (2) */
		if (LOAD_RELAXED(&hdr->oldest) > p)
			continue;	/* overwritten while we looked */

		/* A record, PAD included, lies wholly below head.  Compared
		 * as lengths: p + span can wrap past 2^64, h - p cannot. */
		span = ALIGN_UP((uint64_t)len + sizeof(*rec), SHMFD_REC_ALIGN);
		if (span > h - p)
			return -EPROTO;
		if (type == SHMFD_REC_PAD) {
			if (off + sizeof(*rec) + len != r->size)
				return -EPROTO;
			r->pos = p + span;
			if (r->held_first == HELD_NONE)
				shmfd__ring_publish_tail(r, r->pos);
			continue;
		}
		if (type == SHMFD_REC_BLOB) {
			if (len != sizeof(t->blob) || !t->blob.id ||
			    !t->blob.size)
				return -EPROTO;
		} else if (type != SHMFD_REC_MSG) {
			return -EPROTO;
		}
		if ((type == SHMFD_REC_MSG && len > r->max_inline) ||
		    off + sizeof(*rec) + len > r->size)
			return -EPROTO;
		/* No producer reaches seq 2^64 - 1; one that says so would
		 * wrap next_seq to 0 and then go back unnoticed. */
		if (seq == 0 || seq == UINT64_MAX ||
		    (r->next_seq && seq < r->next_seq))
			return -EPROTO;

		msg->data = rec + 1;
		msg->len = len;
		msg->seq = seq;
		msg->lost = r->next_seq ? seq - r->next_seq : 0;
		msg->flags = 0;
		msg->fd = -1;
		r->next_seq = seq + 1;
		r->pos = p + span;
		t->pos = p;
		t->end = p + span;
		t->type = type;
		return 0;
	}
}

/* (2): was the record at pos overwritten since it was taken? */
bool shmfd__ring_stale(const struct shmfd_reader *r, uint64_t pos)
{
	/* Reliable: only once the producer dropped us (ring_take). */
	FENCE_ACQUIRE();
	return LOAD_RELAXED(&r->hdr->oldest) > pos;
}
