/* SPDX-License-Identifier: MIT */
/* The peer kit: see peerkit.h.  Every rule cited is shmfd-protocol(7)'s. */
#define _GNU_SOURCE
#include "peerkit.h"

#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LOAD_ACQ(p)		__atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE_REL(p, v)		__atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define STORE_RLX(p, v)		__atomic_store_n((p), (v), __ATOMIC_RELAXED)

static void futex_wake(uint32_t *word, int n)
{
	syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);
}

/* ---- transport ---- */

int pk_send(int sock, const void *buf, size_t len, const int *fds, int nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 8)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	expect(nfds >= 0 && nfds <= 8, "pk_send: %d fds", nfds);
	if (nfds) {
		struct cmsghdr *cm;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
	}
	do {
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	expect((size_t)n == len, "pk_send: %zd of %zu bytes", n, len);
	return 0;
}

int pk_recv(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds,
	    bool *trunc, int ms)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 16)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
	};
	int got = 0;
	ssize_t n;

	if (!th_readable(sock, ms < 0 ? DEADLINE_MS : ms))
		return -ETIMEDOUT;
	do {
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm;
	     cm = CMSG_NXTHDR(&mh, cm)) {
		int k, tmp[16];

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		memcpy(tmp, CMSG_DATA(cm), (size_t)k * sizeof(int));
		for (int i = 0; i < k; i++) {
			if (got < maxfds)
				fds[got++] = tmp[i];
			else
				close(tmp[i]);
		}
	}
	if (nfds)
		*nfds = got;
	else
		pk_close_fds(fds, got);
	if (trunc)
		*trunc = mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC);
	return (int)n;
}

void pk_close_fds(const int *fds, int n)
{
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/* ---- memfds ---- */

int pk_memfd(const char *name, size_t size, int seals)
{
	int fd = (int)expect_sys(memfd_create(name, MFD_CLOEXEC |
					      MFD_ALLOW_SEALING));

	expect_sys(ftruncate(fd, (off_t)size));
	if (seals)
		expect_sys(fcntl(fd, F_ADD_SEALS, seals));
	return fd;
}

int pk_page(size_t size, int seals, uint64_t magic, uint32_t version)
{
	int fd = pk_memfd("pk-page", size, 0);

	if (size >= 16) {
		expect_sys(pwrite(fd, &magic, sizeof(magic), 0));
		expect_sys(pwrite(fd, &version, sizeof(version), 8));
	}
	if (seals)
		expect_sys(fcntl(fd, F_ADD_SEALS, seals));
	return fd;
}

int pk_blob(const char *name, size_t size, uint64_t seq, int seals)
{
	int fd = pk_memfd(name, size, 0);
	char *buf = malloc(size);

	expect(buf, "malloc");
	th_fill(buf, size, seq);
	expect(pwrite(fd, buf, size, 0) == (ssize_t)size, "pwrite: %s",
	       strerror(errno));
	free(buf);
	if (seals)
		expect_sys(fcntl(fd, F_ADD_SEALS, seals));
	return fd;
}

/* ---- fake producer ---- */

void pk_ring_init(struct pk_ring *r, uint64_t ring_size, uint32_t flags,
		  size_t file_size, int seals)
{
	size_t want = PK_HDR_SIZE + ring_size, n;
	void *p;

	memset(r, 0, sizeof(*r));
	r->size = ring_size;
	r->map_size = want;
	r->fd = pk_memfd("pk-ring", file_size ? file_size : want, 0);
	n = file_size && file_size < want ? file_size : want;
	p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
	expect(p != MAP_FAILED, "mmap ring: %s", strerror(errno));
	r->hdr = p;
	r->data = (uint8_t *)p + PK_HDR_SIZE;
	if (n >= PK_HDR_SIZE) {
		r->hdr->magic = PK_RING_MAGIC;
		r->hdr->version = PK_VERSION;
		r->hdr->hdr_size = PK_HDR_SIZE;
		r->hdr->ring_size = ring_size;
		r->hdr->max_inline = ring_size / 4;
		r->hdr->flags = flags;
		r->hdr->max_readers = 64;
		r->hdr->producer_pid = getpid();
	}
	if (n < want) {
		/* A short file: only its header may be touched. */
		munmap(p, n);
		r->hdr = NULL;
		r->data = NULL;
	}
	if (seals < 0)
		seals = PK_RING_SEALS;
	if (seals & F_SEAL_WRITE) {
		/* F_SEAL_WRITE needs every writable mapping gone. */
		if (r->hdr)
			munmap(r->hdr, r->map_size);
		r->hdr = NULL;
		r->data = NULL;
	}
	if (seals)
		expect_sys(fcntl(r->fd, F_ADD_SEALS, seals));
}

void pk_ring_free(struct pk_ring *r)
{
	if (r->hdr)
		munmap(r->hdr, r->map_size);
	if (r->fd >= 0)
		close(r->fd);
	r->hdr = NULL;
	r->fd = -1;
}

/* Rule (3), simplest form: wake on every publish (NOTES). */
static void wake_all(struct pk_ring *r)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	__atomic_fetch_add(&r->hdr->futex, 1, __ATOMIC_RELEASE);
	futex_wake(&r->hdr->futex, INT_MAX);
}

