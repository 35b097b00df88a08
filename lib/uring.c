/* SPDX-License-Identifier: MIT */
/*
 * io_uring: set-up, run-time probing, fd passing and the reader's sleep,
 * with the same protocol over plain sendmsg(2)/futex(2) when io_uring is
 * missing (containers' seccomp, kernel.io_uring_disabled, old kernels) or
 * forbidden with SHMFD_NO_IO_URING=1.
 */
#include "internal.h"

#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>

enum {
	UD_FUTEX = 1,
	UD_PIDFD,
	UD_SOCK,
	UD_CANCEL,
	UD_SEND,
	UD_NOP,
};

/* Probed once per process: 0 unknown, 1 yes, -1 no. */
static int uring_state;
static int futex_state;

static bool env_forbids(void)
{
	const char *v = getenv("SHMFD_NO_IO_URING");

	return v && *v && strcmp(v, "0") != 0;
}

/*
 * IORING_OP_FUTEX_WAIT (6.7) is probed by using it: a wait whose expected
 * value does not match must complete at once with -EAGAIN.  An older
 * kernel answers -EINVAL, which is all we need to know.
 */
static int probe_futex(struct io_uring *ring)
{
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	uint32_t word = 1;
	int res;

	sqe = io_uring_get_sqe(ring);
	if (!sqe)
		return -1;
	shmfd__prep_futex_wait(sqe, &word, 0, SHMFD_FUTEX_ANY);
	io_uring_sqe_set_data64(sqe, UD_FUTEX);
	if (io_uring_submit_and_wait(ring, 1) < 0)
		return -1;
	if (io_uring_peek_cqe(ring, &cqe) < 0)
		return -1;
	res = cqe->res;
	io_uring_cqe_seen(ring, cqe);
	return res == -EAGAIN ? 1 : -1;
}

static void probe(void)
{
	struct io_uring ring;
	int u = -1, f = -1;

	if (!env_forbids() && io_uring_queue_init(4, &ring, 0) == 0) {
		u = 1;
		f = probe_futex(&ring);
		io_uring_queue_exit(&ring);
	}
	/* Racing first callers compute the same answer. */
	STORE_RELAXED(&futex_state, f);
	STORE_RELEASE(&uring_state, u);
}

bool shmfd__uring_enabled(void)
{
	if (!LOAD_ACQUIRE(&uring_state))
		probe();
	return LOAD_ACQUIRE(&uring_state) > 0;
}

bool shmfd__uring_has_futex(void)
{
	return shmfd__uring_enabled() && LOAD_RELAXED(&futex_state) > 0;
}

int shmfd__uring_init(struct shmfd__uring *u, unsigned int entries)
{
	int ret;

	memset(u, 0, sizeof(*u));
	if (!shmfd__uring_enabled())
		return 0;
	ret = io_uring_queue_init(entries, &u->ring, 0);
	if (ret < 0)
		return ret;	/* io_uring works here; out of memory or fds */
	u->ok = true;
	u->futex_ok = shmfd__uring_has_futex();
	return 0;
}

void shmfd__uring_exit(struct shmfd__uring *u)
{
	if (u->ok)
		io_uring_queue_exit(&u->ring);
	u->ok = false;
}

