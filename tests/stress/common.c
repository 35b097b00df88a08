/* SPDX-License-Identifier: MIT */
/* shmfd-stress: random numbers, time, payloads, processes, holdings. */
#define _GNU_SOURCE
#include "stress.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct ctl *ctl;
unsigned int spawn_alarm_s = 2 * RUN_DEADLINE_MS / 1000;

const char *const phase_names[PH_COUNT] = {
	[PH_START] = "start",
	[PH_IDLE] = "idle",
	[PH_SEND] = "send",
	[PH_SEND_BIG] = "send>inline",
	[PH_RESERVE] = "reserve",
	[PH_FILL] = "reserve..commit",
	[PH_COMMIT] = "commit",
	[PH_BLOB_CREATE] = "blob_create",
	[PH_BLOB_FILL] = "blob fill",
	[PH_SEND_BLOB] = "send_blob",
	[PH_CLOSE] = "close",
};

/* ---- random numbers ---- */

/* splitmix64's finaliser: a bijection that scatters every input bit. */
uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

void rng_seed(struct rng *r, uint64_t seed)
{
	r->s = seed;
}

uint64_t rng_next(struct rng *r)
{
	r->s += 0x9e3779b97f4a7c15ull;
	return mix64(r->s);
}

uint64_t rng_below(struct rng *r, uint64_t n)
{
	return n ? rng_next(r) % n : 0;
}

uint64_t rng_range(struct rng *r, uint64_t lo, uint64_t hi)
{
	return lo + rng_below(r, hi - lo + 1);
}

bool rng_pct(struct rng *r, unsigned int pct)
{
	return rng_below(r, 100) < pct;
}

/* ---- time ---- */

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void sleep_us(uint64_t us)
{
	struct timespec ts = {
		.tv_sec = (time_t)(us / 1000000),
		.tv_nsec = (long)(us % 1000000) * 1000,
	};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ---- payloads ---- */

static inline uint64_t stream_word(uint64_t *x)
{
	/* xorshift64*: cheap enough to fill gigabytes, and no byte of one
	 * message repeats the same offset of another. */
	*x ^= *x >> 12;
	*x ^= *x << 25;
	*x ^= *x >> 27;
	return *x * 0x2545f4914f6cdd1dull;
}

static inline uint64_t stream_start(uint64_t key, uint64_t seq)
{
	return mix64(key ^ mix64(seq)) | 1;	/* never the stuck state 0 */
}

static inline uint64_t sum_step(uint64_t h, uint64_t w)
{
	h = (h ^ w) * 0x9e3779b97f4a7c15ull;
	return h ^ (h >> 29);
}

/* The checksum of len body bytes: 64-bit steps, then the tail. */
static uint32_t body_sum(const uint8_t *p, size_t len, uint64_t seq)
{
	uint64_t h = mix64(seq);
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t w;

		memcpy(&w, p + i, 8);
		h = sum_step(h, w);
	}
	if (i < len) {
		uint64_t w = 0;

		memcpy(&w, p + i, len - i);
		h = sum_step(h, w ^ 0xff);
	}
	return (uint32_t)(h ^ (h >> 32));
}

static void stream_fill(uint8_t *p, size_t len, uint64_t key, uint64_t seq)
{
	uint64_t x = stream_start(key, seq);
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t w = stream_word(&x);

		memcpy(p + i, &w, 8);
	}
	if (i < len) {
		uint64_t w = stream_word(&x);

		memcpy(p + i, &w, len - i);
	}
}

struct payload_hdr {
	uint64_t seq;
	uint32_t len;
	uint32_t sum;
};

_Static_assert(sizeof(struct payload_hdr) == PAYLOAD_HDR, "payload header");

void payload_fill(void *buf, size_t len, uint64_t key, uint64_t seq)
{
	struct payload_hdr h;

	if (len < PAYLOAD_HDR) {
		stream_fill(buf, len, key, seq);
		return;
	}
	stream_fill((uint8_t *)buf + PAYLOAD_HDR, len - PAYLOAD_HDR, key, seq);
	h.seq = seq;
	h.len = (uint32_t)len;
	h.sum = body_sum((uint8_t *)buf + PAYLOAD_HDR, len - PAYLOAD_HDR, seq);
	memcpy(buf, &h, sizeof(h));
}

