/* SPDX-License-Identifier: MIT */
/*
 * shmfd-stress: fault injection and load (make check-stress).
 *
 *   shmfd-stress [--seed N] [--runs N] [--load N] [--only SCENARIO[:RUN]]
 *                [--verbose]
 *
 * The same settings come from the environment: SHMFD_STRESS_SEED,
 * SHMFD_STRESS_RUNS, SHMFD_STRESS_LOAD, SHMFD_STRESS_ONLY.  Without a seed
 * one is drawn and printed; with the same seed every run makes the same
 * choices (the kernel's scheduling is the only thing not replayed).
 * Exit status: 0 when every run passed, 1 when one failed, 2 on a usage
 * or set-up error.
 */
#define _GNU_SOURCE
#include "stress.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/io_uring.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

static const char *only_scenario;
static uint64_t master_seed;

uint64_t run_seed(uint64_t master, const char *scenario, unsigned int run)
{
	uint64_t h = master;

	for (const char *c = scenario; *c; c++)
		h = mix64(h ^ (uint8_t)*c);
	return mix64(h ^ ((uint64_t)run << 32 | run));
}

void ctl_reset(uint64_t seed)
{
	memset(ctl, 0, sizeof(*ctl));
	ctl->run_seed = seed;
}

void run_failed(struct summary *s, unsigned int run, uint64_t seed,
		const char *fmt, ...)
{
	va_list ap;

	s->failures++;
	printf("FAIL %s run %u (run seed %#llx): ", s->name, run,
	       (unsigned long long)seed);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n  replay: SHMFD_STRESS_SEED=%#llx SHMFD_STRESS_ONLY=%s:%u"
	       "%s tests/stress/shmfd-stress\n",
	       (unsigned long long)master_seed, s->name, run,
	       getenv("SHMFD_NO_IO_URING") ?
	       " SHMFD_NO_IO_URING=1 SHMFD_NO_MEMBARRIER=1" : "");
	fflush(stdout);
}

static uint64_t parse_u64(const char *what, const char *v)
{
	char *end;
	uint64_t n;

	errno = 0;
	n = strtoull(v, &end, 0);
	if (errno || !*v || *end) {
		fprintf(stderr, "shmfd-stress: bad %s '%s'\n", what, v);
		exit(2);
	}
	return n;
}

static void usage(void)
{
	fprintf(stderr, "usage: shmfd-stress [--seed N] [--runs N] "
		"[--load N] [--only SCENARIO[:RUN]] [--verbose]\n"
		"scenarios: exhaustion producer-kill reader-kill "
		"load-reliable load-lossy\n");
	exit(2);
}

static void parse_only(struct options *o, const char *v)
{
	static char buf[64];
	char *colon;

	snprintf(buf, sizeof(buf), "%s", v);
	colon = strchr(buf, ':');
	if (colon) {
		*colon = '\0';
		o->only_run = (int)parse_u64("run", colon + 1);
	}
	only_scenario = buf;
}

static bool wanted(const char *name)
{
	return !only_scenario || strcmp(only_scenario, name) == 0;
}

/* Named channels of producers we killed leave their sockets behind. */
static void clean_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.')
			unlinkat(dirfd(d), e->d_name, 0);
	if (d)
		closedir(d);
	rmdir(dir);
}

/* What the library will use, as far as a test can tell from outside. */
static const char *path_name(void)
{
	const char *v = getenv("SHMFD_NO_IO_URING");
	struct io_uring_params p;
	long fd;

	if (v && *v && strcmp(v, "0") != 0)
		return "sendmsg/futex fallback (SHMFD_NO_IO_URING=1)";
	memset(&p, 0, sizeof(p));
	fd = syscall(__NR_io_uring_setup, 1, &p);
	if (fd < 0)
		return "sendmsg/futex fallback (io_uring unavailable)";
	close((int)fd);
	return "io_uring";
}

/*
 * The checks must be able to fail: a leaked fd and mapping are seen, a
 * message with one byte changed (or another message's bytes) is not
 * taken for intact.
 */
static void self_check(void)
{
	struct holdings *h = holdings_new();
	char what[ERR_LEN] = "";
	uint8_t buf[256];
	void *map;
	int fd;

	if (!h)
		goto fail;
	holdings_take(h);
	fd = memfd_create("stress-self-check", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, 4096) < 0)
		goto fail;
	map = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		goto fail;
	if (holdings_diff(h, false, what, sizeof(what)) != 2 ||
	    !strstr(what, "stress-self-check"))
		goto fail;
	munmap(map, 4096);
	close(fd);
	what[0] = '\0';
	if (holdings_diff(h, false, what, sizeof(what)) != 0)
		goto fail;
	holdings_free(h);

	for (size_t len = 0; len <= sizeof(buf); len += 37) {
		payload_fill(buf, len, 42, 7);
		if (payload_check(buf, len, 42, 7) ||
		    (len && !payload_check(buf, len, 42, 8)))
			goto fail;
		if (len) {
			buf[len / 2] ^= 1;
			if (!payload_check(buf, len, 42, 7))
				goto fail;
		}
	}
	return;
fail:
	fprintf(stderr, "shmfd-stress: self-check failed: the leak or payload "
		"check cannot see what it must (%s)\n", what);
	exit(2);
}

