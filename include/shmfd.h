/* SPDX-License-Identifier: MIT */
/*
 * libshmfd: zero-copy message channels between processes on one Linux host.
 *
 * Every function returns 0 (or a count or fd) on success and -errno on
 * failure; none sets errno.  The full contract of each function is its
 * man page (shmfd(7) for the overview).
 */
#ifndef SHMFD_H
#define SHMFD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && __GNUC__ >= 4
#define SHMFD_API __attribute__((visibility("default")))
#else
#define SHMFD_API
#endif

struct shmfd_chan;		/* producer end, opaque */
struct shmfd_reader;		/* reader end, opaque */
struct shmfd_blob;		/* an unsent blob, opaque */

/* shmfd_params.flags */
#define SHMFD_LOSSY		(1u << 0)	/* producer never waits */

/* shmfd_reader_open*() flags */
#define SHMFD_FROM_OLDEST	(1u << 0)	/* start at the oldest message kept */

/* shmfd_recv() flags */
#define SHMFD_RECV_LATEST	(1u << 0)	/* skip to the newest message */

/* shmfd_msg.flags */
#define SHMFD_MSG_BLOB		(1u << 0)	/* arrived as a sealed blob */

struct shmfd_params {		/* all zero = defaults */
	size_t   ring_size;	/* bytes of message ring; default 4 MiB, min 64 KiB */
	size_t   max_inline;	/* larger messages go as blobs; default ring_size/4 */
	uint32_t max_readers;	/* default 64 */
	uint32_t flags;		/* SHMFD_LOSSY */
	mode_t   mode;		/* named channel access; default 0600 (same user) */
};

struct shmfd_msg {		/* filled by shmfd_recv */
	const void *data;	/* read-only, valid until shmfd_msg_release */
	size_t      len;
	uint64_t    seq;	/* 1, 2, 3 ... per channel */
	uint64_t    lost;	/* messages skipped before this one */
	uint32_t    flags;	/* SHMFD_MSG_BLOB if it arrived as a sealed blob */
	int         fd;		/* the blob's sealed memfd, or -1 */
	uint64_t    reserved[3];	/* private to the library */
};

/* Producer */

/* Create a channel; name NULL makes an anonymous one (see share_fd). */
SHMFD_API int shmfd_chan_create(struct shmfd_chan **chanp, const char *name,
				const struct shmfd_params *params);
/* A new close-on-exec fd a child passes to shmfd_reader_open_fd(). */
SHMFD_API int shmfd_chan_share_fd(struct shmfd_chan *chan);
/* Number of readers joined now. */
SHMFD_API int shmfd_chan_readers(struct shmfd_chan *chan);
/* Copy len bytes into the ring and publish them as one message. */
SHMFD_API int shmfd_send(struct shmfd_chan *chan, const void *data,
			 size_t len, int timeout_ms);
/* Reserve len bytes in the ring to build a message in place. */
SHMFD_API int shmfd_reserve(struct shmfd_chan *chan, size_t len, void **bufp,
			    int timeout_ms);
/* Publish the first len bytes of the reserved buffer. */
SHMFD_API int shmfd_commit(struct shmfd_chan *chan, size_t len);
/* A writable shared-memory buffer of size bytes, to send as one blob. */
SHMFD_API int shmfd_blob_create(struct shmfd_blob **blobp, size_t size);
/* The blob's bytes; NULL once a send has sealed it. */
SHMFD_API void *shmfd_blob_data(struct shmfd_blob *blob);
/* Seal the blob and send it; consumes it on success. */
SHMFD_API int shmfd_send_blob(struct shmfd_chan *chan, struct shmfd_blob *blob,
			      int timeout_ms);
/* Free a blob that was not sent. */
SHMFD_API void shmfd_blob_free(struct shmfd_blob *blob);
/* Mark the channel closed, wake every reader, free everything. */
SHMFD_API void shmfd_chan_close(struct shmfd_chan *chan);

/* Reader */

/* Join the named channel. */
SHMFD_API int shmfd_reader_open(struct shmfd_reader **readerp,
				const char *name, int flags);
/* Join through an fd from shmfd_chan_share_fd(); owns fd on success. */
SHMFD_API int shmfd_reader_open_fd(struct shmfd_reader **readerp, int fd,
				   int flags);
/* Receive the next message: a pointer into the shared ring. */
SHMFD_API int shmfd_recv(struct shmfd_reader *reader, struct shmfd_msg *msg,
			 int flags, int timeout_ms);
/* Give a received message back; -ESTALE if it was overwritten (lossy). */
SHMFD_API int shmfd_msg_release(struct shmfd_reader *reader,
				struct shmfd_msg *msg);
/* An fd readable when shmfd_recv(..., 0) would not return -EAGAIN. */
SHMFD_API int shmfd_reader_pollfd(struct shmfd_reader *reader);
/* Spin up to usec microseconds for the next message before sleeping. */
SHMFD_API int shmfd_reader_set_spin(struct shmfd_reader *reader,
				    unsigned int usec);
/* Leave the channel; releases every held message. */
SHMFD_API void shmfd_reader_close(struct shmfd_reader *reader);

/* Observers: a named channel's figures, without joining it */

struct shmfd_stat {		/* filled by shmfd_chan_stat */
	pid_t    producer_pid;
	uint32_t flags;		/* SHMFD_LOSSY */
	uint64_t ring_size;
	uint64_t max_inline;
	uint32_t max_readers;
	uint32_t readers;	/* joined now */
	uint64_t published;	/* messages published: the last seq */
	uint64_t lost;		/* msg.lost summed over readers, gone ones too */
	uint64_t joins;		/* readers that ever joined */
	uint64_t reserved[4];
};

/* Ask the producer of a named channel for its figures. */
SHMFD_API int shmfd_chan_stat(const char *name, struct shmfd_stat *st,
			      int timeout_ms);
/* The directory of this process's named channels; returns its length. */
SHMFD_API int shmfd_dir(char *buf, size_t size);

/* The library's version string, "MAJOR.MINOR.PATCH". */
SHMFD_API const char *shmfd_version(void);

#ifdef __cplusplus
}
#endif

#endif /* SHMFD_H */
