/* SPDX-License-Identifier: MIT */
/*
 * What a hostile peer cannot do.  A reader cannot write the ring, make its
 * mapping writable, truncate, grow or punch holes in it (the memfd is
 * sealed SHRINK|GROW|FUTURE_WRITE|SEAL), so it can neither change what
 * other readers see nor crash the producer with SIGBUS; scribbling over
 * its own reader page does not hurt the producer either.  A hostile
 * producer (a fake speaking the handshake) is refused with -EPROTO when
 * its ring is unsealed, undersized, not a memfd or has a bad header; a
 * hostile reader's hello is refused the same way, and the producer goes
 * on serving everyone else.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/falloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <shmfd.h>

#include "helpers.h"

/* Under AddressSanitizer: the SIGSEGVs these tests provoke must kill the
 * process, as they do without it, not become ASan reports. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "handle_segv=0";
}
#include "../lib/layout.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE	0x0010
#endif

#define KiB		1024u
#define RING		(64 * KiB)
#define MAP_SIZE	(SHMFD_HDR_SIZE + RING)
#define RING_SEALS	(F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | \
			 F_SEAL_SEAL)
#define NAME		"sec"

/* /proc/self/map_files needs CAP_SYS_ADMIN (or CHECKPOINT_RESTORE). */
static bool have_map_files;

static void send_seq(struct shmfd_chan *chan, uint64_t seq, size_t len,
		     int timeout_ms)
{
	static char buf[RING];

	th_fill(buf, len, seq);
	expect_ok(shmfd_send(chan, buf, len, timeout_ms));
}

static void recv_check(struct shmfd_reader *r, uint64_t seq, size_t len,
		       int timeout_ms)
{
	struct shmfd_msg m;

	expect_ok(shmfd_recv(r, &m, 0, timeout_ms));
	expect_eq(m.seq, seq);
	expect_eq(m.len, len);
	expect(th_check(m.data, m.len, m.seq) < 0, "message %llu corrupt",
	       (unsigned long long)m.seq);
	expect_eq(shmfd_msg_release(r, &m), 0);
}

/* ---- the reader cannot touch the ring ---- */

struct mapping {
	uintptr_t start, end;
	char perms[5];
};

/* The mappings whose file is name (e.g. "memfd:shmfd-ring"). */
static int find_maps(const char *name, struct mapping *maps, int max)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	int n = 0;

	expect(f, "open /proc/self/maps: %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		struct mapping m;

		if (!strstr(line, name) || n == max)
			continue;
		if (sscanf(line, "%lx-%lx %4s", &m.start, &m.end,
			   m.perms) != 3)
			continue;
		maps[n++] = m;
	}
	fclose(f);
	return n;
}

static int write_at(int sock, void *arg)
{
	struct rlimit no_core = { 0, 0 };
	volatile uint8_t *p = arg;

	/* The SIGSEGV is expected: no core dump. */
	setrlimit(RLIMIT_CORE, &no_core);
	prctl(PR_SET_DUMPABLE, 0);

	p[0] = (uint8_t)(p[0] + 1);
	return 0;	/* the write went through: the parent fails */
}

/*
 * An fd of the ring (through /proc/self/map_files or one the reader
 * holds): sealed, and every way to change the bytes or the size fails.
 * view is the reader's own mapping of it, to show a private copy-on-write
 * mapping changes nothing for anyone else.
 */