static void fmt_ms(char *buf, size_t len, uint64_t ns)
{
	if (ns == UINT64_MAX)
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.1f ms", ns / 1e6);
}

static void print_table(struct summary *s, int n)
{
	printf("\n%-14s %5s %7s %9s %12s %12s  %s\n", "scenario", "runs",
	       "faults", "failures", "max wake-up", "max -EPIPE", "notes");
	for (int i = 0; i < n; i++) {
		char w[32], e[32];

		if (!s[i].runs)
			continue;
		fmt_ms(w, sizeof(w), s[i].max_wake_ns);
		fmt_ms(e, sizeof(e), s[i].max_epipe_ns);
		printf("%-14s %5u %7u %9u %12s %12s  %s\n", s[i].name,
		       s[i].runs, s[i].faults, s[i].failures, w, e,
		       s[i].notes);
	}
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "seed", required_argument, NULL, 's' },
		{ "runs", required_argument, NULL, 'r' },
		{ "load", required_argument, NULL, 'l' },
		{ "only", required_argument, NULL, 'o' },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 },
	};
	struct options o = {
		.runs = 200,
		.load_msgs = 10000000,
		.only_run = -1,
	};
	struct summary s[] = {
		{ .name = "exhaustion" },
		{ .name = "producer-kill" },
		{ .name = "reader-kill" },
		{ .name = "load-reliable" },
		{ .name = "load-lossy" },
	};
	char dir[] = "/tmp/shmfd-stress.XXXXXX";
	struct utsname u;
	const char *v;
	uint64_t t0, secs;
	unsigned int failures = 0;
	int c;

	if ((v = getenv("SHMFD_STRESS_SEED")) && *v)
		o.seed = parse_u64("SHMFD_STRESS_SEED", v);
	else if (getrandom(&o.seed, sizeof(o.seed), 0) != sizeof(o.seed))
		o.seed = mix64(now_ns() ^ (uint64_t)getpid());
	if ((v = getenv("SHMFD_STRESS_RUNS")) && *v)
		o.runs = (unsigned int)parse_u64("SHMFD_STRESS_RUNS", v);
	if ((v = getenv("SHMFD_STRESS_LOAD")) && *v)
		o.load_msgs = parse_u64("SHMFD_STRESS_LOAD", v);
	if ((v = getenv("SHMFD_STRESS_ONLY")) && *v)
		parse_only(&o, v);
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			o.seed = parse_u64("seed", optarg);
			break;
		case 'r':
			o.runs = (unsigned int)parse_u64("runs", optarg);
			break;
		case 'l':
			o.load_msgs = parse_u64("load", optarg);
			break;
		case 'o':
			parse_only(&o, optarg);
			break;
		case 'v':
			o.verbose = true;
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	master_seed = o.seed;

	ctl = mmap(NULL, sizeof(*ctl), PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (ctl == MAP_FAILED) {
		perror("shmfd-stress: mmap");
		return 2;
	}
	/* Readers forked by a producer we kill become ours to reap. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	signal(SIGPIPE, SIG_IGN);
	if (!mkdtemp(dir)) {
		perror("shmfd-stress: mkdtemp");
		return 2;
	}
	setenv("SHMFD_DIR", dir, 1);
	o.dir = dir;
	uname(&u);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("shmfd-stress: seed %#llx (SHMFD_STRESS_SEED to replay), "
	       "%u runs per kill scenario, %llu messages per load mode\n",
	       (unsigned long long)o.seed, o.runs,
	       (unsigned long long)o.load_msgs);
	printf("shmfd-stress: %s, membarrier %s, kernel %s, %ld CPUs\n",
	       path_name(), getenv("SHMFD_NO_MEMBARRIER") ? "off" : "on",
	       u.release, sysconf(_SC_NPROCESSORS_ONLN));

	self_check();
	t0 = now_ns();
	for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++) {
		uint64_t t = now_ns();

		s[i].max_wake_ns = s[i].max_epipe_ns = UINT64_MAX;
		if (!wanted(s[i].name))
			continue;
		switch (i) {
		case 0:
			scenario_exhaust(&o, &s[i]);
			break;
		case 1:
			scenario_kill_producer(&o, &s[i]);
			break;
		case 2:
			scenario_kill_reader(&o, &s[i]);
			break;
		case 3:
			scenario_load(&o, &s[i], false);
			break;
		case 4:
			scenario_load(&o, &s[i], true);
			break;
		}
		printf("shmfd-stress: %s: %u runs, %u failed, %.1f s\n",
		       s[i].name, s[i].runs, s[i].failures,
		       (now_ns() - t) / 1e9);
		failures += s[i].failures;
	}
	secs = (now_ns() - t0) / 1000000000ull;
	clean_dir(dir);

	print_table(s, (int)(sizeof(s) / sizeof(s[0])));
	printf("\nshmfd-stress: %s; seed %#llx; %s; %llu min %llu s\n",
	       failures ? "FAILED" : "all passed",
	       (unsigned long long)o.seed, path_name(),
	       (unsigned long long)secs / 60, (unsigned long long)secs % 60);
	return failures ? 1 : 0;
}
