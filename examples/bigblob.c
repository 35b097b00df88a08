/* SPDX-License-Identifier: MIT */
/*
 * bigblob: one message of a gigabyte, from one process to another.  The
 * producer fills a blob (shmfd_blob_create) and sends it; the reader gets
 * a read-only mapping of the very pages the producer wrote.  Then the same
 * bytes go through a pipe, and both times are printed side by side.
 *
 * Handoff is from just before shmfd_send_blob() to just after shmfd_recv()
 * returns in the reader: what it costs to give the reader the message.
 * The reader then reads every page, which is timed as well.  The pipe's
 * time is from its first write to its last read, into a buffer the reader
 * has already faulted in.  Filling the blob is the producer building its
 * message, the same work for both, and is shown apart.
 *
 * Blobs of 2 MiB or more ask for huge pages.  Whether they get them is
 * the system's choice (/sys/kernel/mm/transparent_hugepage/shmem_enabled,
 * printed first): with 4 KiB pages, a gigabyte is 262,144 page-table
 * entries that the producer's munmap and the seal must walk before the
 * reader may see it, and that dominates the handoff.
 *
 *   bigblob [-s MIB] [-n ROUNDS]
 */
#define _GNU_SOURCE
#include <shmfd.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <getopt.h>
#include <unistd.h>

#define PAGE		4096u
#define TIMEOUT_MS	120000		/* a gigabyte through a slow VM's pipe */
#define MAX_ROUNDS	21
#define PIPE_SIZE	(1 << 20)

