/* SPDX-License-Identifier: MIT */
/*
 * points: the case libshmfd exists for.  A producer process sends messages
 * of 10,000 (x, y) points to a reader in another process.  Each message is
 * built in place in the shared ring (shmfd_reserve/shmfd_commit) and the
 * reader checks it where it lies: nothing is copied, pickled or parsed.
 * Then the same messages go through a pipe, and both one-way latencies are
 * printed side by side.
 *
 * Latency is from just before commit (or write) to just after recv (or the
 * last read) returns, measured with CLOCK_MONOTONIC in the two processes;
 * a second table measures from before the producer began to build the
 * message (reserve, fill), since shmfd_reserve wakes the reader at once
 * and the wake-up then overlaps the build.
 * Messages are paced: the producer waits until the reader has checked the
 * previous message, then 200 us more, so every message finds the reader
 * asleep and the figure includes its wake-up.  That is the case of a GUI
 * or a worker that waits for data, and the one a busy loop cannot hide.
 *
 *   points [-n COUNT] [--spin USEC]
 */
#define _GNU_SOURCE
#include <shmfd.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NPOINTS		10000
#define GAP_US		200		/* reader asleep before each message */
#define TIMEOUT_MS	10000		/* no step of a healthy run comes near */
#define MAX_COUNT	1000000
#define PIPE_BUF_SIZE	(256 * 1024)	/* a whole message fits: one write */

struct point {
	double x, y;
};

struct points_msg {
	uint64_t seq;		/* 1, 2, 3 ... as the producer counts */
	uint64_t sent_ns;	/* CLOCK_MONOTONIC just before commit/write */
	uint64_t sum;		/* checksum over seq and every coordinate */
	uint64_t built_ns;	/* CLOCK_MONOTONIC before the build began */
	struct point pts[NPOINTS];
};

struct run {
	long count;
	unsigned int spin;	/* --spin USEC, 0 = sleep at once */
	int cpus[2];		/* producer, reader; -1 = not pinned */
	int share_fd;		/* reader's way into the channel */
	int data_rd, data_wr;	/* the pipe under test */
	int ack_rd, ack_wr;	/* reader -> producer: "checked, go on" */
	pid_t reader;
	uint64_t *lat;		/* 4 * count latencies (ns), shared mapping:
				 * shmfd, pipe, then both from the build */
};

static struct run run = {
	.count = 2000,
	.cpus = { -1, -1 },
	.share_fd = -1,
	.reader = -1,
};

