/* SPDX-License-Identifier: MIT */
/*
 * Peers that break the protocol (DESIGN §4.2, §4.3 for the ring): a fake
 * producer that hands out a ring memfd without seals, of the wrong size,
 * or not a memfd at all, or a blob fd that is unsealed, short, long,
 * missing one of its seals or a pipe; a fake reader whose page is unsealed
 * or short.  The victim refuses with -EPROTO, keeps no fd, and goes on:
 * the producer serves a well-behaved reader, the reader takes the next
 * messages.  The fakes speak the handshake and ring of lib/layout.h by
 * hand.
 */
#define _GNU_SOURCE
#include "config.h"

#include <fcntl.h>
#include <pthread.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <shmfd.h>

#include "helpers.h"
#include "../lib/layout.h"

#define NAME	"peers"
#define RING	(64u * 1024u)

static void send_with_fds(int sock, const void *buf, size_t len,
			  const int *fds, int nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds) {
		struct cmsghdr *cm;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	expect_sys(sendmsg(sock, &mh, MSG_NOSIGNAL));
}

/*
 * A memfd whose content is right -- a valid ring header or reader page --
 * so that the one defect under test (seals, size, type) is what the
 * victim has to catch.
 */
static int memfd_hdr(size_t size, int seals, bool ring, uint64_t ring_size,
		     uint64_t max_inline)
{
	int fd = (int)expect_sys(memfd_create("fake", MFD_CLOEXEC |
					      MFD_ALLOW_SEALING));
	size_t n = size < 4096 ? size : 4096;
	uint8_t *p;

	expect_sys(ftruncate(fd, (off_t)size));
	p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	expect(p != MAP_FAILED, "mmap: %s", strerror(errno));
	if (ring) {
		struct shmfd__ring_hdr *h = (void *)p;

		h->magic = SHMFD_RING_MAGIC;
		h->version = SHMFD_PROTO_VERSION;
		h->hdr_size = SHMFD_HDR_SIZE;
		h->ring_size = ring_size;
		h->max_inline = max_inline;
		h->producer_pid = getpid();
	} else if (n >= sizeof(struct shmfd__reader_page)) {
		struct shmfd__reader_page *pg = (void *)p;

		pg->magic = SHMFD_RPAGE_MAGIC;
		pg->version = SHMFD_PROTO_VERSION;
	}
	munmap(p, n);
	if (seals)
		expect_sys(fcntl(fd, F_ADD_SEALS, seals));
	return fd;
}

static int memfd(size_t size, int seals, bool ring)
{
	return memfd_hdr(size, seals, ring, RING, RING / 4);
}

/* ---- a fake producer ---- */

enum bad_ring {
	RING_UNSEALED,		/* no seals at all */
	RING_NO_SHRINK,		/* everything but F_SEAL_SHRINK: SIGBUS trap */
	RING_WRITABLE,		/* no WRITE or FUTURE_WRITE seal */
	RING_SHORT,		/* sealed, but smaller than announced */
	RING_PIPE,		/* not a memfd */
	RING_BAD_MAGIC,		/* sealed and sized, wrong header */
	RING_NO_FD,		/* a welcome that says 0 but carries nothing */
	RING_BAD_SIZE,		/* ring_size not a power of two */
	RING_HDR_MISMATCH,	/* a header max_inline the welcome did not say */
	RING_HUGE,		/* 4 GiB announced, the header page sent */
	RING_EMPTY,		/* the ring fd on an empty datagram */
	RING_CASES,
	RING_GOOD = RING_CASES,	/* proves the fake is otherwise right */
};

static int fake_ring(enum bad_ring how, int *extra)
{
	const int all = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE |
			F_SEAL_SEAL;
	size_t size = SHMFD_HDR_SIZE + RING;
	int fd, p[2];

	*extra = -1;
	switch (how) {
	case RING_UNSEALED:
		return memfd(size, 0, true);
	case RING_NO_SHRINK:
		return memfd(size, all & ~F_SEAL_SHRINK, true);
	case RING_WRITABLE:
		return memfd(size, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL,
			     true);
	case RING_SHORT:
		return memfd(size - 4096, all, true);
	case RING_PIPE:
		expect_sys(pipe2(p, O_CLOEXEC));
		*extra = p[1];
		return p[0];
	case RING_BAD_MAGIC:
		fd = memfd(size, 0, false);	/* a page's content */
		expect_sys(fcntl(fd, F_ADD_SEALS, all));
		return fd;
	case RING_HDR_MISMATCH:
		return memfd_hdr(size, all, true, RING, RING / 8);
	case RING_HUGE:
		/* What a 32-bit reader mapped when 4096 + 4 GiB wrapped. */
		return memfd_hdr(SHMFD_HDR_SIZE, all, true, SHMFD_MAX_RING,
				 RING / 4);
	case RING_GOOD:
		return memfd(size, all, true);
	default:
		return -1;
	}
}

