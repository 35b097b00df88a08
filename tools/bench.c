/* SPDX-License-Identifier: MIT */
/*
 * shmfd bench: libshmfd side by side with the baselines, in one run, with
 * the same message, the same method and the same pinning for every row
 * (shmfd(1)).  Absolute times on a shared VM are noise; the ratios
 * between rows of one run are what the targets are about.
 *
 * This file: the options, the scenarios in order, and the targets.
 */
#define _GNU_SOURCE
#include "tool.h"
#include "bench.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GAP_US		250	/* a wake-up is ~35 us here: reader asleep */
#define SMALL		64
#define ROUNDS		5	/* turns each latency row takes */

struct bench_opts bench_opt;

static const struct lat_xport *const wake_rows[] = {
	&bench_x_shmfd, &bench_x_pipe, &bench_x_unix, &bench_x_eventfd,
	&bench_x_mq, &bench_x_futex, &bench_x_spin,
};
static const struct lat_xport *const spin_rows[] = {
	&bench_x_shmfd, &bench_x_spin, &bench_x_futex,
};
static const struct lat_xport *const points_rows[] = {
	&bench_x_shmfd, &bench_x_pipe, &bench_x_unix, &bench_x_eventfd,
};
static const struct lat_xport *const fanout_rows[] = {
	&bench_x_shmfd, &bench_x_futex, &bench_x_pipe,
};

#define NROWS(a)	((int)(sizeof(a) / sizeof((a)[0])))

/* points: p50 from the start of the build to the reader's stamp. */
static void built_p50(struct bench_row *row, uint64_t *ns)
{
	struct bench_lat b;

	bench_lat_stats(ns, bench_opt.count, &b);
	row->built_p50 = b.p50;
}

/*
 * The rows take turns, a fifth of the messages each time, so that a
 * burst of load from elsewhere on the machine lands on every row alike
 * instead of on whichever row happened to run then.
 */
static void lat_rows(struct bench_scen *s, const struct lat_xport *const *x,
		     int n, int nreaders, unsigned int spin_us, bool points)
{
	int rounds = bench_opt.count >= 1000 ? ROUNDS : 1;
	uint64_t *samples[BENCH_MAX_ROWS], *built[BENCH_MAX_ROWS];
	struct bench_row *rows[BENCH_MAX_ROWS];
	size_t per_row = (points ? 2 : 1) * (size_t)bench_opt.count;
	long done = 0;

	for (int i = 0; i < n; i++) {
		rows[i] = bench_row_add(s, x[i]->name);
		rows[i]->avail = true;
		samples[i] = calloc(per_row, sizeof(uint64_t));
		if (!samples[i])
			bench_die("out of memory");
		built[i] = points ? samples[i] + bench_opt.count : NULL;
	}
	for (int k = 0; k < rounds; k++) {
		long chunk = bench_opt.count * (k + 1) / rounds - done;

		for (int i = 0; i < n; i++) {
			if (!rows[i]->avail)
				continue;
			bench_progress("%s %s (%d/%d, round %d/%d)", s->name,
				       x[i]->name, i + 1, n, k + 1, rounds);
			rows[i]->avail = bench_lat_run(x[i], rows[i],
						       samples[i] + done,
						       points ? built[i] + done
							      : NULL,
						       chunk, SMALL, nreaders,
						       spin_us, points);
		}
		done += chunk;
	}
	for (int i = 0; i < n; i++) {
		if (rows[i]->avail)
			bench_lat_stats(samples[i], bench_opt.count,
					&rows[i]->lat);
		if (rows[i]->avail && points)
			built_p50(rows[i], built[i]);
		free(samples[i]);
	}
}

/* shmfd's p50 over another row's, as a target line. */
static void p50_target(struct bench_scen *s, const char *what,
		       const struct bench_row *shm, const struct bench_row *ref,
		       double limit)
{
	bool known = shm && ref && shm->avail && ref->avail &&
		     ref->lat.p50 > 0;
	double v = known ? shm->lat.p50 / ref->lat.p50 : 0;

	bench_target(s, known, v <= limit, what, "%.2fx: %.2f us vs %.2f us",
		     v, known ? shm->lat.p50 : 0, known ? ref->lat.p50 : 0);
}

static struct bench_scen scens[] = {
	{ .name = "wake" },
	{ .name = "spin" },
	{ .name = "points" },
	{ .name = "throughput" },
	{ .name = "fanout" },
	{ .name = "blob" },
};

#define NSCENS	NROWS(scens)

static struct bench_scen *scen(const char *name)
{
	for (int i = 0; i < NSCENS; i++)
		if (!strcmp(scens[i].name, name))
			return &scens[i];
	return NULL;
}

