/* SPDX-License-Identifier: MIT */
/*
 * shmfd-stress: load.  One producer, eight readers (named, passed share
 * fds, forked by the producer; some holding messages, one spinning, one
 * skipping to the newest in lossy mode), ten million messages of mixed
 * sizes: mostly small inline ones, by shmfd_send and reserve..commit, and
 * one in a thousand a blob, by shmfd_send above max_inline or
 * shmfd_send_blob.  Every reader checks order, lost counts and the
 * checksum of every message; at the end each must account for every
 * message published: received (reliable), or received + lost (lossy).
 */
#define _GNU_SOURCE
#include "stress.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define LOAD_READERS		8
#define LOAD_DEADLINE_MS	(30 * 60 * 1000)

void scenario_load(const struct options *o, struct summary *s, bool lossy)
{
	static const enum behaviour kinds[LOAD_READERS] = {
		B_FAST, B_FAST, B_HOLDER, B_FAST, B_SPIN, B_HOLDER, B_FAST,
		B_LATEST,
	};
	uint64_t seed = run_seed(o->seed, s->name, 0);
	struct run *r = calloc(1, sizeof(*r));
	struct producer_proc *pp = &r->pp;
	uint64_t t0, secs_ns, deadline, published, lost_min = UINT64_MAX;
	uint64_t lost_max = 0, stale = 0;
	unsigned int saved_alarm = spawn_alarm_s;
	bool ok = true;
	int pst;

	if ((o->only_run > 0) || !o->load_msgs) {
		free(r);
		return;
	}
	ctl_reset(seed);
	snprintf(r->name, sizeof(r->name), "%s", s->name);
	pp->name = r->name;
	pp->stream.key = mix64(seed ^ 0x10ad);
	pp->stream.lossy = lossy;
	pp->stream.ring_size = 1 * MiB;
	pp->stream.max_inline = 4 * KiB;
	pp->pcfg.seed = mix64(seed + 1);
	pp->pcfg.timeout_ms = -1;
	pp->pcfg.blob_permille = 1;
	pp->pcfg.check_holdings = true;
	pp->victim = -1;
	pp->extra_sock = -1;
	pp->after_kill = o->load_msgs - 1;	/* then the final message */
	pp->nreaders = LOAD_READERS;
	for (int i = 0; i < LOAD_READERS; i++) {
		struct reader_proc *rp = &pp->readers[i];

		rp->cfg.stream = &pp->stream;
		rp->cfg.behaviour = kinds[i] == B_LATEST && !lossy ? B_FAST :
				    kinds[i];
		rp->cfg.seed = mix64(seed + 100 + (uint64_t)i);
		rp->cfg.timeout_pct = 1;
		rp->cfg.check_holdings = true;
		rp->cfg.slot = i;
		rp->how = (enum join_how)(i % JOIN_COUNT);
		rp->name = r->name;
		rp->sock = rp->share_fd = pp->pass_sock[i] = -1;
	}

	spawn_alarm_s = LOAD_DEADLINE_MS / 1000 + 60;
	t0 = now_ns();
	deadline = t0 + LOAD_DEADLINE_MS * NS_PER_MS;
	run_start(r);
	spawn_alarm_s = saved_alarm;
	s->runs++;
	if (!run_wait_streaming(r, now_ns() + RUN_DEADLINE_MS * NS_PER_MS)) {
		ok = false;
		goto out;
	}
	pst = wait_until_ns(r->producer, deadline);
	r->producer_reaped = pst != -1;
	secs_ns = now_ns() - t0;
	if (pst == -1 || !WIFEXITED(pst) || WEXITSTATUS(pst)) {
		report_add(r->why, sizeof(r->why), "producer %s after %llu "
			   "messages: %s; ", describe_status(pst),
			   (unsigned long long)ctl->published,
			   ctl->err[0] ? ctl->err : "(no message)");
		ok = false;
		goto out;
	}
	published = ctl->published;
	if (published != o->load_msgs)
		report_add(r->why, sizeof(r->why), "published %llu of %llu; ",
			   (unsigned long long)published,
			   (unsigned long long)o->load_msgs);
	for (int i = 0; i < LOAD_READERS; i++) {
		struct ctl_reader *cr = &ctl->r[i];
		int rst;

		if (r->pid[i]) {
			if (!reap_reader(r, i, now_ns() + RUN_DEADLINE_MS *
					 NS_PER_MS)) {
				report_add(r->why, sizeof(r->why), "reader %d "
					   "still running after close, last "
					   "seq %llu; ", i,
					   (unsigned long long)cr->last_seq);
				ok = false;
				continue;
			}
			rst = r->status[i];
		} else {
			rst = cr->wstatus;
			r->reaped[i] = true;
		}
		if (!WIFEXITED(rst) || WEXITSTATUS(rst)) {
			report_add(r->why, sizeof(r->why), "reader %d (%s) %s: "
				   "%s; ", i, behaviour_names[cr->behaviour],
				   describe_status(rst),
				   cr->err[0] ? cr->err : "(no message)");
			ok = false;
			continue;
		}
		if (cr->result != -EPIPE || cr->last_seq != published ||
		    cr->received + cr->lost != published ||
		    (!lossy && cr->lost)) {
			report_add(r->why, sizeof(r->why), "reader %d (%s): "
				   "ended with %d, received %llu lost %llu "
				   "last seq %llu of %llu; ", i,
				   behaviour_names[cr->behaviour], cr->result,
				   (unsigned long long)cr->received,
				   (unsigned long long)cr->lost,
				   (unsigned long long)cr->last_seq,
				   (unsigned long long)published);
			ok = false;
		}
		if (cr->lost < lost_min)
			lost_min = cr->lost;
		if (cr->lost > lost_max)
			lost_max = cr->lost;
		stale += cr->stale;
	}
	if (ok && published != o->load_msgs)
		ok = false;
	report_add(s->notes, sizeof(s->notes), "%llu msgs (%llu blobs) to %d "
		   "readers in %.1f s, %.0f msgs/s", (unsigned long long)
		   ctl->published, (unsigned long long)ctl->blobs,
		   LOAD_READERS, secs_ns / 1e9, ctl->published / (secs_ns / 1e9));
	if (lossy && lost_min != UINT64_MAX)
		report_add(s->notes, sizeof(s->notes), "; lost per reader "
			   "%llu..%llu, all counted; %llu stale releases",
			   (unsigned long long)lost_min,
			   (unsigned long long)lost_max,
			   (unsigned long long)stale);
	else if (!lossy)
		report_add(s->notes, sizeof(s->notes), "; none lost; %llu "
			   "send retries", (unsigned long long)ctl->retries);
out:
	if (!ok)
		run_failed(s, 0, seed, "%s", r->why);
	run_cleanup(r);
	free(r);
}
