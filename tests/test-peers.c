/* SPDX-License-Identifier: MIT */
/*
 * Peers that break the protocol (DESIGN §4.2, §4.3), played by the peer
 * kit (peerkit.h), which speaks shmfd-protocol(7) as the page writes it.
 * Each case breaks one rule; the library is the victim and must answer
 * with a clear -errno (-EPROTO for a protocol violation), never crash,
 * never hang (a watchdog aborts a victim stuck in the library), keep no
 * fd of what it refused (counted before and after), and go on serving
 * the well-behaved peers: a good reader joined beside a bad one keeps
 * receiving, a producer goes on admitting readers, a reader refused by a
 * bad producer still joins a good one.  The "good" case of each table
 * proves the kit itself right, so that each refusal is for the one
 * defect the case adds.
 */
#define _GNU_SOURCE
#include "config.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <shmfd.h>

#include "helpers.h"
#include "peerkit.h"

#define NAME		"peers"
#define RING		(64u * 1024u)
/* Past the test's own waits (DEADLINE_MS), short of Check's timeout. */
#define WATCHDOG_S	(TEST_TIMEOUT_S * 3 / 4)
#define INLINE_LEN	100

/* A reader of this process that a bad producer refused still joins a
 * good channel and receives from it. */
static void expect_still_served(void)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, 0);
	int share = expect_ok(shmfd_chan_share_fd(chan));
	struct shmfd_reader *r = th_join(share, 0);
	struct shmfd_msg m;
	char buf[100];

	th_fill(buf, sizeof(buf), 1);
	expect_ok(shmfd_send(chan, buf, sizeof(buf), DEADLINE_MS));
	expect_ok(shmfd_recv(r, &m, 0, DEADLINE_MS));
	expect_next(r, &m, 1);
	shmfd_reader_close(r);
	close(share);
	shmfd_chan_close(chan);
}

/* ==== a bad producer at the handshake ==== */

enum {
	HS_GOOD,		/* a ring as the page says */
	HS_UNSEALED,		/* no seals at all */
	HS_NO_SHRINK,		/* all but F_SEAL_SHRINK: the SIGBUS trap */
	HS_WRITABLE,		/* neither WRITE nor FUTURE_WRITE */
	HS_SHORT,		/* sealed, a page shorter than announced */
	HS_PIPE,		/* not a memfd */
	HS_BAD_MAGIC,		/* sealed and sized, another magic */
	HS_NO_FD,		/* status 0 and no ring */
	HS_BAD_SIZE,		/* ring_size not a power of two */
	HS_V2_REFUSAL,		/* "I speak version 2 only" */
	HS_V2_WELCOME,		/* a version 2 welcome to a version 1 hello */
	HS_HDR_BIGGER,		/* header claims twice the ring it has */
	HS_ALL_BIGGER,		/* welcome and header both: the SIGBUS trap */
	HS_HDR_VERSION,		/* header of version 2 */
	HS_HDR_SIZE,		/* header's hdr_size not 4096 */
	HS_NO_SEAL_SEAL,	/* seals could still be added */
	HS_WRITE_SEALED,	/* F_SEAL_WRITE: useless, but harmless */
	HS_TWO_FDS,		/* the ring and another fd */
	HS_MAX_INLINE,		/* max_inline above ring_size / 2 - 16 */
	HS_START_UNALIGNED,	/* start_pos not a multiple of 16 */
	HS_JOIN_BEFORE_START,	/* join_head below start_pos */
	HS_JOIN_FAR,		/* join_head more than a ring above start */
	HS_START_SEQ_0,		/* start_seq 0 */
	HS_PID_0,		/* producer_pid 0 */
	HS_FLAGS,		/* an unknown welcome flag */
	HS_FLAGS_DIFFER,	/* welcome lossy, header not */
	HS_ERROR,		/* a refusal: reported as it is */
	HS_ERROR_POSITIVE,	/* a "refusal" of status 5 */
	HS_ERROR_WITH_FD,	/* a refusal that carries a ring */
	HS_GARBAGE,		/* 8 bytes */
	HS_SHORT_WELCOME,	/* 40 bytes */
	HS_LONG_WELCOME,	/* 100 bytes: truncated */
	HS_BAD_BLOB_FIRST,	/* a blob message without its fd first */
	HS_EMPTY_WITH_FD,	/* the ring on an empty datagram (fuzz-join) */
	HS_HANG_UP,		/* closes without an answer */
	HS_SILENT,		/* never answers: the join gives up */
	HS_COUNT
};

static const struct {
	const char *what;
	int want;
} hs_cases[HS_COUNT] = {
	[HS_GOOD]	= { "good ring", 0 },
	[HS_UNSEALED]	= { "unsealed ring", -EPROTO },
	[HS_NO_SHRINK]	= { "ring without F_SEAL_SHRINK", -EPROTO },
	[HS_WRITABLE]	= { "ring without a write seal", -EPROTO },
	[HS_SHORT]	= { "ring file shorter than announced", -EPROTO },
	[HS_PIPE]	= { "pipe for a ring", -EPROTO },
	[HS_BAD_MAGIC]	= { "ring header with a wrong magic", -EPROTO },
	[HS_NO_FD]	= { "welcome without the ring", -EPROTO },
	[HS_BAD_SIZE]	= { "welcome ring_size not a power of two", -EPROTO },
	[HS_V2_REFUSAL]	= { "refusal by a version 2 producer",
			    -EPROTONOSUPPORT },
	[HS_V2_WELCOME]	= { "welcome of version 2", -EPROTO },
	[HS_HDR_BIGGER]	= { "header claims a bigger ring", -EPROTO },
	[HS_ALL_BIGGER]	= { "welcome and header claim more than the file",
			    -EPROTO },
	[HS_HDR_VERSION] = { "ring header of version 2", -EPROTO },
	[HS_HDR_SIZE]	= { "ring header's hdr_size 8192", -EPROTO },
	[HS_NO_SEAL_SEAL] = { "ring without F_SEAL_SEAL", -EPROTO },
	[HS_WRITE_SEALED] = { "ring sealed F_SEAL_WRITE", 0 },
	[HS_TWO_FDS]	= { "welcome with two fds", -EPROTO },
	[HS_MAX_INLINE]	= { "max_inline above half the ring", -EPROTO },
	[HS_START_UNALIGNED] = { "start_pos not aligned", -EPROTO },
	[HS_JOIN_BEFORE_START] = { "join_head below start_pos", -EPROTO },
	[HS_JOIN_FAR]	= { "join_head a ring above start_pos", -EPROTO },
	[HS_START_SEQ_0] = { "start_seq 0", -EPROTO },
	[HS_PID_0]	= { "producer_pid 0", -EPROTO },
	[HS_FLAGS]	= { "unknown welcome flag", -EPROTO },
	[HS_FLAGS_DIFFER] = { "welcome flags unlike the header's", -EPROTO },
	[HS_ERROR]	= { "refusal -EUSERS", -EUSERS },
	[HS_ERROR_POSITIVE] = { "refusal of status 5", -EPROTO },
	[HS_ERROR_WITH_FD] = { "refusal with a ring", -EPROTO },
	[HS_GARBAGE]	= { "8 bytes of garbage", -EPROTO },
	[HS_SHORT_WELCOME] = { "welcome of 40 bytes", -EPROTO },
	[HS_LONG_WELCOME] = { "welcome of 100 bytes", -EPROTO },
	[HS_BAD_BLOB_FIRST] = { "blob message without fd first", -EPROTO },
	/* Not a hang-up: the fd says something came. */
	[HS_EMPTY_WITH_FD] = { "ring fd on an empty datagram", -EPROTO },
	[HS_HANG_UP]	= { "hang-up for an answer", -EPIPE },
	/* The library's reader waits 10 s for a welcome. */
	[HS_SILENT]	= { "no answer", -ETIMEDOUT },
};

/* Which case, and how the fake is reached: by name, or through a share
 * fd (sp: the pair, sp[1] the fake's end). */
struct hs_arg {
	int how;
	int sp[2];
};

/* Listen on NAME (or take the share fd's end), take one hello, answer as
 * case how says; stay until the test has seen the reader decide. */
static int hs_producer(int ctl, void *arg)
{
	const struct hs_arg *a = arg;
	int how = a->how;
	size_t file = 0;
	int seals = -1, lfd = -1, conn, fds[4], nfds, send_fd[1], nsend = 1;
	int pfd[2] = { -1, -1 };
	struct pk_welcome w;
	struct pk_hello h;
	struct pk_ring r;

	switch (how) {
	case HS_UNSEALED:
		seals = 0;
		break;
	case HS_NO_SHRINK:
		seals = PK_RING_SEALS & ~F_SEAL_SHRINK;
		break;
	case HS_WRITABLE:
		seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
		break;
	case HS_SHORT:
		file = PK_HDR_SIZE + RING - 4096;
		break;
	case HS_NO_SEAL_SEAL:
		seals = PK_RING_SEALS & ~F_SEAL_SEAL;
		break;
	case HS_WRITE_SEALED:
		seals = PK_BLOB_SEALS;
		break;
	case HS_ALL_BIGGER:
		file = PK_HDR_SIZE + RING;
		break;
	default:
		break;
	}
	pk_ring_init(&r, how == HS_ALL_BIGGER ? 2 * RING : RING, 0, file,
		     seals);
	if (how == HS_BAD_MAGIC)
		r.hdr->magic = PK_PAGE_MAGIC;	/* a reader page's */
	else if (how == HS_HDR_BIGGER)
		r.hdr->ring_size = 2 * RING;
	else if (how == HS_HDR_VERSION)
		r.hdr->version = 2;
	else if (how == HS_HDR_SIZE)
		r.hdr->hdr_size = 8192;
	w = pk_welcome_at_head(&r);
	send_fd[0] = r.fd;
	if (how == HS_PIPE) {
		expect_sys(pipe2(pfd, O_CLOEXEC));
		send_fd[0] = pfd[0];
	} else if (how == HS_NO_FD) {
		nsend = 0;
	} else if (how == HS_BAD_SIZE) {
		w.ring_size = RING + 4096;
	} else if (how == HS_V2_REFUSAL) {
		/* The error answer every version shares. */
		memset(&w, 0, sizeof(w));
		w.type = PK_WELCOME;
		w.version = 2;
		w.status = -EPROTONOSUPPORT;
		nsend = 0;
	} else if (how == HS_V2_WELCOME) {
		w.version = 2;
	} else if (how == HS_MAX_INLINE) {
		w.max_inline = RING / 2;
	} else if (how == HS_START_UNALIGNED) {
		w.start_pos = w.join_head = 8;
	} else if (how == HS_JOIN_BEFORE_START) {
		w.start_pos = 64;
	} else if (how == HS_JOIN_FAR) {
		w.join_head = RING + 16;
	} else if (how == HS_START_SEQ_0) {
		w.start_seq = 0;
	} else if (how == HS_PID_0) {
		w.producer_pid = 0;
	} else if (how == HS_FLAGS) {
		w.flags = 1u << 5;
	} else if (how == HS_FLAGS_DIFFER) {
		w.flags = PK_RING_LOSSY;
	} else if (how == HS_ERROR || how == HS_ERROR_POSITIVE ||
		   how == HS_ERROR_WITH_FD) {
		memset(&w, 0, sizeof(w));
		w.type = PK_WELCOME;
		w.version = PK_VERSION;
		w.status = how == HS_ERROR_POSITIVE ? 5 : -EUSERS;
		nsend = how == HS_ERROR_WITH_FD;
	}

	if (a->sp[1] >= 0) {
		/* A share fd: the answer goes on the socket the hello
		 * brought, after the page. */
		close(a->sp[0]);
		th_put(ctl, 1);
		pk_take_hello(a->sp[1], &h, fds, &nfds);
		expect_eq(nfds, 2);
		close(fds[0]);
		conn = fds[1];
	} else {
		lfd = pk_listen(NAME);
		th_put(ctl, 1);
		conn = pk_accept(lfd);
		pk_take_hello(conn, &h, fds, &nfds);
		pk_close_fds(fds, nfds);
	}
	switch (how) {
	case HS_TWO_FDS: {
		int two[2] = { r.fd, r.fd };

		expect_eq(pk_send(conn, &w, sizeof(w), two, 2), 0);
		break;
	}
	case HS_GARBAGE:
		expect_eq(pk_send(conn, "garbage!", 8, NULL, 0), 0);
		break;
	case HS_SHORT_WELCOME:
		expect_eq(pk_send(conn, &w, 40, &r.fd, 1), 0);
		break;
	case HS_LONG_WELCOME: {
		char big[100] = { 0 };

		memcpy(big, &w, sizeof(w));
		expect_eq(pk_send(conn, big, sizeof(big), &r.fd, 1), 0);
		break;
	}
	case HS_BAD_BLOB_FIRST:
		pk_send_blob_fd(conn, 1, 1, 4096, -1);
		/* The reader may have hung up already. */
		(void)pk_send(conn, &w, sizeof(w), &r.fd, 1);
		break;
	case HS_EMPTY_WITH_FD:
		expect_eq(pk_send(conn, &w, 0, &r.fd, 1), 0);
		break;
	case HS_HANG_UP:
		close(conn);
		conn = -1;
		break;
	case HS_SILENT:
		break;
	default:
		expect_eq(pk_send(conn, &w, sizeof(w), send_fd, nsend), 0);
		break;
	}
	th_get(ctl);
	pk_close_fds(pfd, 2);
	pk_ring_free(&r);
	pk_close_fds(&conn, 1);
	pk_close_fds(&lfd, 1);
	return 0;
}

