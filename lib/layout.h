/* SPDX-License-Identifier: MIT */
/*
 * The shared-memory layout: the only place it is defined.  Every peer
 * maps these structures, so offsets and sizes are fixed by static asserts
 * and documented in shmfd(7).  All integers are little-endian host order
 * (one host), positions are 64-bit byte counts that never wrap.
 *
 * Ring memfd (created and written only by the producer, sealed
 * SHRINK|GROW|FUTURE_WRITE|SEAL; readers map it read-only):
 *
 *   [0, 4096)             struct shmfd__ring_hdr
 *   [4096, 4096 + size)   data area: a byte ring of records, size a power
 *                         of two; position p lives at 4096 + (p & (size-1))
 *
 * A record starts at a 16-byte aligned position with struct shmfd__rec and
 * its payload follows; the next record starts at the next 16-byte boundary.
 * A record never wraps: when the tail of the data area is too short, the
 * producer fills it with a PAD record whose payload runs exactly to the end.
 *
 * Reader page (one 4096-byte memfd per reader, created and written by the
 * reader, sealed SHRINK|GROW|SEAL so the producer can map it without fear
 * of SIGBUS): struct shmfd__reader_page.
 */
#ifndef SHMFD_LAYOUT_H
#define SHMFD_LAYOUT_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#define SHMFD_RING_MAGIC	0x474e495244464d53ull	/* "SMFDRING" */
#define SHMFD_RPAGE_MAGIC	0x45474150444d4653ull	/* "SFMDPAGE" */
#define SHMFD_PROTO_VERSION	1u
#define SHMFD_HDR_SIZE		4096u
#define SHMFD_RPAGE_SIZE	4096u
#define SHMFD_REC_ALIGN		16u
#define SHMFD_MIN_RING		(64u << 10)
#define SHMFD_MAX_RING		(1ull << 32)
#define SHMFD_CACHELINE		64

/* shmfd__ring_hdr.flags */
#define SHMFD_RING_LOSSY	(1u << 0)
/* The producer has no fence between publishing and looking for sleepers
 * (ring.c (7)): a reader must call membarrier(GLOBAL_EXPEDITED) between
 * announcing a sleep and its last look at head -- unless it joined with
 * SHMFD_HELLO_FENCED, which makes the producer fence for it. */
#define SHMFD_RING_ASYM		(1u << 1)

struct shmfd__ring_hdr {
	/* Written once before the ring is sealed; readers validate. */
	uint64_t magic;
	uint32_t version;
	uint32_t hdr_size;		/* SHMFD_HDR_SIZE: data starts here */
	uint64_t ring_size;		/* data area bytes, power of two */
	uint64_t max_inline;		/* largest record payload */
	uint32_t flags;			/* SHMFD_RING_LOSSY, _ASYM */
	uint32_t max_readers;
	int32_t  producer_pid;
	uint32_t reserved0[5];

	/* Producer, on every commit.  commit_gen is odd while the three
	 * words after it change, so a reader of the header (the producer's
	 * own admission thread) can take a consistent head and seq. */
	uint64_t head		/* end of the last published record */
		__attribute__((aligned(SHMFD_CACHELINE)));
	uint64_t latest;		/* start of the last published record */
	uint64_t seq;			/* seq of the last published record */
	uint32_t commit_gen;
	uint32_t reserved1;
	uint64_t blob_id;		/* id of the last published blob, or 0 */

	/* Producer, when it wakes readers or closes. */
	uint32_t futex			/* readers sleep on this word */
		__attribute__((aligned(SHMFD_CACHELINE)));
	uint32_t closed;		/* 1 once shmfd_chan_close() ran */
	/* Producer, when it reserves a large record: head + 1, the record
	 * being built at head (ring.c (9)); a hint, nothing depends on it. */
	uint64_t ahead;

	/* Producer, before it overwrites old records. */
	uint64_t oldest			/* start of the oldest intact record */
		__attribute__((aligned(SHMFD_CACHELINE)));

	/* Producer, when it waits for space (reliable mode): it sleeps
	 * until the slowest tail reaches want, a chunk past need, the tail
	 * it cannot do without.  need is stored before want. */
	uint64_t want			/* 0, or the tail it waits for */
		__attribute__((aligned(SHMFD_CACHELINE)));
	uint64_t need;			/* the tail it needs, when want != 0 */
};