/* The reader reports its own error on one line and exits 1. */
static void __attribute__((noreturn, format(printf, 1, 2)))
reader_die(const char *fmt, ...)
{
	va_list ap;

	fputs("points: reader: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	_exit(1);
}

/* The producer stops the reader first, so only its own line is printed. */
static void __attribute__((noreturn, format(printf, 1, 2)))
die(const char *fmt, ...)
{
	va_list ap;

	if (run.reader > 0) {
		kill(run.reader, SIGKILL);
		waitpid(run.reader, NULL, 0);
	}
	fputs("points: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/*
 * The reader has gone (its end of a pipe closed).  If it failed it already
 * said why: add nothing, so the error stays one line.
 */
static void __attribute__((noreturn)) reader_gone(void)
{
	int status;

	if (waitpid(run.reader, &status, 0) < 0)
		die("waitpid: %s", strerror(errno));
	run.reader = -1;
	if (WIFSIGNALED(status))
		die("the reader was killed by signal %d", WTERMSIG(status));
	if (WEXITSTATUS(status) == 0)
		die("the reader exited early");
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void pause_us(long us)
{
	struct timespec ts = { .tv_sec = 0, .tv_nsec = us * 1000 };

	while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
		;
}

/* FNV-1a over the 64-bit words of the points, seeded with seq. */
static uint64_t checksum(const struct points_msg *m)
{
	const unsigned char *p = (const unsigned char *)m->pts;
	uint64_t h = 0xcbf29ce484222325u ^ m->seq, w;
	size_t i;

	for (i = 0; i < sizeof(m->pts); i += sizeof(w)) {
		memcpy(&w, p + i, sizeof(w));
		h = (h ^ w) * 0x100000001b3u;
	}
	return h;
}

static double x_of(uint64_t seq, long i)
{
	return (double)seq + (double)i * 0.5;
}

static double y_of(uint64_t seq, long i)
{
	return (double)seq - (double)i * 0.25;
}

static void fill(struct points_msg *m, uint64_t seq)
{
	long i;

	m->seq = seq;
	for (i = 0; i < NPOINTS; i++) {
		m->pts[i].x = x_of(seq, i);
		m->pts[i].y = y_of(seq, i);
	}
	m->sum = checksum(m);
}

/* Every coordinate is covered by the checksum; the ends by value too. */
static int valid(const struct points_msg *m, uint64_t seq)
{
	return m->seq == seq &&
	       m->pts[0].x == x_of(seq, 0) && m->pts[0].y == y_of(seq, 0) &&
	       m->pts[NPOINTS - 1].x == x_of(seq, NPOINTS - 1) &&
	       m->pts[NPOINTS - 1].y == y_of(seq, NPOINTS - 1) &&
	       checksum(m) == m->sum;
}

static void pin(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	/* Unpinned still measures something: failure is not an error. */
	(void)sched_setaffinity(0, sizeof(set), &set);
}

/* The first two CPUs we may run on, when there are two. */
static void pick_cpus(void)
{
	cpu_set_t set;
	int cpu, k = 0;

	if (sched_getaffinity(0, sizeof(set), &set) < 0 || CPU_COUNT(&set) < 2)
		return;
	for (cpu = 0; cpu < CPU_SETSIZE && k < 2; cpu++)
		if (CPU_ISSET(cpu, &set))
			run.cpus[k++] = cpu;
}

static void send_ack(void)
{
	char c = 'k';

	if (write(run.ack_wr, &c, 1) != 1)
		reader_die("ack: %s", strerror(errno));
}

static void wait_ack(void)
{
	struct pollfd pfd = { .fd = run.ack_rd, .events = POLLIN };
	ssize_t n;
	char c;
	int ret;

	do
		ret = poll(&pfd, 1, TIMEOUT_MS);
	while (ret < 0 && errno == EINTR);
	if (ret < 0)
		die("poll: %s", strerror(errno));
	if (ret == 0)
		die("no word from the reader for %d s", TIMEOUT_MS / 1000);
	n = read(run.ack_rd, &c, 1);
	if (n < 0)
		die("read: %s", strerror(errno));
	if (n == 0)
		reader_gone();
}

/* ---- the reader process ---- */

static void reader_shmfd(void)
{
	struct shmfd_reader *r;
	struct shmfd_msg msg;
	const struct points_msg *m;
	uint64_t t, seq;
	int ret;

	ret = shmfd_reader_open_fd(&r, run.share_fd, 0);
	if (ret < 0)
		reader_die("shmfd_reader_open_fd: %s", strerror(-ret));
	if (run.spin) {
		ret = shmfd_reader_set_spin(r, run.spin);
		if (ret < 0)
			reader_die("shmfd_reader_set_spin: %s", strerror(-ret));
	}
	send_ack();	/* joined: messages sent from now on are ours */

	for (seq = 1; seq <= (uint64_t)run.count; seq++) {
		ret = shmfd_recv(r, &msg, 0, TIMEOUT_MS);
		t = now_ns();
		if (ret < 0)
			reader_die("shmfd_recv: %s", strerror(-ret));
		m = msg.data;
		if (msg.len != sizeof(*m) || msg.fd != -1)
			reader_die("message %llu: %zu bytes, fd %d",
				   (unsigned long long)msg.seq, msg.len,
				   msg.fd);
		if (msg.seq != seq || msg.lost != 0)
			reader_die("got seq %llu (lost %llu), expected %llu",
				   (unsigned long long)msg.seq,
				   (unsigned long long)msg.lost,
				   (unsigned long long)seq);
		run.lat[seq - 1] = t - m->sent_ns;
		run.lat[2 * run.count + seq - 1] = t - m->built_ns;
		if (!valid(m, seq))
			reader_die("message %llu is corrupt",
				   (unsigned long long)seq);
		ret = shmfd_msg_release(r, &msg);
		if (ret < 0)
			reader_die("shmfd_msg_release: %s", strerror(-ret));
		send_ack();
	}

	/* The producer closes after the last ack: the end is -EPIPE. */
	ret = shmfd_recv(r, &msg, 0, TIMEOUT_MS);
	if (ret != -EPIPE)
		reader_die("after the last message: %s, expected EPIPE",
			   ret < 0 ? strerror(-ret) : "a message");
	shmfd_reader_close(r);
}

static void read_all(int fd, void *buf, size_t len)
{
	char *p = buf;
	ssize_t n;

	while (len) {
		n = read(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			reader_die("pipe read: %s", strerror(errno));
		if (n == 0)
			reader_die("pipe closed in the middle of a message");
		p += n;
		len -= (size_t)n;
	}
}

static void reader_pipe(void)
{
	struct points_msg *m;
	uint64_t t, seq;
	char c;

	m = aligned_alloc(16, sizeof(*m));
	if (!m)
		reader_die("out of memory");
	send_ack();	/* ready for the pipe */

	for (seq = 1; seq <= (uint64_t)run.count; seq++) {
		read_all(run.data_rd, m, sizeof(*m));
		t = now_ns();
		run.lat[run.count + seq - 1] = t - m->sent_ns;
		run.lat[3 * run.count + seq - 1] = t - m->built_ns;
		if (!valid(m, seq))
			reader_die("pipe message %llu is corrupt",
				   (unsigned long long)seq);
		send_ack();
	}
	if (read(run.data_rd, &c, 1) != 0)
		reader_die("pipe: data after the last message");
	free(m);
}

static void reader_main(void)
{
	close(run.data_wr);
	close(run.ack_rd);
	pin(run.cpus[1]);
	reader_shmfd();
	reader_pipe();
	_exit(0);
}

/* ---- the producer process ---- */

static void producer_shmfd(struct shmfd_chan *chan)
{
	struct points_msg *m;
	void *buf;
	uint64_t seq, built;
	int ret;

	wait_ack();	/* the reader has joined */
	for (seq = 1; seq <= (uint64_t)run.count; seq++) {
		pause_us(GAP_US);
		built = now_ns();
		ret = shmfd_reserve(chan, sizeof(*m), &buf, TIMEOUT_MS);
		if (ret < 0)
			die("shmfd_reserve: %s", strerror(-ret));
		m = buf;
		fill(m, seq);		/* straight into the shared ring */
		m->built_ns = built;
		m->sent_ns = now_ns();
		ret = shmfd_commit(chan, sizeof(*m));
		if (ret < 0)
			die("shmfd_commit: %s", strerror(-ret));
		wait_ack();
	}
	shmfd_chan_close(chan);
}

static void write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	ssize_t n;

	while (len) {
		n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EPIPE)
			reader_gone();
		if (n < 0)
			die("pipe write: %s", strerror(errno));
		p += n;
		len -= (size_t)n;
	}
}

static void producer_pipe(void)
{
	struct points_msg *m;
	uint64_t seq;

	m = aligned_alloc(16, sizeof(*m));
	if (!m)
		die("out of memory");
	wait_ack();	/* the reader waits on the pipe */
	for (seq = 1; seq <= (uint64_t)run.count; seq++) {
		pause_us(GAP_US);
		m->built_ns = now_ns();
		fill(m, seq);		/* a private buffer, then a copy */
		m->sent_ns = now_ns();
		write_all(run.data_wr, m, sizeof(*m));
		wait_ack();
	}
	close(run.data_wr);
	free(m);
}

/* ---- statistics ---- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* Nearest rank: the smallest value with at least p% at or below it. */
static double pct_us(const uint64_t *sorted, long n, int p)
{
	long rank = (n * p + 99) / 100;

	return (double)sorted[rank > 0 ? rank - 1 : 0] / 1000.0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: points [-n COUNT] [--spin USEC]\n");
}

static long parse_num(const char *s, long min, long max, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		fprintf(stderr, "points: %s must be %ld..%ld, not '%s'\n",
			what, min, max, s);
		exit(2);
	}
	return v;
}

static void parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "spin", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "n:h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			run.count = parse_num(optarg, 1, MAX_COUNT, "-n");
			break;
		case 's':
			run.spin = (unsigned int)parse_num(optarg, 0, 1000000,
							   "--spin");
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(2);
		}
	}
	if (optind < argc) {
		usage(stderr);
		exit(2);
	}
}