/* _i: case _i / 2, by name (even) or through a share fd (odd). */
START_TEST(test_bad_producer_handshake)
{
	struct hs_arg a = { .how = _i / 2, .sp = { -1, -1 } };
	const char *what = hs_cases[a.how].what;
	int want = hs_cases[a.how].want, ret, fd = -1;
	struct shmfd_reader *r = NULL;
	struct shmfd_msg m;
	struct pk_victim v;
	struct th_child c;

	if (_i % 2)
		expect_sys(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC,
				      0, a.sp));
	c = th_spawn(hs_producer, &a, 0);
	pk_close_fds(&a.sp[1], 1);
	th_get(c.sock);
	pk_victim_begin(&v, what, WATCHDOG_S);
	if (_i % 2) {
		/* open_fd owns the fd once it succeeds. */
		fd = (int)expect_sys(fcntl(a.sp[0], F_DUPFD_CLOEXEC, 0));
		ret = shmfd_reader_open_fd(&r, fd, 0);
	} else {
		ret = shmfd_reader_open(&r, NAME, 0);
	}
	ck_assert_msg(ret == want, "%s (%s): open = %d (%s), expected %d (%s)",
		      what, _i % 2 ? "share fd" : "named", ret, th_strerr(ret),
		      want, th_strerr(want));
	if (ret == 0) {
		expect_err(shmfd_recv(r, &m, 0, 0), EAGAIN);
		shmfd_reader_close(r);
	} else {
		ck_assert_ptr_null(r);
		pk_close_fds(&fd, 1);
	}
	pk_victim_end(&v);
	th_put(c.sock, 0);
	expect_exit(c.pid, 0);
	close(c.sock);
	pk_close_fds(&a.sp[0], 1);
	expect_still_served();
}
END_TEST

/* ==== a bad producer's ring contents ==== */

enum {
	RC_GOOD,		/* two messages, as the page says */
	RC_TOO_LONG,		/* a message longer than max_inline */
	RC_PAST_END,		/* a record that runs past the data area */
	RC_BAD_TYPE,		/* record type 9 */
	RC_PAD_SHORT,		/* a PAD that ends before the data area does */
	RC_BLOB_LEN,		/* a blob record of 8 bytes */
	RC_BLOB_ID_0,		/* blob id 0 */
	RC_BLOB_SIZE_0,		/* blob size 0 */
	RC_SEQ_0,		/* seq 0 */
	RC_SEQ_BACK,		/* 1, 2, then 2 again */
	RC_SEQ_BEFORE_START,	/* a first seq below start_seq */
	RC_HEAD_UNALIGNED,	/* head 24 */
	RC_HEAD_BACK,		/* head falls below what was read */
	RC_HEAD_FAR,		/* head two rings ahead */
	RC_END_PAST_HEAD,	/* a record that ends beyond head */
	RC_OLDEST_PAST_HEAD,	/* lossy: oldest above head */
	RC_LATEST_UNALIGNED,	/* newest-only read of latest 24 */
	/* Found by tests/fuzz/fuzz-ring: */
	RC_SEQ_MAX,		/* seq 2^64 - 1: next_seq would wrap to 0 */
	RC_END_WRAPS,		/* at 2^64 - 32, 16 bytes: ends at "0" */
	RC_PAD_END_WRAPS,	/* the same with a PAD (it looped) */
	RC_BLOB_AT_END,		/* a blob whose descriptor is past the ring */
	RC_COUNT
};

static const struct {
	const char *what;
	int good;		/* good messages before the defect */
	uint32_t flags;		/* ring flags */
	bool latest;		/* receive with SHMFD_RECV_LATEST */
} rc_cases[RC_COUNT] = {
	[RC_GOOD]		= { .what = "two good messages", .good = 2 },
	[RC_TOO_LONG]		= { .what = "message above max_inline" },
	[RC_PAST_END]		= { .what = "record past the data area" },
	[RC_BAD_TYPE]		= { .what = "record type 9" },
	[RC_PAD_SHORT]		= { .what = "PAD short of the end" },
	[RC_BLOB_LEN]		= { .what = "blob record of 8 bytes" },
	[RC_BLOB_ID_0]		= { .what = "blob id 0" },
	[RC_BLOB_SIZE_0]	= { .what = "blob size 0" },
	[RC_SEQ_0]		= { .what = "seq 0" },
	[RC_SEQ_BACK]		= { .what = "seq going backwards", .good = 2 },
	[RC_SEQ_BEFORE_START]	= { .what = "seq below start_seq" },
	[RC_HEAD_UNALIGNED]	= { .what = "head not aligned" },
	[RC_HEAD_BACK]		= { .what = "head going backwards", .good = 2 },
	[RC_HEAD_FAR]		= { .what = "head two rings ahead" },
	[RC_END_PAST_HEAD]	= { .what = "record ending past head" },
	[RC_OLDEST_PAST_HEAD]	= { .what = "oldest above head",
				    .flags = PK_RING_LOSSY },
	[RC_LATEST_UNALIGNED]	= { .what = "latest not aligned", .good = 1,
				    .latest = true },
	[RC_SEQ_MAX]		= { .what = "seq 2^64 - 1" },
	[RC_END_WRAPS]		= { .what = "record ending past 2^64" },
	[RC_PAD_END_WRAPS]	= { .what = "PAD ending past 2^64" },
	[RC_BLOB_AT_END]	= { .what = "blob descriptor past the ring" },
};

/* A record header at pos, its payload left as it is. */
static void raw_rec(struct pk_ring *r, uint64_t pos, uint32_t type,
		    uint32_t len, uint64_t seq)
{
	struct pk_rec *rec = (void *)(r->data + (pos & (r->size - 1)));

	rec->len = len;
	rec->type = type;
	rec->seq = seq;
}

static int rc_producer(int ctl, void *arg)
{
	int how = (int)(intptr_t)arg, lfd, conn, fds[4], nfds;
	uint64_t p;
	struct pk_welcome w;
	struct pk_hello h;
	struct pk_ring r;

	pk_ring_init(&r, RING, rc_cases[how].flags, 0, -1);
	if (how == RC_PAST_END || how == RC_BLOB_AT_END) {
		/* Start the reader near the end of the data area. */
		r.head = how == RC_PAST_END ? RING - 64 : RING - 16;
		r.hdr->head = r.hdr->oldest = r.head;
	}
	if (how == RC_END_WRAPS || how == RC_PAD_END_WRAPS) {
		/* Positions never wrap; a producer may still claim so. */
		r.head = UINT64_MAX - 31;	/* offset RING - 32 */
		r.hdr->head = r.hdr->oldest = r.head;
	}
	w = pk_welcome_at_head(&r);
	if (how == RC_SEQ_BEFORE_START)
		w.start_seq = 5;
	lfd = pk_listen(NAME);
	th_put(ctl, 1);
	conn = pk_accept(lfd);
	pk_take_hello(conn, &h, fds, &nfds);
	pk_close_fds(fds, nfds);
	expect_eq(pk_send(conn, &w, sizeof(w), &r.fd, 1), 0);
	th_get(ctl);				/* the reader joined */
	for (int i = 0; i < rc_cases[how].good; i++)
		pk_ring_msg(&r, INLINE_LEN);
	th_put(ctl, 2);
	th_get(ctl);				/* it read them */
	p = r.head;
	switch (how) {
	case RC_TOO_LONG:
		raw_rec(&r, p, PK_REC_MSG, RING / 4 + 16, 1);
		pk_ring_set_head(&r, p + RING / 4 + 32);
		break;
	case RC_PAST_END:
		raw_rec(&r, p, PK_REC_MSG, 100, 1);
		pk_ring_set_head(&r, p + 128);
		break;
	case RC_BAD_TYPE:
		raw_rec(&r, p, 9, 16, 1);
		pk_ring_set_head(&r, p + 32);
		break;
	case RC_PAD_SHORT:
		raw_rec(&r, p, PK_REC_PAD, 100, 0);
		pk_ring_set_head(&r, p + 128);
		break;
	case RC_BLOB_LEN:
	case RC_BLOB_ID_0:
	case RC_BLOB_SIZE_0: {
		struct pk_blob_desc *d = (void *)(r.data + p + 16);

		raw_rec(&r, p, PK_REC_BLOB, how == RC_BLOB_LEN ? 8 : 16, 1);
		d->id = how == RC_BLOB_ID_0 ? 0 : 1;
		d->size = how == RC_BLOB_SIZE_0 ? 0 : 4096;
		pk_ring_set_head(&r, p + 32);
		break;
	}
	case RC_SEQ_0:
	case RC_SEQ_BACK:
	case RC_SEQ_BEFORE_START:
		raw_rec(&r, p, PK_REC_MSG, 16, how == RC_SEQ_0 ? 0 :
			how == RC_SEQ_BACK ? 2 : 3);
		pk_ring_set_head(&r, p + 32);
		break;
	case RC_HEAD_UNALIGNED:
		raw_rec(&r, p, PK_REC_MSG, 8, 1);
		pk_ring_set_head(&r, p + 24);
		break;
	case RC_HEAD_BACK:
		pk_ring_set_head(&r, 16);
		break;
	case RC_HEAD_FAR:
		raw_rec(&r, p, PK_REC_MSG, 16, 1);
		pk_ring_set_head(&r, p + 2 * RING);
		break;
	case RC_END_PAST_HEAD:
		raw_rec(&r, p, PK_REC_MSG, 100, 1);
		pk_ring_set_head(&r, p + 32);
		break;
	case RC_OLDEST_PAST_HEAD:
		raw_rec(&r, p, PK_REC_MSG, 16, 1);
		r.hdr->oldest = 1u << 20;
		pk_ring_set_head(&r, p + 32);
		break;
	case RC_LATEST_UNALIGNED:
		pk_ring_msg(&r, INLINE_LEN);
		r.hdr->latest = p + 24;
		break;
	case RC_SEQ_MAX:
		raw_rec(&r, p, PK_REC_MSG, 0, UINT64_MAX);
		pk_ring_set_head(&r, p + 16);
		break;
	case RC_END_WRAPS:
	case RC_PAD_END_WRAPS:
		/* 32 bytes of record, 16 published: p + 32 is "0". */
		raw_rec(&r, p, how == RC_END_WRAPS ? PK_REC_MSG : PK_REC_PAD,
			16, how == RC_END_WRAPS ? 1 : 0);
		pk_ring_set_head(&r, p + 16);
		break;
	case RC_BLOB_AT_END:
		/* Its descriptor would be the first 16 bytes of the data
		 * area, published too: a record that wraps. */
		raw_rec(&r, p, PK_REC_BLOB, 16, 1);
		pk_ring_set_head(&r, p + 32);
		break;
	default:
		break;
	}
	th_put(ctl, 3);
	th_get(ctl);
	pk_ring_free(&r);
	close(conn);
	close(lfd);
	return 0;
}