/* Listen on NAME, say so on ctl, accept one reader and take its hello:
 * the connection the welcome and everything after it go on. */
static int fake_accept(int ctl)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char buf[64];
	int lfd, conn;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", th_dir(), NAME);
	lfd = (int)expect_sys(socket(AF_UNIX, SOCK_SEQPACKET, 0));
	expect_sys(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)));
	expect_sys(listen(lfd, 4));
	th_put(ctl, 1);
	conn = (int)expect_sys(accept(lfd, NULL, NULL));
	expect_sys(recv(conn, buf, sizeof(buf), 0));	/* the hello */
	close(lfd);
	return conn;
}

static struct shmfd__welcome fake_welcome(void)
{
	struct shmfd__welcome w = {
		.type = SHMFD_MSG_WELCOME,
		.version = SHMFD_PROTO_VERSION,
		.ring_size = RING,
		.max_inline = RING / 4,
		.start_pos = 0,
		.start_seq = 1,
		.join_head = 0,
		.producer_pid = getpid(),
	};

	return w;
}

static int fake_producer(int ctl, void *arg)
{
	enum bad_ring how = (enum bad_ring)(intptr_t)arg;
	struct shmfd__welcome w = fake_welcome();
	int conn, ring, extra;

	if (how == RING_BAD_SIZE)
		w.ring_size = RING + 4096;
	if (how == RING_HUGE)
		w.ring_size = SHMFD_MAX_RING;
	conn = fake_accept(ctl);
	if (how == RING_NO_FD || how == RING_BAD_SIZE) {
		send_with_fds(conn, &w, sizeof(w), NULL, 0);
	} else if (how == RING_EMPTY) {
		ring = fake_ring(RING_GOOD, &extra);
		send_with_fds(conn, &w, 0, &ring, 1);
	} else {
		ring = fake_ring(how, &extra);
		send_with_fds(conn, &w, sizeof(w), &ring, 1);
	}
	/* Stay until the reader has decided. */
	th_get(ctl);
	return 0;
}

START_TEST(test_bad_producer)
{
	struct th_child c = th_spawn(fake_producer, (void *)(intptr_t)_i, 0);
	struct shmfd_reader *r = NULL;
	int before;

	th_get(c.sock);
	before = th_fd_count();
	/* A 4 GiB ring is legal, but no 32-bit process can map it. */
	if (_i == RING_HUGE && sizeof(size_t) < 8)
		expect_err(shmfd_reader_open(&r, NAME, 0), ENOMEM);
	else
		expect_err(shmfd_reader_open(&r, NAME, 0), EPROTO);
	ck_assert_ptr_null(r);
	/* The memfd it was handed is not kept either. */
	ck_assert_int_eq(th_fd_count(), before);
	ck_assert_int_eq(th_fds_matching("memfd:"), 0);
	th_put(c.sock, 0);
	expect_exit(c.pid, 0);
	close(c.sock);
}
END_TEST

/* ---- a fake producer that sends blobs ---- */

enum bad_blob {
	BLOB_UNSEALED,		/* a memfd of the right size, no seals */
	BLOB_SHORT,		/* sealed, shorter than the record says */
	BLOB_LONG,		/* sealed, longer than the record says */
	BLOB_FUTURE_WRITE,	/* FUTURE_WRITE, not WRITE: its maker writes */
	BLOB_NO_WRITE,		/* SHRINK|GROW|SEAL: anyone writes */
	BLOB_NO_SHRINK,		/* WRITE|GROW|SEAL: SIGBUS trap */
	BLOB_NO_SEAL,		/* WRITE|SHRINK|GROW: seals could be added */
	BLOB_PIPE,		/* not a memfd */
	BLOB_CASES,
	BLOB_GOOD = BLOB_CASES,	/* proves the fake is otherwise right */
	BLOB_NO_FD,		/* a record whose fd never came: lost */
	BLOB_EMPTY_FIRST,	/* an empty datagram with a pipe, then the fd */
	BLOB_ALL,
};

#define BLOB_SIZE	(3 * 4096 + 100)
#define BLOB_SEALS	(F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | \
			 F_SEAL_SEAL)
