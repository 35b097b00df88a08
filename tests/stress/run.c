/* SPDX-License-Identifier: MIT */
/*
 * shmfd-stress: one run's processes -- a producer, its readers joined in
 * the ways a run picks -- started, watched for an early death, reaped,
 * and killed off whatever happens.
 */
#define _GNU_SOURCE
#include "stress.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static const size_t ring_sizes[] = { 64 * KiB, 256 * KiB, 1 * MiB, 0 };

void pick_stream(struct run *r, struct rng *rng, uint64_t seed,
		 unsigned int lossy_pct)
{
	struct producer_proc *pp = &r->pp;
	size_t ring = ring_sizes[rng_below(rng, 4)];
	size_t eff = ring ? ring : 4 * MiB;

	pp->stream.key = mix64(seed ^ 0x5eed);
	pp->stream.lossy = rng_pct(rng, lossy_pct);
	pp->stream.ring_size = ring;
	/* Default (a quarter of the ring) or smaller, so that both inline
	 * messages and shmfd_send's automatic blobs stay cheap enough. */
	pp->stream.max_inline = rng_pct(rng, 30) && eff <= 256 * KiB ? 0 :
				rng_range(rng, 256, eff / 8 < 16 * KiB ?
					  eff / 8 : 16 * KiB);
	pp->pcfg.seed = mix64(seed + 1);
	pp->pcfg.blob_permille = (unsigned int)rng_range(rng, 20, 200);
	pp->pcfg.idle_pct = (unsigned int)rng_range(rng, 0, 10);
	pp->pcfg.slow_fill_pct = (unsigned int)rng_range(rng, 0, 20);
	if (pp->stream.lossy) {
		pp->pcfg.timeout_ms = rng_pct(rng, 50) ? -1 : 0;
	} else {
		unsigned int t = (unsigned int)rng_below(rng, 100);

		pp->pcfg.timeout_ms = t < 55 ? -1 : t < 65 ? 0 :
				      (int)rng_range(rng, 1, 500);
	}
}

void pick_reader(struct run *r, struct rng *rng, uint64_t seed, int i,
		 bool stall)
{
	static const enum behaviour normal[] = {
		B_FAST, B_HOLDER, B_SLOW, B_SPIN, B_LATEST,
	};
	struct reader_proc *rp = &r->pp.readers[i];
	unsigned int n = r->pp.stream.lossy ? 5 : 4;	/* LATEST: lossy */

	rp->cfg.stream = &r->pp.stream;
	rp->cfg.behaviour = stall ? B_STALL : normal[rng_below(rng, n)];
	rp->cfg.seed = mix64(seed + 100 + (uint64_t)i);
	rp->cfg.stall_after = rng_range(rng, 0, 3000);
	rp->cfg.timeout_pct = 15;
	rp->cfg.check_holdings = true;
	rp->cfg.slot = i;
	rp->how = (enum join_how)rng_below(rng, JOIN_COUNT);
	rp->name = r->name;
	rp->sock = -1;
	rp->share_fd = -1;
	r->pp.pass_sock[i] = -1;
	r->pp.extra_sock = -1;
}

void run_start(struct run *r)
{
	struct producer_proc *pp = &r->pp;
	int sv[MAX_READERS][2];

	for (int i = 0; i < pp->nreaders; i++) {
		sv[i][0] = sv[i][1] = -1;
		if (pp->readers[i].how != JOIN_PASSED)
			continue;
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
			       sv[i]) < 0) {
			perror("shmfd-stress: socketpair");
			exit(2);
		}
		pp->pass_sock[i] = sv[i][0];
		pp->readers[i].sock = sv[i][1];
	}
	r->producer = spawn(producer_main, pp, 0);
	for (int i = 0; i < pp->nreaders; i++)
		if (pp->readers[i].how != JOIN_FORKED)
			r->pid[i] = spawn(reader_main, &pp->readers[i], 0);
	for (int i = 0; i < pp->nreaders; i++) {
		if (sv[i][0] >= 0) {
			close(sv[i][0]);
			close(sv[i][1]);
		}
	}
}

pid_t reader_pid(const struct run *r, int i)
{
	return r->pid[i] ? r->pid[i] :
	       __atomic_load_n(&ctl->r[i].pid, __ATOMIC_ACQUIRE);
}

bool early_exit(struct run *r)
{
	int st;

	if (!r->producer_reaped && waitpid(r->producer, &st, WNOHANG) ==
	    r->producer) {
		r->producer_reaped = true;
		report_add(r->why, sizeof(r->why), "producer %s before the "
			   "fault: %s", describe_status(st),
			   ctl->err[0] ? ctl->err : "(no message)");
		return true;
	}
	for (int i = 0; i < r->pp.nreaders; i++) {
		if (!r->pid[i] || r->reaped[i] ||
		    waitpid(r->pid[i], &st, WNOHANG) != r->pid[i])
			continue;
		r->reaped[i] = true;
		report_add(r->why, sizeof(r->why), "reader %d %s before the "
			   "fault: %s", i, describe_status(st),
			   ctl->r[i].err[0] ? ctl->r[i].err : "(no message)");
		return true;
	}
	return false;
}

bool run_wait_streaming(struct run *r, uint64_t deadline)
{
	for (;;) {
		bool all = __atomic_load_n(&ctl->pstate, __ATOMIC_ACQUIRE) >=
			   PS_STREAMING;

		for (int i = 0; all && i < r->pp.nreaders; i++)
			all = __atomic_load_n(&ctl->r[i].state,
					      __ATOMIC_ACQUIRE) >= RS_JOINED;
		if (all)
			return true;
		if (early_exit(r))
			return false;
		if (now_ns() >= deadline) {
			report_add(r->why, sizeof(r->why), "not streaming "
				   "in time (producer state %u)",
				   ctl->pstate);
			return false;
		}
		sleep_us(500);
	}
}

bool reap_reader(struct run *r, int i, uint64_t deadline)
{
	pid_t pid = reader_pid(r, i);
	int st;

	if (r->reaped[i])
		return true;
	st = wait_until_ns(pid, deadline);
	if (st == -1)
		return false;
	r->reaped[i] = true;
	r->status[i] = st;
	return true;
}

void run_cleanup(struct run *r)
{
	if (!r->producer_reaped)
		kill_reap(r->producer);
	r->producer_reaped = true;
	for (int i = 0; i < r->pp.nreaders; i++) {
		pid_t pid = reader_pid(r, i);

		if (!r->reaped[i] && pid > 0)
			kill_reap(pid);
		r->reaped[i] = true;
	}
	/* A reader the producer forked, killed above while the producer
	 * lived, comes back to us as a zombie once the producer is gone. */
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

void describe_readers(const struct run *r, char *buf, size_t len)
{
	for (int i = 0; i < r->pp.nreaders; i++) {
		const struct reader_proc *rp = &r->pp.readers[i];

		report_add(buf, len, "%sreader %d: %s, %s", i ? "; " : "", i,
			   join_names[rp->how],
			   behaviour_names[rp->cfg.behaviour]);
	}
}

void print_params(const struct run *r, unsigned int run)
{
	const struct producer_proc *pp = &r->pp;
	char rd[512] = "";

	describe_readers(r, rd, sizeof(rd));
	printf("  run %u: %s, ring %zu, max_inline %zu, timeout %d, "
	       "blobs %u/1000; %s\n", run,
	       pp->stream.lossy ? "lossy" : "reliable", pp->stream.ring_size,
	       pp->stream.max_inline, pp->pcfg.timeout_ms,
	       pp->pcfg.blob_permille, rd);
}