static void check_ring_fd(int fd, bool writable, const uint8_t *view)
{
	int seals = (int)expect_sys(fcntl(fd, F_GET_SEALS));
	struct stat st;
	uint8_t *p;

	expect((seals & RING_SEALS) == RING_SEALS, "ring seals %#x, "
	       "expected SHRINK|GROW|FUTURE_WRITE|SEAL (%#x)", seals,
	       RING_SEALS);
	expect_sys(fstat(fd, &st));
	expect_eq(st.st_size, MAP_SIZE);
	/* No more seals, e.g. F_SEAL_WRITE that would break the producer. */
	expect_sys_err(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), EPERM);

	if (writable) {
		expect_sys_err(write(fd, "x", 1), EPERM);
		expect_sys_err(pwrite(fd, "x", 1, SHMFD_HDR_SIZE), EPERM);
		expect_sys_err(ftruncate(fd, 0), EPERM);
		expect_sys_err(ftruncate(fd, MAP_SIZE - 4096), EPERM);
		expect_sys_err(ftruncate(fd, 2 * MAP_SIZE), EPERM);
		expect_sys_err(fallocate(fd, FALLOC_FL_PUNCH_HOLE |
					 FALLOC_FL_KEEP_SIZE, 0, MAP_SIZE),
			       EPERM);
		expect_sys_err(fallocate(fd, 0, MAP_SIZE, 4096), EPERM);
		errno = 0;
		p = mmap(NULL, MAP_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
			 fd, 0);
		expect(p == MAP_FAILED && errno == EPERM, "mmap(PROT_WRITE, "
		       "MAP_SHARED) of the ring: %s",
		       p == MAP_FAILED ? strerror(errno) : "mapped");
	} else {
		expect_sys_err(write(fd, "x", 1), EBADF);
	}

	/* A read-only shared mapping can never become writable. */
	p = mmap(NULL, MAP_SIZE, PROT_READ, MAP_SHARED, fd, 0);
	expect(p != MAP_FAILED, "mmap(PROT_READ): %s", strerror(errno));
	expect_sys_err(mprotect(p, MAP_SIZE, PROT_READ | PROT_WRITE), EACCES);
	munmap(p, MAP_SIZE);

	/* A private copy is the reader's own business. */
	if (writable) {
		uint8_t before = view[SHMFD_HDR_SIZE];

		p = mmap(NULL, MAP_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE,
			 fd, 0);
		expect(p != MAP_FAILED, "mmap(MAP_PRIVATE): %s",
		       strerror(errno));
		p[SHMFD_HDR_SIZE] = (uint8_t)~before;
		expect_eq(view[SHMFD_HDR_SIZE], before);
		munmap(p, MAP_SIZE);
	}
}

static void check_map_file(const struct mapping *m)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "/proc/self/map_files/%lx-%lx",
		 m->start, m->end);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		check_ring_fd(fd, true, (const uint8_t *)m->start);
	} else {
		/* Not even openable for writing: check the seals. */
		expect(errno == EACCES || errno == EPERM, "open %s: %s", path,
		       strerror(errno));
		fd = (int)expect_sys(open(path, O_RDONLY | O_CLOEXEC));
		check_ring_fd(fd, false, (const uint8_t *)m->start);
	}
	close(fd);
}

/* The fds of this process that are the ring. */
static void check_held_ring_fds(const uint8_t *view)
{
	char path[64], link[256];
	int fd;

	for (fd = 0; fd < TH_MAX_FDS; fd++) {
		ssize_t n;

		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		n = readlink(path, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = '\0';
		if (strstr(link, "memfd:shmfd-ring"))
			check_ring_fd(fd, (fcntl(fd, F_GETFL) & O_ACCMODE) !=
				      O_RDONLY, view);
	}
}

static int hostile_reader(int sock, void *arg)
{
	int fd = *(int *)arg;
	struct shmfd_reader *r = th_join(fd, 0);
	struct mapping maps[8];
	struct shmfd_msg m;
	struct th_child c;
	int n;

	th_put(sock, 1);
	th_get(sock);
	expect_ok(shmfd_recv(r, &m, 0, 0));	/* message 1, held */
	expect_eq(m.seq, 1);

	n = find_maps("memfd:shmfd-ring", maps, 8);
	expect(n >= 1, "no memfd:shmfd-ring mapping in the reader");
	for (int i = 0; i < n; i++) {
		size_t len = maps[i].end - maps[i].start;
		void *start = (void *)maps[i].start;

		expect(maps[i].perms[1] != 'w' && maps[i].perms[3] == 's',
		       "the reader maps the ring %s", maps[i].perms);
		expect_sys_err(mprotect(start, len, PROT_READ | PROT_WRITE),
			       EACCES);
		expect_sys_err(mprotect(start, len, PROT_WRITE), EACCES);
		/* Writing through the mapping kills the writer. */
		c = th_spawn(write_at, start, 0);
		expect_signal(c.pid, SIGSEGV);
		close(c.sock);
		c = th_spawn(write_at, (char *)start + len - 1, 0);
		expect_signal(c.pid, SIGSEGV);
		close(c.sock);
		if (have_map_files)
			check_map_file(&maps[i]);
	}
	c = th_spawn(write_at, (void *)m.data, 0);
	expect_signal(c.pid, SIGSEGV);
	close(c.sock);
	check_held_ring_fds((const uint8_t *)maps[0].start);

	expect(th_check(m.data, m.len, m.seq) < 0, "message 1 changed");
	expect_eq(shmfd_msg_release(r, &m), 0);
	th_put(sock, 2);
	th_get(sock);				/* message 2 was sent */
	recv_check(r, 2, 1000, 0);
	th_put(sock, 3);
	expect_err(shmfd_recv(r, &m, 0, -1), EPIPE);
	shmfd_reader_close(r);
	return 0;
}

/* A producer in its own process: the test process and the readers never
 * had its writable mapping.  Sends message k when told k. */
static int producer(int sock, void *arg)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, 0);
	int fd = expect_ok(shmfd_chan_share_fd(chan));
	int64_t k;

	th_send_fd(sock, fd);
	close(fd);
	while ((k = th_get(sock)) > 0) {
		send_seq(chan, (uint64_t)k, 1000, DEADLINE_MS);
		th_put(sock, k);
	}
	shmfd_chan_close(chan);
	return 0;
}