#define INLINE_LEN	100

/* A ring the fake keeps mapped writable, sealed like the real one. */
struct fake_ring {
	int fd;
	struct shmfd__ring_hdr *hdr;
	uint8_t *data;
	uint64_t head;
};

static void fake_ring_rw(struct fake_ring *fr)
{
	const size_t size = SHMFD_HDR_SIZE + RING;
	void *p;

	fr->fd = (int)expect_sys(memfd_create("fake-ring", MFD_CLOEXEC |
					      MFD_ALLOW_SEALING));
	expect_sys(ftruncate(fr->fd, (off_t)size));
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fr->fd, 0);
	expect(p != MAP_FAILED, "mmap: %s", strerror(errno));
	fr->hdr = p;
	fr->data = (uint8_t *)p + SHMFD_HDR_SIZE;
	fr->head = 0;
	fr->hdr->magic = SHMFD_RING_MAGIC;
	fr->hdr->version = SHMFD_PROTO_VERSION;
	fr->hdr->hdr_size = SHMFD_HDR_SIZE;
	fr->hdr->ring_size = RING;
	fr->hdr->max_inline = RING / 4;
	fr->hdr->producer_pid = getpid();
	/* FUTURE_WRITE: our mapping keeps working, nobody else writes. */
	expect_sys(fcntl(fr->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW |
			 F_SEAL_FUTURE_WRITE | F_SEAL_SEAL));
}

