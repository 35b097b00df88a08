/* SPDX-License-Identifier: MIT */
/*
 * shmfd list, shmfd stat: what runs, seen from outside.  Both read a
 * channel's figures with shmfd_chan_stat(), which the producer's admission
 * thread answers without the sender taking part: watching a channel does
 * not slow it, and does not count as a reader.
 */
#define _GNU_SOURCE
#include "tool.h"

#include <shmfd.h>

#include <dirent.h>
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

#define STAT_TIMEOUT_MS	2000	/* an admission thread answers in ~ms */

/* "4 MiB", "64 KiB", "1000 B": sizes as people write them. */
static const char *human(uint64_t v, char *buf, size_t len)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	unsigned int u = 0;

	while (u < 4 && v >= 1024 && v % 1024 == 0) {
		v /= 1024;
		u++;
	}
	snprintf(buf, len, "%" PRIu64 " %s", v, unit[u]);
	return buf;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The sockets in dir, sorted; *np entries.  NULL and -errno on failure,
 * an empty list if the directory does not exist. */
static char **socket_names(const char *dir, size_t *np, int *err)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **v = NULL;
	size_t n = 0, cap = 0;

	*np = 0;
	*err = 0;
	if (!d) {
		if (errno != ENOENT)
			*err = -errno;
		return NULL;
	}
	while ((e = readdir(d))) {
		struct stat st;

		if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISSOCK(st.st_mode))
			continue;
		if (n == cap) {
			char **nv = realloc(v, (cap = cap ? cap * 2 : 16) *
					    sizeof(*v));

			if (!nv)
				goto oom;
			v = nv;
		}
		v[n] = strdup(e->d_name);
		if (!v[n])
			goto oom;
		n++;
	}
	closedir(d);
	if (n)
		qsort(v, n, sizeof(*v), cmp_names);
	*np = n;
	return v;
oom:
	closedir(d);
	while (n)
		free(v[--n]);
	free(v);
	*err = -ENOMEM;
	return NULL;
}

static void list_usage(FILE *f)
{
	fprintf(f,
		"usage: shmfd list\n"
		"The named channels of this user (the directory shmfd_dir(3) "
		"names):\nproducer pid, type (reliable or lossy), ring size, "
		"readers joined,\nmessages published, and messages readers "
		"were told they lost (a lossy\nring overrunning them, "
		"cat --latest skipping).  A socket whose producer\nis gone "
		"shows as stale (the next producer of that name replaces "
		"it).\n");
}

