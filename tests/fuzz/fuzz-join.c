/* SPDX-License-Identifier: MIT */
/*
 * A reader joining a hostile producer, end to end: shmfd_reader_open_fd()
 * on a share fd whose far end is a thread of this process that takes the
 * hello and answers with whatever the fuzzer says -- datagrams of any
 * length and content, with no fd, a ring memfd (of the announced size or
 * not, sealed or not, its header right or patched), a pipe, a blob memfd,
 * or two fds -- and then hangs up.  This reaches what only the handshake
 * reads: await_welcome (blob fds before the welcome, error answers),
 * check_welcome, map_ring with real seals and sizes, check_ring_hdr, and
 * the first receives from the ring it mapped.
 *
 * The oracle: no crash; the join ends without waiting for its deadline
 * (the producer always hangs up); it succeeds or returns an errno; and
 * once the reader is closed, or the join failed, no fd is left.
 *
 * Input: open flags (1 byte), then up to 8 datagrams of: spec (1 byte,
 * below), body length (1), body, and for a patched ring header an offset
 * (1) and 8 bytes to write there.
 */
#include "fuzz.h"

#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>

/* spec bits */
#define FD_KIND(s)	((s) & 3)	/* none, ring, pipe, blob memfd */
#define FD_SECOND	(1u << 2)	/* and a pipe */
#define RING_SIZE(s)	(((s) >> 3) & 3)/* exact, -4096, +4096, exact */
#define RING_SEALS(s)	(((s) >> 5) & 3)/* all, no SHRINK, no write, none */
#define RING_PATCH	(1u << 7)

#define MAX_RING	(256u << 10)	/* MAP_POPULATE: keep it cheap */

struct producer {
	struct fuzz_in in;
	int share;			/* our end of the share fd */
};

bool fuzz_verbose;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *v = getenv("SHMFD_FUZZ_VERBOSE");

	fuzz_verbose = v && *v && strcmp(v, "0");
	setenv("SHMFD_NO_IO_URING", "1", 1);
	return 0;
}

static int pipe_fd(void)
{
	int p[2];

	if (pipe2(p, O_CLOEXEC))
		abort();
	close(p[1]);
	return p[0];
}

/* The ring memfd a welcome with this body announces, as spec says. */
static int ring_fd(struct fuzz_in *in, uint8_t spec, const uint8_t *body,
		   size_t len)
{
	static const int seals[] = {
		F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL,
		F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL,
		F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL,
		0,
	};
	struct shmfd__welcome w = {
		.ring_size = SHMFD_MIN_RING,
		.max_inline = SHMFD_MIN_RING / 4,
	};
	struct shmfd__ring_hdr hdr = { 0 };
	uint64_t size;
	int fd;

	memcpy(&w, body, len < sizeof(w) ? len : sizeof(w));
	size = w.ring_size <= MAX_RING ? w.ring_size : SHMFD_MIN_RING;
	size += SHMFD_HDR_SIZE;
	if (RING_SIZE(spec) == 1)
		size -= 4096;
	if (RING_SIZE(spec) == 2)
		size += 4096;
	hdr.magic = SHMFD_RING_MAGIC;
	hdr.version = SHMFD_PROTO_VERSION;
	hdr.hdr_size = SHMFD_HDR_SIZE;
	hdr.ring_size = w.ring_size;
	hdr.max_inline = w.max_inline;
	hdr.flags = w.flags;
	hdr.max_readers = 64;
	hdr.producer_pid = w.producer_pid;
	hdr.head = w.join_head;
	hdr.oldest = w.start_pos;
	/* Closed: the reader's first receives end at once with -EPIPE
	 * rather than find the socket hung up and wait to see whether the
	 * producer died (gone_reason). */
	hdr.closed = 1;
	if (spec & RING_PATCH) {
		uint8_t at = fuzz_u8(in) % (sizeof(hdr) - 7);

		fuzz_take(in, (uint8_t *)&hdr + at, 8);
	}
	fd = memfd_create("fuzz-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0 || ftruncate(fd, (off_t)size) ||
	    pwrite(fd, &hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr))
		abort();
	if (seals[RING_SEALS(spec)] &&
	    fcntl(fd, F_ADD_SEALS, seals[RING_SEALS(spec)]))
		abort();
	return fd;
}

