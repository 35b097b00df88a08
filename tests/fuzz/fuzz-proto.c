/* SPDX-License-Identifier: MIT */
/*
 * The decoders of what a peer sends, on their own: a hello (with the
 * number of fds that came with it), a welcome, a welcome with the ring
 * header it announces, a stats answer; and the transport under them all,
 * shmfd__recv_fds(), fed a real datagram with real fds over a socketpair.
 *
 * Every decoder gets a heap copy exactly as long as the message, so a
 * read past what arrived is an ASan report.  The oracle checks what the
 * callers rely on once a decoder says yes (a hello's fd count is the one
 * that came; a welcome's ring is one a reader can map and index; a stats
 * answer's status is an errno), and that recv_fds hands back at most
 * maxfds close-on-exec fds, refuses what was truncated, and leaks none.
 *
 * Input: a mode byte, then what that mode reads (see each function).
 */
#include "fuzz.h"

#include <sys/socket.h>

enum mode {
	MODE_HELLO,
	MODE_WELCOME,
	MODE_RING_HDR,
	MODE_STATS,
	MODE_RECV_FDS,
	MODE_COUNT,
};

bool fuzz_verbose;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *v = getenv("SHMFD_FUZZ_VERBOSE");

	fuzz_verbose = v && *v && strcmp(v, "0");
	return 0;
}

/* An exact-length heap copy of the rest of the input. */
static void *rest(struct fuzz_in *in, size_t *lenp)
{
	void *p = malloc(in->left ? in->left : 1);

	if (!p)
		abort();
	*lenp = in->left;
	fuzz_take(in, p, in->left);
	return p;
}

static bool geometry_ok(uint64_t ring_size, uint64_t max_inline)
{
	return ring_size >= SHMFD_MIN_RING && ring_size <= SHMFD_MAX_RING &&
	       !(ring_size & (ring_size - 1)) &&
	       max_inline + sizeof(struct shmfd__rec) <= ring_size / 2;
}

/* nfds (1 byte), the hello. */
static void fuzz_hello(struct fuzz_in *in)
{
	unsigned int nfds = fuzz_u8(in) % 4;
	size_t len;
	struct shmfd__hello *h = rest(in, &len);
	int ret = shmfd__check_hello(h, len, nfds);

	FUZZ_ASSERT(ret == 0 || ret == -EPROTO || ret == -EPROTONOSUPPORT,
		    "check_hello = %d", ret);
	/* Another version is refused whatever else it says (negotiation:
	 * shmfd-protocol(7)), and only a hello of another version is. */
	if (ret == -EPROTONOSUPPORT)
		FUZZ_ASSERT(len >= 8 && h->type == SHMFD_MSG_HELLO &&
			    h->version != SHMFD_PROTO_VERSION,
			    "a hello of version %u refused as another version",
			    len >= 8 ? h->version : 0);
	/* The admission thread takes the page (and the answer socket) from
	 * the fds that came, trusting this. */
	if (ret == 0)
		FUZZ_ASSERT(len == sizeof(*h) && h->type == SHMFD_MSG_HELLO &&
			    nfds >= 1 && nfds <= 2 && h->nfds == nfds,
			    "hello of %zu bytes, %u fds", len, nfds);
	free(h);
}

/* What a reader may rely on in a welcome that passed. */
static void welcome_ok(const struct shmfd__welcome *w)
{
	FUZZ_ASSERT(w->type == SHMFD_MSG_WELCOME, "type %u", w->type);
	if (w->status)
		return;
	FUZZ_ASSERT(geometry_ok(w->ring_size, w->max_inline) &&
		    !(w->flags & ~(uint32_t)(SHMFD_RING_LOSSY |
					     SHMFD_RING_ASYM)),
		    "ring %llu inline %llu flags %#x",
		    (unsigned long long)w->ring_size,
		    (unsigned long long)w->max_inline, w->flags);
	FUZZ_ASSERT(w->start_pos % 16 == 0 && w->join_head % 16 == 0 &&
		    w->start_pos <= w->join_head &&
		    w->join_head - w->start_pos <= w->ring_size &&
		    w->start_seq && w->producer_pid > 0, "positions");
}

static void fuzz_welcome(struct fuzz_in *in)
{
	size_t len;
	struct shmfd__welcome *w = rest(in, &len);
	int ret = shmfd__check_welcome(w, len);

	FUZZ_ASSERT(ret == 0 || ret == -EPROTO, "check_welcome = %d", ret);
	if (ret == 0) {
		FUZZ_ASSERT(len == sizeof(*w), "welcome of %zu bytes", len);
		welcome_ok(w);
	}
	free(w);
}

/* A welcome (64 bytes), then the ring's header page as far as it goes
 * (the rest of the page is zeros, as a producer leaves it). */
