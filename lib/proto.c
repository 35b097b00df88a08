/* SPDX-License-Identifier: MIT */
/*
 * Handshake messages: receive with fds, validate.  Both sides treat what
 * arrives as hostile: sizes, types, versions and fd counts are checked
 * before anything is used, and every fd that arrived is closed on error.
 */
#include "internal.h"

#include <sys/socket.h>

static void close_fds(int *fds, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/*
 * Receive one datagram of at most len bytes and at most maxfds fds.
 * Returns the byte count (0 on orderly hang-up), -EPROTO when the message
 * or its control data was truncated or carried anything but SCM_RIGHTS,
 * -EMFILE when the fds it carried could not all be installed here (the
 * kernel truncates the control data short of our room: we are out of
 * fds, and the peer did nothing wrong).
 */
int shmfd__recv_fds(int sock, void *buf, size_t len, int *fds,
		    unsigned int *nfds, unsigned int maxfds)
{
	union {
		/* Room for more fds than we accept, so an excess shows up as
		 * extra fds we close, not as a truncation we cannot undo. */
		char buf[CMSG_SPACE(sizeof(int) * 16)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
	};
	unsigned int got = 0, total = 0;
	bool bad = false;
	ssize_t n;

	do {
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return shmfd__neg_errno();

	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm;
	     cm = CMSG_NXTHDR(&mh, cm)) {
		size_t k;
		int tmp[16];

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) {
			bad = true;
			continue;
		}
		k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		if (k > ARRAY_SIZE(tmp))
			k = ARRAY_SIZE(tmp);
		total += (unsigned int)k;
		memcpy(tmp, CMSG_DATA(cm), k * sizeof(int));
		for (size_t i = 0; i < k; i++) {
			if (got < maxfds)
				fds[got++] = tmp[i];
			else {
				close(tmp[i]);
				bad = true;
			}
		}
	}
	if (!bad && (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) == MSG_CTRUNC &&
	    total < 16) {
		close_fds(fds, got);
		return -EMFILE;
	}
	if (bad || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
		close_fds(fds, got);
		return -EPROTO;
	}
	*nfds = got;
	return (int)n;
}

int shmfd__check_hello(const struct shmfd__hello *h, size_t len,
		       unsigned int nfds)
{
	/* Type and version come first in a hello of every version; what
	 * follows them may differ in another version, so it is judged only
	 * once the version is ours (shmfd-protocol(7), Version). */
	if (len < 8 || h->type != SHMFD_MSG_HELLO)
		return -EPROTO;
	if (h->version != SHMFD_PROTO_VERSION)
		return -EPROTONOSUPPORT;
	if (len != sizeof(*h))
		return -EPROTO;
	if (h->flags & ~((uint32_t)SHMFD_FROM_OLDEST | SHMFD_HELLO_FENCED))
		return -EPROTO;
	if (h->nfds != nfds || nfds < 1 || nfds > 2)
		return -EPROTO;
	return 0;
}

int shmfd__check_welcome(const struct shmfd__welcome *w, size_t len)
{
	if (len != sizeof(*w) || w->type != SHMFD_MSG_WELCOME)
		return -EPROTO;
	/* An error answer reads the same in every version: a producer that
	 * does not speak ours refuses with -EPROTONOSUPPORT in its own. */
	if (w->status)
		return 0;		/* an error answer carries nothing else */
	if (w->version != SHMFD_PROTO_VERSION)
		return -EPROTO;
	if (shmfd__check_ring_geometry(w->ring_size, w->max_inline,
				       w->flags) < 0)
		return -EPROTO;
	if ((w->start_pos | w->join_head) % SHMFD_REC_ALIGN ||
	    w->start_pos > w->join_head ||
	    w->join_head - w->start_pos > w->ring_size)
		return -EPROTO;
	if (w->producer_pid <= 0 || w->start_seq == 0)
		return -EPROTO;
	return 0;
}

int shmfd__check_stats(const struct shmfd__stats *a, size_t len)
{
	if (len != sizeof(*a) || a->type != SHMFD_MSG_STATS)
		return -EPROTO;
	/* As for a welcome, a refusal is understood in any version. */
	if (a->status)
		return a->status < 0 && a->status >= -4095 ? a->status
							   : -EPROTO;
	if (a->version != SHMFD_PROTO_VERSION)
		return -EPROTO;
	if (a->flags & ~(uint32_t)SHMFD_RING_LOSSY)
		return -EPROTO;
	if (a->ring_size < SHMFD_MIN_RING || a->ring_size > SHMFD_MAX_RING ||
	    (a->ring_size & (a->ring_size - 1)) ||
	    a->max_inline > a->ring_size || a->readers > a->max_readers)
		return -EPROTO;
	return 0;
}
