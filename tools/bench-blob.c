/* SPDX-License-Identifier: MIT */
/*
 * shmfd bench: one big message (1 GiB; 64 MiB with --quick), the method
 * of examples/bigblob.c.  The producer fills a blob, then the clock runs
 * from just before shmfd_send_blob to just after the reader's shmfd_recv
 * returns (handoff), and on until the reader has read one word of every
 * page.  The same bytes then go through a pipe enlarged to 1 MiB into a
 * buffer the reader faulted in beforehand, from the first write to the
 * last read.  Filling is the producer's own work in both cases and is
 * not timed.
 */
#define _GNU_SOURCE
#include "tool.h"
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAGE		4096u
#define PIPE_SIZE	(1 << 20)
#define MAX_ROUNDS	5

struct blob_res {		/* shared: the reader's timestamps */
	uint64_t got[MAX_ROUNDS];	/* shmfd_recv returned */
	uint64_t read[MAX_ROUNDS];	/* every page read */
	uint64_t pipe_end[MAX_ROUNDS];	/* last byte read */
};

struct blob_run {
	size_t size;
	int rounds;
	int share_fd;
	int pipe[2];
	struct bench_ack ack;
	struct blob_res *res;
};

/* Page i holds i in its first word and (i + round) & 0xff after it. */
static void fill(uint8_t *p, size_t size, int round)
{
	for (size_t off = 0, i = 0; off < size; off += PAGE, i++) {
		size_t n = size - off < PAGE ? size - off : PAGE;

		memset(p + off, (int)((i + (size_t)round) & 0xff), n);
		if (n >= sizeof(uint64_t))
			memcpy(p + off, &i, sizeof(uint64_t));
	}
}

/* One word of every page; 0 if each holds its index. */
static int touch(const uint8_t *p, size_t size)
{
	int bad = 0;

	for (size_t off = 0, i = 0; off + sizeof(uint64_t) <= size;
	     off += PAGE, i++) {
		uint64_t v;

		memcpy(&v, p + off, sizeof(v));
		bad |= v != i;
	}
	return bad;
}

static void reader_main(void *arg, int idx)
{
	struct blob_run *b = arg;
	struct shmfd_reader *r;
	uint8_t *buf;
	int ret;

	(void)idx;
	close(b->pipe[1]);
	ret = shmfd_reader_open_fd(&r, b->share_fd, 0);
	if (ret < 0)
		bench_child_die("blob: shmfd_reader_open_fd: %s",
				strerror(-ret));
	bench_ack_send(&b->ack);
	for (int i = 0; i < b->rounds; i++) {
		struct shmfd_msg m;

		ret = shmfd_recv(r, &m, 0, BENCH_TIMEOUT_MS);
		b->res->got[i] = bench_now_ns();
		if (ret < 0)
			bench_child_die("blob: shmfd_recv: %s", strerror(-ret));
		if (!(m.flags & SHMFD_MSG_BLOB) || m.len != b->size)
			bench_child_die("blob: expected a %zu-byte blob, got "
					"%zu bytes", b->size, m.len);
		if (touch(m.data, m.len))
			bench_child_die("blob: the blob's content is wrong");
		b->res->read[i] = bench_now_ns();
		ret = shmfd_msg_release(r, &m);
		if (ret < 0)
			bench_child_die("blob: shmfd_msg_release: %s",
					strerror(-ret));
		bench_ack_send(&b->ack);
	}
	shmfd_reader_close(r);

	buf = malloc(b->size);
	if (!buf)
		bench_child_die("blob: no memory for %zu bytes", b->size);
	memset(buf, 0, b->size);	/* faulted in before the clock */
	for (int i = 0; i < b->rounds; i++) {
		bench_ack_send(&b->ack);		/* ready */
		bench_read_all(b->pipe[0], buf, b->size, "blob: pipe");
		b->res->pipe_end[i] = bench_now_ns();
		if (touch(buf, b->size))
			bench_child_die("blob: the pipe's bytes are wrong");
		bench_ack_send(&b->ack);		/* done */
	}
	free(buf);
}

static size_t mem_available(void)
{
	FILE *f = fopen("/proc/meminfo", "re");
	char line[128];
	unsigned long long kb = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
			break;
	fclose(f);
	return (size_t)kb << 10;
}

/* The [selected] word of a sysfs setting; "?" if unreadable. */
static void setting(const char *path, char *out, size_t size)
{
	char buf[256], *a, *b;
	FILE *f = fopen(path, "re");
	size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;

	if (f)
		fclose(f);
	buf[n] = '\0';
	a = strchr(buf, '[');
	b = a ? strchr(a, ']') : NULL;
	snprintf(out, size, "%.*s", a && b ? (int)(b - a - 1) : 1,
		 a && b ? a + 1 : "?");
}

/* Blob handoff depends on whether blobs get huge pages (README): say
 * what this system allows, and leave it as it is. */
