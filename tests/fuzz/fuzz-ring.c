/* SPDX-License-Identifier: MIT */
/*
 * The reader against a hostile ring.  A struct shmfd_reader is set up
 * in-process, as map_ring() would after a welcome, on a ring that lives in
 * an ordinary mapping (header page, data area, then a PROT_NONE guard
 * page, so a read past the data area faults).  The fuzzer's bytes are a
 * configuration, then a program: publish records the way an honest
 * producer does, scribble record headers and payloads anywhere, move
 * head, oldest, latest, want and closed to any value, queue blob fds,
 * and, in between, take records (shmfd__ring_take), receive them
 * (shmfd_recv, timeout 0) and release them.
 *
 * The oracle: nothing crashes or reads outside the ring; every call
 * returns one of the codes its contract allows; a message handed out lies
 * inside the data area, below a head the producer published, with a seq
 * above every seq handed out before; whatever the reader passed over to
 * reach it were well-formed PADs, unless it says it skipped; no call
 * spins (libFuzzer's -timeout); and closing the reader leaves no fd.
 *
 * Input: cfg (1 byte: bit 0 lossy, bit 1 ASYM), max_inline (2), start_pos
 * (8), join_head - start_pos (2, in 16-byte units), start_seq (8), then
 * operations of one opcode byte and its arguments.
 */
#include "fuzz.h"

#include <sys/socket.h>

#define RING		SHMFD_MIN_RING
#define MAX_HELD	16

enum op {
	OP_PUBLISH,		/* honest: PAD if needed, record, head */
	OP_RECORD,		/* a record header anywhere */
	OP_PAYLOAD,		/* 16 payload bytes anywhere (blob descs) */
	OP_HEAD,
	OP_OLDEST,
	OP_LATEST,
	OP_WANT,
	OP_CLOSED,
	OP_BLOB_FD,		/* a blob fd message on the reader's socket */
	OP_TAKE,
	OP_RECV,
	OP_RELEASE,
	OP_COUNT,
};

struct held {
	struct shmfd_msg m;
	bool live;
};

struct fuzz_ring {
	struct fuzz_in in;
	uint8_t *map;			/* header page, data, guard page */
	struct shmfd__ring_hdr *hdr;	/* the producer's view: writable */
	uint8_t *data;
	struct shmfd_reader *r;
	int peer;			/* the producer's end of r->sock */
	uint64_t max_head;		/* highest head ever published */
	uint64_t seq;			/* the honest producer's last seq */
	uint64_t blob_id;
	uint64_t last_seq;		/* highest seq handed out */
	struct held held[MAX_HELD];
};

bool fuzz_verbose;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *v = getenv("SHMFD_FUZZ_VERBOSE");

	fuzz_verbose = v && *v && strcmp(v, "0");
	/* No io_uring: its set-up per input would be all we measure. */
	setenv("SHMFD_NO_IO_URING", "1", 1);
	return 0;
}

/* ---- the producer's side ---- */

static struct shmfd__rec *rec_at(struct fuzz_ring *f, uint64_t pos)
{
	return (struct shmfd__rec *)(f->data + (pos & (RING - 1)));
}

static void set_head(struct fuzz_ring *f, uint64_t h)
{
	if (h > f->max_head)
		f->max_head = h;
	STORE_RELEASE(&f->hdr->head, h);
}

/* ring.c (2), as the producer does it: retire records up to limit. */
static void retire(struct fuzz_ring *f, uint64_t limit)
{
	uint64_t o = LOAD_RELAXED(&f->hdr->oldest);
	uint64_t head = LOAD_RELAXED(&f->hdr->head);

	/* Records may have been scribbled on: where a walk by their
	 * lengths goes astray, retire up to limit in one step. */
	for (int i = 0; o < limit && o % 16 == 0 && i < 256; i++) {
		o += ALIGN_UP((uint64_t)rec_at(f, o)->len + 16, 16);
		if (o > head)
			break;
	}
	if (o < limit || o > head || o % 16)
		o = ALIGN_UP(limit, 16);
	STORE_RELAXED(&f->hdr->oldest, o);
	FENCE_RELEASE();
}

/* A sealed blob memfd of size bytes, or something worse. */
static int blob_memfd(uint64_t size, uint8_t how)
{
	int seals = F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
	int fd = memfd_create("fuzz-blob", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0)
		abort();
	if (how == 1)
		size += 4096;		/* longer than it says */
	if (how == 2)
		seals &= ~F_SEAL_WRITE;	/* anyone may change it */
	if (ftruncate(fd, (off_t)size) < 0 ||
	    fcntl(fd, F_ADD_SEALS, seals) < 0)
		abort();
	return fd;
}