/* Rule (2): before bytes below end - size are reused, oldest moves past
 * every record there. */
static void retire(struct pk_ring *r, uint64_t end)
{
	uint64_t o = r->hdr->oldest;

	if (end <= r->size || o >= end - r->size)
		return;
	while (o < end - r->size) {
		const struct pk_rec *rec = (void *)(r->data + (o & (r->size - 1)));

		o += (sizeof(*rec) + rec->len + PK_ALIGN - 1) & ~(PK_ALIGN - 1);
	}
	STORE_RLX(&r->hdr->oldest, o);
	__atomic_thread_fence(__ATOMIC_RELEASE);
}

uint64_t pk_ring_put(struct pk_ring *r, uint32_t type, uint64_t seq,
		     const void *payload, uint32_t len)
{
	uint64_t need = (sizeof(struct pk_rec) + len + PK_ALIGN - 1) &
			~(uint64_t)(PK_ALIGN - 1);
	uint64_t off = r->head & (r->size - 1), p = r->head, pad = 0;
	struct pk_rec *rec;

	expect(r->hdr, "pk_ring_put on a ring the fake cannot write");
	if (off + need > r->size)
		pad = r->size - off;
	retire(r, p + pad + need);
	if (pad) {
		rec = (void *)(r->data + off);
		rec->len = (uint32_t)(pad - sizeof(*rec));
		rec->type = PK_REC_PAD;
		rec->seq = 0;
		p += pad;
	}
	rec = (void *)(r->data + (p & (r->size - 1)));
	memcpy(rec + 1, payload, len);
	rec->len = len;
	rec->type = type;
	rec->seq = seq;
	/* Rule (1): the record, then latest, seq (and blob_id), then head
	 * with a release store; commit_gen odd around them. */
	STORE_RLX(&r->hdr->commit_gen, r->hdr->commit_gen + 1);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	STORE_RLX(&r->hdr->latest, p);
	STORE_RLX(&r->hdr->seq, seq);
	if (type == PK_REC_BLOB)
		STORE_RLX(&r->hdr->blob_id,
			  ((const struct pk_blob_desc *)payload)->id);
	r->head = p + need;
	r->seq = seq;
	STORE_REL(&r->hdr->head, r->head);
	STORE_REL(&r->hdr->commit_gen, r->hdr->commit_gen + 1);
	wake_all(r);
	return p;
}

uint64_t pk_ring_msg(struct pk_ring *r, size_t len)
{
	char *buf = malloc(len + 1);
	uint64_t p;

	expect(buf, "malloc");
	th_fill(buf, len, r->seq + 1);
	p = pk_ring_put(r, PK_REC_MSG, r->seq + 1, buf, (uint32_t)len);
	free(buf);
	return p;
}

void pk_ring_set_head(struct pk_ring *r, uint64_t head)
{
	STORE_REL(&r->hdr->head, head);
	wake_all(r);
}

void pk_ring_close(struct pk_ring *r)
{
	STORE_REL(&r->hdr->closed, 1);
	wake_all(r);
}

struct pk_welcome pk_welcome_at_head(const struct pk_ring *r)
{
	struct pk_welcome w = {
		.type = PK_WELCOME,
		.version = PK_VERSION,
		.flags = r->hdr ? r->hdr->flags : 0,
		.ring_size = r->size,
		.max_inline = r->size / 4,
		.start_pos = r->head,
		.start_seq = r->seq + 1,
		.join_head = r->head,
		.producer_pid = getpid(),
	};

	return w;
}

