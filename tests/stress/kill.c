/* SPDX-License-Identifier: MIT */
/*
 * shmfd-stress: SIGKILL in the middle of a busy stream.
 *
 * producer-kill: the producer dies at a random moment -- aimed at a phase
 * it announces in ctl->phase: inside shmfd_reserve, between reserve and
 * commit, inside shmfd_commit, inside blob creation and sends.  Every
 * reader must still get each message published before the kill, intact
 * and once, then -EPIPE, and hold no fd or mapping after closing.
 *
 * reader-kill: one reader dies (some stall first, holding the ring full
 * so that a reliable producer is blocked on them).  The producer must go
 * on within its timeout, the channel must stop counting the dead reader,
 * and every other reader must get a complete stream (reliable) or exact
 * lost counts (lossy).
 */
#define _GNU_SOURCE
#include "stress.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- producer-kill ---- */

static const enum phase kill_targets[] = {
	PH_START,		/* no aim: whatever it is doing */
	PH_IDLE, PH_SEND, PH_SEND_BIG, PH_RESERVE, PH_FILL, PH_COMMIT,
	PH_BLOB_CREATE, PH_BLOB_FILL, PH_SEND_BLOB,
};

struct pk_stats {
	unsigned int at_phase[PH_COUNT];
	unsigned int lossy, forked, readers;
	uint64_t wakes[4096];
	unsigned int nwakes;
};