static void send_blob_fd(struct fuzz_ring *f, uint64_t id, uint64_t seq,
			 uint64_t size, uint8_t how)
{
	struct shmfd__blob_fd m = {
		.type = SHMFD_MSG_BLOB_FD,
		.id = id,
		.seq = seq,
		.size = size,
	};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = &m, .iov_len = sizeof(m) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	int fd = -1;

	if (how % 8 == 3)
		iov.iov_len = 8;	/* short */
	if (how % 8 == 7)
		iov.iov_len = 0;	/* empty: no hang-up either */
	if (how % 8 == 4)
		m.type = SHMFD_MSG_WELCOME;
	if (how % 8 != 5) {		/* 5: no fd */
		struct cmsghdr *cm;

		fd = how % 8 == 6 ? dup(f->peer) : blob_memfd(size, how % 8);
		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof(ctl.buf);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	/* A full socket buffer drops it: a lost blob, as for a lossy
	 * producer whose reader's socket is full. */
	sendmsg(f->peer, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (fd >= 0)
		close(fd);
}

static void op_publish(struct fuzz_ring *f)
{
	uint8_t kind = fuzz_u8(&f->in);
	uint16_t arg = fuzz_u16(&f->in);
	uint32_t type = kind % 4 == 0 ? SHMFD_REC_MSG : SHMFD_REC_BLOB;
	uint32_t len = type == SHMFD_REC_MSG
		       ? (uint32_t)(arg % (f->r->max_inline + 1))
		       : sizeof(struct shmfd__blob_desc);
	uint64_t p = LOAD_RELAXED(&f->hdr->head) & ~15ull;
	uint64_t off = p & (RING - 1);
	uint64_t need = ALIGN_UP((uint64_t)len + 16, 16);
	uint64_t pad = off + need > RING ? RING - off : 0;
	uint64_t end = p + pad + need;
	struct shmfd__rec *rec;

	if (end > RING)
		retire(f, end - RING);
	if (pad) {
		rec = rec_at(f, p);
		rec->len = (uint32_t)(pad - 16);
		rec->type = SHMFD_REC_PAD;
		rec->seq = 0;
	}
	rec = rec_at(f, p + pad);
	f->seq++;
	if (type == SHMFD_REC_BLOB) {
		struct shmfd__blob_desc *d = (void *)(rec + 1);

		d->id = ++f->blob_id;
		d->size = arg % 8192 + 1;
		/* kind 1: the fd never comes; 2, 3: a bad one. */
		if (kind % 4 != 1)
			send_blob_fd(f, d->id, f->seq, d->size,
				     kind % 4 == 3 ? (uint8_t)(kind >> 2) : 0);
		STORE_RELAXED(&f->hdr->blob_id, d->id);
	} else {
		memset(rec + 1, (int)(f->seq & 0xff), len);
	}
	rec->len = len;
	rec->type = type;
	rec->seq = f->seq;
	STORE_RELAXED(&f->hdr->latest, p + pad);
	STORE_RELAXED(&f->hdr->seq, f->seq);
	set_head(f, end);
	FUZZ_LOG("publish %s seq %llu len %u at %llu, head %llu oldest %llu\n",
		 type == SHMFD_REC_MSG ? "message" : "blob",
		 (unsigned long long)f->seq, len,
		 (unsigned long long)(p + pad), (unsigned long long)end,
		 (unsigned long long)LOAD_RELAXED(&f->hdr->oldest));
}

/* A position near pos, or anywhere: what a hostile producer stores. */
static uint64_t hostile_pos(struct fuzz_ring *f, uint64_t pos)
{
	uint8_t mode = fuzz_u8(&f->in);
	uint64_t v = fuzz_u64(&f->in);

	switch (mode % 5) {
	case 0:
		return pos + (uint64_t)(int64_t)(int16_t)v * 16;
	case 1:
		return f->r->pos + (uint64_t)(int64_t)(int16_t)v * 16;
	case 2:
		return pos + (uint64_t)(int64_t)(int16_t)v;	/* unaligned */
	case 3:
		return f->r->pos + RING + (uint64_t)(int64_t)(int8_t)v * 16;
	default:
		return v;
	}
}

static void op_record(struct fuzz_ring *f)
{
	uint64_t off = (uint64_t)fuzz_u16(&f->in) * 16 % RING;
	struct shmfd__rec *rec = (void *)(f->data + off);
	uint8_t kind = fuzz_u8(&f->in);
	uint32_t len = fuzz_u32(&f->in);
	uint64_t seq = fuzz_u64(&f->in);

	/* Small types and lengths are the interesting ones: the raw values
	 * only now and then. */
	rec->type = kind & 0x80 ? (uint32_t)seq : kind % 4;
	rec->len = kind & 0x40 ? len : len % (RING / 2);
	if (kind & 0x20)
		rec->len = (uint32_t)(RING - off - 16 + (int8_t)len * 16);
	rec->seq = kind & 0x10 ? seq : f->r->next_seq + (uint64_t)(int8_t)seq;
	/* The honest producer goes on from there. */
	if (rec->seq > f->seq && rec->seq < UINT64_MAX / 2)
		f->seq = rec->seq;
}

static void op_payload(struct fuzz_ring *f)
{
	uint64_t off = (uint64_t)fuzz_u16(&f->in) * 16 % RING;

	fuzz_take(&f->in, f->data + off, 16);
}

/* ---- the reader's side ---- */

static bool msg_in_ring(const struct fuzz_ring *f, const struct shmfd_msg *m)
{
	const uint8_t *d = m->data;

	return d >= f->data + sizeof(struct shmfd__rec) &&
	       d <= f->data + RING && m->len <= (size_t)(f->data + RING - d);
}

/* What a message handed out must be, however it was taken. */
static void check_msg(struct fuzz_ring *f, const struct shmfd_msg *m)
{
	FUZZ_ASSERT(m->seq > f->last_seq, "seq %llu after %llu",
		    (unsigned long long)m->seq,
		    (unsigned long long)f->last_seq);
	f->last_seq = m->seq;
	if (m->flags & SHMFD_MSG_BLOB) {
		const volatile uint8_t *d = m->data;

		FUZZ_ASSERT(m->fd >= 0 && m->len > 0, "blob fd %d len %zu",
			    m->fd, m->len);
		/* Mapped, readable, exactly as long as it says. */
		(void)d[0];
		(void)d[m->len - 1];
	} else {
		FUZZ_ASSERT(m->fd == -1 && m->flags == 0, "inline fd %d", m->fd);
		FUZZ_ASSERT(msg_in_ring(f, m), "message outside the ring");
		FUZZ_ASSERT(m->len <= f->r->max_inline, "len %zu", m->len);
	}
}

/* Between from and to the reader passed over nothing but PADs that run
 * to the end of the data area, below what was published. */
static void check_passed(struct fuzz_ring *f, uint64_t from, uint64_t to)
{
	while (from < to) {
		const struct shmfd__rec *rec = rec_at(f, from);
		uint64_t off = from & (RING - 1);

		FUZZ_ASSERT(rec->type == SHMFD_REC_PAD &&
			    off + 16 + rec->len == RING &&
			    from + 16 + rec->len <= f->r->head,
			    "passed over type %u len %u at %llu (head %llu)",
			    rec->type, rec->len, (unsigned long long)from,
			    (unsigned long long)f->r->head);
		from += 16 + rec->len;
	}
}

static void op_take(struct fuzz_ring *f)
{
	unsigned int flags = fuzz_u8(&f->in) & 1 ? SHMFD_RECV_LATEST : 0;
	uint64_t from = f->r->pos;
	struct shmfd__taken t;
	struct shmfd_msg m;
	int ret;

	ret = shmfd__ring_take(f->r, &m, flags, &t);
	FUZZ_LOG("take%s = %d: seq %llu [%llu, %llu)%s, pos %llu head %llu\n",
		 flags ? " latest" : "", ret,
		 ret ? 0ull : (unsigned long long)m.seq,
		 ret ? 0ull : (unsigned long long)t.pos,
		 ret ? 0ull : (unsigned long long)t.end,
		 !ret && t.skipped ? " skipped" : "",
		 (unsigned long long)f->r->pos,
		 (unsigned long long)LOAD_RELAXED(&f->hdr->head));
	/* -ECONNRESET: see op_recv. */
	FUZZ_ASSERT(ret == 0 || ret == -EAGAIN || ret == -EPROTO ||
		    (ret == -ECONNRESET && !f->r->lossy),
		    "ring_take = %d", ret);
	if (ret < 0)
		return;
	FUZZ_ASSERT(t.pos % 16 == 0 && t.pos < t.end && t.end <= f->max_head &&
		    t.end == f->r->pos && t.end <= f->r->head,
		    "record [%llu, %llu) head %llu",
		    (unsigned long long)t.pos, (unsigned long long)t.end,
		    (unsigned long long)f->r->head);
	FUZZ_ASSERT(t.type == SHMFD_REC_MSG || t.type == SHMFD_REC_BLOB,
		    "type %u", t.type);
	if (!t.skipped)
		check_passed(f, from, t.pos);
	if (t.type == SHMFD_REC_BLOB)
		FUZZ_ASSERT(t.blob.id && t.blob.size && m.len == 16,
			    "blob desc");
	FUZZ_ASSERT(msg_in_ring(f, &m), "record outside the ring");
	FUZZ_ASSERT(m.seq > f->last_seq, "seq %llu after %llu",
		    (unsigned long long)m.seq,
		    (unsigned long long)f->last_seq);
	f->last_seq = m.seq;
}

static void op_recv(struct fuzz_ring *f)
{
	int flags = fuzz_u8(&f->in) & 1 ? SHMFD_RECV_LATEST : 0;
	struct held *h = NULL;
	int ret;

	for (int i = 0; i < MAX_HELD && !h; i++)
		if (!f->held[i].live)
			h = &f->held[i];
	if (!h) {
		h = &f->held[0];
		ret = shmfd_msg_release(f->r, &h->m);
		FUZZ_ASSERT(ret == 0 || ret == -ESTALE, "release = %d", ret);
		h->live = false;
	}
	ret = shmfd_recv(f->r, &h->m, flags, 0);
	FUZZ_LOG("recv%s = %d: seq %llu lost %llu len %zu%s -> held %d\n",
		 flags ? " latest" : "", ret,
		 ret ? 0ull : (unsigned long long)h->m.seq,
		 ret ? 0ull : (unsigned long long)h->m.lost,
		 ret ? 0 : h->m.len,
		 !ret && h->m.fd >= 0 ? " blob" : "", (int)(h - f->held));
	/* -EPIPE: closed and all read.  -EPROTO: the producer broke the
	 * protocol (a record, or a blob fd the reader refused).
	 * -ECONNRESET: a reliable reader past its join point that oldest
	 * overtook was dropped (ring.c (2)); a lossy reader skips instead. */
	FUZZ_ASSERT(ret == 0 || ret == -EAGAIN || ret == -EPROTO ||
		    ret == -EPIPE || (ret == -ECONNRESET && !f->r->lossy),
		    "shmfd_recv = %d", ret);
	if (ret < 0)
		return;
	check_msg(f, &h->m);
	h->live = true;
}

static void op_release(struct fuzz_ring *f)
{
	struct held *h = &f->held[fuzz_u8(&f->in) % MAX_HELD];
	int ret = shmfd_msg_release(f->r, &h->m);

	FUZZ_LOG("release held %d = %d\n", (int)(h - f->held), ret);
	if (h->live) {
		/* Stale: overwritten while held -- a lossy reader, or a
		 * reliable one the producer dropped (oldest passed it, as
		 * this fake producer may always do); a blob never. */
		FUZZ_ASSERT(ret == 0 || (ret == -ESTALE &&
					 !(h->m.flags & SHMFD_MSG_BLOB)),
			    "release = %d", ret);
		h->live = false;
	} else {
		/* Released already, or never received. */
		FUZZ_ASSERT(ret == -EINVAL, "second release = %d", ret);
	}
}

static void run(struct fuzz_ring *f)
{
	for (int steps = 0; f->in.left && steps < 4096; steps++) {
		switch (fuzz_u8(&f->in) % OP_COUNT) {
		case OP_PUBLISH:
			op_publish(f);
			break;
		case OP_RECORD:
			op_record(f);
			break;
		case OP_PAYLOAD:
			op_payload(f);
			break;
		case OP_HEAD:
			set_head(f, hostile_pos(f, f->hdr->head));
			break;
		case OP_OLDEST:
			STORE_RELAXED(&f->hdr->oldest,
				      hostile_pos(f, f->hdr->oldest));
			break;
		case OP_LATEST:
			STORE_RELAXED(&f->hdr->latest,
				      hostile_pos(f, f->hdr->latest));
			break;
		case OP_WANT:
			STORE_RELAXED(&f->hdr->need,
				      hostile_pos(f, f->r->tail));
			STORE_RELAXED(&f->hdr->want,
				      hostile_pos(f, f->r->tail));
			break;
		case OP_CLOSED:
			STORE_RELAXED(&f->hdr->closed, !f->hdr->closed);
			break;
		case OP_BLOB_FD: {
			uint64_t id = fuzz_u64(&f->in) % 64;
			uint64_t seq = fuzz_u64(&f->in) % 64;
			uint16_t size = fuzz_u16(&f->in);

			send_blob_fd(f, id, seq, size % 8192 + 1,
				     fuzz_u8(&f->in));
			break;
		}
		case OP_TAKE:
			op_take(f);
			break;
		case OP_RECV:
			op_recv(f);
			break;
		case OP_RELEASE:
			op_release(f);
			break;
		}
	}
}

/* ---- set-up, as reader_alloc() and map_ring() do it ---- */

static struct shmfd_reader *reader_new(void)
{
	struct shmfd_reader *r = shmfd__reader_alloc();

	if (!r)
		abort();
	return r;
}

static bool setup(struct fuzz_ring *f)
{
	uint8_t cfg = fuzz_u8(&f->in);
	uint16_t max_inline = fuzz_u16(&f->in);
	uint64_t start = fuzz_u64(&f->in) & ~15ull;
	uint64_t behind = (uint64_t)fuzz_u16(&f->in) * 16;
	struct shmfd__welcome w = {
		.type = SHMFD_MSG_WELCOME,
		.version = SHMFD_PROTO_VERSION,
		.flags = (cfg & 1 ? SHMFD_RING_LOSSY : 0) |
			 (cfg & 2 ? SHMFD_RING_ASYM : 0),
		.ring_size = RING,
		.max_inline = max_inline % (RING / 2 - 16 + 1),
		.start_pos = start,
		.join_head = start + behind,
		.start_seq = fuzz_u64(&f->in) | 1,
		.producer_pid = getpid(),
	};
	struct shmfd_reader *r;
	int sv[2];
	void *p;

	/* What the handshake would have refused never reaches the ring. */
	if (shmfd__check_welcome(&w, sizeof(w)) < 0)
		return false;
	p = mmap(NULL, SHMFD_HDR_SIZE + RING + 4096, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		abort();
	if (mprotect((uint8_t *)p + SHMFD_HDR_SIZE + RING, 4096, PROT_NONE))
		abort();
	f->map = p;
	f->hdr = p;
	f->data = f->map + SHMFD_HDR_SIZE;
	f->hdr->magic = SHMFD_RING_MAGIC;
	f->hdr->version = SHMFD_PROTO_VERSION;
	f->hdr->hdr_size = SHMFD_HDR_SIZE;
	f->hdr->ring_size = RING;
	f->hdr->max_inline = w.max_inline;
	f->hdr->flags = w.flags;
	f->hdr->producer_pid = w.producer_pid;
	/* Registered at join_head: what lies between start_pos and it is
	 * for the program to write. */
	f->hdr->head = f->max_head = w.join_head;
	f->hdr->oldest = w.start_pos;
	f->seq = w.start_seq - 1;
	if (shmfd__check_ring_hdr(f->hdr, &w) < 0)
		abort();

	r = f->r = reader_new();
	r->page = mmap(NULL, SHMFD_RPAGE_SIZE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r->page == MAP_FAILED)
		abort();
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	r->sock = sv[0];
	f->peer = sv[1];
	r->peer_pid = getpid();
	r->hdr = f->hdr;
	r->map_size = SHMFD_HDR_SIZE + RING;
	r->data = f->data;
	r->size = RING;
	r->mask = RING - 1;
	r->max_inline = w.max_inline;
	r->lossy = w.flags & SHMFD_RING_LOSSY;
	r->asym = w.flags & SHMFD_RING_ASYM;
	r->pos = r->tail = w.start_pos;
	r->join_head = w.join_head;
	r->next_seq = w.start_seq;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_ring f = { .in = { data, size } };
	int fds = fuzz_fd_count();

	if (!setup(&f))
		return 0;
	run(&f);
	for (int i = 0; i < MAX_HELD; i++) {
		if (f.held[i].live) {
			int ret = shmfd_msg_release(f.r, &f.held[i].m);

			FUZZ_ASSERT(ret == 0 || ret == -ESTALE, "release = %d",
				    ret);
		}
	}
	/* The real close: unmaps header, data and page, closes fds. */
	shmfd_reader_close(f.r);
	munmap(f.map + SHMFD_HDR_SIZE + RING, 4096);
	close(f.peer);
	FUZZ_ASSERT(fuzz_fd_count() == fds, "%d fds leaked",
		    fuzz_fd_count() - fds);
	return 0;
}