static void chan_addr(struct sockaddr_un *sa, const char *name)
{
	const char *dir = getenv("SHMFD_DIR");

	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	snprintf(sa->sun_path, sizeof(sa->sun_path), "%s/%s",
		 dir && *dir ? dir : th_dir(), name);
}

int pk_listen(const char *name)
{
	struct sockaddr_un sa;
	int fd = (int)expect_sys(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC,
					0));

	chan_addr(&sa, name);
	expect_sys(bind(fd, (struct sockaddr *)&sa, sizeof(sa)));
	expect_sys(listen(fd, 64));
	return fd;
}

int pk_accept(int lfd)
{
	expect(th_readable(lfd, DEADLINE_MS), "nobody connected");
	return (int)expect_sys(accept4(lfd, NULL, NULL, SOCK_CLOEXEC));
}

int pk_take_hello(int sock, struct pk_hello *h, int *fds, int *nfds)
{
	char buf[256];
	int n = pk_recv(sock, buf, sizeof(buf), fds, 4, nfds, NULL, -1);

	expect(n > 0, "no hello: %d (%s)", n, n ? th_strerr(n) : "hang-up");
	memset(h, 0, sizeof(*h));
	memcpy(h, buf, (size_t)n < sizeof(*h) ? (size_t)n : sizeof(*h));
	return n;
}

void pk_send_blob_fd(int sock, uint64_t id, uint64_t seq, uint64_t size,
		     int fd)
{
	struct pk_blob_fd m = {
		.type = PK_BLOB_FD,
		.id = id,
		.seq = seq,
		.size = size,
	};

	expect_eq(pk_send(sock, &m, sizeof(m), &fd, fd >= 0), 0);
}

/* ---- fake reader ---- */

int pk_connect(const char *name)
{
	struct sockaddr_un sa;
	int fd = (int)expect_sys(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC,
					0));

	chan_addr(&sa, name);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	return fd;
}

int pk_await_welcome(int sock, struct pk_welcome *w, int *ring_fd)
{
	for (;;) {
		int fds[4], nfds = 0, n;
		bool trunc;

		n = pk_recv(sock, w, sizeof(*w), fds, 4, &nfds, &trunc, -1);
		expect(n >= 0, "no answer to the hello: %s", th_strerr(n));
		if (n == 0)
			return PK_HUNG_UP;
		if (n == sizeof(struct pk_blob_fd) && w->type == PK_BLOB_FD) {
			pk_close_fds(fds, nfds);
			continue;
		}
		expect(n == sizeof(*w) && !trunc && w->type == PK_WELCOME,
		       "an answer of %d bytes, type %u, is no welcome", n,
		       w->type);
		if (w->status || !ring_fd) {
			pk_close_fds(fds, nfds);
		} else {
			expect_eq(nfds, 1);
			*ring_fd = fds[0];
		}
		return w->status;
	}
}

/* The welcome came: check the ring the page's way and map it. */
static void map_ring(struct pk_reader *r, int ring_fd)
{
	struct stat st;
	int seals = fcntl(ring_fd, F_GET_SEALS);
	void *p;

	expect(seals >= 0 && (seals & (F_SEAL_SHRINK | F_SEAL_GROW |
				       F_SEAL_SEAL)) ==
	       (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) &&
	       (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)),
	       "ring seals %#x", seals);
	r->map_size = PK_HDR_SIZE + r->w.ring_size;
	expect_sys(fstat(ring_fd, &st));
	expect_eq(st.st_size, r->map_size);
	p = mmap(NULL, r->map_size, PROT_READ, MAP_SHARED, ring_fd, 0);
	expect(p != MAP_FAILED, "mmap ring: %s", strerror(errno));
	close(ring_fd);
	r->hdr = p;
	r->data = (const uint8_t *)p + PK_HDR_SIZE;
	expect(r->hdr->magic == PK_RING_MAGIC &&
	       r->hdr->version == PK_VERSION &&
	       r->hdr->hdr_size == PK_HDR_SIZE &&
	       r->hdr->ring_size == r->w.ring_size &&
	       r->hdr->max_inline == r->w.max_inline &&
	       r->hdr->flags == r->w.flags, "ring header");
	r->pos = r->w.start_pos;
	r->next_seq = r->w.start_seq;
}