/* shmfd's wake p50 if wake ran, for the scenarios compared with it. */
static const struct bench_row *wake_shmfd(void)
{
	struct bench_scen *w = scen("wake");

	return w->ran ? bench_row_find(w, "shmfd") : NULL;
}

void bench_wake(struct bench_scen *s)
{
	s->kind = BENCH_LAT;
	snprintf(s->title, sizeof(s->title), "%d-byte messages, the reader "
		 "asleep (%ld us apart), %ld per row, latency send -> recv "
		 "returned", SMALL, bench_opt.gap_us, bench_opt.count);
	lat_rows(s, wake_rows, NROWS(wake_rows), 1, 0, false);
	p50_target(s, "wake p50 <= 1.05x raw futex:", &s->rows[0],
		   bench_row_find(s, "futex"), 1.05);
}

void bench_spin(struct bench_scen *s)
{
	/* Spin through the whole gap and the ack's round trip: the reader
	 * should never reach its sleep. */
	unsigned int spin_us = (unsigned int)(bench_opt.gap_us + 2000);
	const struct bench_row *shm;

	s->kind = BENCH_LAT;
	snprintf(s->title, sizeof(s->title), "%d-byte messages, %ld us apart, "
		 "the shmfd reader spins %u us (shmfd_reader_set_spin), %ld "
		 "per row", SMALL, bench_opt.gap_us, spin_us, bench_opt.count);
	lat_rows(s, spin_rows, NROWS(spin_rows), 1, spin_us, false);
	shm = &s->rows[0];
	p50_target(s, "spin p50 <= 3.5x busy-spin:", shm,
		   bench_row_find(s, "spin"), 3.5);
	bench_target(s, shm->avail, shm->lat.p99 <= 5.0, "spin p99 <= 5 us:",
		     "%.2f us", shm->lat.p99);
}

/* The same messages timed from before the producer began to build
 * them: shmfd_reserve wakes a sleeping reader, so shmfd overlaps the
 * wake-up with the build, which the other transports cannot. */
static void built_line(struct bench_scen *s)
{
	char line[160];
	int len;

	len = snprintf(line, sizeof(line), "p50 from the start of the build "
		       "(us):");
	for (int i = 0; i < s->nrows && len < (int)sizeof(line); i++)
		if (s->rows[i].avail)
			len += snprintf(line + len, sizeof(line) - (size_t)len,
					" %s %.2f", s->rows[i].name,
					s->rows[i].built_p50);
	bench_note(s, "%s", line);
}

void bench_points(struct bench_scen *s)
{
	s->kind = BENCH_LAT;
	snprintf(s->title, sizeof(s->title), "10,000 (x, y) doubles (160,032 "
		 "bytes with the header), built in place where the transport "
		 "allows, checksummed by the reader, %ld per row",
		 bench_opt.count);
	lat_rows(s, points_rows, NROWS(points_rows), 1, 0, true);
	built_line(s);
	p50_target(s, "points p50 <= 1.3x wake p50:", &s->rows[0],
		   wake_shmfd(), 1.3);
	p50_target(s, "points p50 <= 0.7x unix socket:", &s->rows[0],
		   bench_row_find(s, "unix"), 0.7);
}

void bench_fanout(struct bench_scen *s)
{
	s->kind = BENCH_LAT;
	snprintf(s->title, sizeof(s->title), "%d-byte messages to %d readers "
		 "asleep, latency to the last of them, %ld per row", SMALL,
		 BENCH_MAX_READERS, bench_opt.count);
	lat_rows(s, fanout_rows, NROWS(fanout_rows), BENCH_MAX_READERS, 0,
		 false);
	p50_target(s, "fanout p50 <= 1.3x wake p50:", &s->rows[0],
		   wake_shmfd(), 1.3);
}

static void (*const runners[])(struct bench_scen *s) = {
	bench_wake, bench_spin, bench_points, bench_throughput,
	bench_fanout, bench_blob,
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: shmfd bench [SCENARIO...] [OPTIONS]\n"
		"\n"
		"Scenarios (default: all, in this order):\n"
		"  wake        64-byte messages to a sleeping reader, against pipe,\n"
		"              unix, eventfd, mq, futex and spin\n"
		"  spin        the same with a spinning reader, against spin, futex\n"
		"  points      160 KB built in place, against pipe, unix, eventfd\n"
		"  throughput  64-byte messages/s, against pipe, unix, mq\n"
		"  fanout      one producer, %d readers, against futex, pipe\n"
		"  blob        1 GiB blob handoff against a pipe\n"
		"\n"
		"Options:\n"
		"  -n, --count N      paced messages per latency row (default 5000;\n"
		"                     --quick: 300)\n"
		"  -s, --seconds S    throughput: seconds per row (default 2;\n"
		"                     --quick: 0.2)\n"
		"  -g, --gap US       pause before each paced message (default %d)\n"
		"  -b, --blob-mib M   blob size in MiB (default 1024; --quick: 64)\n"
		"  -q, --quick        a short run (well under 30 s in all)\n"
		"  -j, --json         one JSON document on stdout, no tables\n"
		"      --no-pin       do not pin producer and readers to two CPUs\n"
		"  -h, --help         this text\n",
		BENCH_MAX_READERS, GAP_US);
}

