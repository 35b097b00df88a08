/* SPDX-License-Identifier: MIT */
/* The producer API. */
#include "internal.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>

static size_t round_pow2(size_t v)
{
	size_t p = SHMFD_MIN_RING;

	while (p < v)
		p <<= 1;
	return p;
}

SHMFD_API int shmfd_chan_create(struct shmfd_chan **chanp, const char *name,
				const struct shmfd_params *params)
{
	static const struct shmfd_params defaults;
	const struct shmfd_params *pp = params ? params : &defaults;
	size_t ring_size, max_inline;
	uint32_t max_readers;
	struct shmfd_chan *c;
	int ret;

	if (!chanp)
		return -EINVAL;
	*chanp = NULL;
	if (pp->flags & ~(uint32_t)SHMFD_LOSSY)
		return -EINVAL;
	/* On 32-bit systems a size_t holds no power of two past 2 GiB:
	 * rounding up further would wrap to 0 and never end. */
	if (pp->ring_size &&
	    (pp->ring_size < SHMFD_MIN_RING || pp->ring_size > SHMFD_MAX_RING ||
	     pp->ring_size > SIZE_MAX / 2 + 1))
		return -EINVAL;
	ring_size = round_pow2(pp->ring_size ? pp->ring_size
					     : SHMFD_DEFAULT_RING);
	max_inline = pp->max_inline ? pp->max_inline : ring_size / 4;
	/* A record (header included) of at most half the ring always fits
	 * once the ring has drained, PAD to the end of the data included. */
	if (max_inline > ring_size / 2 - sizeof(struct shmfd__rec))
		return -EINVAL;
	if (pp->max_readers > SHMFD_MAX_READERS)
		return -EINVAL;
	max_readers = pp->max_readers ? pp->max_readers : SHMFD_DEFAULT_READERS;
	if (pp->mode & ~(mode_t)0777)
		return -EINVAL;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->ring_fd = c->listen_fd = c->epfd = c->stop_fd = -1;
	c->mode = pp->mode ? pp->mode : 0600;
	c->pid = getpid();
	pthread_mutex_init(&c->lock, NULL);

	ret = shmfd__ring_init(c, ring_size, max_inline, max_readers,
			       pp->flags & SHMFD_LOSSY);
	if (ret < 0)
		goto fail;
	if (name) {
		struct stat st;

		ret = shmfd__listen(name, c->mode, &c->listen_fd, c->path,
				    sizeof(c->path));
		if (ret < 0)
			goto fail;
		/* Remember which file is ours: close removes only that. */
		if (stat(c->path, &st) < 0) {
			ret = shmfd__neg_errno();
			goto fail;
		}
		c->path_dev = st.st_dev;
		c->path_ino = st.st_ino;
	}
	ret = shmfd__uring_init(&c->uring, 8);
	if (ret < 0)
		goto fail;
	ret = shmfd__admit_start(c);
	if (ret < 0)
		goto fail;
	*chanp = c;
	return 0;
fail:
	shmfd_chan_close(c);
	return ret;
}

SHMFD_API int shmfd_chan_share_fd(struct shmfd_chan *c)
{
	int sv[2], ret;

	if (!c)
		return -EINVAL;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return shmfd__neg_errno();
	if (fcntl(sv[0], F_SETFL, O_NONBLOCK) < 0) {
		ret = shmfd__neg_errno();
		goto fail;
	}
	ret = shmfd__admit_add_share(c, sv[0]);
	if (ret < 0)
		goto fail;
	return sv[1];
fail:
	close(sv[0]);
	close(sv[1]);
	return ret;
}

SHMFD_API int shmfd_chan_readers(struct shmfd_chan *c)
{
	if (!c)
		return -EINVAL;
	return (int)__atomic_load_n(&c->nreaders, __ATOMIC_RELAXED);
}

SHMFD_API int shmfd_reserve(struct shmfd_chan *c, size_t len, void **bufp,
			    int timeout_ms)
{
	if (!c || !bufp)
		return -EINVAL;
	if (len > c->max_inline)
		return -EMSGSIZE;
	return shmfd__ring_reserve(c, len, bufp, timeout_ms);
}

SHMFD_API int shmfd_commit(struct shmfd_chan *c, size_t len)
{
	if (!c)
		return -EINVAL;
	return shmfd__ring_commit(c, len);
}

SHMFD_API int shmfd_send(struct shmfd_chan *c, const void *data, size_t len,
			 int timeout_ms)
{
	void *buf;
	int ret;

	if (!c || (!data && len))
		return -EINVAL;
	if (len > c->max_inline) {
		struct shmfd_blob *b;

		ret = shmfd__blob_copy(&b, data, len);
		if (ret < 0)
			return ret;
		ret = shmfd_send_blob(c, b, timeout_ms);
		if (ret < 0)
			shmfd_blob_free(b);
		return ret;
	}
	ret = shmfd__ring_reserve(c, len, &buf, timeout_ms);
	if (ret < 0)
		return ret;
	if (len)
		memcpy(buf, data, len);
	return shmfd__ring_commit(c, len);
}

SHMFD_API void shmfd_chan_close(struct shmfd_chan *c)
{
	if (!c)
		return;
	if (c->hdr)
		shmfd__ring_close(c);
	shmfd__admit_stop(c);
	for (uint32_t i = 0; i < c->nslots; i++) {
		struct shmfd__slot *s = &c->slots[i];

		/* A dropped reader's socket stays open until its slot is
		 * reclaimed (admit.c): the sender may be passing it a blob. */
		if (s->state != SLOT_FREE)
			close(s->sock);
		/* Its poll socket, if it sent one (ring.c (8)). */
		if (s->state != SLOT_FREE && s->wake_sock >= 0)
			close(s->wake_sock);
		if (s->state == SLOT_LIVE && s->pidfd >= 0)
			close(s->pidfd);
		if (s->page)
			munmap(s->page, SHMFD_RPAGE_SIZE);
	}
	free(c->slots);
	if (c->listen_fd >= 0) {
		struct stat st;

		/* Another producer may have replaced a socket it took for
		 * stale: remove the file only if it is still ours. */
		if (stat(c->path, &st) == 0 && st.st_dev == c->path_dev &&
		    st.st_ino == c->path_ino)
			unlink(c->path);
		close(c->listen_fd);
	}
	shmfd__uring_exit(&c->uring);
	shmfd__blob_send_cleanup(c);
	if (c->hdr)
		munmap(c->hdr, c->map_size);
	if (c->ring_fd >= 0)
		close(c->ring_fd);
	pthread_mutex_destroy(&c->lock);
	free(c);
}