struct times {
	double handoff;		/* send -> recv returned, ms */
	double touched;		/* send -> every page read, ms */
	double fill;		/* producer writing the blob, ms */
	double pipe;		/* first write -> last byte read, ms */
};

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("bigblob: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void put(int fd, double v)
{
	if (write(fd, &v, sizeof(v)) != sizeof(v))
		die("control pipe: write failed");
}

static double get(int fd)
{
	double v;

	if (read(fd, &v, sizeof(v)) != sizeof(v))
		die("control pipe: the other process is gone");
	return v;
}

/* Every byte of page i is (i + round) & 0xff, except that the page's first
 * 8 bytes hold i: a reader can check any page cheaply. */
static void fill(uint8_t *p, size_t size, int round)
{
	for (size_t off = 0, i = 0; off < size; off += PAGE, i++) {
		size_t n = size - off < PAGE ? size - off : PAGE;

		memset(p + off, (int)((i + (size_t)round) & 0xff), n);
		if (n >= sizeof(uint64_t))
			memcpy(p + off, &i, sizeof(uint64_t));
	}
}

/* Read one word of every page; 0 if each holds its index. */
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

/* The [selected] word of a sysfs setting into out; "?" if unreadable. */
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

/* One line on whether a blob can have huge pages here, and how to allow
 * it where it cannot: "advise" gives them only to memory that asks. */
static void huge_pages_line(void)
{
	const char *dir = "/sys/kernel/mm/transparent_hugepage";
	char path[128], top[32], pmd[32];

	snprintf(path, sizeof(path), "%s/shmem_enabled", dir);
	setting(path, top, sizeof(top));
	snprintf(path, sizeof(path), "%s/hugepages-2048kB/shmem_enabled", dir);
	setting(path, pmd, sizeof(pmd));
	if (strcmp(pmd, "?") && strcmp(pmd, "inherit"))
		snprintf(top, sizeof(top), "%s", pmd);
	if (!strcmp(top, "never") || !strcmp(top, "deny") ||
	    !strcmp(top, "?")) {
		printf("huge pages for blobs: off (shmem_enabled [%s]); to "
		       "allow them on request, as root:\n  echo advise > "
		       "%s/shmem_enabled\n", top, dir);
	} else {
		printf("huge pages for blobs: on request (shmem_enabled "
		       "[%s])\n", top);
	}
}

static void pin(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

/* The reader: blobs first, then the same bytes through the pipe. */
static void reader(int share_fd, int data_fd, int to_parent, size_t size,
		   int rounds)
{
	struct shmfd_reader *r;
	uint8_t *buf;
	int ret;

	ret = shmfd_reader_open_fd(&r, share_fd, 0);
	if (ret < 0)
		die("reader: shmfd_reader_open_fd: %s", strerror(-ret));
	put(to_parent, 0);
	for (int i = 0; i < rounds; i++) {
		struct shmfd_msg m;
		double t1, t2;

		ret = shmfd_recv(r, &m, 0, TIMEOUT_MS);
		t1 = now_ms();
		if (ret < 0)
			die("reader: shmfd_recv: %s", strerror(-ret));
		if (!(m.flags & SHMFD_MSG_BLOB) || m.len != size)
			die("reader: expected a %zu-byte blob, got %zu bytes",
			    size, m.len);
		if (touch(m.data, m.len))
			die("reader: the blob's content is wrong");
		t2 = now_ms();
		if (((const uint8_t *)m.data)[size - 1] !=
		    (uint8_t)(((size - 1) / PAGE + (size_t)i) & 0xff))
			die("reader: the blob's last byte is wrong");
		shmfd_msg_release(r, &m);
		put(to_parent, t1);
		put(to_parent, t2);
	}
	shmfd_reader_close(r);

	/* The pipe's destination is faulted in before the clock starts. */
	buf = malloc(size);
	if (!buf)
		die("reader: no memory for a %zu-byte buffer", size);
	memset(buf, 0, size);
	for (int i = 0; i < rounds; i++) {
		size_t got = 0;

		put(to_parent, 0);
		while (got < size) {
			ssize_t n = read(data_fd, buf + got, size - got);

			if (n <= 0)
				die("reader: pipe read failed");
			got += (size_t)n;
		}
		put(to_parent, now_ms());
		if (touch(buf, size))
			die("reader: the pipe's bytes are wrong");
	}
	free(buf);
	exit(0);
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp);
	return v[n / 2];
}

static void row(const char *what, double *v, int n)
{
	double m = median(v, n);

	printf("  %-44s %10.2f %10.2f %10.2f\n", what, m, v[0], v[n - 1]);
}

int main(int argc, char **argv)
{
	struct times t[MAX_ROUNDS];
	double col[MAX_ROUNDS], handoff, pipe_ms;
	size_t size = (size_t)1 << 30;
	int rounds = 3, opt, status, share_fd, data[2], ctl[2], ret;
	int cpus[2] = { -1, -1 };
	struct shmfd_chan *chan;
	uint8_t *src;
	pid_t pid;

	while ((opt = getopt(argc, argv, "s:n:h")) != -1) {
		switch (opt) {
		case 's':
			size = (size_t)strtoull(optarg, NULL, 10) << 20;
			break;
		case 'n':
			rounds = atoi(optarg);
			break;
		default:
			fprintf(stderr, "usage: %s [-s MIB] [-n ROUNDS]\n",
				argv[0]);
			return 2;
		}
	}
	if (!size || rounds < 1 || rounds > MAX_ROUNDS)
		die("-s must be at least 1 and -n between 1 and %d",
		    MAX_ROUNDS);
	if (sysconf(_SC_NPROCESSORS_ONLN) >= 2) {
		cpus[0] = 0;
		cpus[1] = 1;
	}

	ret = shmfd_chan_create(&chan, NULL, NULL);
	if (ret < 0)
		die("shmfd_chan_create: %s", strerror(-ret));
	share_fd = shmfd_chan_share_fd(chan);
	if (share_fd < 0)
		die("shmfd_chan_share_fd: %s", strerror(-share_fd));
	if (pipe2(data, O_CLOEXEC) < 0 || pipe2(ctl, O_CLOEXEC) < 0)
		die("pipe: %s", strerror(errno));
	fcntl(data[1], F_SETPIPE_SZ, PIPE_SIZE);
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		pin(cpus[1]);
		close(data[1]);
		close(ctl[0]);
		reader(share_fd, data[0], ctl[1], size, rounds);
	}
	pin(cpus[0]);
	close(share_fd);
	close(data[0]);
	close(ctl[1]);
	get(ctl[0]);			/* joined */

	printf("bigblob: one %zu MiB message, %d round%s", size >> 20, rounds,
	       rounds > 1 ? "s" : "");
	if (cpus[0] >= 0)
		printf(", producer on CPU %d, reader on CPU %d", cpus[0],
		       cpus[1]);
	printf("\n");
	huge_pages_line();
	fflush(stdout);

	for (int i = 0; i < rounds; i++) {
		struct shmfd_blob *b;
		double t0, tf;

		ret = shmfd_blob_create(&b, size);
		if (ret < 0)
			die("shmfd_blob_create(%zu): %s", size, strerror(-ret));
		tf = now_ms();
		fill(shmfd_blob_data(b), size, i);
		t0 = now_ms();
		t[i].fill = t0 - tf;
		ret = shmfd_send_blob(chan, b, TIMEOUT_MS);
		if (ret < 0)
			die("shmfd_send_blob: %s", strerror(-ret));
		t[i].handoff = get(ctl[0]) - t0;
		t[i].touched = get(ctl[0]) - t0;
	}
	shmfd_chan_close(chan);

	src = malloc(size);
	if (!src)
		die("no memory for a %zu-byte buffer", size);
	for (int i = 0; i < rounds; i++) {
		double t0;

		fill(src, size, i);
		get(ctl[0]);		/* the reader is waiting */
		t0 = now_ms();
		for (size_t off = 0; off < size;) {
			ssize_t n = write(data[1], src + off, size - off);

			if (n <= 0)
				die("pipe write: %s", strerror(errno));
			off += (size_t)n;
		}
		t[i].pipe = get(ctl[0]) - t0;
	}
	free(src);
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
	    WEXITSTATUS(status))
		die("the reader failed");

	printf("  %-44s %10s %10s %10s\n", "ms", "median", "min", "max");
	for (int i = 0; i < rounds; i++)
		col[i] = t[i].fill;
	row("producer fills the blob (not in the times)", col, rounds);
	for (int i = 0; i < rounds; i++)
		col[i] = t[i].handoff;
	row("shmfd: send -> recv returned (handoff)", col, rounds);
	handoff = median(col, rounds);
	for (int i = 0; i < rounds; i++)
		col[i] = t[i].touched;
	row("shmfd: send -> reader read every page", col, rounds);
	for (int i = 0; i < rounds; i++)
		col[i] = t[i].pipe;
	row("pipe: first write -> last byte read", col, rounds);
	pipe_ms = median(col, rounds);
	printf("pipe / shmfd handoff: %.0fx\n", pipe_ms / handoff);
	return 0;
}