static bool parse_num(const char *s, double min, double max, double *v)
{
	char *end;

	errno = 0;
	*v = strtod(s, &end);
	return !errno && end != s && !*end && *v >= min && *v <= max;
}

/* 0: run; 1: --help printed; 2: usage error. */
static int parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "count", required_argument, NULL, 'n' },
		{ "seconds", required_argument, NULL, 's' },
		{ "gap", required_argument, NULL, 'g' },
		{ "blob-mib", required_argument, NULL, 'b' },
		{ "quick", no_argument, NULL, 'q' },
		{ "json", no_argument, NULL, 'j' },
		{ "no-pin", no_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	double count = 0, seconds = 0, gap = GAP_US, mib = 0;
	int c;

	bench_opt.pin = true;
	optind = 1;
	while ((c = getopt_long(argc, argv, "n:s:g:b:qjh", opts, NULL)) != -1) {
		bool ok = true;

		switch (c) {
		case 'n':
			ok = parse_num(optarg, 1, 1000000, &count) &&
			     count == (long)count;
			break;
		case 's':
			ok = parse_num(optarg, 0.01, 600, &seconds);
			break;
		case 'g':
			ok = parse_num(optarg, 0, 1000000, &gap) &&
			     gap == (long)gap;
			break;
		case 'b':
			ok = parse_num(optarg, 1, 1 << 20, &mib) &&
			     mib == (long)mib;
			break;
		case 'q':
			bench_opt.quick = true;
			break;
		case 'j':
			bench_opt.json = true;
			break;
		case 'P':
			bench_opt.pin = false;
			break;
		case 'h':
			usage(stdout);
			return 1;
		default:
			usage(stderr);
			return 2;
		}
		if (!ok) {
			tool_err("bench", "bad value for -%c: '%s'", c, optarg);
			return 2;
		}
	}
	bench_opt.count = count ? (long)count : bench_opt.quick ? 300 : 5000;
	bench_opt.seconds = seconds ? seconds : bench_opt.quick ? 0.2 : 2.0;
	bench_opt.gap_us = (long)gap;
	bench_opt.blob_mib = mib ? (size_t)mib : bench_opt.quick ? 64 : 1024;
	bench_opt.blob_rounds = 3;

	for (int i = optind; i < argc; i++) {
		struct bench_scen *s = scen(argv[i]);

		if (!s) {
			tool_err("bench", "unknown scenario '%s' (shmfd bench "
				 "--help lists them)", argv[i]);
			return 2;
		}
		s->ran = true;	/* selected; reset below until it runs */
	}
	if (optind == argc)
		for (int i = 0; i < NSCENS; i++)
			scens[i].ran = true;
	return 0;
}

int cmd_bench(int argc, char **argv)
{
	bool want[NSCENS];
	int ret;

	ret = parse_args(argc, argv);
	if (ret)
		return ret == 1 ? 0 : 2;
	/* A reader that dies is an EPIPE to handle, not our death. */
	signal(SIGPIPE, SIG_IGN);
	bench_pick_cpus();
	bench_pin(bench_opt.cpus[0]);

	if (!bench_opt.json) {
		printf("shmfd bench: libshmfd %s, ", shmfd_version());
		if (bench_opt.cpus[0] >= 0)
			printf("producer on CPU %d, readers on CPU %d",
			       bench_opt.cpus[0], bench_opt.cpus[1]);
		else
			printf("not pinned%s", bench_opt.pin ?
			       " (fewer than two CPUs)" : " (--no-pin)");
		printf("%s\n\n", bench_opt.quick ? ", --quick" : "");
		fflush(stdout);
	}
	for (int i = 0; i < NSCENS; i++) {
		want[i] = scens[i].ran;
		scens[i].ran = false;
	}
	for (int i = 0; i < NSCENS; i++) {
		if (!want[i])
			continue;
		runners[i](&scens[i]);
		scens[i].ran = true;
		bench_progress_clear();
		if (!bench_opt.json)
			bench_print_table(&scens[i]);
	}
	bench_progress_clear();
	if (bench_opt.json)
		bench_print_json(scens, NSCENS);
	return 0;
}