int shmfd__sendmsg(struct shmfd__uring *u, int sock, const void *buf,
		   size_t len, const int *fds, unsigned int nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	ssize_t ret;

	if (nfds > 4)
		return -EINVAL;
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
	if (!u || !u->ok) {
		do {
			ret = sendmsg(sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		} while (ret < 0 && errno == EINTR);
		return ret < 0 ? shmfd__neg_errno() : 0;
	}
	sqe = io_uring_get_sqe(&u->ring);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_sendmsg(sqe, sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
	io_uring_sqe_set_data64(sqe, UD_SEND);
	do {
		ret = io_uring_submit_and_wait(&u->ring, 1);
	} while (ret == -EINTR);
	if (ret < 0)
		return (int)ret;
	ret = io_uring_wait_cqe(&u->ring, &cqe);
	if (ret < 0)
		return (int)ret;
	ret = cqe->res;
	io_uring_cqe_seen(&u->ring, cqe);
	return ret < 0 ? (int)ret : 0;
}

/*
 * A blob's fd to many readers at once.  All requests share one msghdr
 * (same bytes, same fd), which stays alive until every completion is
 * reaped.  MSG_DONTWAIT: a full socket completes with -EAGAIN at once
 * instead of parking the request; the caller decides whether to wait.
 */
int shmfd__sendmsg_many(struct shmfd__uring *u, const int *socks,
			int *res, unsigned int n, const void *buf,
			size_t len, int fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
	};
	struct cmsghdr *cm;
	unsigned int done = 0;

	memset(&ctl, 0, sizeof(ctl));
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));

	if (!u || !u->ok) {
		for (unsigned int i = 0; i < n; i++) {
			ssize_t r;

			do {
				r = sendmsg(socks[i], &mh,
					    MSG_NOSIGNAL | MSG_DONTWAIT);
			} while (r < 0 && errno == EINTR);
			res[i] = r < 0 ? shmfd__neg_errno() : 0;
		}
		return 0;
	}

	while (done < n) {
		unsigned int batch = 0, reaped = 0;
		struct io_uring_cqe *cqe;
		int ret;

		while (done + batch < n) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);

			if (!sqe)
				break;
			io_uring_prep_sendmsg(sqe, socks[done + batch], &mh,
					      MSG_NOSIGNAL | MSG_DONTWAIT);
			io_uring_sqe_set_data64(sqe, done + batch);
			batch++;
		}
		if (!batch)
			return -EBUSY;
		do {
			ret = io_uring_submit_and_wait(&u->ring, batch);
		} while (ret == -EINTR);
		if (ret < 0)
			return ret;
		while (reaped < batch) {
			ret = io_uring_wait_cqe(&u->ring, &cqe);
			if (ret == -EINTR)
				continue;
			if (ret < 0)
				return ret;
			res[io_uring_cqe_get_data64(cqe)] =
				cqe->res < 0 ? cqe->res : 0;
			io_uring_cqe_seen(&u->ring, cqe);
			reaped++;
		}
		done += batch;
	}
	return 0;
}

