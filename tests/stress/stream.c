/* SPDX-License-Identifier: MIT */
/*
 * shmfd-stress: the streams every scenario runs.  A producer that mixes
 * every way of publishing (shmfd_send inline and above max_inline,
 * reserve..commit, blobs of its own) and says in ctl->phase what it is
 * doing; readers that verify every message they get (order, lost counts,
 * content, blob seals) while they hold and release in different ways.
 */
#define _GNU_SOURCE
#include "stress.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

const char *const behaviour_names[B_COUNT] = {
	[B_FAST] = "fast",
	[B_HOLDER] = "holder",
	[B_SLOW] = "slow",
	[B_LATEST] = "latest",
	[B_SPIN] = "spin",
	[B_STALL] = "stall",
};

const char *const join_names[JOIN_COUNT] = {
	[JOIN_NAMED] = "named",
	[JOIN_PASSED] = "passed fd",
	[JOIN_FORKED] = "forked by producer",
};

#define SET_PHASE(ph)	__atomic_store_n(&ctl->phase, (uint32_t)(ph), \
					 __ATOMIC_RELAXED)
#define BLOB_SEALS	(F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | \
			 F_SEAL_SEAL)
#define BIG_EXTRA	(64 * KiB)	/* shmfd_send past max_inline by up to */
#define BLOB_MAX	(128 * KiB)	/* blobs of our own, up to */

/* ---- producer ---- */

struct producer {
	struct shmfd_chan *chan;
	struct producer_cfg cfg;
	struct stream_cfg stream;
	struct rng rng;
	uint64_t seq;			/* last published */
	size_t max_inline;
	uint8_t *buf;			/* what shmfd_send copies */
};

struct producer *producer_new(struct shmfd_chan *chan,
			      const struct producer_cfg *cfg)
{
	struct producer *p = calloc(1, sizeof(*p));
	size_t ring;

	if (!p)
		child_fail(ctl->err, "producer: out of memory");
	p->chan = chan;
	p->cfg = *cfg;
	p->stream = *cfg->stream;
	rng_seed(&p->rng, cfg->seed);
	ring = p->stream.ring_size ? p->stream.ring_size : 4 * MiB;
	p->max_inline = p->stream.max_inline ? p->stream.max_inline : ring / 4;
	p->buf = malloc(p->max_inline + BIG_EXTRA + 1);
	if (!p->buf)
		child_fail(ctl->err, "producer: out of memory");
	return p;
}

void producer_free(struct producer *p)
{
	if (!p)
		return;
	free(p->buf);
	free(p);
}

uint64_t producer_published(const struct producer *p)
{
	return p->seq;
}

void producer_set_blobs(struct producer *p, unsigned int permille)
{
	p->cfg.blob_permille = permille;
}

void producer_skip(struct producer *p)
{
	p->seq++;
	ctl->sends++;
	__atomic_store_n(&ctl->published, p->seq, __ATOMIC_RELEASE);
}

/* Mostly small messages, some up to max_inline; a few under the 16-byte
 * payload header, and empty ones. */
static size_t inline_len(struct rng *r, size_t max)
{
	unsigned int pick = (unsigned int)rng_below(r, 100);
	size_t len;

	if (pick < 3)
		len = rng_below(r, PAYLOAD_HDR);
	else if (pick < 70)
		len = rng_range(r, PAYLOAD_HDR, 128);
	else if (pick < 95)
		len = rng_range(r, 129, 1024);
	else
		len = rng_range(r, 1025, max > 1025 ? max : 1025);
	return len < max ? len : max;
}

/*
 * After a call that may wait: the longest such call, how long one that a
 * kill interrupted went on after it, and the contract (DESIGN §3, §4.2):
 * a lossy send never waits, a reliable one waits at most its timeout_ms.
 * The bounds are generous; a shared VM may stall anyone for a while.
 */
