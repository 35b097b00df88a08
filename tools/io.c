/* SPDX-License-Identifier: MIT */
/*
 * shmfd cat, shmfd pub: a channel from the shell.  pub publishes each line
 * of its input as one message (or a whole file as one message, a blob if
 * it is large); cat joins and prints what arrives, until the producer
 * closes.
 */
#define _GNU_SOURCE
#include "tool.h"

#include <shmfd.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum fmt { FMT_TEXT, FMT_HEX, FMT_RAW };

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

/* SIGINT/SIGTERM end the loop; no SA_RESTART, so a blocked call
 * returns and the loop sees the flag. */
static void catch_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };

	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

/*
 * The library's waits are exact and ride out signals, so a wait that
 * SIGINT must end goes in slices: TOOL_SLICE_MS at a time until the
 * caller's timeout (-1: none), looking at the stop flag in between.
 */
#define TOOL_SLICE_MS	250

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int slice_left(double end, int timeout)
{
	double left;

	if (timeout < 0)
		return TOOL_SLICE_MS;
	left = end - now_ms();
	if (left <= 0)
		return 0;
	return left < TOOL_SLICE_MS ? (int)left + 1 : TOOL_SLICE_MS;
}

/* After a call given one slice: true to call again; false with the
 * final result in *ret (-EINTR once interrupted, -ETIMEDOUT once the
 * caller's own timeout has run out). */
static bool slice_again(int *ret, double end, int timeout)
{
	if (*ret != -ETIMEDOUT && *ret != -EAGAIN)
		return false;
	if (stop) {
		*ret = -EINTR;
		return false;
	}
	if (timeout >= 0 && now_ms() >= end) {
		*ret = -ETIMEDOUT;
		return false;
	}
	return true;
}

static int recv_sliced(struct shmfd_reader *r, struct shmfd_msg *m,
		       int flags, int timeout)
{
	double end = now_ms() + (timeout > 0 ? timeout : 0);
	int ret;

	if (timeout == 0)
		return shmfd_recv(r, m, flags, 0);
	do
		ret = shmfd_recv(r, m, flags, slice_left(end, timeout));
	while (slice_again(&ret, end, timeout));
	return ret;
}

/* A reliable send that waits for readers, in slices: on -ETIMEDOUT
 * nothing was published, so the same message is tried again. */
static int send_sliced(struct shmfd_chan *chan, const void *buf, size_t len,
		       int timeout)
{
	double end = now_ms() + (timeout > 0 ? timeout : 0);
	int ret;

	if (timeout == 0)
		return shmfd_send(chan, buf, len, 0);
	do
		ret = shmfd_send(chan, buf, len, slice_left(end, timeout));
	while (slice_again(&ret, end, timeout));
	return ret;
}

/* The same for a blob: one whose send timed out is still ours, sealed,
 * and the next slice sends that one. */
static int send_blob_sliced(struct shmfd_chan *chan, struct shmfd_blob *blob,
			    int timeout)
{
	double end = now_ms() + (timeout > 0 ? timeout : 0);
	int ret;

	if (timeout == 0)
		return shmfd_send_blob(chan, blob, 0);
	do
		ret = shmfd_send_blob(chan, blob, slice_left(end, timeout));
	while (slice_again(&ret, end, timeout));
	return ret;
}

/* Text: printable bytes as they are, others as \xNN, then a newline. */
static void print_text(const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = p[i];

		if ((ch >= 0x20 && ch < 0x7f) || ch == '\t')
			putchar(ch);
		else if (ch == '\\')
			fputs("\\\\", stdout);
		else if (ch == '\n' && i + 1 == len)
			;	/* a line that kept its newline */
		else
			printf("\\x%02x", ch);
	}
	putchar('\n');
}

