/* SPDX-License-Identifier: MIT */
/*
 * Writes the seed corpus of the fuzz targets: tests/fuzz/make-seeds DIR
 * fills DIR/fuzz-proto, DIR/fuzz-ring and DIR/fuzz-join with one small
 * input per case worth starting from -- the valid messages and rings,
 * and each input that once found a bug.  `make fuzz-seeds` runs it into
 * tests/fuzz/corpus; the output is checked in, so this runs only when
 * an input format or the layout changes.  The formats are described at
 * the top of each target.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "shmfd.h"
#include "../../lib/layout.h"

#define RING	SHMFD_MIN_RING

static const char *root;

struct seed {
	unsigned char buf[4096];
	size_t len;
};

static void put(struct seed *s, const void *p, size_t n)
{
	if (s->len + n > sizeof(s->buf))
		abort();
	memcpy(s->buf + s->len, p, n);
	s->len += n;
}

static void u8(struct seed *s, uint8_t v)
{
	put(s, &v, 1);
}

static void u16(struct seed *s, uint16_t v)
{
	put(s, &v, 2);
}

static void u32(struct seed *s, uint32_t v)
{
	put(s, &v, 4);
}

static void u64(struct seed *s, uint64_t v)
{
	put(s, &v, 8);
}

static void save(const char *target, const char *name, const struct seed *s)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", root, target);
	if (mkdir(path, 0755) < 0 && errno != EEXIST) {
		perror(path);
		exit(1);
	}
	snprintf(path, sizeof(path), "%s/%s/%s", root, target, name);
	f = fopen(path, "wb");
	if (!f || fwrite(s->buf, 1, s->len, f) != s->len || fclose(f)) {
		perror(path);
		exit(1);
	}
}

static struct shmfd__welcome welcome(uint32_t flags)
{
	struct shmfd__welcome w = {
		.type = SHMFD_MSG_WELCOME,
		.version = SHMFD_PROTO_VERSION,
		.flags = flags,
		.ring_size = RING,
		.max_inline = RING / 4,
		.start_pos = 0,
		.start_seq = 1,
		.join_head = 0,
		.producer_pid = 1,
	};

	return w;
}

/* ---- fuzz-proto: mode, then the message ---- */

static void proto_seeds(void)
{
	struct shmfd__hello h = {
		.type = SHMFD_MSG_HELLO,
		.version = SHMFD_PROTO_VERSION,
		.nfds = 1,
	};
	struct shmfd__welcome w = welcome(SHMFD_RING_LOSSY);
	struct shmfd__ring_hdr hdr = {
		.magic = SHMFD_RING_MAGIC,
		.version = SHMFD_PROTO_VERSION,
		.hdr_size = SHMFD_HDR_SIZE,
		.ring_size = RING,
		.max_inline = RING / 4,
		.flags = SHMFD_RING_LOSSY,
		.max_readers = 64,
		.producer_pid = 1,
	};
	struct shmfd__stats a = {
		.type = SHMFD_MSG_STATS,
		.version = SHMFD_PROTO_VERSION,
		.ring_size = RING,
		.max_inline = RING / 4,
		.max_readers = 64,
		.readers = 2,
		.producer_pid = 1,
		.published = 10,
		.joins = 3,
	};
	struct shmfd__stat_req q = {
		.type = SHMFD_MSG_STAT_REQ,
		.version = SHMFD_PROTO_VERSION,
	};
	struct seed s;

	s = (struct seed){ 0 };
	u8(&s, 0);
	u8(&s, 1);
	put(&s, &h, sizeof(h));
	save("fuzz-proto", "hello-named", &s);

	h.nfds = 2;
	h.flags = SHMFD_FROM_OLDEST;
	s = (struct seed){ 0 };
	u8(&s, 0);
	u8(&s, 2);
	put(&s, &h, sizeof(h));
	save("fuzz-proto", "hello-share-fd", &s);

	s = (struct seed){ 0 };
	u8(&s, 1);
	put(&s, &w, sizeof(w));
	save("fuzz-proto", "welcome", &s);

	{
		struct shmfd__welcome e = {
			.type = SHMFD_MSG_WELCOME,
			.version = SHMFD_PROTO_VERSION,
			.status = -EUSERS,
		};

		s = (struct seed){ 0 };
		u8(&s, 1);
		put(&s, &e, sizeof(e));
		save("fuzz-proto", "welcome-error", &s);
	}

	s = (struct seed){ 0 };
	u8(&s, 2);
	put(&s, &w, sizeof(w));
	put(&s, &hdr, sizeof(hdr));
	save("fuzz-proto", "ring-header", &s);

	/* A 4 GiB ring: legal, mapped only where a size_t holds it. */
	w.ring_size = hdr.ring_size = SHMFD_MAX_RING;
	s = (struct seed){ 0 };
	u8(&s, 2);
	put(&s, &w, sizeof(w));
	put(&s, &hdr, sizeof(hdr));
	save("fuzz-proto", "ring-header-4g", &s);

	s = (struct seed){ 0 };
	u8(&s, 3);
	put(&s, &a, sizeof(a));
	save("fuzz-proto", "stats", &s);

	{
		struct shmfd__stats e = {
			.type = SHMFD_MSG_STATS,
			.version = SHMFD_PROTO_VERSION,
			.status = -EACCES,
		};

		s = (struct seed){ 0 };
		u8(&s, 3);
		put(&s, &e, sizeof(e));
		save("fuzz-proto", "stats-error", &s);
	}

	/* recv_fds: nsend, kinds, buffer length, maxfds - 1, datagram. */
	h.nfds = 2;
	s = (struct seed){ 0 };
	u8(&s, 4);
	u8(&s, 2);
	u8(&s, 0x09);			/* a memfd and a socket */
	u8(&s, sizeof(h));
	u8(&s, 1);
	put(&s, &h, sizeof(h));
	save("fuzz-proto", "recv-hello-two-fds", &s);

	s = (struct seed){ 0 };
	u8(&s, 4);
	u8(&s, 0);
	u8(&s, 0);
	u8(&s, sizeof(h));
	u8(&s, 0);
	put(&s, &q, sizeof(q));
	save("fuzz-proto", "recv-stat-request", &s);

	s = (struct seed){ 0 };
	u8(&s, 4);
	u8(&s, 20);			/* more than recv_fds has room for */
	u8(&s, 0x55);
	u8(&s, sizeof(h));
	u8(&s, 1);
	put(&s, &h, sizeof(h));
	save("fuzz-proto", "recv-twenty-fds", &s);
}