static void after_call(struct producer *p, const char *what, uint64_t start,
		       int ret)
{
	uint64_t end = now_ns(), d = end - start;
	uint64_t tk = __atomic_load_n(&ctl->t_kill, __ATOMIC_ACQUIRE);
	uint64_t limit_ms = 0;

	if (d > ctl->max_send_ns)
		ctl->max_send_ns = d;
	if (tk && start < tk && end > tk && end - tk > ctl->unblock_ns)
		ctl->unblock_ns = end - tk;
	if (p->stream.lossy)
		limit_ms = SEND_GRACE_MS;
	else if (p->cfg.timeout_ms >= 0)
		limit_ms = (uint64_t)p->cfg.timeout_ms + SEND_GRACE_MS;
	if (limit_ms && d > limit_ms * NS_PER_MS)
		child_fail(ctl->err, "producer: %s of seq %llu returned %s "
			   "after %.1f ms (%s, timeout_ms %d)", what,
			   (unsigned long long)p->seq + 1, errname(ret),
			   d / 1e6, p->stream.lossy ? "lossy" : "reliable",
			   p->cfg.timeout_ms);
}

/* A send that did not publish: retry on a reliable timeout, else fail. */
static void retry_or_fail(struct producer *p, const char *what, int ret)
{
	if (!p->stream.lossy && (ret == -ETIMEDOUT || ret == -EAGAIN)) {
		ctl->retries++;
		if (ret == -EAGAIN)
			sleep_us(rng_range(&p->rng, 50, 500));
		return;
	}
	child_fail(ctl->err, "producer: %s of seq %llu = %s (%s)", what,
		   (unsigned long long)p->seq + 1, errname(ret),
		   strerror(-ret));
}

static void send_copy(struct producer *p, size_t len, enum phase ph,
		      uint64_t seq)
{
	const char *what = ph == PH_SEND ? "shmfd_send" :
			   "shmfd_send above max_inline";

	payload_fill(p->buf, len, p->stream.key, seq);
	for (;;) {
		uint64_t t = now_ns();
		int ret;

		SET_PHASE(ph);
		ret = shmfd_send(p->chan, p->buf, len, p->cfg.timeout_ms);
		SET_PHASE(PH_IDLE);
		after_call(p, what, t, ret);
		if (ret == 0)
			return;
		retry_or_fail(p, what, ret);
	}
}

static void send_reserved(struct producer *p, uint64_t seq)
{
	size_t rlen = inline_len(&p->rng, p->max_inline), clen = rlen;
	void *buf;
	int ret;

	if (rng_pct(&p->rng, 30))
		clen = rng_below(&p->rng, rlen + 1);	/* commit less */
	for (;;) {
		uint64_t t = now_ns();

		SET_PHASE(PH_RESERVE);
		ret = shmfd_reserve(p->chan, rlen, &buf, p->cfg.timeout_ms);
		SET_PHASE(PH_IDLE);
		after_call(p, "shmfd_reserve", t, ret);
		if (ret == 0)
			break;
		retry_or_fail(p, "shmfd_reserve", ret);
	}
	SET_PHASE(PH_FILL);
	payload_fill(buf, clen, p->stream.key, seq);
	/* Widen the window for a kill between reserve and commit. */
	if (p->cfg.slow_fill_pct && rng_pct(&p->rng, p->cfg.slow_fill_pct))
		sleep_us(rng_range(&p->rng, 20, 500));
	SET_PHASE(PH_COMMIT);
	ret = shmfd_commit(p->chan, clen);
	SET_PHASE(PH_IDLE);
	if (ret != 0)
		child_fail(ctl->err, "producer: shmfd_commit(%zu) of seq %llu "
			   "= %s", clen, (unsigned long long)seq,
			   errname(ret));
}

static void send_own_blob(struct producer *p, uint64_t seq)
{
	size_t size = rng_range(&p->rng, 1, BLOB_MAX);
	struct shmfd_blob *b = NULL;
	int ret;

	SET_PHASE(PH_BLOB_CREATE);
	ret = shmfd_blob_create(&b, size);
	SET_PHASE(PH_BLOB_FILL);
	if (ret != 0)
		child_fail(ctl->err, "producer: shmfd_blob_create(%zu) = %s",
			   size, errname(ret));
	payload_fill(shmfd_blob_data(b), size, p->stream.key, seq);
	for (;;) {
		uint64_t t = now_ns();

		SET_PHASE(PH_SEND_BLOB);
		ret = shmfd_send_blob(p->chan, b, p->cfg.timeout_ms);
		SET_PHASE(PH_IDLE);
		after_call(p, "shmfd_send_blob", t, ret);
		if (ret == 0)
			break;
		/* A failed send leaves the blob ours: send it again. */
		retry_or_fail(p, "shmfd_send_blob", ret);
	}
}