static void print_hex(const struct shmfd_msg *m)
{
	const unsigned char *p = m->data;

	printf("# seq %" PRIu64 ", %zu bytes%s", m->seq, m->len,
	       m->flags & SHMFD_MSG_BLOB ? ", blob" : "");
	if (m->lost)
		printf(", %" PRIu64 " lost before it", m->lost);
	putchar('\n');
	for (size_t off = 0; off < m->len; off += 16) {
		size_t n = m->len - off < 16 ? m->len - off : 16;

		printf("%08zx ", off);
		for (size_t i = 0; i < 16; i++) {
			if (i < n)
				printf(" %02x", p[off + i]);
			else
				fputs("   ", stdout);
		}
		fputs("  |", stdout);
		for (size_t i = 0; i < n; i++)
			putchar(p[off + i] >= 0x20 && p[off + i] < 0x7f ?
				p[off + i] : '.');
		fputs("|\n", stdout);
	}
}

static void cat_usage(FILE *f)
{
	fprintf(f,
		"usage: shmfd cat NAME [--hex|--raw] [--latest] [--oldest] "
		"[-n N] [--timeout MS]\n"
		"Join the channel and print each message until the producer "
		"closes:\n"
		"  (default)   as a line of text, bytes outside ASCII as \\xNN\n"
		"  --hex       a header line (seq, length, blob, lost), then a "
		"hex dump\n"
		"  --raw       the bytes exactly, nothing added\n"
		"  --latest    only the newest message each time (skip the "
		"rest)\n"
		"  --oldest    start at the oldest message the ring still "
		"holds\n"
		"  -n N        stop after N messages\n"
		"  --timeout MS  give up when no message comes for MS "
		"milliseconds\n"
		"Messages lost by a lossy channel are reported on stderr "
		"(in --hex, inline).\n");
}