/* Publish one record (ring.c (1)) and wake a reader that sleeps. */
static void fake_publish(struct fake_ring *fr, uint32_t type, uint64_t seq,
			 const void *payload, uint32_t len)
{
	struct shmfd__rec *rec = (void *)(fr->data + (fr->head & (RING - 1)));
	uint64_t end = fr->head + ((sizeof(*rec) + len + SHMFD_REC_ALIGN - 1) &
				   ~(uint64_t)(SHMFD_REC_ALIGN - 1));

	expect(end <= RING, "the fake ring does not wrap");
	memcpy(rec + 1, payload, len);
	rec->len = len;
	rec->type = type;
	rec->seq = seq;
	__atomic_store_n(&fr->hdr->commit_gen, fr->hdr->commit_gen + 1,
			 __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	__atomic_store_n(&fr->hdr->latest, fr->head, __ATOMIC_RELAXED);
	__atomic_store_n(&fr->hdr->seq, seq, __ATOMIC_RELAXED);
	if (type == SHMFD_REC_BLOB)
		__atomic_store_n(&fr->hdr->blob_id,
				 ((const struct shmfd__blob_desc *)payload)->id,
				 __ATOMIC_RELAXED);
	fr->head = end;
	__atomic_store_n(&fr->hdr->head, end, __ATOMIC_RELEASE);
	__atomic_store_n(&fr->hdr->commit_gen, fr->hdr->commit_gen + 1,
			 __ATOMIC_RELEASE);
	__atomic_fetch_add(&fr->hdr->futex, 1, __ATOMIC_RELEASE);
	syscall(SYS_futex, &fr->hdr->futex, FUTEX_WAKE, INT_MAX, NULL, NULL,
		0);
}

static void fake_inline(struct fake_ring *fr, uint64_t seq)
{
	char buf[INLINE_LEN];

	th_fill(buf, sizeof(buf), seq);
	fake_publish(fr, SHMFD_REC_MSG, seq, buf, sizeof(buf));
}

/* A memfd named name of size bytes holding th_fill(seq), then sealed. */
static int blob_memfd(const char *name, size_t size, uint64_t seq, int seals)
{
	int fd = (int)expect_sys(memfd_create(name, MFD_CLOEXEC |
					      MFD_ALLOW_SEALING));
	char *buf = malloc(size);

	expect(buf, "malloc");
	th_fill(buf, size, seq);
	expect_sys(ftruncate(fd, (off_t)size));
	expect(pwrite(fd, buf, size, 0) == (ssize_t)size, "pwrite: %s",
	       strerror(errno));
	free(buf);
	if (seals)
		expect_sys(fcntl(fd, F_ADD_SEALS, seals));
	return fd;
}

/* The fd of blob seq as case how makes it (-1: none); *extra is another
 * fd to close after sending (a pipe's write end). */
static int fake_blob_fd(enum bad_blob how, uint64_t seq, int *extra)
{
	const char *bad = "fake-blob-bad";
	int p[2];

	*extra = -1;
	switch (how) {
	case BLOB_UNSEALED:
		return blob_memfd(bad, BLOB_SIZE, seq, 0);
	case BLOB_SHORT:
		return blob_memfd(bad, BLOB_SIZE - 4096, seq, BLOB_SEALS);
	case BLOB_LONG:
		return blob_memfd(bad, BLOB_SIZE + 4096, seq, BLOB_SEALS);
	case BLOB_FUTURE_WRITE:
		return blob_memfd(bad, BLOB_SIZE, seq, F_SEAL_SHRINK |
				  F_SEAL_GROW | F_SEAL_FUTURE_WRITE |
				  F_SEAL_SEAL);
	case BLOB_NO_WRITE:
		return blob_memfd(bad, BLOB_SIZE, seq, BLOB_SEALS &
				  ~F_SEAL_WRITE);
	case BLOB_NO_SHRINK:
		return blob_memfd(bad, BLOB_SIZE, seq, BLOB_SEALS &
				  ~F_SEAL_SHRINK);
	case BLOB_NO_SEAL:
		return blob_memfd(bad, BLOB_SIZE, seq, BLOB_SEALS &
				  ~F_SEAL_SEAL);
	case BLOB_PIPE:
		expect_sys(pipe2(p, O_CLOEXEC));
		*extra = p[1];
		return p[0];
	case BLOB_NO_FD:
		return -1;
	default:
		return blob_memfd("fake-blob-good", BLOB_SIZE, seq, BLOB_SEALS);
	}
}

/* Blob seq with this id: its fd on the reader's socket, then its record,
 * as layout.h says. */
static void fake_blob(struct fake_ring *fr, int conn, enum bad_blob how,
		      uint64_t id, uint64_t seq)
{
	struct shmfd__blob_fd m = {
		.type = SHMFD_MSG_BLOB_FD,
		.id = id,
		.seq = seq,
		.size = BLOB_SIZE,
	};
	struct shmfd__blob_desc d = { .id = id, .size = BLOB_SIZE };
	int extra, fd = fake_blob_fd(how, seq, &extra);

	if (how == BLOB_EMPTY_FIRST) {
		int p[2];

		/* Not a hang-up, not a blob: its fd is closed, the real one
		 * behind it is taken. */
		expect_sys(pipe2(p, O_CLOEXEC));
		send_with_fds(conn, &m, 0, &p[0], 1);
		close(p[0]);
		close(p[1]);
	}
	if (fd >= 0) {
		send_with_fds(conn, &m, sizeof(m), &fd, 1);
		close(fd);
	}
	if (extra >= 0)
		close(extra);
	fake_publish(fr, SHMFD_REC_BLOB, seq, &d, sizeof(d));
}

/*
 * Seq 1: blob 1 with the defect under test; 2: inline; 3: blob 2, good;
 * 4: inline.
 */
static int fake_blob_producer(int ctl, void *arg)
{
	enum bad_blob how = (enum bad_blob)(intptr_t)arg;
	struct shmfd__welcome w = fake_welcome();
	struct fake_ring fr;
	int conn;

	fake_ring_rw(&fr);
	conn = fake_accept(ctl);
	send_with_fds(conn, &w, sizeof(w), &fr.fd, 1);
	th_get(ctl);				/* the reader joined */
	fake_blob(&fr, conn, how, 1, 1);
	fake_inline(&fr, 2);
	fake_blob(&fr, conn, BLOB_GOOD, 2, 3);
	fake_inline(&fr, 4);
	th_put(ctl, 2);
	/* Stay until the reader has read it all. */
	th_get(ctl);
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

		ck_assert_msg(seals >= 0 && (seals & BLOB_SEALS) == BLOB_SEALS,
			      "blob fd seals %#x", seals);
	}
	expect_eq(shmfd_msg_release(r, &m), 0);
}

