/* SPDX-License-Identifier: MIT */
/*
 * shmfd bench: percentiles, and the two ways out: a table per scenario
 * for people, one JSON document for machines.  The first row of every
 * scenario is libshmfd's; each baseline is compared with it.
 */
#include "tool.h"
#include "bench.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* Nearest rank: the smallest sample with at least p/1000 of them at or
 * below it.  Per mille, so p99.9 is exact. */
static double pct_us(const uint64_t *sorted, long n, long permille)
{
	long rank = (n * permille + 999) / 1000;

	return (double)sorted[rank > 0 ? rank - 1 : 0] / 1000.0;
}

void bench_lat_stats(uint64_t *ns, long n, struct bench_lat *s)
{
	qsort(ns, (size_t)n, sizeof(*ns), cmp_u64);
	s->n = n;
	s->p50 = pct_us(ns, n, 500);
	s->p99 = pct_us(ns, n, 990);
	s->p999 = pct_us(ns, n, 999);
	s->max = (double)ns[n - 1] / 1000.0;
}

struct bench_row *bench_row_add(struct bench_scen *s, const char *name)
{
	struct bench_row *r;

	if (s->nrows == BENCH_MAX_ROWS)
		bench_die("too many rows in %s", s->name);
	r = &s->rows[s->nrows++];
	memset(r, 0, sizeof(*r));
	snprintf(r->name, sizeof(r->name), "%s", name);
	return r;
}

struct bench_row *bench_row_find(struct bench_scen *s, const char *name)
{
	for (int i = 0; i < s->nrows; i++)
		if (!strcmp(s->rows[i].name, name))
			return &s->rows[i];
	return NULL;
}

void bench_note(struct bench_scen *s, const char *fmt, ...)
{
	va_list ap;

	if (s->nnotes == BENCH_MAX_NOTES)
		return;
	va_start(ap, fmt);
	vsnprintf(s->notes[s->nnotes++], sizeof(s->notes[0]), fmt, ap);
	va_end(ap);
}

void bench_target(struct bench_scen *s, bool known, bool met,
		  const char *what, const char *fmt, ...)
{
	struct bench_target *t;
	va_list ap;

	if (s->ntargets == BENCH_MAX_TARGETS)
		bench_die("too many targets in %s", s->name);
	t = &s->targets[s->ntargets++];
	t->known = known;
	t->met = known && met;
	snprintf(t->what, sizeof(t->what), "%s", what);
	va_start(ap, fmt);
	vsnprintf(t->value, sizeof(t->value), fmt, ap);
	va_end(ap);
}

/* Baseline over shmfd for latencies and times (above 1: shmfd is
 * faster), shmfd over baseline for rates; 0 when it cannot be said. */
static double ratio(double num, double den)
{
	return den > 0 && isfinite(num / den) ? num / den : 0.0;
}

/* Two decimals, or three significant digits for the tiny ratios that
 * busy-spin gets against a wake-up. */
static const char *ratio_str(double v, char *buf, size_t size)
{
	snprintf(buf, size, v >= 0.1 || v == 0 ? "%.2f" : "%.3g", v);
	return buf;
}

static void print_lat(const struct bench_scen *s)
{
	const struct bench_row *ref = &s->rows[0];

	printf("  %-10s %7s %9s %9s %9s %9s %9s %9s\n", "us", "n", "p50",
	       "p99", "p99.9", "max", "p50 x", "p99 x");
	for (int i = 0; i < s->nrows; i++) {
		const struct bench_row *r = &s->rows[i];

		if (!r->avail) {
			printf("  %-10s unavailable: %s\n", r->name, r->note);
			continue;
		}
		printf("  %-10s %7ld %9.2f %9.2f %9.2f %9.2f", r->name,
		       r->lat.n, r->lat.p50, r->lat.p99, r->lat.p999,
		       r->lat.max);
		if (ref->avail) {
			char a[32], b[32];

			printf(" %9s %9s",
			       ratio_str(ratio(r->lat.p50, ref->lat.p50), a,
					 sizeof(a)),
			       ratio_str(ratio(r->lat.p99, ref->lat.p99), b,
					 sizeof(b)));
		}
		if (r->note[0])
			printf("  %s", r->note);
		printf("\n");
	}
	printf("  (x = the row's time / shmfd's: above 1, shmfd is faster)\n");
}

static void print_rate(const struct bench_scen *s)
{
	const struct bench_row *ref = &s->rows[0];

	printf("  %-10s %14s %12s\n", "", "msgs/s", "shmfd x");
	for (int i = 0; i < s->nrows; i++) {
		const struct bench_row *r = &s->rows[i];

		if (!r->avail) {
			printf("  %-10s unavailable: %s\n", r->name, r->note);
			continue;
		}
		printf("  %-10s %14.0f", r->name, r->rate);
		if (ref->avail)
			printf(" %12.2f", ratio(ref->rate, r->rate));
		if (r->note[0])
			printf("  %s", r->note);
		printf("\n");
	}
	printf("  (x = shmfd's rate / the row's: above 1, shmfd is faster)\n");
}

