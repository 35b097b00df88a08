/* SPDX-License-Identifier: MIT */
/*
 * A named channel's figures, read without joining it: connect to its
 * socket, send a stat request instead of a hello, read the one stats
 * message the producer's admission thread answers with.  The sender never
 * sees the request, so a busy channel is not slowed by being watched.
 */
#include "internal.h"

#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>

SHMFD_API int shmfd_dir(char *buf, size_t size)
{
	int ret;

	if (!buf || !size)
		return -EINVAL;
	ret = shmfd__runtime_dir(buf, size, false);
	return ret < 0 ? ret : (int)strlen(buf);
}

/* One datagram within the deadline; its length, 0 on hang-up, -errno. */
static int recv_reply(int sock, void *buf, size_t len, uint64_t deadline)
{
	for (;;) {
		struct pollfd p = { .fd = sock, .events = POLLIN };
		uint64_t now = shmfd__now_ns();
		unsigned int nfds = 0;
		int fd, n;

		if (deadline && now >= deadline)
			return -ETIMEDOUT;
		n = poll(&p, 1, deadline == UINT64_MAX ? -1 :
			 !deadline ? 0 :
			 (int)((deadline - now) / 1000000 + 1));
		if (n < 0 && errno != EINTR)
			return shmfd__neg_errno();
		if (n == 0 && !deadline)
			return -EAGAIN;	/* timeout 0: only an answer there */
		if (n <= 0)
			continue;
		/* An fd has no business in a stats answer: take it in order
		 * to close it, and refuse the answer. */
		n = shmfd__recv_fds(sock, buf, len, &fd, &nfds, 1);
		if (n == -EAGAIN || n == -EINTR)
			continue;
		if (nfds) {
			close(fd);
			return -EPROTO;
		}
		return n == -ECONNRESET ? 0 : n;
	}
}

SHMFD_API int shmfd_chan_stat(const char *name, struct shmfd_stat *st,
			      int timeout_ms)
{
	struct shmfd__stat_req req = {
		.type = SHMFD_MSG_STAT_REQ,
		.version = SHMFD_PROTO_VERSION,
	};
	struct shmfd__stats a;
	uint64_t deadline;
	uid_t uid;
	gid_t gid;
	pid_t pid;
	int sock, ret;

	if (!name || !st)
		return -EINVAL;
	deadline = shmfd__deadline(timeout_ms);
	ret = shmfd__connect(name, &sock);
	if (ret < 0)
		return ret;
	ret = shmfd__peer_cred(sock, &pid, &uid, &gid);
	if (ret < 0)
		goto out;
	/* As for readers: only a producer running as us or root is the
	 * channel, whoever else bound the name in a shared directory. */
	if (uid != geteuid() && uid != 0) {
		ret = -EACCES;
		goto out;
	}
	ret = shmfd__sendmsg(NULL, sock, &req, sizeof(req), NULL, 0);
	if (ret < 0)
		goto out;
	ret = recv_reply(sock, &a, sizeof(a), deadline);
	if (ret == 0)
		ret = -EPIPE;		/* closed or died before answering */
	if (ret < 0)
		goto out;
	ret = shmfd__check_stats(&a, (size_t)ret);
	if (ret < 0)
		goto out;
	memset(st, 0, sizeof(*st));
	st->producer_pid = pid;
	st->flags = a.flags & SHMFD_RING_LOSSY ? SHMFD_LOSSY : 0;
	st->ring_size = a.ring_size;
	st->max_inline = a.max_inline;
	st->max_readers = a.max_readers;
	st->readers = a.readers;
	st->published = a.published;
	st->lost = a.lost;
	st->joins = a.joins;
	ret = 0;
out:
	close(sock);
	return ret;
}