START_TEST(test_ring_readonly)
{
	struct th_child p = th_spawn(producer, NULL, 0), r;
	int fd = th_recv_fd(p.sock);
	struct shmfd_reader *honest = th_join(fd, 0);

	r = th_spawn(hostile_reader, &fd, 0);
	th_get(r.sock);
	th_put(p.sock, 1);
	th_get(p.sock);
	th_put(r.sock, 0);
	expect_eq(th_get(r.sock), 2);		/* done trying */
	th_put(p.sock, 2);
	th_get(p.sock);
	th_put(r.sock, 0);
	expect_eq(th_get(r.sock), 3);
	th_put(p.sock, 0);
	/* The producer did not crash; nobody else saw a changed byte. */
	expect_exit(p.pid, 0);
	expect_exit(r.pid, 0);
	recv_check(honest, 1, 1000, 0);
	recv_check(honest, 2, 1000, 0);
	shmfd_reader_close(honest);
	close(fd);
	close(p.sock);
	close(r.sock);
}
END_TEST

/* A reader scribbles over its own page (the producer maps it): the
 * producer neither crashes nor stalls, the other reader sees it all. */
static int page_scribbler(int sock, void *arg)
{
	int fd = *(int *)arg;
	struct shmfd_reader *r = th_join(fd, 0);
	struct mapping maps[4];
	int n = find_maps("memfd:shmfd-reader", maps, 4);

	expect(n == 1, "%d memfd:shmfd-reader mappings", n);
	expect(maps[0].perms[1] == 'w', "own page mapped %s", maps[0].perms);
	memset((void *)maps[0].start, 0xff, maps[0].end - maps[0].start);
	th_put(sock, 1);
	th_get(sock);
	shmfd_reader_close(r);
	return 0;
}

static int scribble_producer(int sock, void *arg)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, 0);
	int fd = expect_ok(shmfd_chan_share_fd(chan));

	th_send_fd(sock, fd);
	close(fd);
	th_get(sock);
	for (uint64_t seq = 1; seq <= 8 * RING / KiB; seq++)
		send_seq(chan, seq, KiB, DEADLINE_MS);
	th_put(sock, 1);
	th_get(sock);
	shmfd_chan_close(chan);
	return 0;
}

static int honest_reader(int sock, void *arg)
{
	int fd = *(int *)arg;
	struct shmfd_reader *r = th_join(fd, 0);
	struct shmfd_msg m;
	uint64_t seq;

	th_put(sock, 1);
	for (seq = 1; seq <= 8 * RING / KiB; seq++)
		recv_check(r, seq, KiB, -1);
	expect_err(shmfd_recv(r, &m, 0, -1), EPIPE);
	shmfd_reader_close(r);
	return 0;
}

