/* SPDX-License-Identifier: MIT */
/*
 * A peer kit for tests: a producer and a reader that speak the protocol
 * as man/shmfd-protocol.7 writes it down, and nothing else.  Every
 * structure, offset and constant below is transcribed from that page;
 * this file never includes lib/.  So a test that pits the library
 * against a well-behaved kit peer checks the page as much as the code,
 * and the hostile variants break one rule of the page at a time.
 *
 * Fake producer: a ring memfd with chosen seals, size and header
 * (pk_ring_*), records published by rule (1) and wakes by rule (3), a
 * listening socket in $SHMFD_DIR (pk_listen), hellos read (pk_take_hello),
 * welcomes and blob fd messages sent.  Fake reader: a reader page with
 * chosen seals and contents (pk_page), a hello with chosen bytes and fds
 * (pk_send), the answer read (pk_await_welcome), and a complete,
 * well-behaved reader that follows the page (pk_join_*, pk_next).
 *
 * A victim -- the library side of a test -- is watched by pk_victim_*:
 * a watchdog aborts a call that hangs, and the fds open before and after
 * are counted.
 */
#ifndef SHMFD_TEST_PEERKIT_H
#define SHMFD_TEST_PEERKIT_H

#include <assert.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "helpers.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE	0x0010	/* Linux 5.1 */
#endif

/* ---- shmfd-protocol(7), version 1 ---- */

#define PK_VERSION		1u
#define PK_HDR_SIZE		4096u
#define PK_PAGE_SIZE		4096u
#define PK_ALIGN		16u
#define PK_MIN_RING		65536u
#define PK_RING_MAGIC		0x474e495244464d53ull	/* "SMFDRING" */
#define PK_PAGE_MAGIC		0x45474150444d4653ull	/* "SFMDPAGE" */

/* Message types (HANDSHAKE). */
enum {
	PK_HELLO = 1,
	PK_WELCOME = 2,
	PK_BYE = 3,
	PK_BLOB_FD = 4,
	PK_STAT_REQ = 5,
	PK_STATS = 6,
	PK_POLL_FD = 7,
};

struct pk_poll_fd {
	uint32_t type;
	uint32_t reserved;
};

/* Record types (THE RING). */
enum {
	PK_REC_MSG = 1,
	PK_REC_PAD = 2,
	PK_REC_BLOB = 3,
};

#define PK_RING_LOSSY		(1u << 0)	/* header and welcome flags */
#define PK_RING_ASYM		(1u << 1)
#define PK_FROM_OLDEST		(1u << 0)	/* hello flags */
#define PK_HELLO_FENCED		(1u << 31)

/* FILE DESCRIPTORS AND SEALS: what each memfd carries. */
#define PK_RING_SEALS	(F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | \
			 F_SEAL_SEAL)
#define PK_PAGE_SEALS	(F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
#define PK_BLOB_SEALS	(F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | \
			 F_SEAL_SEAL)

struct pk_hello {
	uint32_t type;
	uint32_t version;
	uint32_t flags;
	uint32_t nfds;
};

struct pk_welcome {
	uint32_t type;
	uint32_t version;
	int32_t  status;
	uint32_t flags;
	uint64_t ring_size;
	uint64_t max_inline;
	uint64_t start_pos;
	uint64_t start_seq;
	uint64_t join_head;
	uint32_t slot;
	int32_t  producer_pid;
};

struct pk_bye {
	uint32_t type;
	uint32_t reserved;
};

struct pk_blob_fd {
	uint32_t type;
	uint32_t reserved;
	uint64_t id;
	uint64_t seq;
	uint64_t size;
};

struct pk_stat_req {
	uint32_t type;
	uint32_t version;
};

struct pk_stats {
	uint32_t type;
	uint32_t version;
	int32_t  status;
	uint32_t flags;
	uint64_t ring_size;
	uint64_t max_inline;
	uint32_t max_readers;
	uint32_t readers;
	int32_t  producer_pid;
	uint32_t reserved;
	uint64_t published;
	uint64_t lost;
	uint64_t joins;
};

struct pk_ring_hdr {
	uint64_t magic;			/*   0 */
	uint32_t version;		/*   8 */
	uint32_t hdr_size;		/*  12 */
	uint64_t ring_size;		/*  16 */
	uint64_t max_inline;		/*  24 */
	uint32_t flags;			/*  32 */
	uint32_t max_readers;		/*  36 */
	int32_t  producer_pid;		/*  40 */
	uint32_t reserved0[5];		/*  44 */
	uint64_t head;			/*  64 */
	uint64_t latest;		/*  72 */
	uint64_t seq;			/*  80 */
	uint32_t commit_gen;		/*  88 */
	uint32_t reserved1;		/*  92 */
	uint64_t blob_id;		/*  96 */
	uint8_t  gap1[24];
	uint32_t futex;			/* 128 */
	uint32_t closed;		/* 132 */
	uint64_t ahead;			/* 136 */
	uint8_t  gap2[48];
	uint64_t oldest;		/* 192 */
	uint8_t  gap3[56];
	uint64_t want;			/* 256 */
	uint64_t need;			/* 264 */
};

