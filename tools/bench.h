/* SPDX-License-Identifier: MIT */
/*
 * shmfd bench, shared between its files:
 *
 *   bench.c          options, the scenarios in order, the targets
 *   bench-harness.c  processes, pinning, clocks, acks, progress, errors
 *   bench-out.c      percentiles, the tables and the JSON document
 *   bench-lat.c      the paced latency engine and its libshmfd transport
 *   bench-base.c     the baselines' transports (pipe, socket, eventfd...)
 *   bench-tput.c     throughput
 *   bench-blob.c     one big message as a blob against a pipe
 *
 * The producer is the shmfd process itself; every reader is a forked
 * child.  A child that fails says why on one line and exits 1; the
 * producer then kills and reaps the others and exits 1 without adding a
 * second line.
 */
#ifndef SHMFD_BENCH_H
#define SHMFD_BENCH_H

#include <shmfd.h>

#include <mqueue.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BENCH_TIMEOUT_MS	10000	/* no step of a healthy run comes near */
#define BENCH_MAX_READERS	4
#define BENCH_MAX_ROWS		8
#define BENCH_MAX_TARGETS	3
#define BENCH_MAX_NOTES		4

struct bench_opts {
	long count;		/* paced messages per latency row */
	double seconds;		/* throughput: per row */
	long gap_us;		/* pause before each paced message */
	size_t blob_mib;	/* blob scenario: message size */
	int blob_rounds;
	bool quick;
	bool json;
	bool pin;
	int cpus[2];		/* producer, readers; -1: not pinned */
};

extern struct bench_opts bench_opt;

/* ---- bench-harness.c ---- */

uint64_t bench_now_ns(void);
void bench_pause_us(long us);
void bench_pin(int cpu);
void bench_pick_cpus(void);
/* Shared anonymous memory that readers write results into. */
void *bench_shm(size_t size);
void bench_unshm(void *p, size_t size);

/* Fork a reader: pinned to the readers' CPU, runs fn, exits 0. */
pid_t bench_fork(void (*fn)(void *arg, int idx), void *arg, int idx);
/* Wait for every reader; any failure ends the run (exit 1). */
void bench_reap(void);

/* Producer: kill and reap every reader, one line, exit 1. */
void bench_die(const char *fmt, ...)
	__attribute__((noreturn, format(printf, 1, 2)));
/* Reader: one line, exit 1. */
void bench_child_die(const char *fmt, ...)
	__attribute__((noreturn, format(printf, 1, 2)));

/* Readers tell the producer "joined" and "handled it" with a byte. */
struct bench_ack {
	int rd, wr;
};
void bench_ack_open(struct bench_ack *a);
void bench_ack_close(struct bench_ack *a);
void bench_ack_send(const struct bench_ack *a);
void bench_ack_wait(const struct bench_ack *a, int n);

void bench_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void bench_progress_clear(void);

void bench_write_all(int fd, const void *buf, size_t len, const char *what);
void bench_read_all(int fd, void *buf, size_t len, const char *what);

/* ---- bench-out.c ---- */

enum bench_kind {
	BENCH_LAT,		/* one-way latency percentiles, us */
	BENCH_RATE,		/* messages per second */
	BENCH_MS,		/* median/min/max of a few rounds, ms */
};

struct bench_lat {
	long n;
	double p50, p99, p999, max;	/* microseconds */
};

struct bench_row {
	char name[32];
	char note[96];		/* why unavailable, or a detail */
	bool avail;
	struct bench_lat lat;	/* BENCH_LAT */
	double built_p50;	/* points: p50 from the start of the build */
	double rate;		/* BENCH_RATE */
	double ms[3];		/* BENCH_MS: median, min, max */
};

struct bench_target {
	char what[96];
	bool known;		/* false: a row it needs did not run */
	bool met;
	char value[64];
};

struct bench_scen {
	const char *name;
	char title[160];
	enum bench_kind kind;
	bool ran;
	bool skipped;		/* the note says why */
	struct bench_row rows[BENCH_MAX_ROWS];
	int nrows;
	struct bench_target targets[BENCH_MAX_TARGETS];
	int ntargets;
	char notes[BENCH_MAX_NOTES][160];
	int nnotes;
};