static_assert(offsetof(struct shmfd__ring_hdr, magic) == 0, "layout");
static_assert(offsetof(struct shmfd__ring_hdr, version) == 8, "layout");
static_assert(offsetof(struct shmfd__ring_hdr, hdr_size) == 12, "layout");
static_assert(offsetof(struct shmfd__ring_hdr, ring_size) == 16, "layout");
static_assert(offsetof(struct shmfd__ring_hdr, max_inline) == 24, "layout");
static_assert(offsetof(struct shmfd__ring_hdr, flags) == 32, "layout");
static_assert(offsetof(struct shmfd__ring_hdr, max_readers) == 36, "layout");
static_assert(offsetof(struct shmfd__ring_hdr, producer_pid) == 40, "layout");
static_assert(offsetof(struct shmfd__ring_hdr, head) == 64, "layout");
static_assert(offsetof(struct shmfd__ring_hdr, latest) == 72, "layout");
static_assert(offsetof(struct shmfd__ring_hdr, seq) == 80, "layout");
static_assert(offsetof(struct shmfd__ring_hdr, commit_gen) == 88, "layout");
static_assert(offsetof(struct shmfd__ring_hdr, blob_id) == 96, "layout");
static_assert(offsetof(struct shmfd__ring_hdr, futex) == 128, "layout");
static_assert(offsetof(struct shmfd__ring_hdr, closed) == 132, "layout");
static_assert(offsetof(struct shmfd__ring_hdr, ahead) == 136, "layout");
static_assert(offsetof(struct shmfd__ring_hdr, oldest) == 192, "layout");
static_assert(offsetof(struct shmfd__ring_hdr, want) == 256, "layout");
static_assert(offsetof(struct shmfd__ring_hdr, need) == 264, "layout");
static_assert(sizeof(struct shmfd__ring_hdr) <= SHMFD_HDR_SIZE, "layout");

/* shmfd__rec.type */
#define SHMFD_REC_MSG		1u	/* an inline message */
#define SHMFD_REC_PAD		2u	/* filler to the end of the data area */
#define SHMFD_REC_BLOB		3u	/* a blob: payload is shmfd__blob_desc */

struct shmfd__rec {
	uint32_t len;			/* payload bytes */
	uint32_t type;			/* SHMFD_REC_* */
	uint64_t seq;			/* MSG: 1, 2, 3 ...; PAD: 0 */
};

static_assert(sizeof(struct shmfd__rec) == SHMFD_REC_ALIGN, "layout");

/*
 * A blob travels as its own memfd, sealed WRITE|SHRINK|GROW|SEAL.  Its fd
 * goes to each reader's socket (struct shmfd__blob_fd) before the record
 * that names it is published, so a reader that finds the record finds the
 * fd already queued.  Ids start at 1 and only grow; an fd message whose id
 * never shows up in the ring (a send that failed half-way) is discarded.
 */
struct shmfd__blob_desc {
	uint64_t id;
	uint64_t size;			/* bytes; the memfd is exactly this long */
};

static_assert(sizeof(struct shmfd__blob_desc) == 16, "layout");

struct shmfd__reader_page {
	uint64_t magic;			/* SHMFD_RPAGE_MAGIC */
	uint32_t version;
	uint32_t reserved0;

	/* Reader, on release (reliable mode): all records before it are done. */
	uint64_t tail
		__attribute__((aligned(SHMFD_CACHELINE)));
	/* Reader, bumped when it wakes a producer waiting on ring.want. */
	uint32_t wake;

	/* Reader, around a sleep: 0, or the head value it waits for. */
	uint64_t sleep_pos
		__attribute__((aligned(SHMFD_CACHELINE)));
	/* Reader, once: 1 if its sleeps are for a poll fd, which an early
	 * wake (ring.c (9)) would only make spuriously readable. */
	uint32_t polls;

	/* Reader, when a message it receives says some were skipped: the
	 * total of msg.lost so far.  Only statistics read it (the producer's
	 * admission thread, for shmfd_chan_stat()); nothing depends on it. */
	uint64_t lost
		__attribute__((aligned(SHMFD_CACHELINE)));

	/* Producer (its admission thread), once, when it drops this reader
	 * (before it closes the reader's socket): a reader that then sees
	 * the hang-up knows it was dropped, not that the producer died. */
	uint32_t dropped
		__attribute__((aligned(SHMFD_CACHELINE)));
};

static_assert(offsetof(struct shmfd__reader_page, tail) == 64, "layout");
static_assert(offsetof(struct shmfd__reader_page, wake) == 72, "layout");
static_assert(offsetof(struct shmfd__reader_page, sleep_pos) == 128, "layout");
static_assert(offsetof(struct shmfd__reader_page, polls) == 136, "layout");
static_assert(offsetof(struct shmfd__reader_page, lost) == 192, "layout");
static_assert(offsetof(struct shmfd__reader_page, dropped) == 256, "layout");
static_assert(sizeof(struct shmfd__reader_page) <= SHMFD_RPAGE_SIZE, "layout");