/* The ring holds what the page forbids: shmfd_recv() says -EPROTO, each
 * time it is asked, and the reader closes cleanly; a good channel still
 * serves this process. */
START_TEST(test_bad_ring_contents)
{
	struct th_child c = th_spawn(rc_producer, (void *)(intptr_t)_i, 0);
	int flags = rc_cases[_i].latest ? SHMFD_RECV_LATEST : 0;
	struct shmfd_reader *r = NULL;
	struct shmfd_msg m;
	struct pk_victim v;

	th_get(c.sock);
	pk_victim_begin(&v, rc_cases[_i].what, WATCHDOG_S);
	expect_ok(shmfd_reader_open(&r, NAME, 0));
	th_put(c.sock, 0);
	expect_eq(th_get(c.sock), 2);
	for (int i = 1; i <= rc_cases[_i].good; i++) {
		expect_ok(shmfd_recv(r, &m, 0, DEADLINE_MS));
		expect_next(r, &m, (uint64_t)i);
	}
	th_put(c.sock, 0);
	expect_eq(th_get(c.sock), 3);
	if (_i == RC_GOOD) {
		expect_err(shmfd_recv(r, &m, 0, 0), EAGAIN);
	} else {
		expect_err(shmfd_recv(r, &m, flags, DEADLINE_MS), EPROTO);
		expect_err(shmfd_recv(r, &m, flags, 0), EPROTO);
	}
	shmfd_reader_close(r);
	pk_victim_end(&v);
	th_put(c.sock, 0);
	expect_exit(c.pid, 0);
	close(c.sock);
	expect_still_served();
}
END_TEST

/*
 * Lossy: the two messages the reader has not read yet are retired (oldest
 * moves to head), and the producer stalls -- or dies -- before it writes
 * what it retired them for.  The reader has nothing to read: it must say
 * so, not spin (it did, even with timeout 0: found by fuzz-ring), and
 * then read what comes next, counting the two as lost.
 */
static int overrun_producer(int ctl, void *arg)
{
	struct pk_welcome w;
	struct pk_hello h;
	struct pk_ring r;
	int lfd, conn, fds[4], nfds;

	(void)arg;
	pk_ring_init(&r, RING, PK_RING_LOSSY, 0, -1);
	w = pk_welcome_at_head(&r);
	lfd = pk_listen(NAME);
	th_put(ctl, 1);
	conn = pk_accept(lfd);
	pk_take_hello(conn, &h, fds, &nfds);
	pk_close_fds(fds, nfds);
	expect_eq(pk_send(conn, &w, sizeof(w), &r.fd, 1), 0);
	th_get(ctl);				/* the reader joined */
	pk_ring_msg(&r, INLINE_LEN);
	pk_ring_msg(&r, INLINE_LEN);
	__atomic_store_n(&r.hdr->oldest, r.head, __ATOMIC_RELEASE);
	th_put(ctl, 2);
	th_get(ctl);				/* it found nothing */
	pk_ring_msg(&r, INLINE_LEN);
	th_put(ctl, 3);
	th_get(ctl);				/* it read it */
	pk_ring_free(&r);
	close(conn);
	close(lfd);
	return 0;
}

START_TEST(test_all_overwritten)
{
	struct th_child c = th_spawn(overrun_producer, NULL, 0);
	struct shmfd_reader *r = NULL;
	struct shmfd_msg m;
	struct pk_victim v;

	th_get(c.sock);
	pk_victim_begin(&v, "everything unread retired", WATCHDOG_S);
	expect_ok(shmfd_reader_open(&r, NAME, 0));
	th_put(c.sock, 0);
	expect_eq(th_get(c.sock), 2);
	expect_err(shmfd_recv(r, &m, 0, 0), EAGAIN);
	expect_err(shmfd_recv(r, &m, 0, 50), ETIMEDOUT);
	th_put(c.sock, 0);
	expect_eq(th_get(c.sock), 3);
	expect_ok(shmfd_recv(r, &m, 0, DEADLINE_MS));
	expect_eq(m.seq, 3);
	expect_eq(m.lost, 2);
	expect_eq(shmfd_msg_release(r, &m), 0);
	shmfd_reader_close(r);
	pk_victim_end(&v);
	th_put(c.sock, 0);
	expect_exit(c.pid, 0);
	close(c.sock);
}
END_TEST

/* ==== a bad producer's blobs ==== */

enum {
	BLOB_GOOD,		/* the control */
	BLOB_UNSEALED,		/* a memfd of the right size, no seals */
	BLOB_SHORT,		/* sealed, shorter than the record says */
	BLOB_LONG,		/* sealed, longer than the record says */
	BLOB_FUTURE_WRITE,	/* FUTURE_WRITE, not WRITE: its maker writes */
	BLOB_NO_WRITE,		/* SHRINK|GROW|SEAL: anyone writes */
	BLOB_NO_SHRINK,		/* WRITE|GROW|SEAL: the SIGBUS trap */
	BLOB_NO_SEAL,		/* WRITE|SHRINK|GROW: seals could be added */
	BLOB_PIPE,		/* not a memfd */
	BLOB_NO_MSG,		/* a record whose fd message never came */
	BLOB_SOCKET,		/* not a memfd */
	BLOB_SIZE_DIFFERS,	/* the message's size is not the record's */
	BLOB_TWO_FDS,		/* the message carries two fds */
	BLOB_MSG_NO_FD,		/* the message carries none */
	BLOB_MSG_SHORT,		/* 24 bytes */
	BLOB_MSG_TYPE,		/* a welcome, fd and all, where it belongs */
	BLOB_EMPTY_FIRST,	/* an empty datagram with a pipe, then the fd */
	BLOB_COUNT
};

static const struct {
	const char *what;
	int want;		/* recv of the bad blob; 1: lost, not refused */
} blob_cases[BLOB_COUNT] = {
	[BLOB_GOOD]		= { "good blob", 0 },
	[BLOB_UNSEALED]		= { "unsealed blob", -EPROTO },
	[BLOB_SHORT]		= { "blob shorter than its record", -EPROTO },
	[BLOB_LONG]		= { "blob longer than its record", -EPROTO },
	[BLOB_FUTURE_WRITE]	= { "blob sealed FUTURE_WRITE only", -EPROTO },
	[BLOB_NO_WRITE]		= { "blob without a write seal", -EPROTO },
	[BLOB_NO_SHRINK]	= { "blob without F_SEAL_SHRINK", -EPROTO },
	[BLOB_NO_SEAL]		= { "blob without F_SEAL_SEAL", -EPROTO },
	[BLOB_PIPE]		= { "pipe for a blob", -EPROTO },
	[BLOB_NO_MSG]		= { "blob record without its fd", 1 },
	[BLOB_SOCKET]		= { "socket for a blob", -EPROTO },
	[BLOB_SIZE_DIFFERS]	= { "blob message of another size", -EPROTO },
	/* A malformed message where the blob's fd belongs is the
	 * producer's fault: refused, not counted as a lost blob. */
	[BLOB_TWO_FDS]		= { "blob message with two fds", -EPROTO },
	[BLOB_MSG_NO_FD]	= { "blob message without an fd", -EPROTO },
	[BLOB_MSG_SHORT]	= { "blob message of 24 bytes", -EPROTO },
	[BLOB_MSG_TYPE]		= { "welcome for a blob message", -EPROTO },
	/* Not a hang-up, not a blob (fuzz-join): its fd is closed and the
	 * real one behind it taken. */
	[BLOB_EMPTY_FIRST]	= { "empty datagram with an fd first", 0 },
};

#define BLOB_SIZE	(3 * 4096 + 100)

/* The fd message of blob id (seq) as case how makes it. */
static void bad_blob_msg(int conn, int how, uint64_t id, uint64_t seq)
{
	const char *bad = "pk-blob-bad";
	int fd = -1, p[2] = { -1, -1 };

	switch (how) {
	case BLOB_UNSEALED:
		fd = pk_blob(bad, BLOB_SIZE, seq, 0);
		break;
	case BLOB_SHORT:
		fd = pk_blob(bad, BLOB_SIZE - 4096, seq, PK_BLOB_SEALS);
		break;
	case BLOB_LONG:
		fd = pk_blob(bad, BLOB_SIZE + 4096, seq, PK_BLOB_SEALS);
		break;
	case BLOB_FUTURE_WRITE:
		fd = pk_blob(bad, BLOB_SIZE, seq, (PK_BLOB_SEALS &
			     ~F_SEAL_WRITE) | F_SEAL_FUTURE_WRITE);
		break;
	case BLOB_NO_WRITE:
		fd = pk_blob(bad, BLOB_SIZE, seq, PK_BLOB_SEALS & ~F_SEAL_WRITE);
		break;
	case BLOB_NO_SHRINK:
		fd = pk_blob(bad, BLOB_SIZE, seq, PK_BLOB_SEALS & ~F_SEAL_SHRINK);
		break;
	case BLOB_NO_SEAL:
		fd = pk_blob(bad, BLOB_SIZE, seq, PK_BLOB_SEALS & ~F_SEAL_SEAL);
		break;
	case BLOB_PIPE:
		expect_sys(pipe2(p, O_CLOEXEC));
		fd = p[0];
		break;
	case BLOB_NO_MSG:
		return;
	case BLOB_SOCKET:
		expect_sys(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC,
				      0, p));
		fd = p[0];
		break;
	case BLOB_SIZE_DIFFERS:
		fd = pk_blob(bad, BLOB_SIZE + 4096, seq, PK_BLOB_SEALS);
		pk_send_blob_fd(conn, id, seq, BLOB_SIZE + 4096, fd);
		close(fd);
		return;
	case BLOB_TWO_FDS:
	case BLOB_MSG_NO_FD:
	case BLOB_MSG_SHORT:
	case BLOB_MSG_TYPE: {
		struct pk_blob_fd m = {
			.type = how == BLOB_MSG_TYPE ? PK_WELCOME : PK_BLOB_FD,
			.id = id,
			.seq = seq,
			.size = BLOB_SIZE,
		};
		int two[2];

		two[0] = pk_blob(bad, BLOB_SIZE, seq, PK_BLOB_SEALS);
		two[1] = pk_blob(bad, BLOB_SIZE, seq, PK_BLOB_SEALS);
		expect_eq(pk_send(conn, &m, how == BLOB_MSG_SHORT ? 24 :
				  sizeof(m), two, how == BLOB_TWO_FDS ? 2 :
				  how == BLOB_MSG_NO_FD ? 0 : 1), 0);
		pk_close_fds(two, 2);
		return;
	}
	case BLOB_EMPTY_FIRST:
		expect_sys(pipe2(p, O_CLOEXEC));
		expect_eq(pk_send(conn, "", 0, &p[0], 1), 0);
		pk_close_fds(p, 2);
		p[1] = -1;
		fd = pk_blob("pk-blob-good", BLOB_SIZE, seq, PK_BLOB_SEALS);
		break;
	default:
		fd = pk_blob("pk-blob-good", BLOB_SIZE, seq, PK_BLOB_SEALS);
		break;
	}
	pk_send_blob_fd(conn, id, seq, BLOB_SIZE, fd);
	close(fd);
	pk_close_fds(&p[1], 1);
}