/* Sorts both series in place and prints them with their ratio. */
static void print_table(const char *title, uint64_t *shm_lat,
			uint64_t *pipe_lat, int pipe_size)
{
	long n = run.count;
	double s50, s99, p50, p99;

	qsort(shm_lat, (size_t)n, sizeof(*shm_lat), cmp_u64);
	qsort(pipe_lat, (size_t)n, sizeof(*pipe_lat), cmp_u64);
	s50 = pct_us(shm_lat, n, 50);
	s99 = pct_us(shm_lat, n, 99);
	p50 = pct_us(pipe_lat, n, 50);
	p99 = pct_us(pipe_lat, n, 99);

	printf("%s\n", title);
	printf("  %-12s %8s %10s %10s\n", "", "count", "p50", "p99");
	printf("  %-12s %8ld %7.1f us %7.1f us\n", "shmfd", n, s50, s99);
	if (pipe_size > 0)
		printf("  %-12s %8ld %7.1f us %7.1f us   (%d KiB pipe)\n",
		       "pipe", n, p50, p99, pipe_size / 1024);
	else
		printf("  %-12s %8ld %7.1f us %7.1f us\n", "pipe", n, p50, p99);
	printf("  %-12s %8s %9.1fx %9.1fx\n", "pipe/shmfd", "",
	       s50 > 0 ? p50 / s50 : 0.0, s99 > 0 ? p99 / s99 : 0.0);
}