const char *payload_check(const void *buf, size_t len, uint64_t key,
			  uint64_t seq)
{
	static char what[160];
	struct payload_hdr h;
	uint32_t sum;

	if (len < PAYLOAD_HDR) {
		uint8_t want[PAYLOAD_HDR];

		stream_fill(want, len, key, seq);
		if (memcmp(buf, want, len) != 0) {
			snprintf(what, sizeof(what), "%zu-byte message differs "
				 "from message %llu's bytes", len,
				 (unsigned long long)seq);
			return what;
		}
		return NULL;
	}
	memcpy(&h, buf, sizeof(h));
	if (h.seq != seq || h.len != len) {
		snprintf(what, sizeof(what), "header says seq %llu len %u, "
			 "the library seq %llu len %zu",
			 (unsigned long long)h.seq, h.len,
			 (unsigned long long)seq, len);
		return what;
	}
	sum = body_sum((const uint8_t *)buf + PAYLOAD_HDR, len - PAYLOAD_HDR,
		       seq);
	if (sum != h.sum) {
		snprintf(what, sizeof(what), "checksum %#x, header says %#x "
			 "(seq %llu, %zu bytes)", sum, h.sum,
			 (unsigned long long)seq, len);
		return what;
	}
	return NULL;
}

/* ---- reports ---- */

const char *errname(int ret)
{
	static char buf[32];

	if (ret >= 0)
		return "0";
	snprintf(buf, sizeof(buf), "-%s", strerrorname_np(-ret) ?: "?");
	return buf;
}

void report_add(char *buf, size_t size, const char *fmt, ...)
{
	size_t used = strnlen(buf, size);
	va_list ap;

	if (used + 1 >= size)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + used, size - used, fmt, ap);
	va_end(ap);
}

void child_fail(char *err, const char *fmt, ...)
{
	va_list ap;

	if (!err[0]) {
		va_start(ap, fmt);
		vsnprintf(err, ERR_LEN, fmt, ap);
		va_end(ap);
	}
	_exit(1);
}

/* ---- processes ---- */

pid_t spawn(int (*fn)(void *), void *arg, unsigned int flags)
{
	pid_t parent = getpid();
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "shmfd-stress: fork: %s\n", strerror(errno));
		exit(2);
	}
	if (pid == 0) {
		if (!(flags & SPAWN_ORPHAN)) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(1);
		}
		/* The last resort against a hang: SIGALRM's default. */
		alarm(spawn_alarm_s);
		_exit(fn(arg));
	}
	return pid;
}

int wait_until_ns(pid_t pid, uint64_t deadline_ns)
{
	int status;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			return status;
		if (r < 0 && errno != EINTR)
			return -1;
		if (now_ns() >= deadline_ns)
			return -1;
		sleep_us(1000);
	}
}

void kill_reap(pid_t pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

const char *describe_status(int st)
{
	static char buf[64];

	if (st == -1)
		snprintf(buf, sizeof(buf), "still running");
	else if (WIFEXITED(st))
		snprintf(buf, sizeof(buf), "exited %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, sizeof(buf), "killed by %s",
			 sigabbrev_np(WTERMSIG(st)) ?: "a signal");
	else
		snprintf(buf, sizeof(buf), "status %#x", st);
	return buf;
}

int send_fd(int sock, int fd)
{
	char byte = 'F';
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr m = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = u.buf, .msg_controllen = sizeof(u.buf),
	};
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);

	memset(&u, 0, sizeof(u));
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	return sendmsg(sock, &m, MSG_NOSIGNAL) == 1 ? 0 : -errno;
}

int recv_fd(int sock)
{
	char byte;
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr m = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = u.buf, .msg_controllen = sizeof(u.buf),
	};
	struct pollfd p = { .fd = sock, .events = POLLIN };
	struct cmsghdr *c;
	int fd;

	if (poll(&p, 1, RUN_DEADLINE_MS) != 1)
		return -ETIMEDOUT;
	if (recvmsg(sock, &m, MSG_CMSG_CLOEXEC) != 1)
		return -EPIPE;
	c = CMSG_FIRSTHDR(&m);
	if (!c || c->cmsg_type != SCM_RIGHTS)
		return -EPROTO;
	memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd;
}

/* ---- holdings: /proc/self/fd and /proc/self/maps ---- */

#define MAX_FDS		1024
#define MAPS_BUF	(1u << 20)

struct holdings {
	bool fd_open[MAX_FDS];
	char fd_what[MAX_FDS][96];
	char *maps;		/* the text of /proc/self/maps */
	char *scratch;		/* for the comparison: allocated up front */
};