/* Our page, mapped writable, magic and version in, sealed. */
static int make_page(struct pk_reader *r)
{
	int fd = pk_memfd("pk-reader-page", PK_PAGE_SIZE, 0);
	void *p = mmap(NULL, PK_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
		       fd, 0);

	expect(p != MAP_FAILED, "mmap page: %s", strerror(errno));
	r->page = p;
	r->page->magic = PK_PAGE_MAGIC;
	r->page->version = PK_VERSION;
	expect_sys(fcntl(fd, F_ADD_SEALS, PK_PAGE_SEALS));
	return fd;
}

static int join(struct pk_reader *r, int hello_sock, int answer_far,
		uint32_t flags)
{
	struct pk_hello h = {
		.type = PK_HELLO,
		.version = PK_VERSION,
		/* We keep every full fence (rule (7)). */
		.flags = flags | PK_HELLO_FENCED,
		.nfds = answer_far >= 0 ? 2 : 1,
	};
	int fds[2], ring_fd = -1, ret;

	fds[0] = make_page(r);
	fds[1] = answer_far;
	ret = pk_send(hello_sock, &h, sizeof(h), fds, (int)h.nfds);
	pk_close_fds(fds, (int)h.nfds);
	if (ret < 0)
		goto fail;
	ret = pk_await_welcome(r->sock, &r->w, &ring_fd);
	if (ret)
		goto fail;
	map_ring(r, ring_fd);
	return 0;
fail:
	munmap(r->page, PK_PAGE_SIZE);
	close(r->sock);
	memset(r, 0, sizeof(*r));
	r->sock = -1;
	return ret;
}

int pk_join_named(struct pk_reader *r, const char *name, uint32_t flags)
{
	memset(r, 0, sizeof(*r));
	r->sock = pk_connect(name);
	if (r->sock < 0)
		return r->sock;
	return join(r, r->sock, -1, flags);
}

int pk_join_share(struct pk_reader *r, int share_fd, uint32_t flags)
{
	int sv[2];

	memset(r, 0, sizeof(*r));
	expect_sys(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv));
	r->sock = sv[0];
	return join(r, share_fd, sv[1], flags);
}

/* Rule (4), reader side: publish the tail, fence, wake a producer that
 * waits for it. */
static void release_to(struct pk_reader *r, uint64_t tail, bool waiting)
{
	uint64_t want;

	if (r->w.flags & PK_RING_LOSSY)
		return;
	STORE_REL(&r->page->tail, tail);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	want = LOAD_ACQ(&r->hdr->want);
	if (want && (tail >= want ||
		     (waiting && tail >= LOAD_ACQ(&r->hdr->need)))) {
		__atomic_fetch_add(&r->page->wake, 1, __ATOMIC_RELEASE);
		futex_wake(&r->page->wake, 1);
	}
}

/* Blob fd messages up to a blob record's id: this reader does not map
 * blobs, it closes their fds. */
static void drop_blob_fds(struct pk_reader *r, uint64_t id)
{
	for (;;) {
		struct pk_blob_fd m;
		int fd, nfds = 0, n;

		n = pk_recv(r->sock, &m, sizeof(m), &fd, 1, &nfds, NULL, 0);
		if (n <= 0)
			return;
		pk_close_fds(&fd, nfds);
		if (n == sizeof(m) && m.type == PK_BLOB_FD && m.id >= id)
			return;
	}
}

