/* SPDX-License-Identifier: MIT */
/*
 * shmfd-stress: resource exhaustion.  Each case runs a paced producer
 * with one or more readers that must get a complete, ordered stream
 * throughout, while other processes -- or the producer itself -- meet a
 * limit:
 *
 *   nofile-join      readers join with 0, 1, 2 ... fds left under
 *                    RLIMIT_NOFILE, by name and through a share fd
 *   nofile-blobs     a joined reader with no fd left receives blobs
 *   nofile-producer  the producer with 0, 1, 2 ... fds left creates
 *                    channels, share fds and blobs, and is joined
 *   max-readers      max_readers readers joined, more try, one leaves,
 *                    another takes its place
 *   as-join          readers join with little address space left
 *                    (RLIMIT_AS), and receive blobs with none left
 *   as-producer      the producer with little address space left
 *
 * A call that meets the limit must fail with a clean -errno (the ones
 * its man page names), leave no fd or mapping behind, and leave the
 * channel serving its readers.  Each attempt is one "fault" of the table.
 */
#define _GNU_SOURCE
#include "stress.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOFILE_STEPS	8	/* headroom 0 .. 7 fds */
#define RIGHT_AWAY_MS	3000	/* a refused join says so within this */

/* ---- limits ---- */

/* The limits as this process found them, to go back to. */
static struct rlimit saved_nofile, saved_as;
static bool saved;

static void set_limit(int resource, rlim_t cur)
{
	struct rlimit rl;

	if (!saved) {
		getrlimit(RLIMIT_NOFILE, &saved_nofile);
		getrlimit(RLIMIT_AS, &saved_as);
		saved = true;
	}
	rl = resource == RLIMIT_NOFILE ? saved_nofile : saved_as;
	rl.rlim_cur = cur;
	if (setrlimit(resource, &rl) < 0) {
		fprintf(stderr, "shmfd-stress: setrlimit: %s\n",
			strerror(errno));
		_exit(2);
	}
}

/*
 * Leave exactly `free_` fds: the limit bars fd numbers from it up, so it
 * goes where the free numbers below it are that many (fds open above it,
 * such as those a CI runner hands down, stay open and count for nothing).
 * Returns the headroom set.
 */
static int squeeze_fds(int free_)
{
	int lim = 0, n = 0;

	for (; n < free_; lim++)
		if (fcntl(lim, F_GETFD) < 0)
			n++;
	set_limit(RLIMIT_NOFILE, (rlim_t)lim);
	return free_;
}

static unsigned long vm_kib(void)
{
	char buf[128];
	unsigned long pages = 0;
	int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	sscanf(buf, "%lu", &pages);
	return pages * (unsigned long)(sysconf(_SC_PAGESIZE) / 1024);
}

/* Leave kib KiB of address space. */
static void squeeze_as(unsigned long kib)
{
	set_limit(RLIMIT_AS, (rlim_t)(vm_kib() + kib) * 1024);
}

static void restore_limits(void)
{
	if (!saved)
		return;
	set_limit(RLIMIT_NOFILE, saved_nofile.rlim_cur);
	set_limit(RLIMIT_AS, saved_as.rlim_cur);
}

static bool one_of(int ret, const int *ok)
{
	for (; *ok != 1; ok++)
		if (ret == *ok)
			return true;
	return false;
}

/* Lists of acceptable results end with 1 (never a result). */
static const int ok_nofile[] = { 0, -EMFILE, -ENFILE, 1 };
static const int ok_nomem[] = { 0, -ENOMEM, 1 };

/* ---- a reader that joins under a limit, or reads under one ---- */

enum squeeze { SQ_NONE, SQ_FDS, SQ_AS };

struct joiner {
	int idx;			/* ctl->attempts[idx] */
	const char *name;		/* join by name, or */
	int share_fd;			/* through a copy of this */
	enum squeeze join_sq;		/* the limit while joining */
	int headroom;			/* fds, or KiB, left for the join */
	enum squeeze read_sq;		/* the limit while reading */
	unsigned int msgs;		/* to read (under read_sq, then not) */
	bool hold_until_stop;		/* a leaver: stay until the cmd */
	uint32_t leave_cmd;
	const struct stream_cfg *stream;
};