/* ---- fuzz-ring: cfg, max_inline, start, behind, start_seq, ops ---- */

enum {
	OP_PUBLISH, OP_RECORD, OP_PAYLOAD, OP_HEAD, OP_OLDEST, OP_LATEST,
	OP_WANT, OP_CLOSED, OP_BLOB_FD, OP_TAKE, OP_RECV, OP_RELEASE,
};

static void ring_cfg(struct seed *s, uint8_t cfg, uint64_t start,
		     uint16_t behind)
{
	*s = (struct seed){ 0 };
	u8(s, cfg);
	u16(s, RING / 4);
	u64(s, start);
	u16(s, behind);
	u64(s, 0);			/* start_seq 0 | 1 */
}

static void publish(struct seed *s, uint8_t kind, uint16_t arg)
{
	u8(s, OP_PUBLISH);
	u8(s, kind);
	u16(s, arg);
}

static void recv_(struct seed *s, uint8_t latest)
{
	u8(s, OP_RECV);
	u8(s, latest);
}

static void release(struct seed *s, uint8_t idx)
{
	u8(s, OP_RELEASE);
	u8(s, idx);
}

/* A raw record header at byte offset off of the data area. */
static void record(struct seed *s, uint32_t off, uint8_t type, uint32_t len,
		   uint64_t seq)
{
	u8(s, OP_RECORD);
	u16(s, (uint16_t)(off / 16));
	u8(s, type | 0x10);		/* raw seq */
	u32(s, len);
	u64(s, seq);
}

/* head = the reader's position + delta (hostile_pos mode 1). */
static void head_at_pos(struct seed *s, int16_t delta16)
{
	u8(s, OP_HEAD);
	u8(s, 1);
	u64(s, (uint64_t)(uint16_t)delta16);
}