int cmd_cat(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "hex", no_argument, NULL, 'x' },
		{ "raw", no_argument, NULL, 'r' },
		{ "latest", no_argument, NULL, 'l' },
		{ "oldest", no_argument, NULL, 'o' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	enum fmt fmt = FMT_TEXT;
	long long count = -1, got = 0;
	int opt, ret, rflags = 0, oflags = 0, timeout = -1;
	struct shmfd_reader *r;
	const char *name;
	char *end;

	while ((opt = getopt_long(argc, argv, "n:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'x':
			fmt = FMT_HEX;
			break;
		case 'r':
			fmt = FMT_RAW;
			break;
		case 'l':
			rflags |= SHMFD_RECV_LATEST;
			break;
		case 'o':
			oflags |= SHMFD_FROM_OLDEST;
			break;
		case 'n':
			count = strtoll(optarg, &end, 10);
			if (*end || count < 0) {
				tool_err("cat", "-n: '%s' is not a count",
					 optarg);
				return 2;
			}
			break;
		case 't':
			if (!tool_parse_ms("cat", optarg, &timeout))
				return 2;
			break;
		case 'h':
			cat_usage(stdout);
			return 0;
		default:
			cat_usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		cat_usage(stderr);
		return 2;
	}
	name = argv[optind];
	ret = shmfd_reader_open(&r, name, oflags);
	if (ret < 0) {
		tool_chan_err("cat", name, ret);
		return 1;
	}
	catch_signals();
	while (!stop && (count < 0 || got < count)) {
		struct shmfd_msg m;

		ret = recv_sliced(r, &m, rflags, timeout);
		if (ret < 0)
			break;
		got++;
		if (m.lost && fmt != FMT_HEX) {
			fflush(stdout);
			fprintf(stderr, "shmfd cat: %" PRIu64 " message%s lost "
				"before seq %" PRIu64 "\n", m.lost,
				m.lost == 1 ? "" : "s", m.seq);
		}
		if (fmt == FMT_RAW)
			fwrite(m.data, 1, m.len, stdout);
		else if (fmt == FMT_HEX)
			print_hex(&m);
		else
			print_text(m.data, m.len);
		/* A reader that was overwritten mid-read printed torn
		 * bytes: say so rather than pass them off as a message. */
		if (shmfd_msg_release(r, &m) == -ESTALE) {
			fflush(stdout);
			fprintf(stderr, "shmfd cat: message %" PRIu64 " was "
				"overwritten while printed (lossy channel): "
				"its bytes above may be torn\n", m.seq);
		}
		if (ferror(stdout))
			break;
	}
	shmfd_reader_close(r);
	if (fflush(stdout) == EOF || ferror(stdout)) {
		if (errno != EPIPE)
			tool_err("cat", "writing output: %s", strerror(errno));
		return 1;
	}
	if (stop || (count >= 0 && got >= count) || ret == -EPIPE)
		return 0;	/* interrupted, enough, or the producer closed */
	if (ret == -ETIMEDOUT || ret == -EAGAIN) {
		tool_err("cat", "channel '%s': no message for %d ms", name,
			 timeout);
		return 1;
	}
	if (ret == -EINTR)
		return 0;
	tool_chan_err("cat", name, ret);
	return 1;
}

/* A failed send: in pub the tool is the producer, so a wait that ran
 * out is the readers' doing. */
static void pub_send_err(const char *name, int ret)
{
	if (ret == -EINTR)
		tool_err("pub", "channel '%s': interrupted", name);
	else if (ret == -ETIMEDOUT)
		tool_err("pub", "channel '%s': the readers did not make room "
			 "within --timeout", name);
	else if (ret == -EAGAIN)
		tool_err("pub", "channel '%s': the ring is full and --timeout "
			 "is 0", name);
	else
		tool_chan_err("pub", name, ret);
}

static void pub_usage(FILE *f)
{
	fprintf(f,
		"usage: shmfd pub NAME [--lossy] [--file F] [--wait N] "
		"[--ring-size SIZE]\n"
		"                 [--mode MODE] [--timeout MS]\n"
		"Create the named channel and publish each line of stdin as "
		"one message\n(without its newline), or the file F as one "
		"message: sent as a sealed\nblob when it is larger than a "
		"quarter of the ring.  Then close the\nchannel: readers still "
		"receive everything published.\n"
		"  --lossy       never wait for slow readers\n"
		"  --wait N      before publishing, wait until N readers have "
		"joined\n"
		"  --ring-size SIZE  ring bytes (K, M, G suffixes; default "
		"4M)\n"
		"  --mode MODE   who may join, octal (default 0600)\n"
		"  --timeout MS  how long a reliable send may wait for "
		"readers (default\n"
		"                forever)\n");
}

/* What the library makes of ring_size: rounded up to a power of two
 * (4 MiB by default), a quarter of it inline (shmfd_chan_create(3)). */
static size_t max_inline(size_t ring_size)
{
	size_t ring = (size_t)64 << 10;

	if (!ring_size)
		ring_size = (size_t)4 << 20;
	while (ring < ring_size)
		ring <<= 1;
	return ring / 4;
}

/* The whole file as one message: read straight into a blob when it is
 * larger than the ring takes inline, so nothing is copied twice. */
static int pub_file(struct shmfd_chan *chan, const char *name,
		    const char *path, size_t max_inline, int timeout)
{
	struct shmfd_blob *blob;
	struct stat st;
	size_t done = 0;
	char *buf;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		tool_err("pub", "%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return 1;
	}
	if (!S_ISREG(st.st_mode) || st.st_size == 0) {
		tool_err("pub", "%s: not a regular file with data in it", path);
		close(fd);
		return 1;
	}
	if ((size_t)st.st_size > max_inline) {
		ret = shmfd_blob_create(&blob, (size_t)st.st_size);
		buf = ret < 0 ? NULL : shmfd_blob_data(blob);
	} else {
		blob = NULL;
		buf = malloc((size_t)st.st_size);
		ret = buf ? 0 : -ENOMEM;
	}
	if (ret < 0) {
		tool_err("pub", "%s: %s", path, strerror(-ret));
		close(fd);
		return 1;
	}
	while (done < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + done, (size_t)st.st_size - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			tool_err("pub", "%s: %s", path, n < 0 ? strerror(errno)
				 : "file shrank while read");
			close(fd);
			if (blob)
				shmfd_blob_free(blob);
			else
				free(buf);
			return 1;
		}
		done += (size_t)n;
	}
	close(fd);
	if (blob) {
		ret = send_blob_sliced(chan, blob, timeout);
		if (ret < 0)
			shmfd_blob_free(blob);
	} else {
		ret = send_sliced(chan, buf, done, timeout);
		free(buf);
	}
	if (ret < 0) {
		pub_send_err(name, ret);
		return 1;
	}
	return 0;
}

static int pub_lines(struct shmfd_chan *chan, const char *name, int timeout)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int ret = 0;

	while (!stop && (n = getline(&line, &cap, stdin)) >= 0) {
		if (n && line[n - 1] == '\n')
			n--;
		ret = send_sliced(chan, line, (size_t)n, timeout);
		if (ret < 0)
			break;
	}
	free(line);
	if (stop || ret == -EINTR) {
		tool_err("pub", "channel '%s': interrupted", name);
		return 1;
	}
	if (ret < 0) {
		pub_send_err(name, ret);
		return 1;
	}
	if (ferror(stdin)) {
		tool_err("pub", "reading stdin: %s", strerror(errno));
		return 1;
	}
	return 0;
}