START_TEST(test_bad_blob)
{
	enum bad_blob how = (enum bad_blob)_i;
	struct th_child c = th_spawn(fake_blob_producer, (void *)(intptr_t)_i,
				     0);
	struct shmfd_reader *r = NULL;
	struct shmfd_msg m;
	int before, joined, pipes;

	th_get(c.sock);
	before = th_fd_count();
	pipes = th_fds_matching("pipe:");
	expect_ok(shmfd_reader_open(&r, NAME, 0));
	joined = th_fd_count();
	th_put(c.sock, 0);
	expect_eq(th_get(c.sock), 2);		/* all published */

	if (how == BLOB_GOOD || how == BLOB_EMPTY_FIRST) {
		expect_msg(r, 1, true);
		expect_msg(r, 2, false);
	} else if (how == BLOB_NO_FD) {
		/* Its fd never came: the blob is lost, not an error. */
		expect_ok(shmfd_recv(r, &m, 0, DEADLINE_MS));
		expect_eq(m.seq, 2);
		expect_eq(m.lost, 1);
		ck_assert_msg(th_check(m.data, m.len, 2) < 0, "corrupt");
		expect_eq(shmfd_msg_release(r, &m), 0);
	} else {
		expect_err(shmfd_recv(r, &m, 0, DEADLINE_MS), EPROTO);
		/* The bad fd is closed at once. */
		ck_assert_int_eq(th_fds_matching("fake-blob-bad"), 0);
		ck_assert_int_eq(th_fds_matching("pipe:"), pipes);
		/* The reader goes on with the next message.  Whether the
		 * refused blob counts in lost is not for this test. */
		expect_ok(shmfd_recv(r, &m, 0, DEADLINE_MS));
		ck_assert_msg(m.seq == 2 && m.lost <= 1 && m.fd == -1 &&
			      m.len == INLINE_LEN &&
			      th_check(m.data, m.len, 2) < 0,
			      "after -EPROTO: seq %llu lost %llu len %zu fd %d",
			      (unsigned long long)m.seq,
			      (unsigned long long)m.lost, m.len, m.fd);
		expect_eq(shmfd_msg_release(r, &m), 0);
	}
	/* A good blob and an inline message after it, as usual. */
	expect_msg(r, 3, true);
	expect_msg(r, 4, false);
	expect_err(shmfd_recv(r, &m, 0, 0), EAGAIN);
	/* No fd of any blob stays. */
	ck_assert_int_eq(th_fds_matching("memfd:"), 0);
	ck_assert_int_eq(th_fd_count(), joined);
	shmfd_reader_close(r);
	ck_assert_int_eq(th_fd_count(), before);
	th_put(c.sock, 0);
	expect_exit(c.pid, 0);
	close(c.sock);
}
END_TEST

/* ---- a fake producer whose records break the rules ---- */

/*
 * Each is one record a producer cannot have published, at a position
 * the welcome let the reader start from: the reader refuses it with
 * -EPROTO (found by tests/fuzz/fuzz-ring).
 */
enum bad_rec {
	REC_SEQ_MAX,		/* seq 2^64 - 1: next_seq would wrap to 0 */
	REC_END_WRAPS,		/* at 2^64 - 32, 16 bytes: ends at "0" */
	REC_PAD_END_WRAPS,	/* the same with a PAD */
	REC_BLOB_AT_END,	/* a blob whose descriptor is past the ring */
	REC_CASES,
};

static void fake_rec(struct fake_ring *fr, uint64_t pos, uint32_t type,
		     uint32_t len, uint64_t seq)
{
	struct shmfd__rec *rec = (void *)(fr->data + (pos & (RING - 1)));

	rec->len = len;
	rec->type = type;
	rec->seq = seq;
}

static void fake_head(struct fake_ring *fr, uint64_t head)
{
	fr->head = head;
	__atomic_store_n(&fr->hdr->head, head, __ATOMIC_RELEASE);
	__atomic_fetch_add(&fr->hdr->futex, 1, __ATOMIC_RELEASE);
	syscall(SYS_futex, &fr->hdr->futex, FUTEX_WAKE, INT_MAX, NULL, NULL,
		0);
}

static int fake_rec_producer(int ctl, void *arg)
{
	enum bad_rec how = (enum bad_rec)(intptr_t)arg;
	struct shmfd__welcome w = fake_welcome();
	struct fake_ring fr;
	uint64_t start = 0, published = 16;
	int conn;

	fake_ring_rw(&fr);
	if (how == REC_END_WRAPS || how == REC_PAD_END_WRAPS)
		start = UINT64_MAX - 31;	/* offset RING - 32 */
	if (how == REC_BLOB_AT_END)
		start = RING - 16;
	w.start_pos = w.join_head = start;
	fr.hdr->head = fr.hdr->oldest = fr.head = start;
	conn = fake_accept(ctl);
	send_with_fds(conn, &w, sizeof(w), &fr.fd, 1);
	th_get(ctl);				/* the reader joined */
	switch (how) {
	case REC_SEQ_MAX:
		fake_rec(&fr, start, SHMFD_REC_MSG, 0, UINT64_MAX);
		break;
	case REC_END_WRAPS:
		fake_rec(&fr, start, SHMFD_REC_MSG, 16, 1);
		break;
	case REC_PAD_END_WRAPS:
		fake_rec(&fr, start, SHMFD_REC_PAD, 16, 0);
		break;
	case REC_BLOB_AT_END:
		/* Its descriptor would be the 16 bytes at the start of the
		 * data area, published too: a record that wraps. */
		fake_rec(&fr, start, SHMFD_REC_BLOB, 16, 1);
		published = 32;
		break;
	default:
		break;
	}
	fake_head(&fr, start + published);
	th_put(ctl, 1);
	th_get(ctl);				/* the reader is done */
	return 0;
}