void producer_send_next(struct producer *p, bool final)
{
	uint64_t seq = p->seq + 1;
	enum phase ph;

	if (final) {
		ph = PH_SEND;
		send_copy(p, inline_len(&p->rng, p->max_inline), ph, seq);
	} else if (rng_below(&p->rng, 1000) < p->cfg.blob_permille) {
		if (rng_pct(&p->rng, 50)) {
			ph = PH_SEND_BIG;
			send_copy(p, p->max_inline + 1 +
				  rng_below(&p->rng, BIG_EXTRA), ph, seq);
		} else {
			ph = PH_SEND_BLOB;
			send_own_blob(p, seq);
		}
		ctl->blobs++;
	} else if (rng_pct(&p->rng, 50)) {
		ph = PH_SEND;
		send_copy(p, inline_len(&p->rng, p->max_inline), ph, seq);
	} else {
		ph = PH_COMMIT;
		send_reserved(p, seq);
	}
	p->seq = seq;
	ctl->ops[ph]++;
	ctl->sends++;
	__atomic_store_n(&ctl->published, seq, __ATOMIC_RELEASE);
	if (p->cfg.idle_pct && rng_pct(&p->rng, p->cfg.idle_pct))
		sleep_us(rng_range(&p->rng, 200, 3000));	/* readers sleep */
}

void wait_readers(struct shmfd_chan *chan, int n, uint64_t deadline_ns)
{
	int got;

	while ((got = shmfd_chan_readers(chan)) != n) {
		if (now_ns() >= deadline_ns)
			child_fail(ctl->err, "producer: %d readers joined, "
				   "waited for %d", got, n);
		sleep_us(1000);
	}
}

/* ---- reader ---- */

#define HOLD_MAX	32

struct held {
	struct shmfd_msg m;
	const char *bad;	/* what verification found, or NULL */
	char what[160];
};

struct rd {
	struct shmfd_reader *r;
	const struct reader_cfg *cfg;
	struct ctl_reader *out;
	struct rng rng;
	bool lossy;
	unsigned int hold_max;
	unsigned int timeout_pct;	/* calls with a 0 or short timeout */
	struct held held[HOLD_MAX];
	unsigned int nheld;
};

#define rfail(rd, ...) child_fail((rd)->out->err, __VA_ARGS__)

/* Verify at receipt: order, lost count, blob fd, content. */
static void take(struct rd *rd, struct shmfd_msg *m)
{
	struct ctl_reader *o = rd->out;
	struct held *h = &rd->held[rd->nheld];
	uint64_t last = o->last_seq;

	if (m->seq <= last)
		rfail(rd, "seq %llu after %llu: duplicated or reordered",
		      (unsigned long long)m->seq, (unsigned long long)last);
	if (!rd->lossy && (m->lost || m->seq != last + 1))
		rfail(rd, "reliable: seq %llu after %llu, lost %llu",
		      (unsigned long long)m->seq, (unsigned long long)last,
		      (unsigned long long)m->lost);
	if (m->lost != m->seq - last - 1)
		rfail(rd, "seq %llu after %llu says lost %llu: the gap is %llu",
		      (unsigned long long)m->seq, (unsigned long long)last,
		      (unsigned long long)m->lost,
		      (unsigned long long)(m->seq - last - 1));
	if (m->flags & SHMFD_MSG_BLOB) {
		struct stat st;
		int seals = fcntl(m->fd, F_GET_SEALS);

		if (seals < 0 || (seals & BLOB_SEALS) != BLOB_SEALS ||
		    fstat(m->fd, &st) < 0 || (size_t)st.st_size != m->len)
			rfail(rd, "blob seq %llu: fd %d seals %#x size %lld, "
			      "len %zu", (unsigned long long)m->seq, m->fd,
			      seals, seals < 0 ? -1ll : (long long)st.st_size,
			      m->len);
		o->blobs++;
	} else if (m->fd != -1 || m->flags) {
		rfail(rd, "inline seq %llu: fd %d flags %#x",
		      (unsigned long long)m->seq, m->fd, m->flags);
	}
	h->m = *m;
	h->bad = payload_check(m->data, m->len, rd->cfg->stream->key, m->seq);
	if (h->bad) {
		snprintf(h->what, sizeof(h->what), "%s", h->bad);
		h->bad = h->what;
	}
	rd->nheld++;
	o->received++;
	o->lost += m->lost;
	o->last_seq = m->seq;
}