START_TEST(test_page_scribble)
{
	struct th_child p = th_spawn(scribble_producer, NULL, 0), bad, good;
	int fd = th_recv_fd(p.sock);

	bad = th_spawn(page_scribbler, &fd, 0);
	good = th_spawn(honest_reader, &fd, 0);
	th_get(bad.sock);
	th_get(good.sock);
	th_put(p.sock, 0);
	th_get(p.sock);
	th_put(p.sock, 0);
	expect_exit(p.pid, 0);
	expect_exit(good.pid, 0);
	th_put(bad.sock, 0);
	expect_exit(bad.pid, 0);
	close(fd);
	close(p.sock);
	close(bad.sock);
	close(good.sock);
}
END_TEST

/* ---- a hostile producer ---- */

enum fake {
	FAKE_GOOD,		/* the control: everything right */
	FAKE_GARBAGE,		/* 8 bytes of nonsense */
	FAKE_NO_FD,
	FAKE_TWO_FDS,
	FAKE_UNSEALED,
	FAKE_NO_WRITE_SEAL,	/* SHRINK|GROW|SEAL only */
	FAKE_NO_SEAL_SEAL,	/* SHRINK|GROW|FUTURE_WRITE only */
	FAKE_SMALL,		/* sealed, half the announced size */
	FAKE_PIPE,
	FAKE_BAD_MAGIC,
	FAKE_BAD_SIZE,		/* ring_size not a power of two */
	FAKE_HEADER_MISMATCH,	/* header says lossy, welcome says not */
	FAKE_BAD_RECORD,	/* a record longer than max_inline */
	FAKE_STATUS,		/* an error answer: -EUSERS */
	FAKE_HANGUP,		/* closes after the hello */
	FAKE_SILENT,		/* never answers */
	FAKE_COUNT
};

static const struct {
	const char *what;
	int open_ret;		/* from shmfd_reader_open */
	int recv_ret;		/* then from shmfd_recv(0) */
} fakes[FAKE_COUNT] = {
	[FAKE_GOOD] = { "a well-behaved fake", 0, -EAGAIN },
	[FAKE_GARBAGE] = { "garbage welcome", -EPROTO, 0 },
	[FAKE_NO_FD] = { "welcome without the ring", -EPROTO, 0 },
	[FAKE_TWO_FDS] = { "welcome with two fds", -EPROTO, 0 },
	[FAKE_UNSEALED] = { "unsealed ring", -EPROTO, 0 },
	[FAKE_NO_WRITE_SEAL] = { "writable ring", -EPROTO, 0 },
	[FAKE_NO_SEAL_SEAL] = { "ring without F_SEAL_SEAL", -EPROTO, 0 },
	[FAKE_SMALL] = { "undersized ring", -EPROTO, 0 },
	[FAKE_PIPE] = { "a pipe for a ring", -EPROTO, 0 },
	[FAKE_BAD_MAGIC] = { "bad header magic", -EPROTO, 0 },
	[FAKE_BAD_SIZE] = { "ring size not a power of two", -EPROTO, 0 },
	[FAKE_HEADER_MISMATCH] = { "header disagrees with the welcome",
				   -EPROTO, 0 },
	[FAKE_BAD_RECORD] = { "impossible record", 0, -EPROTO },
	[FAKE_STATUS] = { "an error answer", -EUSERS, 0 },
	[FAKE_HANGUP] = { "hang-up after the hello", -EPIPE, 0 },
	[FAKE_SILENT] = { "no answer", -ETIMEDOUT, 0 },
};