/* Blob id with seq: its fd message, then its record (BLOBS). */
static void put_blob(struct pk_ring *r, int conn, int how, uint64_t id)
{
	struct pk_blob_desc d = { .id = id, .size = BLOB_SIZE };

	bad_blob_msg(conn, how, id, r->seq + 1);
	pk_ring_put(r, PK_REC_BLOB, r->seq + 1, &d, sizeof(d));
}

/* Seq 1: blob 1 with the defect under test; 2: inline; 3: blob 2, good;
 * 4: inline. */
static int blob_producer(int ctl, void *arg)
{
	int how = (int)(intptr_t)arg, lfd, conn, fds[4], nfds;
	struct pk_welcome w;
	struct pk_hello h;
	struct pk_ring r;

	pk_ring_init(&r, RING, 0, 0, -1);
	w = pk_welcome_at_head(&r);
	lfd = pk_listen(NAME);
	th_put(ctl, 1);
	conn = pk_accept(lfd);
	pk_take_hello(conn, &h, fds, &nfds);
	pk_close_fds(fds, nfds);
	expect_eq(pk_send(conn, &w, sizeof(w), &r.fd, 1), 0);
	th_get(ctl);				/* the reader joined */
	put_blob(&r, conn, how, 1);
	pk_ring_msg(&r, INLINE_LEN);
	put_blob(&r, conn, BLOB_GOOD, 2);
	pk_ring_msg(&r, INLINE_LEN);
	th_put(ctl, 2);
	th_get(ctl);				/* the reader read it all */
	pk_ring_free(&r);
	close(conn);
	close(lfd);
	return 0;
}

static void expect_msg(struct shmfd_reader *r, uint64_t seq, bool blob)
{
	struct shmfd_msg m;

	expect_ok(shmfd_recv(r, &m, 0, DEADLINE_MS));
	ck_assert_msg(m.seq == seq && m.len == (blob ? BLOB_SIZE : INLINE_LEN)
		      && m.flags == (blob ? SHMFD_MSG_BLOB : 0u) &&
		      (blob ? m.fd >= 0 : m.fd == -1),
		      "got seq %llu len %zu flags %#x fd %d, expected seq %llu"
		      " %s", (unsigned long long)m.seq, m.len, m.flags, m.fd,
		      (unsigned long long)seq, blob ? "blob" : "inline");
	ck_assert_msg(th_check(m.data, m.len, seq) < 0, "message %llu corrupt",
		      (unsigned long long)seq);
	if (blob) {
		int seals = fcntl(m.fd, F_GET_SEALS);

		ck_assert_msg(seals >= 0 &&
			      (seals & PK_BLOB_SEALS) == PK_BLOB_SEALS,
			      "blob fd seals %#x", seals);
	}
	expect_eq(shmfd_msg_release(r, &m), 0);
}

START_TEST(test_bad_blob)
{
	struct th_child c = th_spawn(blob_producer, (void *)(intptr_t)_i, 0);
	struct shmfd_reader *r = NULL;
	struct shmfd_msg m;
	struct pk_victim v;
	int ret;

	th_get(c.sock);
	expect_ok(shmfd_reader_open(&r, NAME, 0));
	th_put(c.sock, 0);
	expect_eq(th_get(c.sock), 2);		/* all published */

	pk_victim_begin(&v, blob_cases[_i].what, WATCHDOG_S);
	if (blob_cases[_i].want == 0) {
		expect_msg(r, 1, true);
		expect_msg(r, 2, false);
	} else if (blob_cases[_i].want == 1) {
		/* Its fd never came: the blob is lost, not an error. */
		expect_ok(shmfd_recv(r, &m, 0, DEADLINE_MS));
		expect_eq(m.seq, 2);
		expect_eq(m.lost, 1);
		ck_assert_msg(th_check(m.data, m.len, 2) < 0, "corrupt");
		expect_eq(shmfd_msg_release(r, &m), 0);
	} else {
		ret = shmfd_recv(r, &m, 0, DEADLINE_MS);
		ck_assert_msg(ret == blob_cases[_i].want, "%s: shmfd_recv = "
			      "%d (%s), expected %d (%s)", blob_cases[_i].what,
			      ret, th_strerr(ret), blob_cases[_i].want,
			      th_strerr(blob_cases[_i].want));
		/* The bad fd is closed at once. */
		ck_assert_int_eq(th_fds_matching("pk-blob-bad"), 0);
		/* The reader goes on with the next message.  Whether the
		 * refused blob counts in lost is not for this test. */
		expect_ok(shmfd_recv(r, &m, 0, DEADLINE_MS));
		ck_assert_msg(m.seq == 2 && m.lost <= 1 && m.fd == -1 &&
			      m.len == INLINE_LEN &&
			      th_check(m.data, m.len, 2) < 0,
			      "after the refusal: seq %llu lost %llu len %zu "
			      "fd %d", (unsigned long long)m.seq,
			      (unsigned long long)m.lost, m.len, m.fd);
		expect_eq(shmfd_msg_release(r, &m), 0);
	}
	/* A good blob and an inline message after it, as usual. */
	expect_msg(r, 3, true);
	expect_msg(r, 4, false);
	expect_err(shmfd_recv(r, &m, 0, 0), EAGAIN);
	pk_victim_end(&v);
	shmfd_reader_close(r);
	th_put(c.sock, 0);
	expect_exit(c.pid, 0);
	close(c.sock);
}
END_TEST

/*
 * A reader that joins while a blob is being sent may be passed its fd
 * and still start past its record (ring.c (6): it went live before the
 * sender's pass, and its join point waited for the publish).  The fd
 * then arrives before the welcome, for a record the reader never reads:
 * the page has it discard such fds (seq below start_seq), or a blob of
 * any size stays pinned for as long as no later blob comes.  The kit
 * plays that producer exactly: blob 1 published, its fd queued, then a
 * welcome that starts after it.
 */
static int late_blob_producer(int ctl, void *arg)
{
	struct pk_blob_desc d = { .id = 1, .size = BLOB_SIZE };
	int lfd, conn, fds[4], nfds, fd;
	struct pk_welcome w;
	struct pk_hello h;
	struct pk_ring r;

	pk_ring_init(&r, RING, 0, 0, -1);
	lfd = pk_listen(NAME);
	th_put(ctl, 1);
	conn = pk_accept(lfd);
	pk_take_hello(conn, &h, fds, &nfds);
	pk_close_fds(fds, nfds);
	fd = pk_blob("pk-blob-late", BLOB_SIZE, 1, PK_BLOB_SEALS);
	pk_send_blob_fd(conn, 1, 1, BLOB_SIZE, fd);
	close(fd);
	pk_ring_put(&r, PK_REC_BLOB, 1, &d, sizeof(d));
	w = pk_welcome_at_head(&r);		/* start_seq 2 */
	expect_eq(pk_send(conn, &w, sizeof(w), &r.fd, 1), 0);
	pk_ring_msg(&r, INLINE_LEN);		/* seq 2 */
	put_blob(&r, conn, BLOB_GOOD, 2);	/* seq 3 */
	th_get(ctl);
	pk_ring_free(&r);
	close(conn);
	close(lfd);
	return 0;
}

START_TEST(test_blob_before_start)
{
	struct th_child c = th_spawn(late_blob_producer, NULL, 0);
	struct shmfd_reader *r = NULL;
	struct shmfd_msg m;

	th_get(c.sock);
	expect_ok(shmfd_reader_open(&r, NAME, 0));
	ck_assert_msg(th_fds_matching("pk-blob-late") == 0, "the fd of a blob "
		      "before the reader's start is kept");
	expect_msg(r, 2, false);
	expect_msg(r, 3, true);
	expect_err(shmfd_recv(r, &m, 0, 0), EAGAIN);
	shmfd_reader_close(r);
	th_put(c.sock, 0);
	expect_exit(c.pid, 0);
	close(c.sock);
}
END_TEST

/* ==== a bad reader's hello ==== */

/* What stands where the reader page belongs. */
enum page_kind {
	PG_GOOD,
	PG_NONE,		/* no fd at all */
	PG_UNSEALED,		/* could shrink it under the producer */
	PG_SHORT,		/* sealed, smaller than a page */
	PG_FUTURE_WRITE,	/* the producer could not map it writable */
	PG_PIPE,		/* not a memfd */
	PG_BAD_MAGIC,		/* right seals and size, wrong content */
	PG_BAD_VERSION,		/* a page of version 2 */
	PG_NO_GROW,		/* could grow: no SIGBUS, still refused */
	PG_BIG,			/* sealed, two pages */
	PG_WRITE_SEALED,	/* F_SEAL_WRITE: nobody can write it */
	PG_SOCKET,		/* not a memfd */
	PG_FILE,		/* a regular file */
	PG_RDONLY,		/* the right memfd, through a read-only fd */
	PG_NO_SEAL_SEAL,	/* admitted: see test_page_without_seal_seal */
};