/* Release held[i]: a torn message must be flagged -ESTALE (lossy only,
 * never a blob); anything else is a failure. */
static void release(struct rd *rd, unsigned int i)
{
	struct held *h = &rd->held[i];
	int ret = shmfd_msg_release(rd->r, &h->m);

	if (ret == -ESTALE && rd->lossy && !(h->m.flags & SHMFD_MSG_BLOB)) {
		rd->out->stale++;
	} else if (ret != 0) {
		rfail(rd, "release of seq %llu (%s) = %s",
		      (unsigned long long)h->m.seq,
		      h->m.flags & SHMFD_MSG_BLOB ? "blob" : "inline",
		      errname(ret));
	} else if (h->bad) {
		rfail(rd, "seq %llu torn or corrupt and not flagged stale: %s",
		      (unsigned long long)h->m.seq, h->bad);
	}
	rd->held[i] = rd->held[--rd->nheld];
}

static void release_all(struct rd *rd)
{
	while (rd->nheld)
		release(rd, (unsigned int)rng_below(&rd->rng, rd->nheld));
}

static int pick_timeout(struct rd *rd)
{
	if (!rng_pct(&rd->rng, rd->timeout_pct))
		return -1;
	return rng_pct(&rd->rng, 50) ? 0 : (int)rng_range(&rd->rng, 1, 20);
}

/* Read until an error other than a timeout; returns it. */
static int read_stream(struct rd *rd)
{
	const struct reader_cfg *cfg = rd->cfg;
	uint64_t next_pause = rng_range(&rd->rng, 50, 500);

	for (;;) {
		struct shmfd_msg m;
		int flags = 0, timeout = pick_timeout(rd), ret;
		uint64_t t;

		if (rd->nheld == rd->hold_max)
			release(rd, (unsigned int)rng_below(&rd->rng,
							    rd->nheld));
		if (cfg->behaviour == B_LATEST && rng_pct(&rd->rng, 10))
			flags = SHMFD_RECV_LATEST;
		/* A reliable reader that holds messages and waits for the
		 * next one can deadlock with a producer waiting for the
		 * space they pin: look first, and let go before sleeping. */
		if (rd->nheld && !rd->lossy && timeout != 0) {
			t = now_ns();
			ret = shmfd_recv(rd->r, &m, flags, 0);
			if (ret == -EAGAIN) {
				release_all(rd);
				t = now_ns();
				ret = shmfd_recv(rd->r, &m, flags, timeout);
			}
		} else {
			t = now_ns();
			ret = shmfd_recv(rd->r, &m, flags, timeout);
		}
		if (ret == -EAGAIN || ret == -ETIMEDOUT) {
			rd->out->timeouts++;
			continue;
		}
		if (ret < 0) {
			rd->out->t_end = now_ns();
			rd->out->t_enter = t;
			return ret;
		}
		take(rd, &m);
		if (cfg->behaviour == B_STALL &&
		    rd->out->received >= cfg->stall_after) {
			/* Hold the ring and never read again. */
			__atomic_store_n(&rd->out->state, RS_STALLED,
					 __ATOMIC_RELEASE);
			for (;;)
				pause();
		}
		if (cfg->behaviour == B_SLOW && !--next_pause) {
			sleep_us(rng_range(&rd->rng, 100, 2000));
			next_pause = rng_range(&rd->rng, 50, 500);
		}
		if (rd->nheld > rd->hold_max - 1 ||
		    (rd->hold_max > 1 && rng_pct(&rd->rng, 30)))
			release(rd, (unsigned int)rng_below(&rd->rng,
							    rd->nheld));
	}
}