static void ring_seeds(void)
{
	struct seed s;

	/* Reliable: three messages, received and released out of order. */
	ring_cfg(&s, 0, 0, 0);
	publish(&s, 0, 100);
	publish(&s, 0, 0);
	publish(&s, 0, 4000);
	recv_(&s, 0);
	recv_(&s, 0);
	release(&s, 1);
	recv_(&s, 0);
	release(&s, 0);
	release(&s, 2);
	recv_(&s, 0);
	save("fuzz-ring", "reliable-messages", &s);

	/* Near the end of the data area: a PAD, then the record. */
	ring_cfg(&s, 0, RING - 64, 0);
	publish(&s, 0, 200);
	recv_(&s, 0);
	u8(&s, OP_TAKE);
	u8(&s, 0);
	save("fuzz-ring", "pad", &s);

	/* Lossy, lapped by the producer, then only the newest. */
	ring_cfg(&s, 1, 0, 0);
	for (int i = 0; i < 12; i++)
		publish(&s, 0, 8000);
	recv_(&s, 0);
	release(&s, 0);
	publish(&s, 0, 10);
	publish(&s, 0, 20);
	recv_(&s, 1);
	save("fuzz-ring", "lossy-overrun-latest", &s);

	/* Blobs: one with its fd, one whose fd never comes, a bad one. */
	ring_cfg(&s, 0, 0, 0);
	publish(&s, 2, 5000);
	publish(&s, 1, 10);
	publish(&s, 0, 10);
	publish(&s, 3 | 2 << 2, 300);	/* sent without its seal */
	recv_(&s, 0);
	recv_(&s, 0);
	recv_(&s, 0);
	release(&s, 0);
	release(&s, 1);
	save("fuzz-ring", "blobs", &s);

	/* A reader joined FROM_OLDEST: it starts 64 bytes below join. */
	ring_cfg(&s, 0, 0, 4);
	record(&s, 0, SHMFD_REC_MSG, 16, 1);
	record(&s, 32, SHMFD_REC_MSG, 16, 2);
	publish(&s, 0, 1);
	recv_(&s, 0);
	recv_(&s, 0);
	recv_(&s, 0);
	save("fuzz-ring", "from-oldest", &s);

	/* Found: lossy, oldest == head above the reader, which spun. */
	ring_cfg(&s, 1, 0, 0);
	publish(&s, 0, 100);
	publish(&s, 0, 100);
	u8(&s, OP_OLDEST);
	u8(&s, 4);			/* raw */
	u64(&s, 2 * 128);		/* both records: head */
	recv_(&s, 0);
	publish(&s, 0, 100);
	recv_(&s, 0);
	save("fuzz-ring", "all-overwritten", &s);
	/* Found: seq 2^64 - 1 wrapped next_seq to 0, then seq 2 passed. */
	ring_cfg(&s, 0, 0, 0);
	record(&s, 0, SHMFD_REC_MSG, 0, UINT64_MAX);
	record(&s, 16, SHMFD_REC_MSG, 0, 2);
	head_at_pos(&s, 2);
	u8(&s, OP_TAKE);
	u8(&s, 0);
	u8(&s, OP_TAKE);
	u8(&s, 0);
	save("fuzz-ring", "seq-wraps", &s);

	/* Found: a record at 2^64 - 32 whose end wraps to 0, below head. */
	ring_cfg(&s, 0, UINT64_MAX - 31, 0);
	head_at_pos(&s, 1);
	record(&s, RING - 32, SHMFD_REC_MSG, 16, 1);
	u8(&s, OP_TAKE);
	u8(&s, 0);
	save("fuzz-ring", "end-wraps", &s);

	/* Found: the same with a PAD, which then went round forever. */
	ring_cfg(&s, 0, UINT64_MAX - 31, 0);
	head_at_pos(&s, 1);
	record(&s, RING - 32, SHMFD_REC_PAD, 16, 0);
	recv_(&s, 0);
	save("fuzz-ring", "pad-end-wraps", &s);

	/* The reviewer's report: a blob record header in the last 16
	 * bytes, its descriptor past the data area (where the next 16
	 * published bytes are the start of the data area). */
	ring_cfg(&s, 0, RING - 16, 0);
	head_at_pos(&s, 2);
	record(&s, RING - 16, SHMFD_REC_BLOB, 16, 1);
	recv_(&s, 0);
	save("fuzz-ring", "blob-in-last-16-bytes", &s);

}

/* ---- fuzz-join: flags, then datagrams (spec, length, body) ---- */

static void datagram(struct seed *s, uint8_t spec, const void *body,
		     size_t len)
{
	u8(s, spec);
	u8(s, (uint8_t)len);
	put(s, body, len);
}

static void join_seeds(void)
{
	struct shmfd__welcome w = welcome(0);
	struct shmfd__blob_fd b = {
		.type = SHMFD_MSG_BLOB_FD,
		.id = 1,
		.seq = 1,
		.size = 100,
	};
	struct shmfd__welcome e = {
		.type = SHMFD_MSG_WELCOME,
		.version = SHMFD_PROTO_VERSION,
		.status = -EUSERS,
	};
	struct seed s;

	s = (struct seed){ 0 };
	u8(&s, 0);
	datagram(&s, 1, &w, sizeof(w));	/* the ring, right */
	save("fuzz-join", "welcome", &s);

	s = (struct seed){ 0 };
	u8(&s, 1);
	datagram(&s, 3, &b, sizeof(b));	/* a blob's fd first */
	datagram(&s, 1, &w, sizeof(w));
	save("fuzz-join", "blob-fd-then-welcome", &s);

	s = (struct seed){ 0 };
	u8(&s, 0);
	datagram(&s, 0, &e, sizeof(e));
	save("fuzz-join", "error-answer", &s);

	s = (struct seed){ 0 };
	u8(&s, 0);
	datagram(&s, 1 | 2 << 5, &w, sizeof(w));	/* no write seal */
	save("fuzz-join", "ring-writable", &s);

	s = (struct seed){ 0 };
	u8(&s, 0);
	datagram(&s, 1 | 1 << 3, &w, sizeof(w));	/* a page short */
	save("fuzz-join", "ring-short", &s);

	/* Found: an empty datagram with an fd, whose fd the reader kept. */
	s = (struct seed){ 0 };
	u8(&s, 0);
	datagram(&s, 2, "", 0);
	save("fuzz-join", "empty-with-fd", &s);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	root = argv[1];
	if (mkdir(root, 0755) < 0 && errno != EEXIST) {
		perror(root);
		return 1;
	}
	proto_seeds();
	ring_seeds();
	join_seeds();
	return 0;
}