START_TEST(test_bad_record)
{
	struct th_child c = th_spawn(fake_rec_producer, (void *)(intptr_t)_i,
				     0);
	struct shmfd_reader *r = NULL;
	struct shmfd_msg m;
	int before, ret;

	th_get(c.sock);
	before = th_fd_count();
	expect_ok(shmfd_reader_open(&r, NAME, 0));
	th_put(c.sock, 0);
	expect_eq(th_get(c.sock), 1);		/* published */
	expect_err(shmfd_recv(r, &m, 0, 0), EPROTO);
	/* Failed cleanly: it says so again, and lets go of everything. */
	ret = shmfd_recv(r, &m, 0, 0);
	ck_assert_msg(ret == -EPROTO || ret == -EAGAIN,
		      "recv after -EPROTO = %d (%s)", ret, th_strerr(ret));
	expect_err(shmfd_recv(r, &m, SHMFD_RECV_LATEST, 0), EPROTO);
	shmfd_reader_close(r);
	ck_assert_int_eq(th_fd_count(), before);
	th_put(c.sock, 0);
	expect_exit(c.pid, 0);
	close(c.sock);
}
END_TEST

/* ---- a lossy producer that retired everything, then stalled ---- */

/*
 * Two messages the reader has not read yet are retired (oldest moves to
 * head), and the producer stalls -- or dies -- before it publishes what
 * it retired them for.  The reader has nothing to read: it must say so,
 * not spin (it did, even with timeout 0: found by tests/fuzz/fuzz-ring),
 * and then read what comes next.
 */
static int fake_overrun_producer(int ctl, void *arg)
{
	struct shmfd__welcome w = fake_welcome();
	struct fake_ring fr;
	int conn;

	fake_ring_rw(&fr);
	w.flags = fr.hdr->flags = SHMFD_RING_LOSSY;
	conn = fake_accept(ctl);
	send_with_fds(conn, &w, sizeof(w), &fr.fd, 1);
	th_get(ctl);				/* the reader joined */
	fake_inline(&fr, 1);
	fake_inline(&fr, 2);
	__atomic_store_n(&fr.hdr->oldest, fr.head, __ATOMIC_RELEASE);
	th_put(ctl, 1);
	th_get(ctl);				/* it found nothing */
	fake_inline(&fr, 3);
	th_put(ctl, 2);
	th_get(ctl);				/* it read it */
	return 0;
}

START_TEST(test_all_overwritten)
{
	struct th_child c = th_spawn(fake_overrun_producer, NULL, 0);
	struct shmfd_reader *r = NULL;
	struct shmfd_msg m;

	th_get(c.sock);
	expect_ok(shmfd_reader_open(&r, NAME, 0));
	th_put(c.sock, 0);
	expect_eq(th_get(c.sock), 1);
	expect_err(shmfd_recv(r, &m, 0, 0), EAGAIN);
	expect_err(shmfd_recv(r, &m, 0, 50), ETIMEDOUT);
	th_put(c.sock, 0);
	expect_eq(th_get(c.sock), 2);
	expect_ok(shmfd_recv(r, &m, 0, DEADLINE_MS));
	ck_assert_msg(m.seq == 3 && m.lost == 2 &&
		      th_check(m.data, m.len, 3) < 0,
		      "seq %llu lost %llu", (unsigned long long)m.seq,
		      (unsigned long long)m.lost);
	expect_eq(shmfd_msg_release(r, &m), 0);
	shmfd_reader_close(r);
	th_put(c.sock, 0);
	expect_exit(c.pid, 0);
	close(c.sock);
}
END_TEST

/* ---- a fake reader ---- */

enum bad_page {
	PAGE_UNSEALED,		/* could shrink it under the producer */
	PAGE_SHORT,		/* sealed, smaller than a page */
	PAGE_WRITE_SEALED,	/* the producer could not map it writable */
	PAGE_PIPE,		/* not a memfd */
	PAGE_NO_FD,		/* a hello that promises an fd, without one */
	PAGE_GARBAGE,		/* not a hello at all */
	PAGE_BAD_MAGIC,		/* right seals and size, wrong content */
	PAGE_CASES,
	PAGE_GOOD = PAGE_CASES,	/* proves the fake is otherwise right */
};