static struct shmfd_reader *join(struct reader_proc *rp, struct rd *rd)
{
	struct shmfd_reader *r = NULL;
	int fd, ret;

	switch (rp->how) {
	case JOIN_NAMED:
		while (__atomic_load_n(&ctl->pstate, __ATOMIC_ACQUIRE) <
		       PS_READY)
			sleep_us(500);
		ret = shmfd_reader_open(&r, rp->name, 0);
		if (ret < 0)
			rfail(rd, "shmfd_reader_open(%s) = %s", rp->name,
			      errname(ret));
		return r;
	case JOIN_PASSED:
		fd = recv_fd(rp->sock);
		if (fd < 0)
			rfail(rd, "no share fd from the producer: %s",
			      errname(fd));
		break;
	default:
		/* The inherited share fd is the producer's copy: ours is a
		 * duplicate, which the reader owns once joined. */
		fd = fcntl(rp->share_fd, F_DUPFD_CLOEXEC, 0);
		if (fd < 0)
			rfail(rd, "dup share fd: %s", strerror(errno));
		break;
	}
	ret = shmfd_reader_open_fd(&r, fd, 0);
	if (ret < 0)
		rfail(rd, "shmfd_reader_open_fd = %s", errname(ret));
	return r;
}

int reader_main(void *arg)
{
	struct reader_proc *rp = arg;
	const struct reader_cfg *cfg = &rp->cfg;
	struct ctl_reader *o = &ctl->r[cfg->slot];
	struct holdings *before = NULL;
	struct rd rd = {
		.cfg = cfg,
		.out = o,
		.lossy = cfg->stream->lossy,
		.hold_max = 1,
		.timeout_pct = cfg->timeout_pct,
	};
	struct shmfd_msg m;
	char leaks[ERR_LEN] = "";
	int ret;

	o->pid = getpid();
	o->behaviour = cfg->behaviour;
	rng_seed(&rd.rng, cfg->seed);
	if (cfg->behaviour == B_HOLDER || cfg->behaviour == B_STALL)
		rd.hold_max = (unsigned int)rng_range(&rd.rng, 2, HOLD_MAX);
	if (cfg->check_holdings) {
		before = holdings_new();
		if (!before)
			rfail(&rd, "out of memory");
		holdings_take(before);
	}

	rd.r = join(rp, &rd);
	if (cfg->behaviour == B_SPIN) {
		ret = shmfd_reader_set_spin(rd.r, (unsigned int)
					    rng_range(&rd.rng, 1, 200));
		if (ret < 0)
			rfail(&rd, "shmfd_reader_set_spin = %s", errname(ret));
	}
	__atomic_store_n(&o->state, RS_JOINED, __ATOMIC_RELEASE);

	ret = read_stream(&rd);
	o->result = ret;
	release_all(&rd);
	/* The end is final: asking again says the same. */
	if (ret == -EPIPE) {
		int again = shmfd_recv(rd.r, &m, 0, 0);

		if (again != -EPIPE)
			rfail(&rd, "recv after -EPIPE = %s", errname(again));
	}
	shmfd_reader_close(rd.r);
	if (before && holdings_diff(before, false, leaks, sizeof(leaks)))
		rfail(&rd, "after shmfd_reader_close: %s", leaks);
	holdings_free(before);
	__atomic_store_n(&o->state, RS_DONE, __ATOMIC_RELEASE);
	return 0;
}

/* ---- the producer process ---- */