static int make_bad_page(enum page_kind k, int *extra)
{
	int p[2];

	*extra = -1;
	switch (k) {
	case PG_NONE:
		return -1;
	case PG_UNSEALED:
		return pk_page(PK_PAGE_SIZE, 0, PK_PAGE_MAGIC, PK_VERSION);
	case PG_SHORT:
		return pk_page(1024, PK_PAGE_SEALS, PK_PAGE_MAGIC, PK_VERSION);
	case PG_FUTURE_WRITE:
		return pk_page(PK_PAGE_SIZE, PK_PAGE_SEALS |
			       F_SEAL_FUTURE_WRITE, PK_PAGE_MAGIC, PK_VERSION);
	case PG_PIPE:
		expect_sys(pipe2(p, O_CLOEXEC));
		*extra = p[1];
		return p[0];
	case PG_BAD_MAGIC:
		return pk_page(PK_PAGE_SIZE, PK_PAGE_SEALS, PK_RING_MAGIC,
			       PK_VERSION);
	case PG_BAD_VERSION:
		return pk_page(PK_PAGE_SIZE, PK_PAGE_SEALS, PK_PAGE_MAGIC, 2);
	case PG_NO_GROW:
		return pk_page(PK_PAGE_SIZE, PK_PAGE_SEALS & ~F_SEAL_GROW,
			       PK_PAGE_MAGIC, PK_VERSION);
	case PG_BIG:
		return pk_page(2 * PK_PAGE_SIZE, PK_PAGE_SEALS, PK_PAGE_MAGIC,
			       PK_VERSION);
	case PG_WRITE_SEALED:
		return pk_page(PK_PAGE_SIZE, PK_PAGE_SEALS | F_SEAL_WRITE,
			       PK_PAGE_MAGIC, PK_VERSION);
	case PG_SOCKET:
		expect_sys(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC,
				      0, p));
		*extra = p[1];
		return p[0];
	case PG_FILE: {
		char path[256];
		int fd;

		snprintf(path, sizeof(path), "%s/page", th_dir());
		fd = (int)expect_sys(open(path, O_RDWR | O_CREAT | O_CLOEXEC,
					  0600));
		expect_sys(ftruncate(fd, PK_PAGE_SIZE));
		unlink(path);
		return fd;
	}
	case PG_RDONLY: {
		int good = pk_good_page(), fd;
		char path[64];

		snprintf(path, sizeof(path), "/proc/self/fd/%d", good);
		fd = (int)expect_sys(open(path, O_RDONLY | O_CLOEXEC));
		close(good);
		return fd;
	}
	case PG_NO_SEAL_SEAL:
		return pk_page(PK_PAGE_SIZE, PK_PAGE_SEALS & ~F_SEAL_SEAL,
			       PK_PAGE_MAGIC, PK_VERSION);
	default:
		return pk_good_page();
	}
}

struct hello_case {
	const char *what;
	enum page_kind page;
	int named;		/* the answer's status, or PK_HUNG_UP */
	int share;
	bool garbage;		/* bytes that are not a hello */
	bool empty;		/* a datagram of 0 bytes */
	bool stream;		/* the answer socket is SOCK_STREAM */
	uint32_t type;		/* 0: PK_HELLO */
	uint32_t version;	/* 0: PK_VERSION; 0x80000000: 0 */
	uint32_t flags;
	int nfds;		/* the nfds field: 0 the fds sent, 1 one
				 * more, -1 one less */
	int extra;		/* more good pages after the fds */
	size_t len;		/* 0: a hello's 16 bytes */
};

/* what, page kind, answer by name, answer through a share fd, more */
#define HC(w, p, n, sh, ...) \
	{ .what = w, .page = p, .named = n, .share = sh, __VA_ARGS__ }

static const struct hello_case hello_cases[] = {
	HC("good hello", PG_GOOD, 0, 0),
	HC("good hello, FROM_OLDEST and FENCED", PG_GOOD, 0, 0,
	  .flags = PK_FROM_OLDEST | PK_HELLO_FENCED),
	HC("garbage for a hello", PG_GOOD, -EPROTO, -EPROTO, .garbage = true),
	/* Through a share fd the answer socket is then the only fd: the
	 * hello names two, so no answer can be trusted to it. */
	HC("no page", PG_NONE, -EPROTO, PK_HUNG_UP),
	HC("unsealed page", PG_UNSEALED, -EPROTO, -EPROTO),
	HC("page of 1 KiB", PG_SHORT, -EPROTO, -EPROTO),
	HC("page sealed FUTURE_WRITE", PG_FUTURE_WRITE, -EPROTO, -EPROTO),
	HC("pipe for a page", PG_PIPE, -EPROTO, -EPROTO),
	HC("page with a wrong magic", PG_BAD_MAGIC, -EPROTO, -EPROTO),
	HC("page of version 2", PG_BAD_VERSION, -EPROTO, -EPROTO),
	HC("page without F_SEAL_GROW", PG_NO_GROW, -EPROTO, -EPROTO),
	HC("page of 8 KiB", PG_BIG, -EPROTO, -EPROTO),
	HC("page sealed F_SEAL_WRITE", PG_WRITE_SEALED, -EPROTO, -EPROTO),
	HC("socket for a page", PG_SOCKET, -EPROTO, -EPROTO),
	HC("regular file for a page", PG_FILE, -EPROTO, -EPROTO),
	/* mmap(2) refuses it EACCES: that is the reader's doing, not a
	 * matter of credentials. */
	HC("page through a read-only fd", PG_RDONLY, -EPROTO, -EPROTO),
	HC("page without F_SEAL_SEAL", PG_NO_SEAL_SEAL, 0, 0),
	/* Version negotiation: the answer says which version the producer
	 * speaks (checked below), whatever the rest of the hello is. */
	HC("hello of version 2", PG_GOOD, -EPROTONOSUPPORT, -EPROTONOSUPPORT,
	  .version = 2),
	HC("hello of version 0", PG_GOOD, -EPROTONOSUPPORT, -EPROTONOSUPPORT,
	  .version = 0x80000000u),
	HC("hello of version 2, 40 bytes", PG_GOOD, -EPROTONOSUPPORT,
	  -EPROTONOSUPPORT, .version = 2, .len = 40),
	HC("hello of version 2, 256 bytes", PG_GOOD, -EPROTONOSUPPORT,
	  -EPROTONOSUPPORT, .version = 2, .len = 256),
	/* Lengths. */
	HC("hello of 40 bytes", PG_GOOD, -EPROTO, -EPROTO, .len = 40),
	HC("hello of 4 bytes", PG_GOOD, -EPROTO, -EPROTO, .len = 4),
	/* Past the 256 bytes a producer reads: refused as truncated, with
	 * an answer where one can be trusted. */
	HC("hello of 300 bytes", PG_GOOD, -EPROTO, PK_HUNG_UP, .len = 300),
	HC("hello of 64 KiB", PG_GOOD, -EPROTO, PK_HUNG_UP, .len = 65536),
	/* 0 bytes read as a hang-up by name; through a share fd the
	 * datagram is noise, and the fds that came with it are closed. */
	HC("empty datagram", PG_GOOD, PK_HUNG_UP, PK_HUNG_UP, .empty = true),
	/* Fields. */
	HC("bye for a hello", PG_GOOD, -EPROTO, -EPROTO, .type = PK_BYE),
	HC("stats for a hello", PG_GOOD, -EPROTO, -EPROTO, .type = PK_STATS),
	HC("unknown hello flag", PG_GOOD, -EPROTO, -EPROTO, .flags = 1u << 4),
	HC("nfds one more than sent", PG_GOOD, -EPROTO, -EPROTO, .nfds = 1),
	HC("nfds one less than sent", PG_GOOD, -EPROTO, -EPROTO, .nfds = -1),
	/* Fds. */
	HC("an fd too many", PG_GOOD, -EPROTO, PK_HUNG_UP, .extra = 1),
	HC("eight fds", PG_GOOD, -EPROTO, PK_HUNG_UP, .extra = 6),
	HC("stream socket to answer on", PG_GOOD, -EPROTO, PK_HUNG_UP,
	  .stream = true),
};

#define HELLO_CASES	((int)(sizeof(hello_cases) / sizeof(hello_cases[0])))

/*
 * Send case c's hello on sock (a named connection) or, with share, on a
 * share fd with the answer socket after the page; then the answer: the
 * welcome's status or PK_HUNG_UP.
 */
static struct pk_welcome answer;	/* bad_hello's last */

/*
 * Send case c's hello on sock (a named connection) or, with share, on a
 * share fd with the answer socket after the page; then the answer: the
 * welcome's status or PK_HUNG_UP.
 */
static int bad_hello(int sock, bool share, const struct hello_case *c)
{
	static char buf[65536];
	struct pk_hello *h = (void *)buf;
	int fds[10], nfds = 0, extra, page, sv[2] = { -1, -1 }, fd, ret;
	size_t len = c->len ? c->len : sizeof(*h);

	memset(buf, 0, sizeof(buf));
	page = make_bad_page(c->page, &extra);
	if (page >= 0)
		fds[nfds++] = page;
	fd = sock;
	if (share) {
		expect_sys(socketpair(AF_UNIX, (c->stream ? SOCK_STREAM :
						SOCK_SEQPACKET) | SOCK_CLOEXEC,
				      0, sv));
		fds[nfds++] = sv[1];
		fd = sv[0];
	} else if (c->stream) {
		expect_sys(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
				      sv));
		fds[nfds++] = sv[1];
	}
	for (int i = 0; i < c->extra; i++)
		fds[nfds++] = pk_good_page();
	h->type = c->type ? c->type : PK_HELLO;
	h->version = c->version ? c->version & 0x7fffffff : PK_VERSION;
	h->flags = c->flags;
	h->nfds = (uint32_t)(c->nfds ? nfds + (c->nfds > 0 ? 1 : -1)
				    : nfds);
	if (c->garbage)
		memcpy(buf, "not a hello....", 16);
	expect_eq(pk_send(sock, buf, c->empty ? 0 : len, fds, nfds), 0);
	pk_close_fds(fds, nfds);
	pk_close_fds(&extra, 1);
	memset(&answer, 0, sizeof(answer));
	ret = pk_await_welcome(fd, &answer, NULL);
	if (share)
		close(sv[0]);
	else if (sv[0] >= 0)
		close(sv[0]);
	return ret;
}

static int good_reader(int ctl, void *arg)
{
	struct shmfd_reader *r = th_join(*(int *)arg, 0);
	struct shmfd_msg m;

	th_put(ctl, 1);
	for (uint64_t seq = 1; seq <= 3; seq++) {
		expect_ok(shmfd_recv(r, &m, 0, DEADLINE_MS));
		expect(m.seq == seq && th_check(m.data, m.len, seq) == -1,
		       "message %llu", (unsigned long long)seq);
		expect_ok(shmfd_msg_release(r, &m));
	}
	shmfd_reader_close(r);
	return 0;
}

/* good_reader (c, joined through share) is still the one reader: send
 * it its three messages and see it take them and exit. */
static void serve_good_reader(struct shmfd_chan *chan, struct th_child *c)
{
	char buf[100];

	expect_eq(shmfd_chan_readers(chan), 1);
	for (uint64_t seq = 1; seq <= 3; seq++) {
		th_fill(buf, sizeof(buf), seq);
		expect_ok(shmfd_send(chan, buf, sizeof(buf), DEADLINE_MS));
	}
	expect_exit(c->pid, 0);
	close(c->sock);
}

/* A kit reader joins after the refusal and reads what is sent. */
static void expect_admits(struct shmfd_chan *chan, int share)
{
	struct pk_reader kr;
	struct pk_msg m;
	char buf[100];

	expect_eq(share >= 0 ? pk_join_share(&kr, share, 0)
			     : pk_join_named(&kr, NAME, 0), 0);
	th_fill(buf, sizeof(buf), 4);
	expect_ok(shmfd_send(chan, buf, sizeof(buf), DEADLINE_MS));
	expect_eq(pk_next(&kr, &m, DEADLINE_MS), 0);
	expect_eq(m.seq, 4);
	expect_eq(m.lost, 0);
	expect(th_check(m.data, m.len, 4) < 0, "corrupt");
	pk_reader_close(&kr, true);
}

/*
 * _i: case _i / 2, by name (even) or through a share fd (odd).  A good
 * reader joined first keeps receiving; the bad one is not counted; the
 * producer's fds are those it had; a kit reader joins after it.
 */