static int make_memfd(size_t size)
{
	int fd = memfd_create("fake-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	expect(fd >= 0, "memfd_create: %s", strerror(errno));
	expect_sys(ftruncate(fd, (off_t)size));
	return fd;
}

/* A ring as the real producer makes it, then broken as asked. */
static int make_ring(enum fake f)
{
	size_t size = f == FAKE_SMALL ? MAP_SIZE / 2 : MAP_SIZE;
	int fd = make_memfd(size);
	int seals = RING_SEALS;
	struct shmfd__ring_hdr *h;

	h = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	expect(h != MAP_FAILED, "mmap: %s", strerror(errno));
	h->magic = f == FAKE_BAD_MAGIC ? 0x1234 : SHMFD_RING_MAGIC;
	h->version = SHMFD_PROTO_VERSION;
	h->hdr_size = SHMFD_HDR_SIZE;
	h->ring_size = RING;
	h->max_inline = RING / 4;
	h->flags = f == FAKE_HEADER_MISMATCH ? SHMFD_RING_LOSSY : 0;
	h->max_readers = 64;
	h->producer_pid = getpid();
	if (f == FAKE_BAD_RECORD) {
		struct shmfd__rec *r = (void *)((char *)h + SHMFD_HDR_SIZE);

		r->len = RING / 2;		/* > max_inline */
		r->type = SHMFD_REC_MSG;
		r->seq = 1;
		h->latest = 0;
		h->seq = 1;
		h->head = 32;
	}
	munmap(h, size);
	if (f == FAKE_UNSEALED)
		seals = 0;
	else if (f == FAKE_NO_WRITE_SEAL)
		seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
	else if (f == FAKE_NO_SEAL_SEAL)
		seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE;
	if (seals)
		expect_sys(fcntl(fd, F_ADD_SEALS, seals));
	return fd;
}

static void send_with_fds(int sock, const void *buf, size_t len,
			  const int *fds, int nfds)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int) * 4)];
	} u;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };

	memset(&u, 0, sizeof(u));
	if (nfds) {
		struct cmsghdr *c;

		m.msg_control = u.buf;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
	}
	expect((size_t)sendmsg(sock, &m, MSG_NOSIGNAL) == len, "sendmsg: %s",
	       strerror(errno));
}

static int listen_at(const char *name)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	expect(fd >= 0, "socket: %s", strerror(errno));
	snprintf(a.sun_path, sizeof(a.sun_path), "%s/%s", th_dir(), name);
	expect_sys(bind(fd, (struct sockaddr *)&a, sizeof(a)));
	expect_sys(listen(fd, 8));
	return fd;
}

/* Accept one reader, read its hello, answer as variant _i says. */
static int fake_producer(int sock, void *arg)
{
	enum fake f = *(enum fake *)arg;
	struct shmfd__welcome w = {
		.type = SHMFD_MSG_WELCOME,
		.version = SHMFD_PROTO_VERSION,
		.ring_size = RING,
		.max_inline = RING / 4,
		.start_seq = 1,
		.producer_pid = getpid(),
	};
	int lfd = listen_at(NAME), c, fds[2], pfd[2];
	char hello[64];

	th_put(sock, 1);
	c = (int)expect_sys(accept4(lfd, NULL, NULL, SOCK_CLOEXEC));
	expect(th_readable(c, DEADLINE_MS), "no hello");
	expect(recv(c, hello, sizeof(hello), 0) ==
	       (ssize_t)sizeof(struct shmfd__hello), "hello size");

	switch (f) {
	case FAKE_GARBAGE:
		send_with_fds(c, "garbage!", 8, NULL, 0);
		break;
	case FAKE_NO_FD:
		send_with_fds(c, &w, sizeof(w), NULL, 0);
		break;
	case FAKE_TWO_FDS:
		fds[0] = make_ring(FAKE_GOOD);
		fds[1] = make_ring(FAKE_GOOD);
		send_with_fds(c, &w, sizeof(w), fds, 2);
		break;
	case FAKE_PIPE:
		expect_sys(pipe2(pfd, O_CLOEXEC));
		send_with_fds(c, &w, sizeof(w), pfd, 1);
		break;
	case FAKE_BAD_SIZE:
		w.ring_size = RING + 4096;
		fds[0] = make_ring(FAKE_GOOD);
		send_with_fds(c, &w, sizeof(w), fds, 1);
		break;
	case FAKE_STATUS:
		w.status = -EUSERS;
		send_with_fds(c, &w, sizeof(w), NULL, 0);
		break;
	case FAKE_HANGUP:
		close(c);
		c = -1;
		break;
	case FAKE_SILENT:
		th_get(sock);			/* the reader gave up */
		break;
	default:
		fds[0] = make_ring(f);
		send_with_fds(c, &w, sizeof(w), fds, 1);
		break;
	}
	/* Stay, connected, until the test has looked at the reader: a
	 * closed connection means "dropped" to a reader. */
	if (f != FAKE_SILENT)
		th_get(sock);
	if (c >= 0)
		close(c);
	close(lfd);
	return 0;
}