int producer_main(void *arg)
{
	struct producer_proc *pp = arg;
	struct shmfd_params params = {
		.ring_size = pp->stream.ring_size,
		.max_inline = pp->stream.max_inline,
		.max_readers = pp->stream.max_readers,
		.flags = pp->stream.lossy ? SHMFD_LOSSY : 0,
	};
	struct holdings *before = NULL;
	struct shmfd_chan *chan = NULL;
	struct producer *p;
	pid_t forked[MAX_READERS] = { 0 };
	uint64_t deadline = now_ns() + RUN_DEADLINE_MS * NS_PER_MS;
	char leaks[ERR_LEN] = "";
	int ret;

	ctl->producer_pid = getpid();
	pp->pcfg.stream = &pp->stream;
	if (pp->pcfg.check_holdings) {
		before = holdings_new();
		if (!before)
			child_fail(ctl->err, "producer: out of memory");
		holdings_take(before);
	}
	ret = shmfd_chan_create(&chan, pp->name, &params);
	if (ret < 0)
		child_fail(ctl->err, "producer: shmfd_chan_create = %s",
			   errname(ret));
	for (int i = 0; i < pp->nreaders; i++) {
		struct reader_proc *rp = &pp->readers[i];
		int fd;

		if (rp->how == JOIN_NAMED)
			continue;
		fd = shmfd_chan_share_fd(chan);
		if (fd < 0)
			child_fail(ctl->err, "producer: share_fd = %s",
				   errname(fd));
		if (rp->how == JOIN_PASSED) {
			ret = send_fd(pp->pass_sock[i], fd);
			if (ret < 0)
				child_fail(ctl->err, "producer: pass share "
					   "fd: %s", strerror(-ret));
		} else {
			/* It must outlive us: the producer-kill case. */
			rp->share_fd = fd;
			forked[i] = spawn(reader_main, rp, SPAWN_ORPHAN);
		}
		close(fd);
	}
	if (pp->extra_sock >= 0) {
		int fd = shmfd_chan_share_fd(chan);

		if (fd < 0 || send_fd(pp->extra_sock, fd) < 0)
			child_fail(ctl->err, "producer: extra share fd: %s",
				   errname(fd));
		close(fd);
	}
	__atomic_store_n(&ctl->pstate, PS_READY, __ATOMIC_RELEASE);
	wait_readers(chan, pp->nreaders, deadline);

	p = producer_new(chan, &pp->pcfg);
	__atomic_store_n(&ctl->pstate, PS_STREAMING, __ATOMIC_RELEASE);
	if (pp->until_killed) {
		for (;;)
			producer_send_next(p, false);
	}
	while (pp->until_stopped &&
	       __atomic_load_n(&ctl->cmd, __ATOMIC_ACQUIRE) != CMD_STOP) {
		producer_send_next(p, false);
		__atomic_store_n(&ctl->readers_now, shmfd_chan_readers(chan),
				 __ATOMIC_RELEASE);
	}
	if (pp->until_stopped)
		pp->after_kill = 0;
	for (uint64_t left = pp->after_kill;;) {
		bool killed = pp->victim < 0 ||
			      __atomic_load_n(&ctl->t_kill, __ATOMIC_ACQUIRE);

		if (killed && !left)
			break;
		producer_send_next(p, false);
		if (killed)
			left--;
		if (killed && pp->victim >= 0 && !ctl->drop_ns &&
		    shmfd_chan_readers(chan) == pp->nreaders - 1)
			ctl->drop_ns = now_ns() - ctl->t_kill;
	}
	if (pp->victim >= 0) {
		/* The dead reader is dropped "at once" (DESIGN §4.2): the
		 * channel stops counting it. */
		wait_readers(chan, pp->nreaders - 1,
			     now_ns() + RUN_DEADLINE_MS * NS_PER_MS);
		if (!ctl->drop_ns)
			ctl->drop_ns = now_ns() - ctl->t_kill;
	}
	producer_send_next(p, true);
	SET_PHASE(PH_CLOSE);
	shmfd_chan_close(chan);
	SET_PHASE(PH_IDLE);
	producer_free(p);

	for (int i = 0; i < pp->nreaders; i++) {
		int st;

		if (!forked[i])
			continue;
		st = wait_until_ns(forked[i], now_ns() +
				   RUN_DEADLINE_MS * NS_PER_MS);
		if (st == -1) {
			kill_reap(forked[i]);
			st = -1;
		}
		ctl->r[i].wstatus = st;
		ctl->r[i].reaped = 1;
	}
	if (before && holdings_diff(before, true, leaks, sizeof(leaks)))
		child_fail(ctl->err, "producer: after shmfd_chan_close: %s",
			   leaks);
	holdings_free(before);
	__atomic_store_n(&ctl->pstate, PS_DONE, __ATOMIC_RELEASE);
	return 0;
}