START_TEST(test_bad_hello)
{
	const struct hello_case *hc = &hello_cases[_i / 2];
	bool share = _i % 2;
	struct shmfd_chan *chan = th_chan(NAME, RING, 0, 0);
	int sfd = expect_ok(shmfd_chan_share_fd(chan));
	struct th_child c = th_spawn(good_reader, &sfd, 0);
	struct pk_victim v;
	int sock, ret, want = share ? hc->share : hc->named;

	th_get(c.sock);
	expect_eq(shmfd_chan_readers(chan), 1);
	pk_victim_begin(&v, hc->what, WATCHDOG_S);
	sock = share ? sfd : pk_connect(NAME);
	expect(sock >= 0, "connect: %s", th_strerr(sock));
	ret = bad_hello(sock, share, hc);
	ck_assert_msg(ret == want, "%s (%s): answer %d (%s), expected %d (%s)",
		      hc->what, share ? "share fd" : "named", ret,
		      ret == PK_HUNG_UP ? "hung up" : th_strerr(ret), want,
		      want == PK_HUNG_UP ? "hung up" : th_strerr(want));
	/* An error answer is in the producer's version, the rest 0. */
	if (ret != PK_HUNG_UP && ret != 0)
		ck_assert_msg(answer.version == PK_VERSION &&
			      !answer.flags && !answer.ring_size &&
			      !answer.start_seq && !answer.producer_pid,
			      "error answer of version %u, not all 0",
			      answer.version);
	if (!share)
		close(sock);
	/* A good hello joined and left: the producer drops it and closes
	 * its end, at once or at its next reclaim. */
	expect_eventually(shmfd_chan_readers(chan) == 1);
	wait_until(th_fd_count() == v.count);
	pk_victim_end(&v);
	serve_good_reader(chan, &c);
	expect_admits(chan, share ? sfd : -1);
	close(sfd);
	shmfd_chan_close(chan);
}
END_TEST

/*
 * A page without F_SEAL_SEAL is admitted: the seals it could still take
 * cannot hurt the producer.  F_SEAL_WRITE needs every writable shared
 * mapping gone, and the producer's stays while the reader is joined
 * (EBUSY); F_SEAL_FUTURE_WRITE spares mappings that exist; SHRINK and
 * GROW are there already and seals never come off.  The producer writes
 * the page to the end (dropping the reader included) and serves on.
 */
START_TEST(test_page_without_seal_seal)
{
	struct shmfd_chan *chan = th_chan(NAME, RING, 0, 0);
	int sfd = expect_ok(shmfd_chan_share_fd(chan));
	struct th_child c = th_spawn(good_reader, &sfd, 0);
	struct pk_hello h = {
		.type = PK_HELLO,
		.version = PK_VERSION,
		.flags = PK_HELLO_FENCED,
		.nfds = 1,
	};
	struct pk_welcome w;
	int sock, page;

	th_get(c.sock);
	page = pk_page(PK_PAGE_SIZE, PK_PAGE_SEALS & ~F_SEAL_SEAL,
		       PK_PAGE_MAGIC, PK_VERSION);
	sock = pk_connect(NAME);
	expect(sock >= 0, "connect: %s", th_strerr(sock));
	expect_eq(pk_send(sock, &h, sizeof(h), &page, 1), 0);
	expect_eq(pk_await_welcome(sock, &w, NULL), 0);
	expect_eq(shmfd_chan_readers(chan), 2);
	expect_sys_err(fcntl(page, F_ADD_SEALS, F_SEAL_WRITE), EBUSY);
	expect_sys(fcntl(page, F_ADD_SEALS, F_SEAL_FUTURE_WRITE |
			 F_SEAL_SEAL));
	/* Leave: the producer writes the page as it drops the reader. */
	close(sock);
	close(page);
	expect_eventually(shmfd_chan_readers(chan) == 1);
	serve_good_reader(chan, &c);
	close(sfd);
	shmfd_chan_close(chan);
}
END_TEST

/* ==== share fds ==== */

/*
 * An empty datagram on a share fd -- a read of 0 bytes, like a hang-up
 * on SOCK_SEQPACKET -- is noise from whoever holds the fd, and must not
 * close the way in for the readers that come after it.  _i == 1: the
 * datagram carries an fd, which the producer must close.
 */
START_TEST(test_share_empty_datagram)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, 0);
	int share = expect_ok(shmfd_chan_share_fd(chan));
	struct th_child c;
	struct pk_victim v;

	pk_victim_begin(&v, "empty datagram on a share fd", WATCHDOG_S);
	if (_i) {
		int pfd[2];

		expect_sys(pipe2(pfd, O_CLOEXEC));
		expect_eq(pk_send(share, "", 0, &pfd[0], 1), 0);
		pk_close_fds(pfd, 2);
	} else {
		expect_eq(pk_send(share, "", 0, NULL, 0), 0);
	}
	/* Let the admission thread take it before the next hello; an fd
	 * that came with it is closed by then. */
	usleep(100000);
	pk_victim_end(&v);
	c = th_spawn(good_reader, &share, 0);
	th_get(c.sock);
	serve_good_reader(chan, &c);
	close(share);
	shmfd_chan_close(chan);
}
END_TEST

/* A "producer" at the far end of a share fd that takes the hello and
 * drops it unanswered, closing what came with it. */
static void *silent_producer(void *arg)
{
	int sock = *(int *)arg, fds[4], nfds = 0;
	struct pk_hello h;

	if (pk_recv(sock, &h, sizeof(h), fds, 4, &nfds, NULL, -1) > 0)
		pk_close_fds(fds, nfds);
	return NULL;
}

/* A join the producer drops without answering ends at once with
 * -EPIPE: the reader must not keep the far end of its own socket. */
START_TEST(test_share_dropped_hello)
{
	struct shmfd_reader *r = NULL;
	struct pk_victim v;
	pthread_t t;
	int sp[2];

	expect_sys(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp));
	expect(pthread_create(&t, NULL, silent_producer, &sp[1]) == 0,
	       "pthread_create");
	pk_victim_begin(&v, "a hello dropped unanswered", WATCHDOG_S);
	expect_err(shmfd_reader_open_fd(&r, sp[0], 0), EPIPE);
	pthread_join(t, NULL);
	pk_victim_end(&v);
	close(sp[0]);
	close(sp[1]);
}
END_TEST

/* A named connection whose hello carries two fds (a named hello has
 * one) is refused with an answer, like any other malformed hello, and
 * the channel goes on serving. */
START_TEST(test_named_hello_two_fds)
{
	struct shmfd_chan *chan = th_chan(NAME, RING, 0, 0);
	struct pk_hello h = {
		.type = PK_HELLO,
		.version = PK_VERSION,
		.nfds = 1,
	};
	struct pk_welcome w;
	struct shmfd_reader *r = NULL;
	int sock = pk_connect(NAME), fds[2];

	expect(sock >= 0, "connect: %s", th_strerr(sock));
	fds[0] = pk_good_page();
	fds[1] = pk_good_page();
	expect_eq(pk_send(sock, &h, sizeof(h), fds, 2), 0);
	pk_close_fds(fds, 2);
	expect_err(pk_await_welcome(sock, &w, NULL), EPROTO);
	close(sock);
	expect_ok(shmfd_reader_open(&r, NAME, 0));
	expect_eq(shmfd_chan_readers(chan), 1);
	shmfd_reader_close(r);
	shmfd_chan_close(chan);
}
END_TEST

/* ==== version negotiation with observers ==== */

/* A stat request -- of another version, malformed, or right -- is
 * answered with one stats message of version 1 carrying the status. */
static const struct {
	const char *what;
	uint32_t version;
	size_t len;
	bool fd;
	int want;
} statreq_cases[] = {
	{ "stat request", PK_VERSION, 8, false, 0 },
	{ "stat request of version 2", 2, 8, false, -EPROTONOSUPPORT },
	{ "stat request of version 2, 64 bytes", 2, 64, false,
	  -EPROTONOSUPPORT },
	{ "stat request of 12 bytes", PK_VERSION, 12, false, -EPROTO },
	{ "stat request with an fd", PK_VERSION, 8, true, -EPROTO },
};

START_TEST(test_stat_request)
{
	struct shmfd_chan *chan = th_chan(NAME, RING, 0, 0);
	union {
		struct pk_stat_req q;
		char raw[64];
	} u = { .q = { .type = PK_STAT_REQ,
		       .version = statreq_cases[_i].version } };
	struct pk_stats a;
	struct shmfd_stat st;
	struct pk_victim v;
	int sock, fd = -1, n;

	pk_victim_begin(&v, statreq_cases[_i].what, WATCHDOG_S);
	sock = pk_connect(NAME);
	expect(sock >= 0, "connect: %s", th_strerr(sock));
	if (statreq_cases[_i].fd)
		fd = pk_good_page();
	expect_eq(pk_send(sock, &u, statreq_cases[_i].len, &fd, fd >= 0), 0);
	pk_close_fds(&fd, 1);
	n = pk_recv(sock, &a, sizeof(a), NULL, 0, NULL, NULL, -1);
	ck_assert_msg(n == sizeof(a) && a.type == PK_STATS &&
		      a.version == PK_VERSION, "%s: answer of %d bytes, type "
		      "%u, version %u", statreq_cases[_i].what, n, a.type,
		      a.version);
	ck_assert_msg(a.status == statreq_cases[_i].want, "%s: status %d "
		      "(%s), expected %d", statreq_cases[_i].what, a.status,
		      th_strerr(a.status), statreq_cases[_i].want);
	if (a.status == 0)
		ck_assert(a.ring_size == RING && a.readers == 0);
	else
		ck_assert(a.ring_size == 0 && a.producer_pid == 0);
	/* One answer, then the producer hangs up. */
	expect_eq(pk_recv(sock, &a, sizeof(a), NULL, 0, NULL, NULL, -1), 0);
	close(sock);
	wait_until(th_fd_count() == v.count);
	pk_victim_end(&v);
	expect_ok(shmfd_chan_stat(NAME, &st, DEADLINE_MS));
	shmfd_chan_close(chan);
}
END_TEST

/* A producer of version 2 answers an observer's request in its own
 * version: a refusal is understood, anything else is not. */
static int v2_stats_producer(int ctl, void *arg)
{
	struct pk_stats a = {
		.type = PK_STATS,
		.version = 2,
		.status = (int32_t)(intptr_t)arg,
	};
	int lfd = pk_listen(NAME), conn, n;
	struct pk_stat_req q;

	if (!a.status) {
		a.ring_size = RING;
		a.max_inline = RING / 4;
		a.max_readers = 64;
		a.producer_pid = getpid();
	}
	th_put(ctl, 1);
	conn = pk_accept(lfd);
	n = pk_recv(conn, &q, sizeof(q), NULL, 0, NULL, NULL, -1);
	expect(n == sizeof(q) && q.type == PK_STAT_REQ &&
	       q.version == PK_VERSION, "stat request of %d bytes", n);
	expect_eq(pk_send(conn, &a, sizeof(a), NULL, 0), 0);
	th_get(ctl);
	close(conn);
	close(lfd);
	return 0;
}