/* Wait until the producer says it is in phase ph, for up to 300 ms. */
static void aim(enum phase ph)
{
	uint64_t end = now_ns() + 300 * NS_PER_MS;
	unsigned int n = 0;

	if (ph == PH_START)
		return;
	for (;;) {
		uint64_t since;

		while (__atomic_load_n(&ctl->phase, __ATOMIC_RELAXED) != ph) {
			/* Yield now and then: on two CPUs our spin would
			 * slow the very processes whose moment we wait for. */
			if (++n % 64 == 0) {
				if (now_ns() >= end)
					return;
				sched_yield();
			}
		}
		/* A reserve that has not returned after 100 us is waiting
		 * for space: a kill now lands inside it.  The other phases
		 * are hit as they come. */
		if (ph != PH_RESERVE)
			return;
		since = now_ns();
		while (__atomic_load_n(&ctl->phase, __ATOMIC_RELAXED) == ph)
			if (now_ns() - since > 100000)
				return;
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void pk_run(const struct options *o, struct summary *s,
		   struct pk_stats *st, unsigned int run)
{
	uint64_t seed = run_seed(o->seed, s->name, run);
	struct run *r = calloc(1, sizeof(*r));
	struct producer_proc *pp = &r->pp;
	uint64_t t_kill, deadline, published, last = 0;
	enum phase target, died_in;
	struct rng rng;
	bool ok = true;
	int pst;

	rng_seed(&rng, seed);
	ctl_reset(seed);
	snprintf(r->name, sizeof(r->name), "pk-%u", run);
	pick_stream(r, &rng, seed, 35);
	pp->until_killed = true;
	pp->victim = -1;
	pp->nreaders = (int)rng_range(&rng, 1, 4);
	for (int i = 0; i < pp->nreaders; i++) {
		pick_reader(r, &rng, seed, i, false);
		if (pp->readers[i].how == JOIN_NAMED)
			pp->name = r->name;
		st->forked += pp->readers[i].how == JOIN_FORKED;
		st->readers++;
	}
	if (!pp->name && rng_pct(&rng, 50))
		pp->name = r->name;
	target = kill_targets[rng_below(&rng, sizeof(kill_targets) /
					sizeof(kill_targets[0]))];
	if (target == PH_RESERVE) {
		/* shmfd_reserve is quick unless it waits for space: give it
		 * a small reliable ring and a reader that lags. */
		pp->stream.lossy = false;
		pp->stream.ring_size = 64 * KiB;
		pp->stream.max_inline = 4 * KiB;
		pp->pcfg.timeout_ms = -1;
		pp->pcfg.idle_pct = 0;
		pp->pcfg.slow_fill_pct = 0;
		pp->pcfg.blob_permille = 20;
		for (int i = 0; i < pp->nreaders; i++)
			if (pp->readers[i].cfg.behaviour == B_LATEST)
				pp->readers[i].cfg.behaviour = B_FAST;
		pp->readers[0].cfg.behaviour = B_SLOW;
	}
	if (o->verbose)
		print_params(r, run);

	run_start(r);
	s->runs++;
	if (!run_wait_streaming(r, now_ns() + RUN_DEADLINE_MS * NS_PER_MS)) {
		ok = false;
		goto out;
	}
	sleep_us(rng_range(&rng, 0, 30000));
	aim(target);
	t_kill = now_ns();
	__atomic_store_n(&ctl->t_kill, t_kill, __ATOMIC_RELEASE);
	kill(r->producer, SIGKILL);
	s->faults++;
	st->lossy += pp->stream.lossy;

	deadline = t_kill + RUN_DEADLINE_MS * NS_PER_MS;
	pst = wait_until_ns(r->producer, deadline);
	r->producer_reaped = pst != -1;
	if (!WIFSIGNALED(pst) || WTERMSIG(pst) != SIGKILL) {
		report_add(r->why, sizeof(r->why), "producer %s, not killed: "
			   "%s", describe_status(pst), ctl->err);
		ok = false;
		goto out;
	}
	died_in = (enum phase)__atomic_load_n(&ctl->phase, __ATOMIC_RELAXED);
	st->at_phase[died_in < PH_COUNT ? died_in : PH_START]++;
	published = __atomic_load_n(&ctl->published, __ATOMIC_ACQUIRE);

	for (int i = 0; i < pp->nreaders; i++) {
		struct ctl_reader *cr = &ctl->r[i];
		uint64_t wake, epipe;

		if (!reap_reader(r, i, deadline)) {
			report_add(r->why, sizeof(r->why), "reader %d (%s) "
				   "still running %d ms after the kill; last "
				   "seq %llu of %llu published; ", i,
				   join_names[pp->readers[i].how],
				   RUN_DEADLINE_MS,
				   (unsigned long long)cr->last_seq,
				   (unsigned long long)published);
			ok = false;
			continue;
		}
		if (!WIFEXITED(r->status[i]) || WEXITSTATUS(r->status[i])) {
			report_add(r->why, sizeof(r->why), "reader %d %s: %s; ",
				   i, describe_status(r->status[i]),
				   cr->err[0] ? cr->err : "(no message)");
			ok = false;
			continue;
		}
		if (cr->result != -EPIPE) {
			report_add(r->why, sizeof(r->why), "reader %d: recv "
				   "ended with %d (%s), expected -EPIPE; ", i,
				   cr->result, strerror(-cr->result));
			ok = false;
		}
		epipe = cr->t_end - t_kill;
		wake = cr->t_end - (cr->t_enter > t_kill ? cr->t_enter : t_kill);
		if (s->max_epipe_ns == UINT64_MAX || epipe > s->max_epipe_ns)
			s->max_epipe_ns = epipe;
		if (s->max_wake_ns == UINT64_MAX || wake > s->max_wake_ns)
			s->max_wake_ns = wake;
		if (st->nwakes < sizeof(st->wakes) / sizeof(st->wakes[0]))
			st->wakes[st->nwakes++] = wake;
		if (wake > WAKE_BOUND_MS * NS_PER_MS) {
			report_add(r->why, sizeof(r->why), "reader %d: -EPIPE "
				   "%.1f ms after the kill found it waiting "
				   "(bound %d ms); ", i, wake / 1e6,
				   WAKE_BOUND_MS);
			ok = false;
		}
		/* Every message published before the kill, each once. */
		if (cr->received + cr->lost != cr->last_seq ||
		    (!pp->stream.lossy && cr->lost) ||
		    cr->last_seq > published + 1 ||
		    (!pp->stream.lossy && cr->last_seq < published) ||
		    (!pp->stream.lossy && i && cr->last_seq != last)) {
			report_add(r->why, sizeof(r->why), "reader %d: "
				   "received %llu lost %llu last seq %llu; "
				   "published %llu (+1 if killed just after "
				   "publishing)%s; ", i,
				   (unsigned long long)cr->received,
				   (unsigned long long)cr->lost,
				   (unsigned long long)cr->last_seq,
				   (unsigned long long)published,
				   i && !pp->stream.lossy ?
				   ", every reliable reader ends alike" : "");
			ok = false;
		}
		last = cr->last_seq;
	}
	if (ok && o->verbose)
		printf("  run %u: aimed at %s, killed in %s after %llu "
		       "messages\n", run, phase_names[target],
		       phase_names[died_in], (unsigned long long)published);
out:
	if (!ok) {
		char rd[512] = "";

		describe_readers(r, rd, sizeof(rd));
		run_failed(s, run, seed, "%s (%s, ring %zu, max_inline %zu, "
			   "timeout %d, aimed at %s; %s)", r->why,
			   pp->stream.lossy ? "lossy" : "reliable",
			   pp->stream.ring_size, pp->stream.max_inline,
			   pp->pcfg.timeout_ms, phase_names[target], rd);
	}
	run_cleanup(r);
	free(r);
}

void scenario_kill_producer(const struct options *o, struct summary *s)
{
	struct pk_stats *st = calloc(1, sizeof(*st));
	char *n = s->notes;
	size_t len = sizeof(s->notes);

	for (unsigned int run = 0; run < o->runs; run++)
		if (o->only_run < 0 || (unsigned int)o->only_run == run)
			pk_run(o, s, st, run);
	if (st->nwakes) {
		qsort(st->wakes, st->nwakes, sizeof(st->wakes[0]), cmp_u64);
		report_add(n, len, "wake-up p50 %.2f ms, p99 %.2f ms; ",
			   st->wakes[st->nwakes / 2] / 1e6,
			   st->wakes[st->nwakes * 99 / 100] / 1e6);
	}
	report_add(n, len, "%u lossy; %u readers, %u forked by the producer; "
		   "died in:", st->lossy, st->readers, st->forked);
	for (int ph = 0; ph < PH_COUNT; ph++)
		if (st->at_phase[ph])
			report_add(n, len, " %s %u", phase_names[ph],
				   st->at_phase[ph]);
	free(st);
}

/* ---- reader-kill ---- */

struct rk_stats {
	unsigned int stalled, blocked, lossy, retries;
	uint64_t max_drop_ns;
};

/* A reliable producer blocked on the stalled reader: nothing published
 * for 5 ms.  Gives up after 2 s (the kill then comes anyway). */
static bool wait_blocked(void)
{
	uint64_t end = now_ns() + 2000 * NS_PER_MS, since = now_ns();
	uint64_t seen = __atomic_load_n(&ctl->published, __ATOMIC_ACQUIRE);

	while (now_ns() < end) {
		uint64_t pub = __atomic_load_n(&ctl->published,
					       __ATOMIC_ACQUIRE);

		if (pub != seen) {
			seen = pub;
			since = now_ns();
		} else if (now_ns() - since >= 5 * NS_PER_MS) {
			return true;
		}
		sleep_us(500);
	}
	return false;
}

static void rk_run(const struct options *o, struct summary *s,
		   struct rk_stats *st, unsigned int run)
{
	uint64_t seed = run_seed(o->seed, s->name, run);
	struct run *r = calloc(1, sizeof(*r));
	struct producer_proc *pp = &r->pp;
	uint64_t t_kill, deadline, published;
	struct rng rng;
	bool ok = true;
	pid_t vpid;
	int v, pst;

	rng_seed(&rng, seed);
	ctl_reset(seed);
	snprintf(r->name, sizeof(r->name), "rk-%u", run);
	pick_stream(r, &rng, seed, 35);
	pp->nreaders = (int)rng_range(&rng, 2, 4);
	v = (int)rng_below(&rng, (uint64_t)pp->nreaders);
	pp->victim = v;
	pp->after_kill = rng_range(&rng, 100, 3000);
	pp->pcfg.check_holdings = true;
	for (int i = 0; i < pp->nreaders; i++) {
		pick_reader(r, &rng, seed, i, i == v && rng_pct(&rng, 40));
		if (pp->readers[i].how == JOIN_NAMED)
			pp->name = r->name;
	}
	if (!pp->name && rng_pct(&rng, 50))
		pp->name = r->name;
	if (o->verbose)
		print_params(r, run);

	run_start(r);
	s->runs++;
	if (!run_wait_streaming(r, now_ns() + RUN_DEADLINE_MS * NS_PER_MS)) {
		ok = false;
		goto out;
	}
	if (pp->readers[v].cfg.behaviour == B_STALL) {
		deadline = now_ns() + RUN_DEADLINE_MS * NS_PER_MS;
		while (__atomic_load_n(&ctl->r[v].state, __ATOMIC_ACQUIRE) !=
		       RS_STALLED) {
			if (early_exit(r) || now_ns() >= deadline) {
				report_add(r->why, sizeof(r->why), "the "
					   "victim never stalled");
				ok = false;
				goto out;
			}
			sleep_us(500);
		}
		st->stalled++;
		if (!pp->stream.lossy && wait_blocked())
			st->blocked++;
	} else {
		sleep_us(rng_range(&rng, 0, 50000));
	}
	vpid = reader_pid(r, v);
	t_kill = now_ns();
	__atomic_store_n(&ctl->t_kill, t_kill, __ATOMIC_RELEASE);
	kill(vpid, SIGKILL);
	s->faults++;
	st->lossy += pp->stream.lossy;
	deadline = t_kill + RUN_DEADLINE_MS * NS_PER_MS;
	if (r->pid[v]) {
		int vst = wait_until_ns(vpid, deadline);

		r->reaped[v] = true;
		if (!WIFSIGNALED(vst) || WTERMSIG(vst) != SIGKILL) {
			report_add(r->why, sizeof(r->why), "victim %s before "
				   "the kill: %s; ", describe_status(vst),
				   ctl->r[v].err);
			ok = false;
		}
	}

	pst = wait_until_ns(r->producer, deadline);
	r->producer_reaped = pst != -1;
	if (pst == -1 || !WIFEXITED(pst) || WEXITSTATUS(pst)) {
		report_add(r->why, sizeof(r->why), "producer %s: %s; ",
			   describe_status(pst), ctl->err[0] ? ctl->err :
			   pst == -1 ? "blocked on the dead reader?" :
			   "(no message)");
		ok = false;
		goto out;
	}
	published = ctl->published;
	if (ctl->unblock_ns != 0 &&
	    (s->max_wake_ns == UINT64_MAX || ctl->unblock_ns > s->max_wake_ns))
		s->max_wake_ns = ctl->unblock_ns;
	if (s->max_wake_ns == UINT64_MAX)
		s->max_wake_ns = 0;
	if (ctl->drop_ns > st->max_drop_ns)
		st->max_drop_ns = ctl->drop_ns;
	st->retries += (unsigned int)ctl->retries;
	if (pp->pcfg.timeout_ms == -1 && !pp->stream.lossy &&
	    ctl->unblock_ns > WAKE_BOUND_MS * NS_PER_MS) {
		report_add(r->why, sizeof(r->why), "a send blocked when the "
			   "reader was killed returned %.1f ms later (bound "
			   "%d ms); ", ctl->unblock_ns / 1e6, WAKE_BOUND_MS);
		ok = false;
	}

	for (int i = 0; i < pp->nreaders; i++) {
		struct ctl_reader *cr = &ctl->r[i];
		int rst;

		if (i == v) {
			if (!r->pid[v] && ctl->r[v].reaped &&
			    (!WIFSIGNALED(ctl->r[v].wstatus) ||
			     WTERMSIG(ctl->r[v].wstatus) != SIGKILL)) {
				report_add(r->why, sizeof(r->why), "victim %s: "
					   "%s; ",
					   describe_status(ctl->r[v].wstatus),
					   ctl->r[v].err);
				ok = false;
			}
			continue;
		}
		if (r->pid[i]) {
			if (!reap_reader(r, i, deadline)) {
				report_add(r->why, sizeof(r->why), "reader %d "
					   "still running after the producer "
					   "closed; last seq %llu of %llu; ",
					   i, (unsigned long long)cr->last_seq,
					   (unsigned long long)published);
				ok = false;
				continue;
			}
			rst = r->status[i];
		} else {
			rst = cr->wstatus;	/* the producer reaped it */
			r->reaped[i] = true;
		}
		if (!WIFEXITED(rst) || WEXITSTATUS(rst)) {
			report_add(r->why, sizeof(r->why), "reader %d %s: %s; ",
				   i, describe_status(rst),
				   cr->err[0] ? cr->err : "(no message)");
			ok = false;
			continue;
		}
		if (cr->result != -EPIPE || cr->last_seq != published ||
		    cr->received + cr->lost != published ||
		    (!pp->stream.lossy && cr->lost)) {
			report_add(r->why, sizeof(r->why), "reader %d: ended "
				   "with %d, received %llu lost %llu last seq "
				   "%llu; published %llu; ", i, cr->result,
				   (unsigned long long)cr->received,
				   (unsigned long long)cr->lost,
				   (unsigned long long)cr->last_seq,
				   (unsigned long long)published);
			ok = false;
		}
	}
out:
	if (!ok) {
		char rd[512] = "";

		describe_readers(r, rd, sizeof(rd));
		run_failed(s, run, seed, "%s(%s, ring %zu, max_inline %zu, "
			   "timeout %d; victim reader %d; %s)", r->why,
			   pp->stream.lossy ? "lossy" : "reliable",
			   pp->stream.ring_size, pp->stream.max_inline,
			   pp->pcfg.timeout_ms, v, rd);
	}
	run_cleanup(r);
	free(r);
}

void scenario_kill_reader(const struct options *o, struct summary *s)
{
	struct rk_stats st = { 0 };

	for (unsigned int run = 0; run < o->runs; run++)
		if (o->only_run < 0 || (unsigned int)o->only_run == run)
			rk_run(o, s, &st, run);
	report_add(s->notes, sizeof(s->notes), "wake-up: the send blocked at "
		   "the kill; %u lossy; %u victims stalled holding the ring, "
		   "%u with the producer blocked on them; max drop %.1f ms; "
		   "%u send timeouts retried", st.lossy, st.stalled,
		   st.blocked, st.max_drop_ns / 1e6, st.retries);
}