static void print_ms(const struct bench_scen *s)
{
	printf("  %-26s %10s %10s %10s\n", "ms", "median", "min", "max");
	for (int i = 0; i < s->nrows; i++) {
		const struct bench_row *r = &s->rows[i];

		if (!r->avail) {
			printf("  %-26s unavailable: %s\n", r->name, r->note);
			continue;
		}
		printf("  %-26s %10.3f %10.3f %10.3f", r->name, r->ms[0],
		       r->ms[1], r->ms[2]);
		if (r->note[0])
			printf("  %s", r->note);
		printf("\n");
	}
}

void bench_print_table(const struct bench_scen *s)
{
	printf("%s: %s\n", s->name, s->title);
	if (!s->skipped) {
		switch (s->kind) {
		case BENCH_LAT:
			print_lat(s);
			break;
		case BENCH_RATE:
			print_rate(s);
			break;
		case BENCH_MS:
			print_ms(s);
			break;
		}
	}
	for (int i = 0; i < s->nnotes; i++)
		printf("  %s\n", s->notes[i]);
	for (int i = 0; i < s->ntargets; i++) {
		const struct bench_target *t = &s->targets[i];

		printf("  target: %s %s (%s)\n", t->what,
		       !t->known ? "not measured" : t->met ? "met" : "MISSED",
		       t->value);
	}
	printf("\n");
	fflush(stdout);
}

/* ---- JSON ---- */

static void json_str(const char *str)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)str; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

static void json_num(const char *key, double v)
{
	printf("\"%s\": ", key);
	if (isfinite(v))
		printf("%.6g", v);
	else
		printf("null");
}

static void json_row(const struct bench_scen *s, const struct bench_row *r)
{
	const struct bench_row *ref = &s->rows[0];

	printf("{\"name\": ");
	json_str(r->name);
	printf(", \"available\": %s", r->avail ? "true" : "false");
	if (r->note[0]) {
		printf(", \"note\": ");
		json_str(r->note);
	}
	if (!r->avail) {
		printf("}");
		return;
	}
	switch (s->kind) {
	case BENCH_LAT:
		printf(", \"n\": %ld, ", r->lat.n);
		json_num("p50_us", r->lat.p50);
		printf(", ");
		json_num("p99_us", r->lat.p99);
		printf(", ");
		json_num("p999_us", r->lat.p999);
		printf(", ");
		json_num("max_us", r->lat.max);
		if (r->built_p50 > 0) {
			printf(", ");
			json_num("built_p50_us", r->built_p50);
		}
		if (ref->avail) {
			printf(", ");
			json_num("ratio_p50", ratio(r->lat.p50, ref->lat.p50));
			printf(", ");
			json_num("ratio_p99", ratio(r->lat.p99, ref->lat.p99));
		}
		break;
	case BENCH_RATE:
		printf(", ");
		json_num("msgs_per_s", r->rate);
		if (ref->avail) {
			printf(", ");
			json_num("shmfd_ratio", ratio(ref->rate, r->rate));
		}
		break;
	case BENCH_MS:
		printf(", ");
		json_num("median_ms", r->ms[0]);
		printf(", ");
		json_num("min_ms", r->ms[1]);
		printf(", ");
		json_num("max_ms", r->ms[2]);
		break;
	}
	printf("}");
}

static void json_scen(const struct bench_scen *s)
{
	static const char *const kinds[] = {
		[BENCH_LAT] = "latency",
		[BENCH_RATE] = "throughput",
		[BENCH_MS] = "time",
	};

	printf("    {\"name\": ");
	json_str(s->name);
	printf(", \"kind\": \"%s\", \"title\": ", kinds[s->kind]);
	json_str(s->title);
	printf(", \"skipped\": %s,\n     \"rows\": [",
	       s->skipped ? "true" : "false");
	for (int i = 0; i < s->nrows; i++) {
		printf("%s\n       ", i ? "," : "");
		json_row(s, &s->rows[i]);
	}
	printf("],\n     \"targets\": [");
	for (int i = 0; i < s->ntargets; i++) {
		const struct bench_target *t = &s->targets[i];

		printf("%s\n       {\"what\": ", i ? "," : "");
		json_str(t->what);
		printf(", \"measured\": %s, \"met\": %s, \"value\": ",
		       t->known ? "true" : "false", t->met ? "true" : "false");
		json_str(t->value);
		printf("}");
	}
	printf("],\n     \"notes\": [");
	for (int i = 0; i < s->nnotes; i++) {
		printf("%s", i ? ", " : "");
		json_str(s->notes[i]);
	}
	printf("]}");
}

void bench_print_json(const struct bench_scen *scens, int n)
{
	int first = 1;

	printf("{\n  \"tool\": \"shmfd bench\",\n  \"version\": ");
	json_str(shmfd_version());
	printf(",\n  \"quick\": %s,\n  \"count\": %ld,\n  ",
	       bench_opt.quick ? "true" : "false", bench_opt.count);
	json_num("seconds", bench_opt.seconds);
	printf(",\n  \"gap_us\": %ld,\n  \"cpus\": ", bench_opt.gap_us);
	if (bench_opt.cpus[0] >= 0)
		printf("{\"producer\": %d, \"readers\": %d}",
		       bench_opt.cpus[0], bench_opt.cpus[1]);
	else
		printf("null");
	printf(",\n  \"scenarios\": [");
	for (int i = 0; i < n; i++) {
		if (!scens[i].ran)
			continue;
		printf("%s\n", first ? "" : ",");
		json_scen(&scens[i]);
		first = 0;
	}
	printf("\n  ]\n}\n");
	fflush(stdout);
}