struct pk_rec {
	uint32_t len;
	uint32_t type;
	uint64_t seq;
};

struct pk_blob_desc {
	uint64_t id;
	uint64_t size;
};

struct pk_page {
	uint64_t magic;			/*   0 */
	uint32_t version;		/*   8 */
	uint32_t reserved0;		/*  12 */
	uint8_t  gap1[48];
	uint64_t tail;			/*  64 */
	uint32_t wake;			/*  72 */
	uint8_t  gap2[52];
	uint64_t sleep_pos;		/* 128 */
	uint32_t polls;			/* 136 */
	uint8_t  gap3[52];
	uint64_t lost;			/* 192 */
	uint8_t  gap4[56];
	uint32_t dropped;		/* 256 */
};

static_assert(sizeof(struct pk_hello) == 16, "page: hello");
static_assert(sizeof(struct pk_welcome) == 64, "page: welcome");
static_assert(offsetof(struct pk_welcome, slot) == 56, "page: welcome");
static_assert(sizeof(struct pk_bye) == 8, "page: bye");
static_assert(sizeof(struct pk_poll_fd) == 8, "page: poll fd");
static_assert(sizeof(struct pk_blob_fd) == 32, "page: blob fd");
static_assert(sizeof(struct pk_stat_req) == 8, "page: stat request");
static_assert(sizeof(struct pk_stats) == 72, "page: stats");
static_assert(offsetof(struct pk_stats, joins) == 64, "page: stats");
static_assert(offsetof(struct pk_ring_hdr, head) == 64, "page: header");
static_assert(offsetof(struct pk_ring_hdr, blob_id) == 96, "page: header");
static_assert(offsetof(struct pk_ring_hdr, futex) == 128, "page: header");
static_assert(offsetof(struct pk_ring_hdr, ahead) == 136, "page: header");
static_assert(offsetof(struct pk_ring_hdr, oldest) == 192, "page: header");
static_assert(offsetof(struct pk_ring_hdr, need) == 264, "page: header");
static_assert(sizeof(struct pk_rec) == 16, "page: record");
static_assert(offsetof(struct pk_page, tail) == 64, "page: reader page");
static_assert(offsetof(struct pk_page, wake) == 72, "page: reader page");
static_assert(offsetof(struct pk_page, sleep_pos) == 128, "page: rpage");
static_assert(offsetof(struct pk_page, polls) == 136, "page: rpage");
static_assert(offsetof(struct pk_page, lost) == 192, "page: reader page");
static_assert(offsetof(struct pk_page, dropped) == 256, "page: rpage");

/* ---- transport ---- */

/* One datagram with nfds fds (SCM_RIGHTS), MSG_NOSIGNAL: 0 or -errno. */
int pk_send(int sock, const void *buf, size_t len, const int *fds, int nfds);
/*
 * One datagram within ms (-1: DEADLINE_MS): its length, 0 on hang-up,
 * -ETIMEDOUT, or -errno.  Up to maxfds fds land in fds (*nfds of them;
 * more are closed); *trunc says whether MSG_TRUNC or MSG_CTRUNC was set.
 */
int pk_recv(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds,
	    bool *trunc, int ms);
void pk_close_fds(const int *fds, int n);

/* ---- memfds ---- */

/* A memfd named name of size bytes, zero-filled, then sealed. */
int pk_memfd(const char *name, size_t size, int seals);
/* A reader page: size bytes (PK_PAGE_SIZE for a good one) holding magic
 * and version, then sealed. */
int pk_page(size_t size, int seals, uint64_t magic, uint32_t version);
#define pk_good_page() pk_page(PK_PAGE_SIZE, PK_PAGE_SEALS, PK_PAGE_MAGIC, \
			       PK_VERSION)
/* A blob memfd of size bytes holding th_fill(seq), then sealed. */
int pk_blob(const char *name, size_t size, uint64_t seq, int seals);

/* ---- fake producer ---- */

/* A ring the fake keeps mapped writable. */
struct pk_ring {
	int fd;
	size_t map_size;
	struct pk_ring_hdr *hdr;
	uint8_t *data;
	uint64_t size;			/* data area */
	uint64_t head;			/* where the next record goes */
	uint64_t seq;			/* last published */
};