static void huge_pages_note(struct bench_scen *s)
{
	const char *dir = "/sys/kernel/mm/transparent_hugepage";
	char path[128], top[32], pmd[32];

	snprintf(path, sizeof(path), "%s/shmem_enabled", dir);
	setting(path, top, sizeof(top));
	snprintf(path, sizeof(path), "%s/hugepages-2048kB/shmem_enabled", dir);
	setting(path, pmd, sizeof(pmd));
	bench_note(s, "huge pages for blobs: shmem_enabled [%s], "
		   "hugepages-2048kB/shmem_enabled [%s]", top, pmd);
}

static void ms_row(struct bench_scen *s, const char *name, double *v, int n)
{
	struct bench_row *r = bench_row_add(s, name);

	for (int i = 1; i < n; i++)		/* a few values: insertion */
		for (int k = i; k > 0 && v[k] < v[k - 1]; k--) {
			double tmp = v[k];

			v[k] = v[k - 1];
			v[k - 1] = tmp;
		}
	r->ms[0] = v[n / 2];
	r->ms[1] = v[0];
	r->ms[2] = v[n - 1];
	r->avail = true;
}

void bench_blob(struct bench_scen *s)
{
	struct blob_run b = {
		.size = bench_opt.blob_mib << 20,
		.rounds = bench_opt.blob_rounds,
	};
	double handoff[MAX_ROUNDS], readall[MAX_ROUNDS], piped[MAX_ROUNDS];
	double h, p;
	struct shmfd_chan *chan;
	size_t avail = mem_available();
	uint8_t *src;
	int ret;

	s->kind = BENCH_MS;
	snprintf(s->title, sizeof(s->title), "one %zu MiB message, %d rounds, "
		 "blob against a 1 MiB pipe", bench_opt.blob_mib, b.rounds);
	huge_pages_note(s);
	/* The blob, the pipe's source and its destination at once. */
	if (avail < 3 * b.size) {
		s->skipped = true;
		bench_note(s, "skipped: needs 3 x %zu MiB, MemAvailable is "
			   "%zu MiB", bench_opt.blob_mib, avail >> 20);
		return;
	}

	bench_progress("blob shmfd (1/2)");
	ret = shmfd_chan_create(&chan, NULL, NULL);
	if (ret < 0)
		bench_die("shmfd_chan_create: %s", strerror(-ret));
	b.share_fd = shmfd_chan_share_fd(chan);
	if (b.share_fd < 0)
		bench_die("shmfd_chan_share_fd: %s", strerror(-b.share_fd));
	if (pipe2(b.pipe, O_CLOEXEC) < 0)
		bench_die("pipe: %s", strerror(errno));
	if (fcntl(b.pipe[1], F_SETPIPE_SZ, PIPE_SIZE) < 0)
		bench_die("F_SETPIPE_SZ %d: %s", PIPE_SIZE, strerror(errno));
	b.res = bench_shm(sizeof(*b.res));
	bench_ack_open(&b.ack);
	bench_fork(reader_main, &b, 0);
	close(b.pipe[0]);
	close(b.share_fd);
	bench_ack_wait(&b.ack, 1);

	for (int i = 0; i < b.rounds; i++) {
		struct shmfd_blob *blob;
		uint64_t t0;

		ret = shmfd_blob_create(&blob, b.size);
		if (ret < 0)
			bench_die("shmfd_blob_create(%zu): %s", b.size,
				  strerror(-ret));
		fill(shmfd_blob_data(blob), b.size, i);
		t0 = bench_now_ns();
		ret = shmfd_send_blob(chan, blob, BENCH_TIMEOUT_MS);
		if (ret < 0)
			bench_die("shmfd_send_blob: %s", strerror(-ret));
		bench_ack_wait(&b.ack, 1);
		handoff[i] = (double)(b.res->got[i] - t0) / 1e6;
		readall[i] = (double)(b.res->read[i] - t0) / 1e6;
	}
	shmfd_chan_close(chan);

	bench_progress("blob pipe (2/2)");
	src = malloc(b.size);
	if (!src)
		bench_die("no memory for %zu bytes", b.size);
	for (int i = 0; i < b.rounds; i++) {
		uint64_t t0;

		fill(src, b.size, i);
		bench_ack_wait(&b.ack, 1);	/* the reader waits */
		t0 = bench_now_ns();
		bench_write_all(b.pipe[1], src, b.size, "blob: pipe");
		bench_ack_wait(&b.ack, 1);
		piped[i] = (double)(b.res->pipe_end[i] - t0) / 1e6;
	}
	free(src);
	close(b.pipe[1]);
	bench_reap();
	bench_ack_close(&b.ack);
	bench_unshm(b.res, sizeof(*b.res));

	ms_row(s, "shmfd handoff", handoff, b.rounds);
	ms_row(s, "shmfd handoff+read pages", readall, b.rounds);
	ms_row(s, "pipe", piped, b.rounds);
	h = s->rows[0].ms[0];
	p = s->rows[2].ms[0];
	bench_note(s, "pipe / shmfd: %.0fx the handoff, %.1fx with every "
		   "page read", h > 0 ? p / h : 0.0,
		   s->rows[1].ms[0] > 0 ? p / s->rows[1].ms[0] : 0.0);
	bench_target(s, true, h * 100 <= p, "blob handoff <= 1/100 of the "
		     "pipe:", "%.3f ms vs %.1f ms, 1/%.0f", h, p,
		     h > 0 ? p / h : 0.0);
}