bool shmfd__sock_hung_up(int sock)
{
	struct pollfd p = { .fd = sock, .events = POLLRDHUP };

	if (sock < 0)
		return false;
	return poll(&p, 1, 0) > 0 &&
	       (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

bool shmfd__fd_ready(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN | POLLRDHUP };

	if (fd < 0)
		return false;
	return poll(&p, 1, 0) > 0 && p.revents;
}

bool shmfd__peer_gone(int pidfd, pid_t pid)
{
	if (pidfd >= 0)
		return shmfd__fd_ready(pidfd);
	/* No pidfds (before Linux 5.3, or valgrind): the pid itself. */
	return pid > 0 && kill(pid, 0) < 0 && errno == ESRCH;
}

/* Fallback sleep: futex(2) in slices, checking the peer between them. */
static int sleep_plain(const uint32_t *word, uint32_t val, uint32_t bits,
		       int pidfd, pid_t pid, int sock, uint64_t deadline_ns)
{
	for (;;) {
		uint64_t now = shmfd__now_ns();
		uint64_t slice = now + SHMFD_FALLBACK_SLICE_MS * 1000000ull;
		unsigned int mask = 0;
		int ret;

		if (now >= deadline_ns)
			return SHMFD_WAKE_TIMEOUT;
		ret = shmfd__futex_wait(word, val, bits,
					slice < deadline_ns ? slice : deadline_ns);
		if (ret == 0 || ret == -EINTR)
			mask |= SHMFD_WAKE_FUTEX;
		else if (ret != -ETIMEDOUT)
			return ret;
		if (shmfd__peer_gone(pidfd, pid))
			mask |= SHMFD_WAKE_PEER_DEAD;
		if (shmfd__sock_hung_up(sock))
			mask |= SHMFD_WAKE_HANGUP;
		if (mask)
			return (int)mask;
	}
}

unsigned int shmfd__uring_reap(struct shmfd__uring *u)
{
	struct io_uring_cqe *cqe;
	unsigned int mask = 0;

	while (io_uring_peek_cqe(&u->ring, &cqe) == 0) {
		switch (io_uring_cqe_get_data64(cqe)) {
		case UD_FUTEX:
			u->futex_armed = false;
			mask |= SHMFD_WAKE_FUTEX;
			break;
		case UD_PIDFD:
			u->pidfd_armed = false;
			if (cqe->res >= 0)
				mask |= SHMFD_WAKE_PEER_DEAD;
			break;
		case UD_SOCK:
			u->sock_armed = false;
			if (cqe->res >= 0)
				mask |= SHMFD_WAKE_HANGUP;
			break;
		default:
			break;
		}
		io_uring_cqe_seen(&u->ring, cqe);
	}
	return mask;
}

/*
 * Queue what is not in flight yet of the three waits a reader's sleep
 * (and its poll fd) rests on; the caller submits.
 */
int shmfd__uring_arm(struct shmfd__uring *u, const uint32_t *word,
		     uint32_t val, uint32_t bits, int pidfd, int sock)
{
	struct io_uring_sqe *sqe;

	if (pidfd >= 0 && !u->pidfd_armed) {
		sqe = io_uring_get_sqe(&u->ring);
		if (!sqe)
			return -EBUSY;
		io_uring_prep_poll_add(sqe, pidfd, POLLIN);
		io_uring_sqe_set_data64(sqe, UD_PIDFD);
		u->pidfd_armed = true;
	}
	if (sock >= 0 && !u->sock_armed) {
		sqe = io_uring_get_sqe(&u->ring);
		if (!sqe)
			return -EBUSY;
		io_uring_prep_poll_add(sqe, sock, POLLRDHUP);
		io_uring_sqe_set_data64(sqe, UD_SOCK);
		u->sock_armed = true;
	}
	if (!u->futex_armed) {
		sqe = io_uring_get_sqe(&u->ring);
		if (!sqe)
			return -EBUSY;
		shmfd__prep_futex_wait(sqe, word, val, bits);
		io_uring_sqe_set_data64(sqe, UD_FUTEX);
		u->futex_armed = true;
	}
	return 0;
}

/* A completion that means nothing but "look": makes the ring fd
 * readable.  Not queued if one is pending already. */
int shmfd__uring_nop(struct shmfd__uring *u)
{
	struct io_uring_sqe *sqe;
	int ret;

	if (io_uring_cq_ready(&u->ring))
		return 0;
	sqe = io_uring_get_sqe(&u->ring);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_nop(sqe);
	io_uring_sqe_set_data64(sqe, UD_NOP);
	do {
		ret = io_uring_submit(&u->ring);
	} while (ret == -EINTR);
	return ret < 0 ? ret : 0;
}

bool shmfd__uring_ready(struct shmfd__uring *u)
{
	return io_uring_cq_ready(&u->ring) > 0;
}

/*
 * One sleep for three events: IORING_OP_FUTEX_WAIT on the ring word, and
 * polls on the producer's pidfd and our socket, which stay armed across
 * sleeps (they fire at most once: the peer dies once).  A futex wait still
 * in flight when we return (timeout, peer death) is cancelled and reaped,
 * so no operation refers to the word once the caller moves on.
 */
int shmfd__sleep(struct shmfd__uring *u, const uint32_t *word, uint32_t val,
		 uint32_t bits, int pidfd, pid_t pid, int sock,
		 uint64_t deadline_ns)
{
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	unsigned int mask;
	int ret;

	/* Without a pidfd to poll, only slices can watch the peer. */
	if (!u->ok || !u->futex_ok || (pidfd < 0 && pid > 0))
		return sleep_plain(word, val, bits, pidfd, pid, sock,
				   deadline_ns);

	ret = shmfd__uring_arm(u, word, val, bits, pidfd, sock);
	if (ret < 0)
		return ret;

	for (;;) {
		uint64_t now = shmfd__now_ns();
		struct __kernel_timespec ts, *tsp = NULL;

		if (deadline_ns != UINT64_MAX) {
			uint64_t left = deadline_ns > now ? deadline_ns - now : 0;

			ts.tv_sec = (long long)(left / 1000000000ull);
			ts.tv_nsec = (long long)(left % 1000000000ull);
			tsp = &ts;
		}
		ret = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, tsp,
						       NULL);
		mask = shmfd__uring_reap(u);
		if (mask)
			break;
		if (ret == -ETIME || (ret >= 0 && shmfd__now_ns() >= deadline_ns)) {
			mask = SHMFD_WAKE_TIMEOUT;
			break;
		}
		if (ret == -EINTR) {
			mask = SHMFD_WAKE_FUTEX;	/* caller re-checks */
			break;
		}
		if (ret < 0 && ret != -ETIME)
			return ret;
	}

	if (u->futex_armed && !(mask & SHMFD_WAKE_FUTEX)) {
		sqe = io_uring_get_sqe(&u->ring);
		if (sqe) {
			io_uring_prep_cancel64(sqe, UD_FUTEX, 0);
			io_uring_sqe_set_data64(sqe, UD_CANCEL);
		}
		while (u->futex_armed) {
			ret = io_uring_submit_and_wait(&u->ring, 1);
			if (ret < 0 && ret != -EINTR)
				return ret;
			mask |= shmfd__uring_reap(u) & ~SHMFD_WAKE_FUTEX;
		}
	}
	return (int)mask;
}