int pk_next(struct pk_reader *r, struct pk_msg *m, int ms)
{
	uint64_t end_ms = th_now_ms() + (uint64_t)(ms < 0 ? DEADLINE_MS : ms);
	bool lossy = r->w.flags & PK_RING_LOSSY;

	/* What the caller took last time is done with now. */
	release_to(r, r->pos, false);
	for (;;) {
		const struct pk_rec *rec;
		uint64_t h = LOAD_ACQ(&r->hdr->head), p = r->pos, off, end;
		uint32_t len, type;
		uint64_t seq;

		if (h == p) {
			if (LOAD_ACQ(&r->hdr->closed) &&
			    LOAD_ACQ(&r->hdr->head) == p)
				return -EPIPE;
			if (th_now_ms() >= end_ms)
				return -EAGAIN;
			release_to(r, r->pos, true);
			th_msleep(1);
			continue;
		}
		if (h < p || h % PK_ALIGN)
			return -EPROTO;
		/* Rule (2), for lossy rings and what predates our join. */
		if (lossy || p < r->w.join_head) {
			uint64_t o = LOAD_ACQ(&r->hdr->oldest);

			if (p < o)
				p = o;
			if (p >= h) {
				if (o > LOAD_ACQ(&r->hdr->head))
					return -EPROTO;
				r->pos = p;
				continue;
			}
		}
		if (p % PK_ALIGN || h - p > r->w.ring_size)
			return -EPROTO;
		off = p & (r->w.ring_size - 1);
		rec = (const void *)(r->data + off);
		len = __atomic_load_n(&rec->len, __ATOMIC_RELAXED);
		type = __atomic_load_n(&rec->type, __ATOMIC_RELAXED);
		seq = __atomic_load_n(&rec->seq, __ATOMIC_RELAXED);
		if (lossy || p < r->w.join_head) {
			__atomic_thread_fence(__ATOMIC_ACQUIRE);
			if (__atomic_load_n(&r->hdr->oldest,
					    __ATOMIC_RELAXED) > p)
				continue;
		}
		if (type == PK_REC_PAD) {
			if (off + sizeof(*rec) + len != r->w.ring_size)
				return -EPROTO;
			r->pos = p + sizeof(*rec) + len;
			continue;
		}
		if ((type != PK_REC_MSG && type != PK_REC_BLOB) ||
		    (type == PK_REC_BLOB && len != sizeof(struct pk_blob_desc)) ||
		    (type == PK_REC_MSG && len > r->w.max_inline) ||
		    off + sizeof(*rec) + len > r->w.ring_size)
			return -EPROTO;
		end = p + ((sizeof(*rec) + len + PK_ALIGN - 1) &
			   ~(uint64_t)(PK_ALIGN - 1));
		if (end > h || seq == 0 || seq < r->next_seq)
			return -EPROTO;
		m->seq = seq;
		m->lost = seq - r->next_seq;
		m->type = type;
		m->data = rec + 1;
		m->len = len;
		r->next_seq = seq + 1;
		r->pos = end;
		if (type == PK_REC_BLOB)
			drop_blob_fds(r, ((const struct pk_blob_desc *)
					  m->data)->id);
		return 0;
	}
}

void pk_reader_close(struct pk_reader *r, bool bye)
{
	struct pk_bye b = { .type = PK_BYE };

	if (r->sock >= 0 && bye)
		(void)pk_send(r->sock, &b, sizeof(b), NULL, 0);
	if (r->sock >= 0)
		close(r->sock);
	if (r->hdr)
		munmap((void *)r->hdr, r->map_size);
	if (r->page)
		munmap(r->page, PK_PAGE_SIZE);
	memset(r, 0, sizeof(*r));
	r->sock = -1;
}

/* ---- the victim ---- */

static void *watchdog_main(void *arg)
{
	struct pk_victim *v = arg;
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += v->seconds;
	pthread_mutex_lock(&v->lock);
	while (!v->done) {
		if (pthread_cond_timedwait(&v->cond, &v->lock, &ts) ==
		    ETIMEDOUT && !v->done) {
			fprintf(stderr, "watchdog: %s still inside the library "
				"after %d s: a hang\n", v->what, v->seconds);
			abort();
		}
	}
	pthread_mutex_unlock(&v->lock);
	return NULL;
}

void pk_victim_begin(struct pk_victim *v, const char *what, int seconds)
{
	pthread_condattr_t ca;
	int err;

	th_fd_snapshot(&v->fds);
	v->count = th_fd_count();
	v->done = false;
	v->seconds = seconds;
	v->what = what;
	pthread_mutex_init(&v->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&v->cond, &ca);
	pthread_condattr_destroy(&ca);
	err = pthread_create(&v->watchdog, NULL, watchdog_main, v);
	expect(err == 0, "pthread_create: %s", strerror(err));
}

void pk_victim_end_at(const char *file, int line, struct pk_victim *v,
		      int extra)
{
	char what[512];
	int now, leaks;

	pthread_mutex_lock(&v->lock);
	v->done = true;
	pthread_cond_signal(&v->cond);
	pthread_mutex_unlock(&v->lock);
	pthread_join(v->watchdog, NULL);
	pthread_cond_destroy(&v->cond);
	pthread_mutex_destroy(&v->lock);
	now = th_fd_count();
	leaks = th_fd_leaks(&v->fds, what, sizeof(what));
	if (now != v->count + extra || (!extra && leaks))
		th_fail(file, line, "%s: %d fds open before, %d after (%d "
			"expected): %s", v->what, v->count, now,
			v->count + extra, leaks ? what : "some closed");
}