struct holdings *holdings_new(void)
{
	struct holdings *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->maps = malloc(MAPS_BUF);
	h->scratch = malloc(MAPS_BUF);
	if (!h->maps || !h->scratch) {
		holdings_free(h);
		return NULL;
	}
	h->maps[0] = '\0';
	return h;
}

void holdings_free(struct holdings *h)
{
	if (!h)
		return;
	free(h->maps);
	free(h->scratch);
	free(h);
}

static void read_fds(bool *open_, char (*what)[96])
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	memset(open_, 0, MAX_FDS * sizeof(*open_));
	if (!d)
		return;
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name);
		char path[64];
		ssize_t n;

		if (e->d_name[0] == '.' || fd == dirfd(d) || fd < 0 ||
		    fd >= MAX_FDS)
			continue;
		open_[fd] = true;
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		n = readlink(path, what[fd], sizeof(what[fd]) - 1);
		what[fd][n > 0 ? n : 0] = '\0';
	}
	closedir(d);
}

/* read(2), not stdio: a stdio buffer could be a mapping of its own. */
static void read_maps(char *buf)
{
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	size_t len = 0;
	ssize_t n;

	buf[0] = '\0';
	if (fd < 0)
		return;
	while (len < MAPS_BUF - 1 &&
	       (n = read(fd, buf + len, MAPS_BUF - 1 - len)) > 0)
		len += (size_t)n;
	close(fd);
	buf[len] = '\0';
}

void holdings_take(struct holdings *h)
{
	read_fds(h->fd_open, h->fd_what);
	read_maps(h->maps);
}

/* Mappings whose size may change on their own: the brk heap grows and
 * need not shrink back; the stack too. */
static bool map_ignored(const char *line, size_t len, bool anon_ok)
{
	const char *path;
	int fields = 0;

	if (memmem(line, len, "[heap]", 6) || memmem(line, len, "[stack]", 7))
		return true;
	if (!anon_ok)
		return false;
	/* An anonymous mapping has no sixth field. */
	path = line;
	while (path < line + len && fields < 5) {
		while (path < line + len && *path != ' ')
			path++;
		while (path < line + len && *path == ' ')
			path++;
		fields++;
	}
	return path >= line + len;
}

/* Is the line [line, line + len) one of the lines of text? */
static bool has_line(const char *text, const char *line, size_t len)
{
	const char *p = text;

	while ((p = memmem(p, strlen(p), line, len))) {
		if ((p == text || p[-1] == '\n') &&
		    (p[len] == '\n' || p[len] == '\0'))
			return true;
		p += len;
	}
	return false;
}

/* Report the lines of a that are not in b. */
static int maps_missing(const char *a, const char *b, bool anon_ok,
			const char *label, char *buf, size_t size)
{
	int n = 0;

	for (const char *line = a, *nl; *line; line = nl + 1) {
		nl = strchr(line, '\n');
		if (!nl)
			break;
		if (map_ignored(line, (size_t)(nl - line), anon_ok) ||
		    has_line(b, line, (size_t)(nl - line)))
			continue;
		n++;
		report_add(buf, size, "%s mapping %.*s; ", label,
			   (int)(nl - line), line);
	}
	return n;
}

/* AddressSanitizer's allocator maps and unmaps anonymous memory on its
 * own schedule: then only named mappings (memfd rings, pages, blobs and
 * io_uring queues: all the library makes) can be compared. */
#if defined(__SANITIZE_ADDRESS__)
#define ANON_MAPS_MOVE	true
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ANON_MAPS_MOVE	true
#endif
#endif
#ifndef ANON_MAPS_MOVE
#define ANON_MAPS_MOVE	false
#endif

int holdings_diff(const struct holdings *then, bool anon_ok, char *buf,
		  size_t len)
{
	static bool open_now[MAX_FDS];
	static char what_now[MAX_FDS][96];
	int n = 0;

	anon_ok |= ANON_MAPS_MOVE;

	read_fds(open_now, what_now);
	for (int fd = 0; fd < MAX_FDS; fd++) {
		if (open_now[fd] && !then->fd_open[fd]) {
			report_add(buf, len, "fd %d -> %s left open; ", fd,
				   what_now[fd]);
			n++;
		} else if (!open_now[fd] && then->fd_open[fd]) {
			report_add(buf, len, "fd %d (%s) closed under us; ",
				   fd, then->fd_what[fd]);
			n++;
		}
	}
	read_maps(then->scratch);
	n += maps_missing(then->scratch, then->maps, anon_ok, "new", buf, len);
	n += maps_missing(then->maps, then->scratch, anon_ok, "lost", buf,
			  len);
	return n;
}