int cmd_pub(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "lossy", no_argument, NULL, 'L' },
		{ "file", required_argument, NULL, 'f' },
		{ "wait", required_argument, NULL, 'w' },
		{ "ring-size", required_argument, NULL, 's' },
		{ "mode", required_argument, NULL, 'm' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct shmfd_params p = { 0 };
	struct shmfd_chan *chan;
	const char *file = NULL, *name;
	struct timespec ms = { 0, 1000000 };
	long wait_readers = 0, mode;
	int opt, ret, timeout = -1;
	char *end;

	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'L':
			p.flags |= SHMFD_LOSSY;
			break;
		case 'f':
			file = optarg;
			break;
		case 'w':
			/* A channel admits 64 readers (the default). */
			wait_readers = strtol(optarg, &end, 10);
			if (*end || wait_readers < 0 || wait_readers > 64) {
				tool_err("pub", "--wait: '%s' is not a number "
					 "of readers from 0 to 64", optarg);
				return 2;
			}
			break;
		case 's':
			if (!tool_parse_size(optarg, &p.ring_size)) {
				tool_err("pub", "--ring-size: '%s' is not a "
					 "size", optarg);
				return 2;
			}
			break;
		case 'm':
			/* 0 would be the library's "default": refuse it
			 * rather than silently mean 0600. */
			mode = strtol(optarg, &end, 8);
			if (*end || mode <= 0 || mode > 0777) {
				tool_err("pub", "--mode: '%s' is not an octal "
					 "mode", optarg);
				return 2;
			}
			p.mode = (mode_t)mode;
			break;
		case 't':
			if (!tool_parse_ms("pub", optarg, &timeout))
				return 2;
			break;
		case 'h':
			pub_usage(stdout);
			return 0;
		default:
			pub_usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		pub_usage(stderr);
		return 2;
	}
	name = argv[optind];
	ret = shmfd_chan_create(&chan, name, &p);
	if (ret < 0) {
		if (ret == -EINVAL && p.ring_size)
			tool_err("pub", "channel '%s': invalid ring size (from "
				 "64K to 4G)", name);
		else
			tool_chan_err("pub", name, ret);
		return 1;
	}
	catch_signals();
	while (!stop && shmfd_chan_readers(chan) < wait_readers)
		nanosleep(&ms, NULL);
	if (stop) {
		tool_err("pub", "channel '%s': interrupted while waiting for "
			 "readers", name);
		ret = 1;
	} else if (file)
		ret = pub_file(chan, name, file, max_inline(p.ring_size),
			       timeout);
	else
		ret = pub_lines(chan, name, timeout);
	shmfd_chan_close(chan);
	return ret;
}