int main(int argc, char **argv)
{
	struct shmfd_chan *chan;
	int data[2], ack[2], ret, status, pipe_size;
	long n;

	parse_args(argc, argv);
	n = run.count;
	signal(SIGPIPE, SIG_IGN);	/* a dead reader is an EPIPE, not death */

	run.lat = mmap(NULL, 4 * (size_t)n * sizeof(*run.lat),
		       PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		       -1, 0);
	if (run.lat == MAP_FAILED)
		die("mmap: %s", strerror(errno));

	ret = shmfd_chan_create(&chan, NULL, NULL);
	if (ret < 0)
		die("shmfd_chan_create: %s", strerror(-ret));
	run.share_fd = shmfd_chan_share_fd(chan);
	if (run.share_fd < 0)
		die("shmfd_chan_share_fd: %s", strerror(-run.share_fd));
	if (pipe2(data, O_CLOEXEC) < 0 || pipe2(ack, O_CLOEXEC) < 0)
		die("pipe: %s", strerror(errno));
	run.data_rd = data[0];
	run.data_wr = data[1];
	run.ack_rd = ack[0];
	run.ack_wr = ack[1];
	/*
	 * The default 64 KiB pipe would take a message in three rounds of
	 * write, wake, read.  Give the pipe room for a whole message so the
	 * baseline is one write and one wake-up, as for the channel.
	 */
	(void)fcntl(run.data_wr, F_SETPIPE_SZ, PIPE_BUF_SIZE);
	pipe_size = fcntl(run.data_wr, F_GETPIPE_SZ);

	pick_cpus();
	pin(run.cpus[0]);
	fflush(NULL);
	run.reader = fork();
	if (run.reader < 0)
		die("fork: %s", strerror(errno));
	if (run.reader == 0)
		reader_main();
	/* Only the reader joins through this fd; the producer's copy goes. */
	close(run.share_fd);
	close(run.data_rd);
	close(run.ack_wr);

	producer_shmfd(chan);
	producer_pipe();

	if (waitpid(run.reader, &status, 0) < 0)
		die("waitpid: %s", strerror(errno));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		run.reader = -1;
		if (WIFSIGNALED(status))
			die("the reader was killed by signal %d",
			    WTERMSIG(status));
		return 1;
	}

	printf("points: %ld messages of %d (x, y) points (%zu bytes + a "
	       "%zu-byte header), one every >= %d us\n", n, NPOINTS,
	       sizeof(((struct points_msg *)0)->pts),
	       offsetof(struct points_msg, pts), GAP_US);
	if (run.cpus[0] >= 0)
		printf("producer on CPU %d, reader on CPU %d\n",
		       run.cpus[0], run.cpus[1]);
	else
		printf("not pinned: fewer than two CPUs\n");
	printf("one-way latency, the reader asleep before each message,\n");
	print_table("from just before the commit (or write):", run.lat,
		    run.lat + n, pipe_size);
	print_table("from the start of the build (reserve, fill):",
		    run.lat + 2 * n, run.lat + 3 * n, pipe_size);
	if (run.spin)
		printf("the shmfd reader spins up to %u us before sleeping\n",
		       run.spin);
	printf("all %ld messages checked on both paths: seq, and a checksum "
	       "of all %d doubles\n", n, 2 * NPOINTS);
	return 0;
}