/*
 * A ring of ring_size data bytes with flags in its header, made as the
 * page says: header written, then sealed PK_RING_SEALS.  file_size 0
 * means the right size (PK_HDR_SIZE + ring_size); seals -1 the right
 * seals.  The header says ring_size, max_inline ring_size / 4.
 */
void pk_ring_init(struct pk_ring *r, uint64_t ring_size, uint32_t flags,
		  size_t file_size, int seals);
void pk_ring_free(struct pk_ring *r);
/*
 * Publish one record at head by rule (1) -- a PAD first where the rest
 * of the data area is too short -- and wake sleepers by rule (3).  For a
 * blob, payload is its struct pk_blob_desc.  Returns the record's start.
 */
uint64_t pk_ring_put(struct pk_ring *r, uint32_t type, uint64_t seq,
		     const void *payload, uint32_t len);
/* An inline message of len bytes holding th_fill(seq), seq r->seq + 1. */
uint64_t pk_ring_msg(struct pk_ring *r, size_t len);
/* Store a raw head (release) and wake, as a hostile producer might. */
void pk_ring_set_head(struct pk_ring *r, uint64_t head);
/* Set closed and wake, as the producer's close does. */
void pk_ring_close(struct pk_ring *r);
/* The welcome for a reader starting at the ring's head now. */
struct pk_welcome pk_welcome_at_head(const struct pk_ring *r);

/* Listen on $SHMFD_DIR/name. */
int pk_listen(const char *name);
/* Accept one connection within DEADLINE_MS. */
int pk_accept(int lfd);
/*
 * Read a hello (or whatever comes first) on sock: its length, the fds in
 * fds[0..*nfds).  Fails the test on a hang-up or at the deadline.
 */
int pk_take_hello(int sock, struct pk_hello *h, int *fds, int *nfds);
/* A blob fd message: id, seq, size, and fd (if fd >= 0). */
void pk_send_blob_fd(int sock, uint64_t id, uint64_t seq, uint64_t size,
		     int fd);

/* ---- fake reader ---- */

/* Connect to $SHMFD_DIR/name: the socket, or -errno. */
int pk_connect(const char *name);
/*
 * Wait for the answer to a hello: the welcome's status (0 with the ring
 * fd in *ring_fd, if not NULL, else it is closed), PK_HUNG_UP when the
 * producer closed the connection without one.  Blob fd messages before
 * it are closed.  Fails the test on anything else.
 */
#define PK_HUNG_UP	1
int pk_await_welcome(int sock, struct pk_welcome *w, int *ring_fd);

/* A complete reader following the page: no fences skipped (it says
 * SHMFD_HELLO_FENCED), never sleeps on the futex, polls instead. */
struct pk_reader {
	int sock;			/* the joined connection */
	struct pk_welcome w;
	const struct pk_ring_hdr *hdr;	/* read-only */
	const uint8_t *data;
	size_t map_size;
	struct pk_page *page;		/* our page, writable */
	uint64_t pos;
	uint64_t next_seq;
};

struct pk_msg {
	uint64_t seq;
	uint64_t lost;
	uint32_t type;			/* PK_REC_MSG or PK_REC_BLOB */
	const void *data;		/* ring payload */
	uint32_t len;
};

/* Join by name / through a share fd (kept by the caller): 0, the
 * welcome's status, or PK_HUNG_UP. */
int pk_join_named(struct pk_reader *r, const char *name, uint32_t flags);
int pk_join_share(struct pk_reader *r, int share_fd, uint32_t flags);
/* The next record after rule (1), within ms: 0, -EAGAIN at the deadline,
 * -EPIPE once closed and drained, -EPROTO for what the page forbids.
 * A record is released at once (tail moves past it). */
int pk_next(struct pk_reader *r, struct pk_msg *m, int ms);
/* Leave: a bye if asked, then close everything. */
void pk_reader_close(struct pk_reader *r, bool bye);

/* ---- the victim ---- */

struct pk_victim {
	struct th_fds fds;
	int count;
	pthread_t watchdog;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int seconds;
	const char *what;
};

/* Count the fds open now and arm a watchdog: a victim still inside the
 * library after seconds is a hang, and the test process aborts. */
void pk_victim_begin(struct pk_victim *v, const char *what, int seconds);
/* Disarm; fail the test if an fd was opened and not closed since begin
 * (or, with extra, if other than that many more are open). */
void pk_victim_end_at(const char *file, int line, struct pk_victim *v,
		      int extra);
#define pk_victim_end(v) pk_victim_end_at(__FILE__, __LINE__, (v), 0)

#endif /* SHMFD_TEST_PEERKIT_H */
