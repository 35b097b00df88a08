/* SPDX-License-Identifier: MIT */
/*
 * Peers that break the protocol (DESIGN §4.2, §4.3 for the ring): a fake
 * producer that hands out a ring memfd without seals, of the wrong size,
 * or not a memfd at all; a fake reader whose page is unsealed or short.
 * The victim refuses with -EPROTO, keeps no fd, and -- for the producer --
 * keeps serving a well-behaved reader.  The fakes speak the handshake of
 * lib/layout.h by hand.
 */
#define _GNU_SOURCE
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
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
static int memfd(size_t size, int seals, bool ring)
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
		h->ring_size = RING;
		h->max_inline = RING / 4;
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
	case RING_GOOD:
		return memfd(size, all, true);
	default:
		return -1;
	}
}

static int fake_producer(int ctl, void *arg)
{
	enum bad_ring how = (enum bad_ring)(intptr_t)arg;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct shmfd__welcome w = {
		.type = SHMFD_MSG_WELCOME,
		.version = SHMFD_PROTO_VERSION,
		.ring_size = how == RING_BAD_SIZE ? RING + 4096 : RING,
		.max_inline = RING / 4,
		.start_pos = 0,
		.start_seq = 1,
		.join_head = 0,
		.producer_pid = getpid(),
	};
	char buf[64];
	int lfd, conn, ring, extra;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", th_dir(), NAME);
	lfd = (int)expect_sys(socket(AF_UNIX, SOCK_SEQPACKET, 0));
	expect_sys(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)));
	expect_sys(listen(lfd, 4));
	th_put(ctl, 1);
	conn = (int)expect_sys(accept(lfd, NULL, NULL));
	expect_sys(recv(conn, buf, sizeof(buf), 0));	/* the hello */
	w.producer_pid = getpid();
	if (how == RING_NO_FD || how == RING_BAD_SIZE) {
		send_with_fds(conn, &w, sizeof(w), NULL, 0);
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

START_TEST(test_bad_reader)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, 0);
	int share = expect_ok(shmfd_chan_share_fd(chan));
	struct th_child c = th_spawn(good_reader, &share, 0);
	char buf[100];

	th_get(c.sock);
	ck_assert_int_eq(shmfd_chan_readers(chan), 1);
	expect_err(fake_reader(chan, (enum bad_page)_i), EPROTO);
	/* Not admitted, and the good reader is served as before. */
	ck_assert_int_eq(shmfd_chan_readers(chan), 1);
	for (uint64_t seq = 1; seq <= 3; seq++) {
		th_fill(buf, sizeof(buf), seq);
		expect_ok(shmfd_send(chan, buf, sizeof(buf), DEADLINE_MS));
	}
	expect_exit(c.pid, 0);
	close(c.sock);
	close(share);
	shmfd_chan_close(chan);
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

int main(void)
{
	Suite *s = suite_create("peers");
	TCase *tc = th_tcase("bad producer");

	tcase_add_loop_test(tc, test_bad_producer, 0, RING_CASES);
	tcase_add_test(tc, test_good_fake_producer);
	suite_add_tcase(s, tc);
	tc = th_tcase("bad reader");
	tcase_add_loop_test(tc, test_bad_reader, 0, PAGE_CASES);
	tcase_add_test(tc, test_good_fake_reader);
	suite_add_tcase(s, tc);
	return th_run(s);
}