START_TEST(test_stats_of_version_2)
{
	int status = _i ? 0 : -EPROTONOSUPPORT;
	struct th_child c = th_spawn(v2_stats_producer,
				     (void *)(intptr_t)status, 0);
	struct shmfd_stat st;
	struct pk_victim v;

	th_get(c.sock);
	pk_victim_begin(&v, "stats of version 2", WATCHDOG_S);
	expect_err(shmfd_chan_stat(NAME, &st, DEADLINE_MS),
		   _i ? EPROTO : EPROTONOSUPPORT);
	pk_victim_end(&v);
	th_put(c.sock, 0);
	expect_exit(c.pid, 0);
	close(c.sock);
}
END_TEST

/* ==== readers that never read, never speak, or never stop ==== */

/* Message seq to chan: inline, or a blob (one byte past max_inline). */
static int send_one(struct shmfd_chan *chan, uint64_t seq, bool blob,
		    int timeout_ms)
{
	static char buf[RING / 4 + 1];
	size_t len = blob ? sizeof(buf) : INLINE_LEN;

	th_fill(buf, len, seq);
	return shmfd_send(chan, buf, len, timeout_ms);
}

static void recv_one(struct shmfd_reader *r, uint64_t seq, bool blob)
{
	struct shmfd_msg m;

	expect_ok(shmfd_recv(r, &m, 0, DEADLINE_MS));
	expect_eq(m.len, blob ? RING / 4 + 1 : INLINE_LEN);
	expect_next(r, &m, seq);
}

/*
 * A kit reader joins and never reads: neither the ring nor its socket.
 * _i bit 0: the messages are blobs (its socket fills); bit 1: lossy.
 * Reliable, it holds the producer back only for each send's timeout,
 * and not at all once it has gone (dropped at once); lossy, never.  A
 * library reader beside it receives every message sent, in order.
 */
START_TEST(test_never_reads)
{
	bool blob = _i & 1, lossy = _i & 2;
	struct shmfd_chan *chan = th_chan(NAME, RING, 0,
					  lossy ? SHMFD_LOSSY : 0);
	int share = expect_ok(shmfd_chan_share_fd(chan));
	struct shmfd_reader *good = th_join(share, 0);
	struct pk_victim v;
	struct pk_reader stuck;
	uint64_t seq = 0;
	int ret = 0;

	/* The producer makes its blob sender's io_uring on the first blob:
	 * one before the count. */
	if (blob) {
		expect_ok(send_one(chan, seq + 1, blob, DEADLINE_MS));
		recv_one(good, ++seq, blob);
	}
	pk_victim_begin(&v, "a reader that never reads", WATCHDOG_S);
	expect_eq(pk_join_named(&stuck, NAME, 0), 0);
	expect_eq(shmfd_chan_readers(chan), 2);
	for (int i = 0; i < (lossy ? 1000 : 5000); i++) {
		ret = send_one(chan, seq + 1, blob, lossy ? 0 : 100);
		if (ret == -ETIMEDOUT)
			break;
		expect_ok(ret);
		recv_one(good, ++seq, blob);
	}
	if (lossy)
		expect_eq(ret, 0);
	else
		ck_assert_msg(ret == -ETIMEDOUT, "%llu sends, the stuck reader "
			      "never held the producer back",
			      (unsigned long long)seq);
	/* It goes without a word: the producer drops it and goes on. */
	pk_reader_close(&stuck, false);
	expect_ok(send_one(chan, seq + 1, blob, DEADLINE_MS));
	recv_one(good, ++seq, blob);
	expect_eventually(shmfd_chan_readers(chan) == 1);
	wait_until(th_fd_count() == v.count);
	pk_victim_end(&v);
	shmfd_reader_close(good);
	close(share);
	shmfd_chan_close(chan);
}
END_TEST

/* Any value, often near what the producer would believe. */
static uint64_t scribble(uint64_t *rng, uint64_t near)
{
	uint64_t x = *rng;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*rng = x;
	switch (x % 4) {
	case 0:
		return x;
	case 1:
		return near + (x >> 60) - 8;	/* near +- 8 */
	case 2:
		return near + 1;
	default:
		return (x >> 8) % 2 ? 0 : UINT64_MAX;
	}
}

/*
 * A kit reader writes whatever it likes into every word of its page
 * (tail, wake, sleep_pos, polls, lost) between the producer's sends, of
 * 100 bytes and of 128 KiB (which wake readers early, ring.c (9)).  The
 * producer trusts none of it: each send succeeds, or, reliable, times
 * out because a tail it cannot trust holds it back; it never crashes or
 * hangs; the library reader beside it receives every message sent, in
 * order and intact.  _i: lossy.
 */
START_TEST(test_scribbled_page)
{
	enum { BIG = 128 * 1024, ROUNDS = 300 };
	struct shmfd_chan *chan = th_chan(NULL, 8 * BIG, 0,
					  _i ? SHMFD_LOSSY : 0);
	int share = expect_ok(shmfd_chan_share_fd(chan));
	struct shmfd_reader *good = th_join(share, 0);
	static char buf[BIG];
	uint64_t rng = 0x9e3779b97f4a7c15u, seq = 0;
	struct pk_victim v;
	struct pk_reader bad;
	int timeouts = 0;

	pk_victim_begin(&v, "a reader that scribbles on its page",
			WATCHDOG_S);
	expect_eq(pk_join_share(&bad, share, 0), 0);
	for (int i = 0; i < ROUNDS; i++) {
		uint64_t head = bad.hdr->head;
		size_t len = i % 3 ? INLINE_LEN : BIG;
		struct shmfd_msg m;
		int ret;

		bad.page->tail = scribble(&rng, head);
		bad.page->wake = (uint32_t)scribble(&rng, 0);
		bad.page->sleep_pos = scribble(&rng, head);
		bad.page->polls = (uint32_t)scribble(&rng, 0);
		bad.page->lost = scribble(&rng, 0);
		th_fill(buf, len, seq + 1);
		ret = shmfd_send(chan, buf, len, _i ? 0 : 20);
		if (!_i && ret == -ETIMEDOUT) {
			timeouts++;
			continue;
		}
		expect_ok(ret);
		expect_ok(shmfd_recv(good, &m, 0, DEADLINE_MS));
		expect_eq(m.len, len);
		expect_next(good, &m, ++seq);
	}
	ck_assert_msg(seq > 0, "no send got through (%d timed out)",
		      timeouts);
	pk_reader_close(&bad, false);
	/* Gone without a word: dropped, and the producer goes on. */
	th_fill(buf, INLINE_LEN, seq + 1);
	expect_ok(shmfd_send(chan, buf, INLINE_LEN, DEADLINE_MS));
	{
		struct shmfd_msg m;

		expect_ok(shmfd_recv(good, &m, 0, DEADLINE_MS));
		expect_next(good, &m, ++seq);
	}
	expect_eventually(shmfd_chan_readers(chan) == 1);
	wait_until(th_fd_count() == v.count);
	pk_victim_end(&v);
	shmfd_reader_close(good);
	close(share);
	shmfd_chan_close(chan);
}
END_TEST

/* Connect to NAME n times, keep every connection, say nothing. */
static int silent_crowd(int ctl, void *arg)
{
	int n = (int)(intptr_t)arg;
	struct rlimit rl;

	expect_sys(getrlimit(RLIMIT_NOFILE, &rl));
	if (rl.rlim_cur < (rlim_t)n + 64) {
		rl.rlim_cur = (rlim_t)n + 64;
		if (rl.rlim_max < rl.rlim_cur)
			rl.rlim_max = rl.rlim_cur;	/* root may */
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
			/* Not root: as many as the hard limit allows,
			 * still well past the producer's 64. */
			expect_sys(getrlimit(RLIMIT_NOFILE, &rl));
			rl.rlim_cur = rl.rlim_max;
			expect_sys(setrlimit(RLIMIT_NOFILE, &rl));
			if ((rlim_t)n + 64 > rl.rlim_cur)
				n = (int)rl.rlim_cur - 64;
		}
	}
	th_get(ctl);
	for (int i = 0; i < n; i++) {
		int fd = pk_connect(NAME);

		expect(fd >= 0, "connection %d: %s", i, th_strerr(fd));
	}
	th_put(ctl, 1);
	th_get(ctl);
	return 0;
}

/*
 * _i: 200 or 1000 connections that never speak, all held open.  The
 * producer keeps at most 64 of them (the oldest gives way), and still
 * admits a reader and answers an observer meanwhile; once they go, its
 * fds are what they were.
 */
START_TEST(test_silent_connections)
{
	int n = _i ? 1000 : 200;
	struct shmfd_chan *chan = th_chan(NAME, RING, 0, 0);
	struct shmfd_reader *r = NULL;
	struct shmfd_stat st;
	struct pk_victim v;
	struct th_child c;
	char buf[INLINE_LEN];
	struct shmfd_msg m;

	c = th_spawn(silent_crowd, (void *)(intptr_t)n, 0);
	pk_victim_begin(&v, "connections that never speak", WATCHDOG_S);
	th_put(c.sock, 0);
	expect_eq(th_get(c.sock), 1);
	expect_eventually(th_fd_count() <= v.count + 64);
	expect_ok(shmfd_reader_open(&r, NAME, 0));
	th_fill(buf, sizeof(buf), 1);
	expect_ok(shmfd_send(chan, buf, sizeof(buf), DEADLINE_MS));
	expect_ok(shmfd_recv(r, &m, 0, DEADLINE_MS));
	expect_next(r, &m, 1);
	expect_ok(shmfd_chan_stat(NAME, &st, DEADLINE_MS));
	expect_eq(st.readers, 1);
	shmfd_reader_close(r);
	th_put(c.sock, 0);
	expect_exit(c.pid, 0);
	expect_eventually(shmfd_chan_readers(chan) == 0);
	wait_until(th_fd_count() == v.count);
	pk_victim_end(&v);
	close(c.sock);
	shmfd_chan_close(chan);
}
END_TEST

/*
 * A thousand connections one after the other: a third close at once,
 * a third join and say bye, a third join and hang up.  The producer
 * ends with no reader and the fds it started with, has counted every
 * join, and serves a reader that comes after.
 */
START_TEST(test_thousand_joins)
{
	struct shmfd_chan *chan = th_chan(NAME, RING, 0, 0);
	int share = expect_ok(shmfd_chan_share_fd(chan));
	struct shmfd_stat st;
	struct pk_victim v;
	struct th_child c;
	unsigned int joins = 0;

	pk_victim_begin(&v, "a thousand connections", WATCHDOG_S);
	for (int i = 0; i < 1000; i++) {
		struct pk_reader r;
		int fd;

		switch (i % 3) {
		case 0:
			fd = pk_connect(NAME);
			expect(fd >= 0, "connect: %s", th_strerr(fd));
			close(fd);
			break;
		default:
			expect_eq(pk_join_named(&r, NAME, 0), 0);
			joins++;
			pk_reader_close(&r, i % 3 == 1);
			break;
		}
	}
	expect_eventually(shmfd_chan_readers(chan) == 0);
	wait_until(th_fd_count() == v.count);
	pk_victim_end(&v);
	expect_ok(shmfd_chan_stat(NAME, &st, DEADLINE_MS));
	expect_eq(st.joins, joins);
	c = th_spawn(good_reader, &share, 0);
	th_get(c.sock);
	serve_good_reader(chan, &c);
	close(share);
	shmfd_chan_close(chan);
}
END_TEST

/* ==== the joins figure ==== */

/*
 * shmfd_chan_stat's joins counts the readers that were welcomed: not one
 * refused at the hello, nor one whose welcome could not be delivered
 * (here its socket refuses to receive: the producer's send fails after
 * it registered the reader).
 */