int cmd_list(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	char dir[256], ring[32];
	char **names;
	size_t n;
	int opt, ret;

	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (opt == 'h') {
			list_usage(stdout);
			return 0;
		}
		list_usage(stderr);
		return 2;
	}
	if (optind < argc) {
		list_usage(stderr);
		return 2;
	}
	ret = shmfd_dir(dir, sizeof(dir));
	if (ret < 0) {
		tool_err("list", "channel directory: %s", strerror(-ret));
		return 1;
	}
	names = socket_names(dir, &n, &ret);
	if (ret < 0) {
		tool_err("list", "%s: %s", dir, strerror(-ret));
		return 1;
	}
	printf("%-20s %8s %-8s %9s %7s %12s %10s\n", "NAME", "PID", "TYPE",
	       "RING", "READERS", "PUBLISHED", "LOST");
	for (size_t i = 0; i < n; i++) {
		struct shmfd_stat st;

		ret = shmfd_chan_stat(names[i], &st, STAT_TIMEOUT_MS);
		if (ret == 0) {
			printf("%-20s %8d %-8s %9s %7" PRIu32 " %12" PRIu64
			       " %10" PRIu64 "\n", names[i],
			       (int)st.producer_pid,
			       st.flags & SHMFD_LOSSY ? "lossy" : "reliable",
			       human(st.ring_size, ring, sizeof(ring)),
			       st.readers, st.published, st.lost);
		} else if (ret == -ENOENT) {
			printf("%-20s %8s %s\n", names[i], "-",
			       "stale: its producer is gone");
		} else {
			printf("%-20s %8s unavailable: %s\n", names[i], "-",
			       ret == -EACCES ? "permission denied" :
			       strerror(-ret));
		}
		free(names[i]);
	}
	free(names);
	return 0;
}

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void stat_usage(FILE *f)
{
	fprintf(f,
		"usage: shmfd stat NAME [--watch] [--interval SECONDS]\n"
		"One channel in detail.  --watch prints a line every "
		"interval (default 1 s)\nwith the readers joined and the "
		"messages published and lost per second,\nuntil interrupted "
		"or the producer goes away.\n");
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void print_stat(const char *name, const struct shmfd_stat *st)
{
	char dir[256], ring[32], inl[32];

	if (shmfd_dir(dir, sizeof(dir)) < 0)
		snprintf(dir, sizeof(dir), "?");
	printf("channel    %s (%s/%s)\n", name, dir, name);
	printf("producer   pid %d\n", (int)st->producer_pid);
	printf("mode       %s\n", st->flags & SHMFD_LOSSY ?
	       "lossy (the producer never waits)" :
	       "reliable (the producer waits for readers)");
	printf("ring       %s, messages up to %s inline, larger ones as "
	       "blobs\n", human(st->ring_size, ring, sizeof(ring)),
	       human(st->max_inline, inl, sizeof(inl)));
	printf("readers    %" PRIu32 " joined (at most %" PRIu32 "), %"
	       PRIu64 " joined since it started\n", st->readers,
	       st->max_readers, st->joins);
	printf("published  %" PRIu64 " messages\n", st->published);
	printf("lost       %" PRIu64 " messages, summed over readers\n",
	       st->lost);
}

static int watch(const char *name, struct shmfd_stat prev, double interval)
{
	double t_prev = now_s(), t0 = t_prev;
	struct timespec ts = {
		.tv_sec = (time_t)interval,
		.tv_nsec = (long)((interval - (double)(time_t)interval) * 1e9),
	};
	struct sigaction sa = { .sa_handler = on_signal };
	int rows = 0;

	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	while (!stop) {
		struct shmfd_stat st;
		double t, dt;
		int ret;

		if (rows++ % 20 == 0)
			printf("%8s %7s %14s %12s %12s %10s\n", "TIME", "READERS",
			       "PUBLISHED", "MSGS/S", "LOST", "LOST/S");
		nanosleep(&ts, NULL);
		if (stop)
			break;
		ret = shmfd_chan_stat(name, &st, STAT_TIMEOUT_MS);
		if (ret == -ENOENT || ret == -EPIPE) {
			printf("the producer of '%s' is gone\n", name);
			return 0;
		}
		if (ret < 0) {
			tool_chan_err("stat", name, ret);
			return 1;
		}
		t = now_s();
		dt = t - t_prev;
		/* Another producer may have taken the name meanwhile: its
		 * counts start again, and a rate below zero means nothing. */
		printf("%8.1f %7" PRIu32 " %14" PRIu64 " %12.0f %12" PRIu64
		       " %10.0f\n", t - t0, st.readers, st.published,
		       st.published >= prev.published ?
		       (double)(st.published - prev.published) / dt : 0.0,
		       st.lost, st.lost >= prev.lost ?
		       (double)(st.lost - prev.lost) / dt : 0.0);
		fflush(stdout);
		prev = st;
		t_prev = t;
	}
	return 0;
}

int cmd_stat(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "watch", no_argument, NULL, 'w' },
		{ "interval", required_argument, NULL, 'i' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct shmfd_stat st;
	double interval = 1.0;
	bool do_watch = false;
	char *end;
	int opt, ret;

	while ((opt = getopt_long(argc, argv, "wi:h", opts, NULL)) != -1) {
		switch (opt) {
		case 'w':
			do_watch = true;
			break;
		case 'i':
			interval = strtod(optarg, &end);
			if (*end || !(interval >= 0.01 && interval <= 3600)) {
				tool_err("stat", "--interval: '%s' is not a "
					 "number of seconds from 0.01 to 3600",
					 optarg);
				return 2;
			}
			break;
		case 'h':
			stat_usage(stdout);
			return 0;
		default:
			stat_usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		stat_usage(stderr);
		return 2;
	}
	if (interval != 1.0 && !do_watch) {
		tool_err("stat", "--interval needs --watch");
		return 2;
	}
	ret = shmfd_chan_stat(argv[optind], &st, STAT_TIMEOUT_MS);
	if (ret < 0) {
		tool_chan_err("stat", argv[optind], ret);
		return 1;
	}
	print_stat(argv[optind], &st);
	if (!do_watch)
		return 0;
	printf("\n");
	return watch(argv[optind], st, interval);
}