START_TEST(test_hostile_producer)
{
	enum fake f = (enum fake)_i;
	struct shmfd_reader *r = NULL;
	struct th_child p = th_spawn(fake_producer, &f, 0);
	struct shmfd_msg m;
	int ret;

	th_get(p.sock);
	ret = shmfd_reader_open(&r, NAME, 0);
	ck_assert_msg(ret == fakes[f].open_ret, "%s: shmfd_reader_open = %d "
		      "(%s), expected %d (%s)", fakes[f].what, ret,
		      th_strerr(ret), fakes[f].open_ret,
		      th_strerr(fakes[f].open_ret));
	if (ret == 0) {
		ret = shmfd_recv(r, &m, 0, 0);
		ck_assert_msg(ret == fakes[f].recv_ret, "%s: shmfd_recv = %d "
			      "(%s), expected %d (%s)", fakes[f].what, ret,
			      th_strerr(ret), fakes[f].recv_ret,
			      th_strerr(fakes[f].recv_ret));
	}
	th_put(p.sock, 0);
	expect_exit(p.pid, 0);
	if (r) {
		/* The fake is gone: nothing more will come. */
		if (f == FAKE_GOOD)
			expect_err(shmfd_recv(r, &m, 0, DEADLINE_MS), EPIPE);
		shmfd_reader_close(r);
	}
	close(p.sock);
}
END_TEST

/* ---- a hostile reader ---- */

enum bad_hello {
	HELLO_GOOD,		/* the control */
	HELLO_SHORT,
	HELLO_VERSION,
	HELLO_FLAGS,
	HELLO_NO_FD,
	HELLO_THREE_FDS,
	HELLO_UNSEALED_PAGE,	/* could shrink it under the producer */
	HELLO_WRITE_SEALED_PAGE,
	HELLO_BIG_PAGE,
	HELLO_PIPE_PAGE,
	HELLO_BAD_MAGIC,
	HELLO_COUNT
};

static int make_page(enum bad_hello b)
{
	size_t size = b == HELLO_BIG_PAGE ? 8192 : SHMFD_RPAGE_SIZE;
	int fd = make_memfd(size);
	struct shmfd__reader_page *pg;
	int seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

	pg = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	expect(pg != MAP_FAILED, "mmap: %s", strerror(errno));
	pg->magic = b == HELLO_BAD_MAGIC ? 0x4321 : SHMFD_RPAGE_MAGIC;
	pg->version = SHMFD_PROTO_VERSION;
	munmap(pg, size);
	if (b == HELLO_UNSEALED_PAGE)
		seals = 0;
	else if (b == HELLO_WRITE_SEALED_PAGE)
		seals |= F_SEAL_WRITE;
	if (seals)
		expect_sys(fcntl(fd, F_ADD_SEALS, seals));
	return fd;
}

/* Connect by name, send the hello variant b: the welcome's status, or 1
 * when the producer hung up without one. */
static int send_hello(enum bad_hello b)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	struct shmfd__hello h = {
		.type = SHMFD_MSG_HELLO,
		.version = b == HELLO_VERSION ? 99 : SHMFD_PROTO_VERSION,
		.flags = b == HELLO_FLAGS ? 0x100 : 0,
		.nfds = 1,
	};
	struct shmfd__welcome w;
	int s, fds[3], nfds = 1, pfd[2] = { -1, -1 };
	ssize_t n;

	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	expect(s >= 0, "socket: %s", strerror(errno));
	snprintf(a.sun_path, sizeof(a.sun_path), "%s/%s", th_dir(), NAME);
	expect_sys(connect(s, (struct sockaddr *)&a, sizeof(a)));
	if (b == HELLO_PIPE_PAGE) {
		expect_sys(pipe2(pfd, O_CLOEXEC));
		fds[0] = pfd[0];
	} else {
		fds[0] = make_page(b);
	}
	if (b == HELLO_THREE_FDS) {
		fds[1] = make_page(HELLO_GOOD);
		fds[2] = make_page(HELLO_GOOD);
		nfds = h.nfds = 3;
	}
	if (b == HELLO_NO_FD)
		nfds = 0;
	send_with_fds(s, &h, b == HELLO_SHORT ? 8 : sizeof(h), fds, nfds);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	if (b == HELLO_NO_FD)
		close(fds[0]);
	if (pfd[1] >= 0)
		close(pfd[1]);

	expect(th_readable(s, DEADLINE_MS), "no answer to hello %d", b);
	n = recv(s, &w, sizeof(w), 0);
	close(s);
	if (n == 0)
		return 1;
	expect(n == (ssize_t)sizeof(w) && w.type == SHMFD_MSG_WELCOME,
	       "answer of %zd bytes", n);
	return w.status;
}