static void fuzz_ring_hdr(struct fuzz_in *in)
{
	struct shmfd__welcome w;
	struct shmfd__ring_hdr *hdr = calloc(1, SHMFD_HDR_SIZE);
	size_t map_size;
	int ret;

	if (!hdr)
		abort();
	fuzz_take(in, &w, sizeof(w));
	fuzz_take(in, hdr, in->left < SHMFD_HDR_SIZE ? in->left
						      : SHMFD_HDR_SIZE);
	if (shmfd__check_welcome(&w, sizeof(w)) < 0 || w.status)
		goto out;
	welcome_ok(&w);
	ret = shmfd__ring_map_size(w.ring_size, &map_size);
	FUZZ_ASSERT(ret == 0 || ret == -ENOMEM, "map_size = %d", ret);
	if (ret < 0)
		goto out;
	FUZZ_ASSERT(map_size == SHMFD_HDR_SIZE + w.ring_size &&
		    map_size > w.ring_size, "map size %zu", map_size);
	ret = shmfd__check_ring_hdr(hdr, &w);
	FUZZ_ASSERT(ret == 0 || ret == -EPROTO, "check_ring_hdr = %d", ret);
	if (ret == 0)
		FUZZ_ASSERT(hdr->magic == SHMFD_RING_MAGIC &&
			    hdr->version == SHMFD_PROTO_VERSION &&
			    hdr->hdr_size == SHMFD_HDR_SIZE &&
			    hdr->ring_size == w.ring_size &&
			    hdr->max_inline == w.max_inline &&
			    hdr->flags == w.flags &&
			    geometry_ok(hdr->ring_size, hdr->max_inline),
			    "header accepted");
out:
	free(hdr);
}

static void fuzz_stats(struct fuzz_in *in)
{
	size_t len;
	struct shmfd__stats *a = rest(in, &len);
	int ret = shmfd__check_stats(a, len);

	if (ret == 0)
		FUZZ_ASSERT(len == sizeof(*a) && a->type == SHMFD_MSG_STATS &&
			    !a->status &&
			    !(a->flags & ~(uint32_t)SHMFD_RING_LOSSY) &&
			    geometry_ok(a->ring_size, 0) &&
			    a->max_inline <= a->ring_size &&
			    a->readers <= a->max_readers, "stats accepted");
	else if (ret != -EPROTO)
		/* The producer's own error: shmfd_chan_stat returns it. */
		FUZZ_ASSERT(len == sizeof(*a) && ret == a->status &&
			    ret < 0 && ret >= -4095, "check_stats = %d", ret);
	free(a);
}

/* An fd of some kind to send: what a hostile peer has at hand. */
static int some_fd(uint8_t kind)
{
	int fd, sv[2];

	switch (kind % 4) {
	case 0:
		return dup(STDERR_FILENO);
	case 1:
		fd = memfd_create("fuzz", MFD_CLOEXEC);
		break;
	case 2:
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
			abort();
		close(sv[1]);
		fd = sv[0];
		break;
	default:
		fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		break;
	}
	if (fd < 0)
		abort();
	return fd;
}

/*
 * nfds to send (1), their kinds (1), receive buffer length (1), maxfds
 * (1), then the datagram's bytes.  SCM_MAX_FD is 253: up to 40 fds, more
 * than recv_fds has room for (16).
 */
static void fuzz_recv_fds(struct fuzz_in *in)
{
	unsigned int nsend = fuzz_u8(in) % 41;
	uint8_t kinds = fuzz_u8(in);
	size_t len = fuzz_u8(in) % 96;
	unsigned int maxfds = fuzz_u8(in) % 2 + 1;
	size_t dlen;
	uint8_t *dgram = rest(in, &dlen);
	union {
		char buf[CMSG_SPACE(sizeof(int) * 40)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = dgram, .iov_len = dlen };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	int sv[2], sent[40], fds[2] = { -1, -1 };
	unsigned int nfds = 0;
	uint8_t *buf = malloc(len ? len : 1);
	int before = fuzz_fd_count(), ret;

	if (!buf || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
		abort();
	if (nsend) {
		struct cmsghdr *cm;

		for (unsigned int i = 0; i < nsend; i++)
			sent[i] = some_fd((uint8_t)(kinds >> (i % 4 * 2)));
		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nsend);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nsend);
		memcpy(CMSG_DATA(cm), sent, sizeof(int) * nsend);
	}
	if (sendmsg(sv[1], &mh, MSG_NOSIGNAL) < 0)
		abort();
	for (unsigned int i = 0; i < nsend; i++)
		close(sent[i]);

	ret = shmfd__recv_fds(sv[0], buf, len, fds, &nfds, maxfds);
	if (ret >= 0) {
		FUZZ_ASSERT((size_t)ret == dlen && dlen <= len &&
			    !memcmp(buf, dgram, dlen), "%d bytes of %zu",
			    ret, dlen);
		FUZZ_ASSERT(nfds == nsend && nfds <= maxfds,
			    "%u fds of %u (max %u)", nfds, nsend, maxfds);
		for (unsigned int i = 0; i < nfds; i++) {
			int fl = fcntl(fds[i], F_GETFD);

			FUZZ_ASSERT(fl >= 0 && (fl & FD_CLOEXEC),
				    "fd %d flags %d", fds[i], fl);
			close(fds[i]);
		}
	} else {
		/* Too many fds, or a datagram longer than the buffer. */
		FUZZ_ASSERT(ret == -EPROTO && (nsend > maxfds || dlen > len),
			    "recv_fds = %d (%zu bytes, %u fds)", ret, dlen,
			    nsend);
	}
	close(sv[0]);
	close(sv[1]);
	free(buf);
	free(dgram);
	FUZZ_ASSERT(fuzz_fd_count() == before, "%d fds leaked",
		    fuzz_fd_count() - before);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };

	switch (fuzz_u8(&in) % MODE_COUNT) {
	case MODE_HELLO:
		fuzz_hello(&in);
		break;
	case MODE_WELCOME:
		fuzz_welcome(&in);
		break;
	case MODE_RING_HDR:
		fuzz_ring_hdr(&in);
		break;
	case MODE_STATS:
		fuzz_stats(&in);
		break;
	case MODE_RECV_FDS:
		fuzz_recv_fds(&in);
		break;
	}
	return 0;
}