START_TEST(test_joins_counts_welcomed)
{
	struct shmfd_chan *chan = th_chan(NAME, RING, 0, 0);
	const struct hello_case garbage = HC("garbage", PG_GOOD, -EPROTO,
					     -EPROTO, .garbage = true);
	struct pk_hello h = {
		.type = PK_HELLO,
		.version = PK_VERSION,
		.nfds = 1,
	};
	struct shmfd_stat st;
	struct pk_reader r;
	int sock, page;

	/* Refused at the hello. */
	sock = pk_connect(NAME);
	expect(sock >= 0, "connect: %s", th_strerr(sock));
	expect_err(bad_hello(sock, false, &garbage), EPROTO);
	close(sock);
	/* Registered, but the welcome cannot be sent. */
	sock = pk_connect(NAME);
	expect(sock >= 0, "connect: %s", th_strerr(sock));
	expect_sys(shutdown(sock, SHUT_RD));
	page = pk_good_page();
	expect_eq(pk_send(sock, &h, sizeof(h), &page, 1), 0);
	close(page);
	expect(th_readable(sock, DEADLINE_MS), "the producer kept the reader");
	close(sock);
	expect_eventually(shmfd_chan_readers(chan) == 0);
	expect_ok(shmfd_chan_stat(NAME, &st, DEADLINE_MS));
	expect_eq(st.readers, 0);
	expect_eq(st.joins, 0);
	/* A reader that is welcomed counts. */
	expect_eq(pk_join_named(&r, NAME, 0), 0);
	expect_ok(shmfd_chan_stat(NAME, &st, DEADLINE_MS));
	expect_eq(st.readers, 1);
	expect_eq(st.joins, 1);
	pk_reader_close(&r, true);
	shmfd_chan_close(chan);
}
END_TEST

/* ==== who may join a named channel (as root) ==== */

#define NOBODY		65534
#define NO_GROUP	((gid_t)-1)

/*
 * The producer (root here) admits exactly whom connect(2) lets in to a
 * socket file of its mode: the class's write bit, supplementary groups
 * counted as the kernel counts them.  widen: the file is then chmod-ed
 * 0666, so that only the producer's own check decides.
 */
static const struct cred_case {
	const char *what;
	mode_t mode;
	bool widen;
	gid_t gid;
	gid_t supp;
	int want;
} cred_cases[] = {
	{ "our group by a supplementary group, 0660", 0660, false, NOBODY,
	  0, 0 },
	{ "our group by a supplementary group, 0660, file widened", 0660,
	  true, NOBODY, 0, 0 },
	{ "our group, read bit only", 0640, false, 0, NO_GROUP, -EACCES },
	{ "our group, read bit only, file widened", 0640, true, 0, NO_GROUP,
	  -EACCES },
	{ "other, read bit only, file widened", 0604, true, NOBODY, NO_GROUP,
	  -EACCES },
	{ "other, write bit", 0602, false, NOBODY, NO_GROUP, 0 },
	/* The group class, once the peer is in it, decides alone. */
	{ "our group by a supplementary group, 0606, file widened", 0606,
	  true, NOBODY, 0, -EACCES },
};

static int cred_reader(int ctl, void *arg)
{
	const struct cred_case *c = arg;
	gid_t supp = c->supp;
	struct shmfd_stat st;
	struct pk_reader r;
	struct pk_msg m;
	int ret;

	expect_sys(setgroups(supp == NO_GROUP ? 0 : 1, &supp));
	expect_sys(setgid(c->gid));
	expect_sys(setuid(NOBODY));
	/* An observer is admitted as a reader is. */
	th_put(ctl, shmfd_chan_stat("acc", &st, DEADLINE_MS));
	ret = pk_join_named(&r, "acc", 0);
	th_put(ctl, ret);
	if (ret)
		return 0;
	expect_eq(pk_next(&r, &m, DEADLINE_MS), 0);
	th_put(ctl, (int64_t)m.seq);
	pk_reader_close(&r, true);
	return 0;
}

START_TEST(test_credentials)
{
	const struct cred_case *cc = &cred_cases[_i];
	struct shmfd_params p = { .mode = cc->mode };
	struct shmfd_chan *chan = NULL;
	struct th_child c;
	struct pk_victim v;
	char path[256], buf[100];
	int64_t ret;

	expect_sys(chmod(th_dir(), 01777));
	expect_ok(shmfd_chan_create(&chan, "acc", &p));
	snprintf(path, sizeof(path), "%s/acc", th_dir());
	if (cc->widen)
		expect_sys(chmod(path, 0666));
	pk_victim_begin(&v, cc->what, WATCHDOG_S);
	c = th_spawn(cred_reader, (void *)cc, 0);
	ret = th_get(c.sock);
	ck_assert_msg(ret == cc->want, "%s: shmfd_chan_stat = %lld (%s), "
		      "expected %d", cc->what, (long long)ret, th_strerr(ret),
		      cc->want);
	ret = th_get(c.sock);
	ck_assert_msg(ret == cc->want, "%s: join = %lld (%s), expected %d",
		      cc->what, (long long)ret, th_strerr(ret), cc->want);
	if (ret == 0) {
		expect_eq(shmfd_chan_readers(chan), 1);
		th_fill(buf, sizeof(buf), 1);
		expect_ok(shmfd_send(chan, buf, sizeof(buf), DEADLINE_MS));
		expect_eq(th_get(c.sock), 1);
	}
	expect_exit(c.pid, 0);
	close(c.sock);
	expect_eventually(shmfd_chan_readers(chan) == 0);
	wait_until(th_fd_count() == v.count);
	pk_victim_end(&v);
	shmfd_chan_close(chan);
}
END_TEST

/* A producer that is not root admits root, whom connect(2) lets in
 * whatever the mode (the library's own reader would not join it: it
 * trusts only its own user and root, but a reader of another make may). */
static int nobody_producer(int ctl, void *arg)
{
	struct shmfd_params p = { .mode = 0600 };
	struct shmfd_chan *chan = NULL;
	char buf[100];

	expect_sys(setgroups(0, NULL));
	expect_sys(setgid(NOBODY));
	expect_sys(setuid(NOBODY));
	expect_ok(shmfd_chan_create(&chan, "nobody", &p));
	th_put(ctl, 1);
	expect_eventually(shmfd_chan_readers(chan) == 1);
	th_fill(buf, sizeof(buf), 1);
	expect_ok(shmfd_send(chan, buf, sizeof(buf), DEADLINE_MS));
	th_get(ctl);
	shmfd_chan_close(chan);
	return 0;
}

START_TEST(test_root_admitted)
{
	struct th_child c;
	struct pk_reader r;
	struct pk_msg m;

	expect_sys(chmod(th_dir(), 01777));
	c = th_spawn(nobody_producer, NULL, 0);
	th_get(c.sock);
	expect_eq(pk_join_named(&r, "nobody", 0), 0);
	expect_eq(pk_next(&r, &m, DEADLINE_MS), 0);
	expect_eq(m.seq, 1);
	pk_reader_close(&r, true);
	th_put(c.sock, 0);
	expect_exit(c.pid, 0);
	close(c.sock);
}
END_TEST

/* In a set-group-ID directory a new file takes the directory's group:
 * the socket's must still be the producer's, the group its check uses,
 * or connect(2) would let in a group the producer then refuses. */
START_TEST(test_setgid_dir)
{
	struct shmfd_chan *chan;
	char dir[256], path[300];
	struct stat st;

	snprintf(dir, sizeof(dir), "%s/sgid", th_dir());
	expect_sys(mkdir(dir, 0770));
	expect_sys(chown(dir, 0, NOBODY));
	expect_sys(chmod(dir, 03770));	/* group-writable: sticky too */
	setenv("SHMFD_DIR", dir, 1);
	chan = th_chan("g", RING, 0, 0);
	snprintf(path, sizeof(path), "%s/g", dir);
	expect_sys(lstat(path, &st));
	expect_eq(st.st_gid, getegid());
	shmfd_chan_close(chan);
}
END_TEST

/* ==== the kit's own checks can fail ==== */

static int leaky_victim(int ctl, void *arg)
{
	struct pk_victim v;

	pk_victim_begin(&v, "a victim that keeps an fd", WATCHDOG_S);
	expect_sys(dup(ctl));
	pk_victim_end(&v);		/* must fail: exit CHILD_FAILED */
	return 0;
}

static int hung_victim(int ctl, void *arg)
{
	struct pk_victim v;

	pk_victim_begin(&v, "a victim that hangs", 1);
	th_msleep(10000);		/* the watchdog aborts first */
	pk_victim_end(&v);
	return 0;
}

START_TEST(test_kit_checks_fail)
{
	struct th_child c = th_spawn(leaky_victim, NULL, 0);

	expect_exit(c.pid, CHILD_FAILED);
	close(c.sock);
	c = th_spawn(hung_victim, NULL, 0);
	expect_signal(c.pid, SIGABRT);
	close(c.sock);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("peers");
	TCase *tc = th_tcase("bad producer");

	tcase_add_loop_test(tc, test_bad_producer_handshake, 0, 2 * HS_COUNT);
	tcase_add_loop_test(tc, test_bad_ring_contents, 0, RC_COUNT);
	tcase_add_test(tc, test_all_overwritten);
	tcase_add_loop_test(tc, test_bad_blob, 0, BLOB_COUNT);
	tcase_add_test(tc, test_blob_before_start);
	suite_add_tcase(s, tc);
	tc = th_tcase("bad reader");
	tcase_add_loop_test(tc, test_bad_hello, 0, 2 * HELLO_CASES);
	tcase_add_test(tc, test_page_without_seal_seal);
	tcase_add_loop_test(tc, test_share_empty_datagram, 0, 2);
	tcase_add_test(tc, test_share_dropped_hello);
	tcase_add_test(tc, test_named_hello_two_fds);
	suite_add_tcase(s, tc);
	tc = th_tcase("crowds");
	tcase_add_loop_test(tc, test_never_reads, 0, 4);
	tcase_add_loop_test(tc, test_scribbled_page, 0, 2);
	tcase_add_loop_test(tc, test_silent_connections, 0, 2);
	tcase_add_test(tc, test_thousand_joins);
	suite_add_tcase(s, tc);
	tc = th_tcase("figures");
	tcase_add_test(tc, test_joins_counts_welcomed);
	suite_add_tcase(s, tc);
	tc = th_tcase("versions");
	tcase_add_loop_test(tc, test_stat_request, 0,
			    (int)(sizeof(statreq_cases) /
				  sizeof(statreq_cases[0])));
	tcase_add_loop_test(tc, test_stats_of_version_2, 0, 2);
	suite_add_tcase(s, tc);
	if (geteuid() == 0) {
		tc = th_tcase("credentials");
		tcase_add_loop_test(tc, test_credentials, 0,
				    (int)(sizeof(cred_cases) /
					  sizeof(cred_cases[0])));
		tcase_add_test(tc, test_root_admitted);
		tcase_add_test(tc, test_setgid_dir);
		suite_add_tcase(s, tc);
	} else {
		th_skip("the admission tests between users need root (to "
			"setuid to %d)", NOBODY);
	}
	tc = th_tcase("kit");
	tcase_add_test(tc, test_kit_checks_fail);
	suite_add_tcase(s, tc);
	return th_run(s);
}