START_TEST(test_hostile_reader)
{
	struct shmfd_chan *chan = th_chan(NAME, RING, 0, 0);
	int fd = expect_ok(shmfd_chan_share_fd(chan));
	struct shmfd_reader *r;
	int status = send_hello((enum bad_hello)_i);

	if (_i == HELLO_GOOD)
		ck_assert_msg(status == 0, "a correct hello got status %d (%s)",
			      status, th_strerr(status));
	else
		ck_assert_msg(status != 0, "bad hello %d was welcomed", _i);
	/* The producer did not count it (the good one has hung up) and
	 * serves the next reader. */
	expect_eventually(shmfd_chan_readers(chan) == 0);
	r = th_join(fd, 0);
	send_seq(chan, 1, 100, 0);
	recv_check(r, 1, 100, 0);
	shmfd_reader_close(r);
	close(fd);
	shmfd_chan_close(chan);
}
END_TEST

/* Junk sent through a share fd does not stop it from serving. */
START_TEST(test_share_fd_junk)
{
	struct shmfd_chan *chan = th_chan(NULL, RING, 0, 0);
	int fd = expect_ok(shmfd_chan_share_fd(chan));
	struct shmfd__hello h = {
		.type = SHMFD_MSG_HELLO,
		.version = SHMFD_PROTO_VERSION,
		.nfds = 2,
	};
	int fds[4], pfd[2];
	struct shmfd_reader *r;

	expect_sys(pipe2(pfd, O_CLOEXEC));
	send_with_fds(fd, "junk", 4, NULL, 0);
	send_with_fds(fd, &h, sizeof(h), NULL, 0);
	fds[0] = make_page(HELLO_GOOD);
	fds[1] = pfd[0];			/* not a socket to answer on */
	send_with_fds(fd, &h, sizeof(h), fds, 2);
	fds[1] = make_page(HELLO_GOOD);
	fds[2] = make_page(HELLO_GOOD);
	fds[3] = make_page(HELLO_GOOD);
	send_with_fds(fd, &h, sizeof(h), fds, 4);
	for (int i = 0; i < 4; i++)
		close(fds[i]);
	close(pfd[0]);
	close(pfd[1]);

	r = th_join(fd, 0);
	expect_eq(shmfd_chan_readers(chan), 1);
	send_seq(chan, 1, 100, 0);
	recv_check(r, 1, 100, 0);
	shmfd_reader_close(r);
	close(fd);
	shmfd_chan_close(chan);
}
END_TEST

static bool probe_map_files(void)
{
	struct mapping m;
	char path[128];
	int fd, n;

	/* The first mapping is this program's text: a file. */
	n = find_maps("test-security", &m, 1);
	if (n < 1)
		return false;
	snprintf(path, sizeof(path), "/proc/self/map_files/%lx-%lx", m.start,
		 m.end);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

static Suite *security_suite(void)
{
	Suite *s = suite_create("security");
	TCase *tc;

	have_map_files = probe_map_files();
	if (!have_map_files)
		th_skip("/proc/self/map_files is not open to us (needs "
			"CAP_SYS_ADMIN): the ring's fd was not attacked "
			"through it");

	tc = th_tcase("ring");
	tcase_add_test(tc, test_ring_readonly);
	tcase_add_test(tc, test_page_scribble);
	suite_add_tcase(s, tc);

	tc = th_tcase("hostile");
	tcase_add_loop_test(tc, test_hostile_producer, 0, FAKE_COUNT);
	tcase_add_loop_test(tc, test_hostile_reader, 0, HELLO_COUNT);
	tcase_add_test(tc, test_share_fd_junk);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return th_run(security_suite());
}