/* Returns the welcome's status. */
static int fake_reader(struct shmfd_chan *chan, enum bad_page how)
{
	const int seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
	struct shmfd__hello h = {
		.type = SHMFD_MSG_HELLO,
		.version = SHMFD_PROTO_VERSION,
		.nfds = 2,
	};
	struct shmfd__welcome w;
	int share = expect_ok(shmfd_chan_share_fd(chan));
	int sv[2], fds[2], p[2] = { -1, -1 }, page = -1;
	ssize_t n;

	expect_sys(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv));
	switch (how) {
	case PAGE_UNSEALED:
		page = memfd(SHMFD_RPAGE_SIZE, 0, false);
		break;
	case PAGE_SHORT:
		page = memfd(1024, seals, false);
		break;
	case PAGE_WRITE_SEALED:
		page = memfd(SHMFD_RPAGE_SIZE, seals | F_SEAL_FUTURE_WRITE,
			     false);
		break;
	case PAGE_PIPE:
		expect_sys(pipe2(p, O_CLOEXEC));
		page = p[0];
		break;
	case PAGE_BAD_MAGIC:
		page = memfd(SHMFD_RPAGE_SIZE, seals, true); /* ring content */
		break;
	case PAGE_NO_FD:
	case PAGE_GARBAGE:
	case PAGE_GOOD:
		page = memfd(SHMFD_RPAGE_SIZE, seals, false);
		break;
	default:
		break;
	}
	fds[0] = page;
	fds[1] = sv[1];
	if (how == PAGE_NO_FD) {
		/* Only the answer socket: the page is missing. */
		send_with_fds(share, &h, sizeof(h), &sv[1], 1);
	} else if (how == PAGE_GARBAGE) {
		char junk[16] = "not a hello....";

		send_with_fds(share, junk, sizeof(junk), fds, 2);
	} else {
		send_with_fds(share, &h, sizeof(h), fds, 2);
	}
	close(sv[1]);
	close(page);
	if (p[1] >= 0)
		close(p[1]);

	/* Every refusal is answered, or the socket is closed. */
	expect(th_readable(sv[0], DEADLINE_MS), "no answer from the producer");
	n = recv(sv[0], &w, sizeof(w), 0);
	close(sv[0]);
	close(share);
	if (n == 0)
		return -EPROTO;		/* hung up on us: also a refusal */
	expect(n == sizeof(w) && w.type == SHMFD_MSG_WELCOME,
	       "answer of %zd bytes", n);
	return w.status;
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
 * it its three messages, see it take them and exit, close everything. */
static void serve_good_reader(struct shmfd_chan *chan, struct th_child *c,
			      int share)
{
	char buf[100];

	ck_assert_int_eq(shmfd_chan_readers(chan), 1);
	for (uint64_t seq = 1; seq <= 3; seq++) {
		th_fill(buf, sizeof(buf), seq);
		expect_ok(shmfd_send(chan, buf, sizeof(buf), DEADLINE_MS));
	}
	expect_exit(c->pid, 0);
	close(c->sock);
	close(share);
	shmfd_chan_close(chan);
}

START_TEST(test_bad_reader)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, 0);
	int share = expect_ok(shmfd_chan_share_fd(chan));
	struct th_child c = th_spawn(good_reader, &share, 0);

	th_get(c.sock);
	ck_assert_int_eq(shmfd_chan_readers(chan), 1);
	expect_err(fake_reader(chan, (enum bad_page)_i), EPROTO);
	/* Not admitted, and the good reader is served as before. */
	serve_good_reader(chan, &c, share);
}
END_TEST

/* The fake producer with a right ring is accepted: the refusals above
 * are for the defect each case adds, not for a flaw in the fake. */
START_TEST(test_good_fake_producer)
{
	struct th_child c = th_spawn(fake_producer, (void *)RING_GOOD, 0);
	struct shmfd_reader *r = NULL;
	struct shmfd_msg m;

	th_get(c.sock);
	expect_ok(shmfd_reader_open(&r, NAME, 0));
	expect_err(shmfd_recv(r, &m, 0, 0), EAGAIN);
	shmfd_reader_close(r);
	th_put(c.sock, 0);
	expect_exit(c.pid, 0);
	close(c.sock);
}
END_TEST