static struct attempt *attempt(int idx)
{
	return &ctl->attempts[idx];
}

#define jfail(a, ...) child_fail((a)->err, __VA_ARGS__)

/* Read n messages, each in order with its gap counted, intact.  Under
 * SQ_AS a blob may not map: -ENOMEM, counted as a fault. */
static void read_some(struct attempt *a, struct shmfd_reader *r,
		      const struct joiner *j, unsigned int n, uint64_t *last,
		      bool squeezed)
{
	for (unsigned int i = 0; i < n; i++) {
		struct shmfd_msg m;
		const char *bad;
		int ret = shmfd_recv(r, &m, 0, 10000);

		if (ret == -ENOMEM && squeezed && j->read_sq == SQ_AS) {
			a->faults++;
			continue;
		}
		if (ret < 0)
			jfail(a, "recv after %llu = %s%s",
			      (unsigned long long)*last, errname(ret),
			      squeezed ? " (squeezed)" : "");
		/* A reader that joins mid-stream starts where it joined:
		 * its first message (and what it counts lost) says where. */
		if (!*last)
			*last = m.seq - 1 - m.lost;
		if (m.seq <= *last || m.lost != m.seq - *last - 1)
			jfail(a, "seq %llu lost %llu after seq %llu%s",
			      (unsigned long long)m.seq,
			      (unsigned long long)m.lost,
			      (unsigned long long)*last,
			      squeezed ? " (squeezed)" : "");
		bad = payload_check(m.data, m.len, j->stream->key, m.seq);
		if (bad)
			jfail(a, "seq %llu: %s", (unsigned long long)m.seq,
			      bad);
		a->received++;
		a->lost += m.lost;
		if (m.flags & SHMFD_MSG_BLOB)
			a->blobs++;
		if (m.lost && squeezed && j->read_sq == SQ_FDS)
			a->faults++;
		*last = m.seq;
		ret = shmfd_msg_release(r, &m);
		if (ret)
			jfail(a, "release of %llu = %s",
			      (unsigned long long)m.seq, errname(ret));
	}
}

static int joiner_main(void *arg)
{
	const struct joiner *j = arg;
	struct attempt *a = attempt(j->idx);
	struct holdings *before = holdings_new();
	struct shmfd_reader *r = NULL;
	char leaks[ERR_LEN] = "";
	uint64_t last = 0;
	int fd = -1, ret;

	if (!before)
		jfail(a, "out of memory");
	holdings_take(before);
	if (!j->name) {
		fd = fcntl(j->share_fd, F_DUPFD_CLOEXEC, 0);
		if (fd < 0)
			jfail(a, "dup: %s", strerror(errno));
	}
	if (j->join_sq == SQ_FDS)
		a->headroom = squeeze_fds(j->headroom);
	else if (j->join_sq == SQ_AS)
		squeeze_as((unsigned long)(a->headroom = j->headroom));
	ret = j->name ? shmfd_reader_open(&r, j->name, 0) :
			shmfd_reader_open_fd(&r, fd, 0);
	restore_limits();
	a->ret = ret;
	if (ret < 0) {
		a->faults++;
		if (fd >= 0 && fcntl(fd, F_GETFD) < 0)
			jfail(a, "a failed shmfd_reader_open_fd closed its fd");
		if (fd >= 0)
			close(fd);
	} else {
		if (j->read_sq == SQ_FDS)
			a->headroom = squeeze_fds(0);
		else if (j->read_sq == SQ_AS)
			squeeze_as(0);
		read_some(a, r, j, j->msgs, &last, j->read_sq != SQ_NONE);
		restore_limits();
		read_some(a, r, j, j->msgs, &last, false);
		while (j->hold_until_stop &&
		       __atomic_load_n(&ctl->cmd, __ATOMIC_ACQUIRE) <
		       j->leave_cmd)
			sleep_us(1000);
		shmfd_reader_close(r);
	}
	if (holdings_diff(before, false, leaks, sizeof(leaks)))
		jfail(a, "%s: %s", ret < 0 ? "after a failed join" :
		      "after shmfd_reader_close", leaks);
	holdings_free(before);
	__atomic_store_n(&a->done, 1, __ATOMIC_RELEASE);
	return 0;
}