static int blob_fd(const uint8_t *body, size_t len)
{
	struct shmfd__blob_fd m = { .size = 1 };
	int fd = memfd_create("fuzz-blob", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	memcpy(&m, body, len < sizeof(m) ? len : sizeof(m));
	if (fd < 0 || ftruncate(fd, (off_t)(m.size % 65536)) ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK |
		  F_SEAL_GROW | F_SEAL_SEAL))
		abort();
	return fd;
}

static void answer(struct producer *p, int sock)
{
	for (int i = 0; i < 8 && p->in.left; i++) {
		uint8_t spec = fuzz_u8(&p->in);
		uint8_t body[255];
		size_t len = fuzz_u8(&p->in);
		union {
			char buf[CMSG_SPACE(sizeof(int) * 2)];
			struct cmsghdr align;
		} ctl;
		struct iovec iov = { .iov_base = body, .iov_len = len };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		int fds[2], nfds = 0;

		fuzz_take(&p->in, body, len);
		switch (FD_KIND(spec)) {
		case 1:
			fds[nfds++] = ring_fd(&p->in, spec, body, len);
			break;
		case 2:
			fds[nfds++] = pipe_fd();
			break;
		case 3:
			fds[nfds++] = blob_fd(body, len);
			break;
		}
		if (spec & FD_SECOND)
			fds[nfds++] = pipe_fd();
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
		/* The reader may have given up already: EPIPE is fine. */
		sendmsg(sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		for (int k = 0; k < nfds; k++)
			close(fds[k]);
	}
}

/* Take the hello and its fds, answer, hang up. */
static void *producer_main(void *arg)
{
	struct producer *p = arg;
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
	struct pollfd pfd = { .fd = p->share, .events = POLLIN };
	int fds[4], nfds = 0, n;
	ssize_t got = -1;

	/* libFuzzer's -timeout alarm interrupts us: EINTR is no answer. */
	do
		n = poll(&pfd, 1, 5000);
	while (n < 0 && errno == EINTR);
	while (n == 1 && (got = recvmsg(p->share, &mh, MSG_CMSG_CLOEXEC)) < 0 &&
	       errno == EINTR)
		;
	if (got > 0) {
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm;
		     cm = CMSG_NXTHDR(&mh, cm)) {
			size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);

			memcpy(fds + nfds, CMSG_DATA(cm), k * sizeof(int));
			nfds += (int)k;
		}
	}
	/* The page, then the socket the reader wants its answer on. */
	FUZZ_ASSERT(nfds == 2 && h.type == SHMFD_MSG_HELLO && h.nfds == 2,
		    "hello with %d fds", nfds);
	answer(p, fds[1]);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	close(p->share);
	return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct producer p = { .in = { data, size } };
	int flags = fuzz_u8(&p.in) & 1 ? SHMFD_FROM_OLDEST : 0;
	struct shmfd_reader *r = NULL;
	int before = fuzz_fd_count(), sv[2], ret;
	uint64_t t0 = shmfd__now_ns();
	pthread_t thread;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
		abort();
	p.share = sv[1];
	if (pthread_create(&thread, NULL, producer_main, &p))
		abort();
	ret = shmfd_reader_open_fd(&r, sv[0], flags);
	/* Any -errno: a refusal's status is reported as the producer sent
	 * it (-ETIMEDOUT included, shmfd-protocol(7)). */
	FUZZ_ASSERT(ret == 0 || (ret < 0 && ret >= -4095),
		    "shmfd_reader_open_fd = %d", ret);
	/* The producer hung up: nothing may wait for the 10 s deadline, so
	 * a -ETIMEDOUT here is the producer's word, not the reader's wait. */
	FUZZ_ASSERT(shmfd__now_ns() - t0 < 5000000000ull, "join took %llu ms",
		    (unsigned long long)((shmfd__now_ns() - t0) / 1000000));
	if (ret == 0) {
		struct shmfd_msg m;

		for (int i = 0; i < 3; i++) {
			ret = shmfd_recv(r, &m, i == 2 ? SHMFD_RECV_LATEST : 0,
					 0);
			FUZZ_ASSERT(ret == -EAGAIN || ret == -EPROTO ||
				    ret == -EPIPE || ret == -ECONNRESET ||
				    ret == 0, "shmfd_recv = %d", ret);
			if (ret == 0)
				shmfd_msg_release(r, &m);
		}
		shmfd_reader_close(r);	/* and the share fd it owns */
	} else {
		close(sv[0]);
	}
	pthread_join(thread, NULL);
	FUZZ_ASSERT(fuzz_fd_count() == before, "%d fds leaked",
		    fuzz_fd_count() - before);
	return 0;
}