/* Sorts ns in place. */
void bench_lat_stats(uint64_t *ns, long n, struct bench_lat *s);
struct bench_row *bench_row_add(struct bench_scen *s, const char *name);
struct bench_row *bench_row_find(struct bench_scen *s, const char *name);
void bench_note(struct bench_scen *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void bench_target(struct bench_scen *s, bool known, bool met,
		  const char *what, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
void bench_print_table(const struct bench_scen *s);
void bench_print_json(const struct bench_scen *scens, int n);

/* ---- the scenarios ---- */

void bench_wake(struct bench_scen *s);
void bench_spin(struct bench_scen *s);
void bench_points(struct bench_scen *s);
void bench_fanout(struct bench_scen *s);
void bench_throughput(struct bench_scen *s);
void bench_blob(struct bench_scen *s);

/* ---- bench-lat.c: the paced latency engine ---- */

/* Every paced message starts with this header. */
struct bench_msg {
	uint64_t seq;		/* 1, 2, 3 ... */
	uint64_t sent_ns;	/* CLOCK_MONOTONIC just before the send */
	uint64_t sum;		/* points: checksum of the payload */
	uint64_t built_ns;	/* CLOCK_MONOTONIC before the build began */
};

struct lat_ctx;

/*
 * One way of carrying a paced message.  setup runs in the producer before
 * the readers fork: 0, or 1 when the row cannot run here (c->note says
 * why).  join, recv and release run in each reader; buf and send in the
 * producer; teardown in the producer once the readers are gone.
 */
struct lat_xport {
	const char *name;
	int (*setup)(struct lat_ctx *c);
	void (*join)(struct lat_ctx *c, int rd);
	const struct bench_msg *(*recv)(struct lat_ctx *c, int rd);
	void (*release)(struct lat_ctx *c, int rd);
	struct bench_msg *(*buf)(struct lat_ctx *c);
	void (*send)(struct lat_ctx *c);
	void (*finish)(struct lat_ctx *c);	/* producer, after the last */
	void (*teardown)(struct lat_ctx *c);
};

struct lat_ctx {
	const struct lat_xport *x;
	size_t len;		/* message bytes, header included */
	int nreaders;
	long count;
	bool inplace;		/* shmfd: build in the ring (reserve/commit) */
	bool check;		/* reader checksums the payload before its stamp */
	unsigned int spin_us;	/* shmfd reader spin */
	char note[96];
	struct bench_ack ack;
	uint64_t *lat;		/* shared: nreaders * count latencies, ns */
	uint64_t *lat_built;	/* the same from built_ns, or NULL */

	/* transports' state; a reader's copy is its own after fork */
	struct shmfd_chan *chan;
	struct shmfd_reader *reader;
	int share_fd;
	int fd[BENCH_MAX_READERS][2];	/* pipes, sockets: [1] writes */
	int efd;
	mqd_t mq;
	void *slot;		/* futex, spin, eventfd: shared mapping */
	size_t slot_size;
	uint32_t last;		/* reader: slot word last seen */
	void *wbuf;		/* producer's private message */
	void *rbuf;		/* reader's private copy */
	struct shmfd_msg msg;	/* shmfd reader: the message it holds */
};

extern const struct lat_xport bench_x_shmfd;
extern const struct lat_xport bench_x_pipe;
extern const struct lat_xport bench_x_unix;
extern const struct lat_xport bench_x_eventfd;
extern const struct lat_xport bench_x_mq;
extern const struct lat_xport bench_x_futex;
extern const struct lat_xport bench_x_spin;

/*
 * count paced messages of len bytes to nreaders; out[i] is the latency
 * of message i at its last reader, in ns.  points: the message is 10,000
 * (x, y) doubles, built in place where the transport allows it and
 * checksummed by the reader before its timestamp.  out_built, when not
 * NULL, gets the same latencies measured from before the producer began
 * to build the message (reserve, fill) instead of from just before its
 * send.  false: the transport cannot run here (row->note says why).
 */
bool bench_lat_run(const struct lat_xport *x, struct bench_row *row,
		   uint64_t *out, uint64_t *out_built, long count, size_t len,
		   int nreaders, unsigned int spin_us, bool points);

#endif /* SHMFD_BENCH_H */