/* ---- the case's producer and its readers ---- */

struct ex_case {
	struct run run;
	struct summary *s;
	unsigned int runno;
	uint64_t seed;
	int share_fd;		/* the extra share fd, ours */
	int nfull;		/* readers that must get everything */
	bool ok;
	bool verbose;
};

static void ex_fail(struct ex_case *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void ex_fail(struct ex_case *c, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	c->ok = false;
	run_failed(c->s, c->runno, c->seed, "%s", buf);
}

/* A paced, named, reliable producer and nfull readers that must get all. */
static bool ex_start(struct ex_case *c, const char *name, size_t ring,
		     size_t max_inline, uint32_t max_readers,
		     unsigned int blob_permille, int nfull)
{
	struct run *r = &c->run;
	struct producer_proc *pp = &r->pp;
	struct rng rng;
	int sv[2];

	rng_seed(&rng, c->seed);
	ctl_reset(c->seed);
	c->ok = true;
	c->nfull = nfull;
	c->share_fd = -1;
	snprintf(r->name, sizeof(r->name), "%s", name);
	pp->name = r->name;
	pp->stream.key = mix64(c->seed ^ 0xe4);
	pp->stream.ring_size = ring;
	pp->stream.max_inline = max_inline;
	pp->stream.max_readers = max_readers;
	pp->pcfg.seed = mix64(c->seed + 1);
	pp->pcfg.timeout_ms = -1;
	pp->pcfg.blob_permille = blob_permille;
	pp->pcfg.idle_pct = 100;	/* paced: the cases take their time */
	pp->until_stopped = true;
	pp->victim = -1;
	pp->nreaders = nfull;
	for (int i = 0; i < nfull; i++) {
		pick_reader(r, &rng, c->seed, i, false);
		pp->readers[i].cfg.behaviour = B_FAST;
		if (pp->readers[i].how == JOIN_FORKED)
			pp->readers[i].how = JOIN_PASSED;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		perror("shmfd-stress: socketpair");
		exit(2);
	}
	pp->extra_sock = sv[0];
	run_start(r);
	close(sv[0]);
	c->share_fd = recv_fd(sv[1]);
	close(sv[1]);
	if (c->share_fd < 0 ||
	    !run_wait_streaming(r, now_ns() + RUN_DEADLINE_MS * NS_PER_MS)) {
		ex_fail(c, "set-up: %s", c->share_fd < 0 ?
			"no share fd from the producer" : r->why);
		return false;
	}
	return true;
}

static bool wait_readers_now(struct ex_case *c, int n)
{
	uint64_t end = now_ns() + RUN_DEADLINE_MS * NS_PER_MS;

	while (__atomic_load_n(&ctl->readers_now, __ATOMIC_ACQUIRE) != n) {
		if (now_ns() >= end || early_exit(&c->run)) {
			ex_fail(c, "the channel counts %d readers, expected "
				"%d: %s", ctl->readers_now, n, c->run.why);
			return false;
		}
		sleep_us(1000);
	}
	return true;
}

/* Run one joiner to its end; false (and a failure) if it failed. */
static bool run_joiner(struct ex_case *c, struct joiner *j, const int *ok,
		       const char *what)
{
	struct attempt *a = attempt(j->idx);
	uint64_t t0 = now_ns();
	pid_t pid;
	int st;

	snprintf(a->what, sizeof(a->what), "%s", what);
	j->stream = &c->run.pp.stream;
	j->share_fd = c->share_fd;
	pid = spawn(joiner_main, j, 0);
	st = wait_until_ns(pid, t0 + RUN_DEADLINE_MS * NS_PER_MS);
	if (st == -1)
		kill_reap(pid);
	c->s->faults += a->faults;
	if (c->verbose)
		printf("  %s (headroom %d) = %s; received %llu, lost %llu, "
		       "blobs %llu, faults %u\n", what, a->headroom,
		       errname(a->ret), (unsigned long long)a->received,
		       (unsigned long long)a->lost,
		       (unsigned long long)a->blobs, a->faults);
	if (st != 0) {
		ex_fail(c, "%s (headroom %d): %s: %s", what, a->headroom,
			describe_status(st), a->err[0] ? a->err :
			"(no message)");
		return false;
	}
	if (!one_of(a->ret, ok)) {
		ex_fail(c, "%s (headroom %d) = %s (%s), not a clean -errno "
			"of its man page", what, a->headroom,
			errname(a->ret), strerror(-a->ret));
		return false;
	}
	if (a->ret < 0 && (now_ns() - t0) > RIGHT_AWAY_MS * NS_PER_MS) {
		ex_fail(c, "%s (headroom %d) = %s only after %.1f s", what,
			a->headroom, errname(a->ret), (now_ns() - t0) / 1e9);
		return false;
	}
	return true;
}

/* Stop the producer; every full reader must have got every message. */
static void ex_finish(struct ex_case *c)
{
	struct run *r = &c->run;
	uint64_t deadline = now_ns() + RUN_DEADLINE_MS * NS_PER_MS;
	int pst;

	if (c->ok)
		wait_readers_now(c, c->nfull);
	__atomic_store_n(&ctl->cmd, CMD_STOP, __ATOMIC_RELEASE);
	pst = wait_until_ns(r->producer, deadline);
	r->producer_reaped = pst != -1;
	if (pst == -1 || !WIFEXITED(pst) || WEXITSTATUS(pst)) {
		ex_fail(c, "producer %s: %s", describe_status(pst),
			ctl->err[0] ? ctl->err : "(no message)");
	} else {
		for (int i = 0; i < c->nfull; i++) {
			struct ctl_reader *cr = &ctl->r[i];

			if (!reap_reader(r, i, deadline) ||
			    !WIFEXITED(r->status[i]) ||
			    WEXITSTATUS(r->status[i]) ||
			    cr->result != -EPIPE || cr->lost ||
			    cr->received != ctl->published) {
				ex_fail(c, "reader %d that was joined "
					"throughout: %s, ended with %d, "
					"received %llu of %llu, lost %llu: %s",
					i, describe_status(r->status[i]),
					cr->result,
					(unsigned long long)cr->received,
					(unsigned long long)ctl->published,
					(unsigned long long)cr->lost, cr->err);
				break;
			}
		}
	}
	if (c->share_fd >= 0)
		close(c->share_fd);
	run_cleanup(r);
}

static unsigned int case_no;		/* the run number of the case */

static struct ex_case *ex_new(struct summary *s, const struct options *o,
			      const char *name)
{
	struct ex_case *c = calloc(1, sizeof(*c));

	if (!c) {
		perror("shmfd-stress");
		exit(2);
	}
	c->s = s;
	c->runno = case_no;
	c->seed = run_seed(o->seed, name, 0);
	c->verbose = o->verbose;
	s->runs++;
	return c;
}

/* ---- the cases ---- */

static void case_nofile_join(const struct options *o, struct summary *s)
{
	struct ex_case *c = ex_new(s, o, "nofile-join");
	int idx = 0;

	if (ex_start(c, "ex-nofile-join", 256 * KiB, 0, 0, 100, 1)) {
		for (int k = 0; k < NOFILE_STEPS && c->ok; k++) {
			for (int named = 0; named < 2 && c->ok; named++) {
				struct joiner j = {
					.idx = idx++,
					.name = named ? c->run.name : NULL,
					.join_sq = SQ_FDS,
					.headroom = k,
					.msgs = 5,
				};
				char what[64];

				snprintf(what, sizeof(what), "%s with %d fds "
					 "free", named ? "shmfd_reader_open" :
					 "shmfd_reader_open_fd", k);
				if (run_joiner(c, &j, ok_nofile, what))
					wait_readers_now(c, 1);
			}
		}
	}
	ex_finish(c);
	free(c);
}

static void case_nofile_blobs(const struct options *o, struct summary *s)
{
	struct ex_case *c = ex_new(s, o, "nofile-blobs");
	static const int ok[] = { 0, 1 };
	struct joiner j = {
		.join_sq = SQ_NONE,
		.read_sq = SQ_FDS,
		.msgs = 150,
	};

	if (ex_start(c, "ex-nofile-blobs", 256 * KiB, 0, 0, 300, 1) &&
	    run_joiner(c, &j, ok, "blobs with no fd free")) {
		struct attempt *a = attempt(0);

		/* Blobs counted lost while no fd was free (shmfd_recv(3)),
		 * received again once there was. */
		if (a->faults == 0 || a->blobs == 0)
			ex_fail(c, "a reader with no fd free: %llu blobs "
				"lost, %llu received after it had fds again",
				(unsigned long long)a->faults,
				(unsigned long long)a->blobs);
	}
	ex_finish(c);
	free(c);
}

static void case_max_readers(const struct options *o, struct summary *s)
{
	struct ex_case *c = ex_new(s, o, "max-readers");
	static const int ok_users[] = { -EUSERS, 1 };
	static const int ok_join[] = { 0, 1 };
	struct rng rng;
	uint32_t max;
	pid_t leaver;
	struct joiner lj = {
		.idx = 0,
		.msgs = 5,
		.hold_until_stop = true,
		.leave_cmd = 1,
	};

	rng_seed(&rng, c->seed);
	max = (uint32_t)rng_range(&rng, 2, MAX_READERS - 1);
	/* max - 1 readers to the end, and one that leaves. */
	if (!ex_start(c, "ex-max-readers", 256 * KiB, 0, max, 50,
		      (int)max - 1))
		goto out;
	lj.name = c->run.name;
	lj.stream = &c->run.pp.stream;
	snprintf(attempt(0)->what, sizeof(attempt(0)->what), "the leaver");
	leaver = spawn(joiner_main, &lj, 0);
	if (!wait_readers_now(c, (int)max))
		goto out_leaver;
	for (int i = 1; i <= 4 && c->ok; i++) {
		struct joiner j = {
			.idx = i,
			.name = i % 2 ? c->run.name : NULL,
		};
		char what[64];

		snprintf(what, sizeof(what), "join #%u of %u allowed",
			 max + 1, max);
		run_joiner(c, &j, ok_users, what);
		c->s->faults++;
	}
	__atomic_store_n(&ctl->cmd, 1, __ATOMIC_RELEASE);	/* leave */
	if (wait_until_ns(leaver, now_ns() + RUN_DEADLINE_MS * NS_PER_MS) !=
	    0) {
		ex_fail(c, "the leaver: %s", attempt(0)->err);
		goto out_leaver;
	}
	leaver = 0;
	if (c->ok && wait_readers_now(c, (int)max - 1)) {
		struct joiner j = { .idx = 5, .name = c->run.name, .msgs = 5 };

		run_joiner(c, &j, ok_join, "a join in the place of one left");
	}
out_leaver:
	if (leaver)
		kill_reap(leaver);
out:
	ex_finish(c);
	free(c);
}

static void case_as_join(const struct options *o, struct summary *s)
{
	static const unsigned long kib[] = { 0, 64, 1024, 8192, 17408, 65536 };
	struct ex_case *c = ex_new(s, o, "as-join");
	int idx = 0;

	/* A 16 MiB ring: a join needs that much address space. */
	if (ex_start(c, "ex-as-join", 16 * MiB, 64 * KiB, 0, 50, 1)) {
		for (size_t k = 0; k < sizeof(kib) / sizeof(kib[0]) && c->ok;
		     k++) {
			for (int named = 0; named < 2 && c->ok; named++) {
				struct joiner j = {
					.idx = idx++,
					.name = named ? c->run.name : NULL,
					.join_sq = SQ_AS,
					.headroom = (int)kib[k],
					.read_sq = SQ_AS,
					.msgs = 60,
				};
				char what[64];

				snprintf(what, sizeof(what), "%s with %lu KiB "
					 "of address space free",
					 named ? "shmfd_reader_open" :
					 "shmfd_reader_open_fd", kib[k]);
				if (run_joiner(c, &j, ok_nomem, what))
					wait_readers_now(c, 1);
			}
		}
	}
	ex_finish(c);
	free(c);
}

/* ---- the producer under a limit ---- */

enum { PQ_FDS, PQ_AS };

struct squeezed_producer {
	int kind;
	int steps;
	const unsigned long *headroom;	/* per step: fds or KiB */
	int pass_sock;			/* the full reader's share fd */
	const struct stream_cfg *stream;
};

/*
 * Streams to one full reader; on command 2k+1 meets the limit of step k,
 * tries each call that needs a resource, records what they returned,
 * acks and goes on streaming inline messages under the limit (the send
 * path must need nothing: DESIGN §4.6); on 2k+2 lifts it.
 */
static int squeezed_main(void *arg)
{
	struct squeezed_producer *sp = arg;
	struct shmfd_params params = { .ring_size = 1 * MiB };
	struct producer_cfg pcfg = {
		.stream = sp->stream,
		.timeout_ms = -1,
		.blob_permille = 20,
		.idle_pct = 100,
	};
	struct holdings *before = holdings_new();
	struct shmfd_chan *chan = NULL;
	struct producer *p;
	uint32_t done = 0;
	char leaks[ERR_LEN] = "";
	int fd, ret;

	ctl->producer_pid = getpid();
	ret = shmfd_chan_create(&chan, "ex-squeezed", &params);
	if (ret < 0)
		child_fail(ctl->err, "shmfd_chan_create = %s", errname(ret));
	fd = shmfd_chan_share_fd(chan);
	if (fd < 0 || send_fd(sp->pass_sock, fd) < 0)
		child_fail(ctl->err, "share fd: %s", errname(fd));
	close(fd);
	__atomic_store_n(&ctl->pstate, PS_READY, __ATOMIC_RELEASE);
	wait_readers(chan, 1, now_ns() + RUN_DEADLINE_MS * NS_PER_MS);
	pcfg.seed = mix64(sp->stream->key);
	p = producer_new(chan, &pcfg);
	/* A blob send sets up its io_uring once: before the baseline. */
	producer_set_blobs(p, 1000);
	producer_send_next(p, false);
	producer_set_blobs(p, 20);
	__atomic_store_n(&ctl->pstate, PS_STREAMING, __ATOMIC_RELEASE);
	holdings_take(before);

	for (;;) {
		uint32_t cmd = __atomic_load_n(&ctl->cmd, __ATOMIC_ACQUIRE);

		if (cmd == CMD_STOP)
			break;
		if (cmd > done && cmd % 2) {
			int k = (int)cmd / 2, base = k * 8, h;
			struct shmfd_chan *c2 = NULL;
			struct shmfd_blob *b = NULL;
			bool sent = false;
			struct attempt *a;

			if (sp->kind == PQ_FDS) {
				h = squeeze_fds((int)sp->headroom[k]);
			} else {
				h = (int)sp->headroom[k];
				squeeze_as(sp->headroom[k]);
			}
			/* Each call that needs an fd or memory. */
			a = attempt(base);
			a->ret = shmfd_chan_create(&c2, NULL, &params);
			shmfd_chan_close(c2);
			a = attempt(base + 1);
			a->ret = shmfd_chan_share_fd(chan);
			if (a->ret >= 0) {
				close(a->ret);
				a->ret = 0;
			}
			a = attempt(base + 2);
			a->ret = shmfd_blob_create(&b, 64 * KiB);
			if (a->ret == 0) {
				payload_fill(shmfd_blob_data(b), 64 * KiB,
					     sp->stream->key,
					     producer_published(p) + 1);
				a = attempt(base + 3);
				a->ret = shmfd_send_blob(chan, b, -1);
				sent = true;
				if (a->ret < 0)
					shmfd_blob_free(b);
				else
					producer_skip(p);
			}
			for (int i = 0; i < 4; i++) {
				a = attempt(base + i);
				a->headroom = h;
				a->done = i < 3 || sent;
			}
			producer_set_blobs(p, 0);
			done = cmd;
			__atomic_store_n(&ctl->ack, cmd, __ATOMIC_RELEASE);
		} else if (cmd > done) {
			restore_limits();
			producer_set_blobs(p, 20);
			done = cmd;
			__atomic_store_n(&ctl->ack, cmd, __ATOMIC_RELEASE);
		}
		producer_send_next(p, false);
		__atomic_store_n(&ctl->readers_now, shmfd_chan_readers(chan),
				 __ATOMIC_RELEASE);
	}
	restore_limits();
	if (holdings_diff(before, true, leaks, sizeof(leaks)))
		child_fail(ctl->err, "after the limits: %s", leaks);
	producer_send_next(p, true);
	shmfd_chan_close(chan);
	producer_free(p);
	holdings_free(before);
	return 0;
}

/* CPU time of a whole process (all its threads), in ms. */
static uint64_t cpu_ms(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long ut = 0, st = 0;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	/* After "pid (comm)": state is field 3, utime 14, stime 15. */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u "
			 "%*u %llu %llu", &ut, &st) != 2)
		return 0;
	return (ut + st) * 1000 / (uint64_t)sysconf(_SC_CLK_TCK);
}