/*
 * Handshake, over a SOCK_SEQPACKET Unix socket.  The reader sends a hello
 * with its page (and, through a share fd, the socket the producer should
 * answer on); the producer answers with a welcome and the ring memfd.
 *
 * On a named channel's socket, a stat request instead of the hello asks
 * for the channel's figures without joining: the producer answers with
 * one stats message, no fd, and closes the connection.
 */
#define SHMFD_MSG_HELLO		1u
#define SHMFD_MSG_WELCOME	2u
#define SHMFD_MSG_BYE		3u
#define SHMFD_MSG_BLOB_FD	4u	/* producer -> reader, one blob's fd */
#define SHMFD_MSG_STAT_REQ	5u	/* observer -> producer, no fd */
#define SHMFD_MSG_STATS		6u	/* producer -> observer, no fd */
#define SHMFD_MSG_POLL_FD	7u	/* reader -> producer, one socket */

/* shmfd__hello.flags, beside SHMFD_FROM_OLDEST: this reader cannot use
 * membarrier(2); it fences itself, and the producer must too (7). */
#define SHMFD_HELLO_FENCED	(1u << 31)

struct shmfd__hello {
	uint32_t type;			/* SHMFD_MSG_HELLO */
	uint32_t version;		/* SHMFD_PROTO_VERSION */
	uint32_t flags;			/* SHMFD_FROM_OLDEST, _HELLO_FENCED */
	uint32_t nfds;			/* 1 (page) or 2 (page, socket) */
};

struct shmfd__welcome {
	uint32_t type;			/* SHMFD_MSG_WELCOME */
	uint32_t version;
	int32_t  status;		/* 0, or -errno: then no fd follows */
	uint32_t flags;			/* SHMFD_RING_LOSSY, _ASYM */
	uint64_t ring_size;
	uint64_t max_inline;
	uint64_t start_pos;		/* first position this reader reads */
	uint64_t start_seq;		/* seq expected at start_pos */
	uint64_t join_head;		/* head when the reader was registered */
	uint32_t slot;
	int32_t  producer_pid;
};

struct shmfd__bye {
	uint32_t type;			/* SHMFD_MSG_BYE */
	uint32_t reserved;
};

/* Carries exactly one fd (SCM_RIGHTS): the sealed blob memfd. */
struct shmfd__blob_fd {
	uint32_t type;			/* SHMFD_MSG_BLOB_FD */
	uint32_t reserved;
	uint64_t id;			/* shmfd__blob_desc.id */
	uint64_t seq;			/* seq its record gets, if published */
	uint64_t size;
};

/*
 * A joined reader that wants a pollable fd without io_uring's futex
 * wait sends, once, one end of a SOCK_SEQPACKET pair.  From then on the
 * producer sends a 1-byte datagram on it (MSG_DONTWAIT) each time it
 * wakes this reader (ring.c (3)) and when it closes the channel; the
 * reader polls the other end.
 */
struct shmfd__poll_fd {
	uint32_t type;			/* SHMFD_MSG_POLL_FD */
	uint32_t reserved;
};

struct shmfd__stat_req {
	uint32_t type;			/* SHMFD_MSG_STAT_REQ */
	uint32_t version;		/* SHMFD_PROTO_VERSION */
};

struct shmfd__stats {
	uint32_t type;			/* SHMFD_MSG_STATS */
	uint32_t version;
	int32_t  status;		/* 0, or -errno: the rest is zero */
	uint32_t flags;			/* SHMFD_RING_LOSSY */
	uint64_t ring_size;
	uint64_t max_inline;
	uint32_t max_readers;
	uint32_t readers;		/* joined now */
	int32_t  producer_pid;
	uint32_t reserved;
	uint64_t published;		/* seq of the last published message */
	uint64_t lost;			/* msg.lost summed over every reader */
	uint64_t joins;			/* readers that ever joined */
};

static_assert(sizeof(struct shmfd__hello) == 16, "layout");
static_assert(sizeof(struct shmfd__stat_req) == 8, "layout");
static_assert(sizeof(struct shmfd__poll_fd) == 8, "layout");
static_assert(sizeof(struct shmfd__stats) == 72, "layout");
static_assert(sizeof(struct shmfd__blob_fd) == 32, "layout");
static_assert(sizeof(struct shmfd__welcome) == 64, "layout");

#endif /* SHMFD_LAYOUT_H */
