/* SPDX-License-Identifier: MIT */
/*
 * What a reader checks in the ring a producer hands it, before it trusts
 * a byte of it.  Pure functions: no syscall, no state, so tests and the
 * fuzz targets (tests/fuzz/) can run them on an ordinary buffer.  The
 * handshake messages are checked in proto.c, the records where they are
 * read (ring.c, shmfd__ring_take).
 */
#include "internal.h"

int shmfd__check_ring_geometry(uint64_t ring_size, uint64_t max_inline,
			       uint32_t flags)
{
	if (flags & ~((uint32_t)SHMFD_RING_LOSSY | SHMFD_RING_ASYM))
		return -EPROTO;
	if (ring_size < SHMFD_MIN_RING || ring_size > SHMFD_MAX_RING ||
	    (ring_size & (ring_size - 1)))
		return -EPROTO;
	/* Any record, PAD included, must fit once the ring has drained. */
	if (max_inline > ring_size / 2 - sizeof(struct shmfd__rec))
		return -EPROTO;
	return 0;
}

int shmfd__ring_map_size(uint64_t ring_size, size_t *sizep)
{
	/* A 4 GiB ring is legal but does not fit a 32-bit address space:
	 * there 4096 + ring_size would wrap around to a mapping far shorter
	 * than the positions the ring announces. */
	if (ring_size > SIZE_MAX - SHMFD_HDR_SIZE)
		return -ENOMEM;
	*sizep = SHMFD_HDR_SIZE + (size_t)ring_size;
	return 0;
}

int shmfd__check_ring_hdr(const struct shmfd__ring_hdr *hdr,
			  const struct shmfd__welcome *w)
{
	int ret;

	if (hdr->magic != SHMFD_RING_MAGIC ||
	    hdr->version != SHMFD_PROTO_VERSION ||
	    hdr->hdr_size != SHMFD_HDR_SIZE)
		return -EPROTO;
	/* The header on its own, so that it does not lean on the caller
	 * having checked the welcome first. */
	ret = shmfd__check_ring_geometry(hdr->ring_size, hdr->max_inline,
					 hdr->flags);
	if (ret < 0)
		return ret;
	if (hdr->ring_size != w->ring_size ||
	    hdr->max_inline != w->max_inline || hdr->flags != w->flags)
		return -EPROTO;
	return 0;
}