static bool wait_ack(struct ex_case *c, uint32_t cmd)
{
	uint64_t end = now_ns() + RUN_DEADLINE_MS * NS_PER_MS;

	while (__atomic_load_n(&ctl->ack, __ATOMIC_ACQUIRE) != cmd) {
		if (now_ns() >= end || early_exit(&c->run)) {
			ex_fail(c, "the producer did not do command %u: %s",
				cmd, c->run.why[0] ? c->run.why : ctl->err);
			return false;
		}
		sleep_us(500);
	}
	return true;
}

static void case_producer(const struct options *o, struct summary *s,
			  int kind)
{
	static const unsigned long fds[] = { 0, 1, 2, 3, 4, 5, 6, 8 };
	static const unsigned long kib[] = { 0, 64, 1024, 16384 };
	static const int ok_as_create[] = { 0, -ENOMEM, -EAGAIN, 1 };
	static const int ok_join_fds[] = { 0, -EMFILE, -ENFILE, -ENOMEM, 1 };
	static const char *const calls[] = {
		"shmfd_chan_create", "shmfd_chan_share_fd",
		"shmfd_blob_create", "shmfd_send_blob",
	};
	const char *name = kind == PQ_FDS ? "nofile-producer" : "as-producer";
	struct ex_case *c = ex_new(s, o, name);
	struct run *r = &c->run;
	struct reader_proc *rp = &r->pp.readers[0];
	struct squeezed_producer sp = {
		.kind = kind,
		.steps = kind == PQ_FDS ? 8 : 4,
		.headroom = kind == PQ_FDS ? fds : kib,
		.stream = &r->pp.stream,
	};
	struct rng rng;
	int sv[2];

	rng_seed(&rng, c->seed);
	ctl_reset(c->seed);
	c->ok = true;
	c->nfull = 1;
	c->share_fd = -1;
	snprintf(r->name, sizeof(r->name), "ex-squeezed");
	r->pp.stream.key = mix64(c->seed ^ 0x5c);
	r->pp.stream.ring_size = 1 * MiB;
	r->pp.nreaders = 1;
	pick_reader(r, &rng, c->seed, 0, false);
	rp->cfg.behaviour = B_FAST;
	rp->how = JOIN_PASSED;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		perror("shmfd-stress: socketpair");
		exit(2);
	}
	sp.pass_sock = sv[0];
	rp->sock = sv[1];
	r->producer = spawn(squeezed_main, &sp, 0);
	r->pid[0] = spawn(reader_main, rp, 0);
	close(sv[0]);
	close(sv[1]);
	if (!run_wait_streaming(r, now_ns() + RUN_DEADLINE_MS * NS_PER_MS)) {
		ex_fail(c, "set-up: %s", r->why);
		goto out;
	}

	for (int k = 0; k < sp.steps && c->ok; k++) {
		int base = k * 8;
		struct joiner j = {
			.idx = base + 4,
			.name = r->name,
			.msgs = 3,
			.stream = &r->pp.stream,
		};
		struct attempt *ja = attempt(base + 4);
		uint64_t cpu0, cpu1;
		pid_t jpid;
		int st;

		__atomic_store_n(&ctl->cmd, (uint32_t)(2 * k + 1),
				 __ATOMIC_RELEASE);
		if (!wait_ack(c, (uint32_t)(2 * k + 1)))
			break;
		for (int i = 0; i < 4; i++) {
			struct attempt *a = attempt(base + i);
			const int *ok = kind == PQ_FDS ? ok_nofile :
					i == 0 ? ok_as_create : ok_nomem;

			if (!a->done)
				continue;	/* no blob to send */
			if (c->verbose)
				printf("  producer with %d %s free: %s = %s\n",
				       a->headroom, kind == PQ_FDS ? "fds" :
				       "KiB", calls[i], errname(a->ret));
			s->faults++;
			if (!one_of(a->ret, ok))
				ex_fail(c, "%s with %d %s free = %s (%s), not "
					"a clean -errno of its man page",
					calls[i], a->headroom,
					kind == PQ_FDS ? "fds" : "KiB",
					errname(a->ret), strerror(-a->ret));
		}
		/* A reader joins while the producer is at its limit: the
		 * join may wait until the limit is lifted, or be refused at
		 * once; the producer must not spin meanwhile. */
		snprintf(ja->what, sizeof(ja->what), "a join while the "
			 "producer is at its limit");
		j.share_fd = -1;
		cpu0 = cpu_ms(r->producer);
		jpid = spawn(joiner_main, &j, 0);
		sleep_us(300000);
		cpu1 = cpu_ms(r->producer);
		if (c->verbose)
			printf("  join while the producer has %d %s free: "
			       "producer CPU %llu ms in 300 ms\n",
			       attempt(base)->headroom,
			       kind == PQ_FDS ? "fds" : "KiB",
			       (unsigned long long)(cpu1 - cpu0));
		if (cpu1 - cpu0 > 100)
			ex_fail(c, "the producer used %llu ms of CPU in 300 ms "
				"while a reader tried to join it with %d %s "
				"free: a busy loop", (unsigned long long)
				(cpu1 - cpu0), attempt(base)->headroom,
				kind == PQ_FDS ? "fds" : "KiB");
		__atomic_store_n(&ctl->cmd, (uint32_t)(2 * k + 2),
				 __ATOMIC_RELEASE);
		if (!wait_ack(c, (uint32_t)(2 * k + 2))) {
			kill_reap(jpid);
			break;
		}
		st = wait_until_ns(jpid, now_ns() + RUN_DEADLINE_MS *
				   NS_PER_MS);
		if (st == -1)
			kill_reap(jpid);
		s->faults++;
		if (st != 0)
			ex_fail(c, "%s (%d %s free): %s: %s", ja->what,
				attempt(base)->headroom,
				kind == PQ_FDS ? "fds" : "KiB",
				describe_status(st), ja->err);
		else if (c->verbose)
			printf("  ... the join = %s\n", errname(ja->ret));
		if (st == 0 && !one_of(ja->ret, kind == PQ_FDS ? ok_join_fds :
				       ok_nomem))
			ex_fail(c, "%s (%d %s free) = %s (%s)", ja->what,
				attempt(base)->headroom,
				kind == PQ_FDS ? "fds" : "KiB",
				errname(ja->ret), strerror(-ja->ret));
		if (c->ok)
			wait_readers_now(c, 1);
	}
out:
	ex_finish(c);
	free(c);
}

void scenario_exhaust(const struct options *o, struct summary *s)
{
	unsigned int before = s->failures;

	for (case_no = 0; case_no < 6; case_no++) {
		if (o->only_run >= 0 && (unsigned int)o->only_run != case_no)
			continue;
		switch (case_no) {
		case 0:
			case_nofile_join(o, s);
			break;
		case 1:
			case_nofile_blobs(o, s);
			break;
		case 2:
			case_producer(o, s, PQ_FDS);
			break;
		case 3:
			case_max_readers(o, s);
			break;
		case 4:
			case_as_join(o, s);
			break;
		case 5:
			case_producer(o, s, PQ_AS);
			break;
		}
	}
	report_add(s->notes, sizeof(s->notes), "runs 0-5: nofile-join, "
		   "nofile-blobs, nofile-producer, max-readers, as-join, "
		   "as-producer; %u failed", s->failures - before);
}