START_TEST(test_good_fake_reader)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, 0);

	ck_assert_int_eq(fake_reader(chan, PAGE_GOOD), 0);
	shmfd_chan_close(chan);
}
END_TEST

/* ---- share fds ---- */

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
	struct th_fds before;
	char buf[100];

	th_fd_snapshot(&before);
	if (_i) {
		int pfd[2];

		expect_sys(pipe2(pfd, O_CLOEXEC));
		send_with_fds(share, buf, 0, &pfd[0], 1);
		close(pfd[0]);
		close(pfd[1]);
	} else {
		expect_sys(send(share, buf, 0, MSG_NOSIGNAL));
	}
	/* Let the admission thread take it before the next hello; an fd
	 * that came with it is closed by then. */
	usleep(100000);
	expect_eq(th_fd_leaks(&before, NULL, 0), 0);
	c = th_spawn(good_reader, &share, 0);
	th_get(c.sock);
	serve_good_reader(chan, &c, share);
}
END_TEST

/* A "producer" at the far end of a share fd that takes the hello and
 * drops it unanswered, closing what came with it. */
static void *silent_producer(void *arg)
{
	int sock = *(int *)arg;
	struct shmfd__hello h;
	union {
		char buf[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = &h, .iov_len = sizeof(h) };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
	};

	if (recvmsg(sock, &mh, MSG_CMSG_CLOEXEC) > 0) {
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm;
		     cm = CMSG_NXTHDR(&mh, cm)) {
			int *fds = (int *)CMSG_DATA(cm);
			size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);

			for (size_t i = 0; i < k; i++)
				close(fds[i]);
		}
	}
	return NULL;
}

/* A join the producer drops without answering ends at once with
 * -EPIPE: the reader must not keep the far end of its own socket. */
START_TEST(test_share_dropped_hello)
{
	struct shmfd_reader *r = NULL;
	pthread_t t;
	int sp[2];

	expect_sys(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp));
	expect(pthread_create(&t, NULL, silent_producer, &sp[1]) == 0,
	       "pthread_create");
	expect_err(shmfd_reader_open_fd(&r, sp[0], 0), EPIPE);
	pthread_join(t, NULL);
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
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct shmfd__hello h = {
		.type = SHMFD_MSG_HELLO,
		.version = SHMFD_PROTO_VERSION,
		.nfds = 1,
	};
	struct shmfd__welcome w;
	struct shmfd_reader *r = NULL;
	int sock, pfd[2], fds[2];
	ssize_t n;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", th_dir(), NAME);
	sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	expect_sys(sock);
	expect_sys(connect(sock, (struct sockaddr *)&sa, sizeof(sa)));
	expect_sys(pipe2(pfd, O_CLOEXEC));
	fds[0] = pfd[0];
	fds[1] = pfd[1];
	send_with_fds(sock, &h, sizeof(h), fds, 2);
	close(pfd[0]);
	close(pfd[1]);
	expect(th_readable(sock, DEADLINE_MS), "no answer from the producer");
	n = recv(sock, &w, sizeof(w), 0);
	expect(n == (ssize_t)sizeof(w) && w.type == SHMFD_MSG_WELCOME,
	       "answer of %zd bytes (0: closed without one)", n);
	expect_err(w.status, EPROTO);
	close(sock);
	expect_ok(shmfd_reader_open(&r, NAME, 0));
	ck_assert_int_eq(shmfd_chan_readers(chan), 1);
	shmfd_reader_close(r);
	shmfd_chan_close(chan);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("peers");
	TCase *tc = th_tcase("bad producer");

	tcase_add_loop_test(tc, test_bad_producer, 0, RING_CASES);
	tcase_add_test(tc, test_good_fake_producer);
	suite_add_tcase(s, tc);
	tc = th_tcase("bad blob");
	tcase_add_loop_test(tc, test_bad_blob, 0, BLOB_ALL);
	suite_add_tcase(s, tc);
	tc = th_tcase("bad record");
	tcase_add_loop_test(tc, test_bad_record, 0, REC_CASES);
	tcase_add_test(tc, test_all_overwritten);
	suite_add_tcase(s, tc);
	tc = th_tcase("bad reader");
	tcase_add_loop_test(tc, test_bad_reader, 0, PAGE_CASES);
	tcase_add_test(tc, test_good_fake_reader);
	tcase_add_loop_test(tc, test_share_empty_datagram, 0, 2);
	tcase_add_test(tc, test_share_dropped_hello);
	tcase_add_test(tc, test_named_hello_two_fds);
	suite_add_tcase(s, tc);
	return th_run(s);
}
