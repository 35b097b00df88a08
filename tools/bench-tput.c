/* SPDX-License-Identifier: MIT */
/*
 * shmfd bench: throughput.  The producer sends 64-byte messages as fast
 * as it can for --seconds, one send call per message; the reader takes
 * and releases each one, sleeping (no spin) whenever it finds nothing,
 * and checks that the sequence numbers follow each other.  The rate is
 * messages received over the time from the producer's first send to the
 * reader's end of stream.
 *
 * How fast shared memory moves between two vCPUs depends on where the
 * host runs them at the moment, more than anything else measured here:
 * so the rows take turns, in rounds of --seconds / TPUT_ROUNDS each, and
 * each row's figure is the median of its rounds, with their range.
 */
#define _GNU_SOURCE
#include "tool.h"
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MSG_LEN		64
#define MSG_WORDS	(MSG_LEN / 8)
#define CHECK_EVERY	256		/* messages between two looks at the clock */
#define TPUT_ROUNDS	5
#define TPUT_KINDS	4

enum tput_kind { T_SHMFD, T_PIPE, T_UNIX, T_MQ };

struct tput_res {		/* shared: written by the reader */
	uint64_t t0;		/* producer: just before the first send */
	uint64_t got;
	uint64_t errors;	/* messages out of sequence */
	uint64_t first_bad;
	uint64_t t_end;
};

struct tput {
	enum tput_kind kind;
	const char *name;
	struct tput_res *res;
	struct bench_ack ack;
	struct shmfd_chan *chan;
	int share_fd;
	int fd[2];		/* pipe or socket: [1] writes */
	mqd_t mq;
	double secs;		/* this round's length */
};

static void count(struct tput *t, uint64_t seq, uint64_t *expect)
{
	if (seq != *expect) {
		if (!t->res->errors++)
			t->res->first_bad = *expect;
		*expect = seq;
	}
	(*expect)++;
	t->res->got++;
}

static void reader_main(void *arg, int idx)
{
	struct tput *t = arg;
	uint64_t buf[MSG_WORDS], expect = 1;

	(void)idx;
	if (t->kind == T_SHMFD) {
		struct shmfd_reader *r;
		struct shmfd_msg m;
		int ret;

		ret = shmfd_reader_open_fd(&r, t->share_fd, 0);
		if (ret < 0)
			bench_child_die("throughput: shmfd_reader_open_fd: %s",
					strerror(-ret));
		bench_ack_send(&t->ack);
		while ((ret = shmfd_recv(r, &m, 0, BENCH_TIMEOUT_MS)) == 0) {
			uint64_t seq;

			if (m.len != MSG_LEN)
				bench_child_die("throughput: a %zu-byte "
						"message", m.len);
			memcpy(&seq, m.data, sizeof(seq));
			if (m.seq != seq)
				t->res->errors++;
			count(t, seq, &expect);
			ret = shmfd_msg_release(r, &m);
			if (ret < 0)
				bench_child_die("throughput: "
						"shmfd_msg_release: %s",
						strerror(-ret));
		}
		t->res->t_end = bench_now_ns();
		if (ret != -EPIPE)
			bench_child_die("throughput: shmfd_recv: %s",
					strerror(-ret));
		shmfd_reader_close(r);
		return;
	}

	/* Our copy of the writing end would keep EOF from ever coming. */
	if (t->kind != T_MQ)
		close(t->fd[1]);
	bench_ack_send(&t->ack);
	for (;;) {
		if (t->kind == T_MQ) {
			ssize_t n = mq_receive(t->mq, (char *)buf, MSG_LEN,
					       NULL);

			if (n < 0 && errno == EINTR)
				continue;
			if (n != MSG_LEN)
				bench_child_die("throughput: mq_receive: %s",
						n < 0 ? strerror(errno)
						      : "short message");
			if (buf[0] == 0)	/* the end */
				break;
		} else {
			/* One message per read, as the brief of the
			 * baseline says: 64 bytes at a time. */
			size_t have = 0;

			while (have < MSG_LEN) {
				ssize_t n = read(t->fd[0], (char *)buf + have,
						 MSG_LEN - have);

				if (n < 0 && errno == EINTR)
					continue;
				if (n < 0)
					bench_child_die("throughput: %s read: "
							"%s", t->name,
							strerror(errno));
				if (n == 0)
					break;
				have += (size_t)n;
			}
			if (have == 0)
				break;
			if (have != MSG_LEN)
				bench_child_die("throughput: %s: end of file "
						"inside a message", t->name);
		}
		count(t, buf[0], &expect);
	}
	t->res->t_end = bench_now_ns();
}

static void setup(struct tput *t)
{
	int ret;

	t->share_fd = t->fd[0] = t->fd[1] = -1;
	switch (t->kind) {
	case T_SHMFD:
		ret = shmfd_chan_create(&t->chan, NULL, NULL);
		if (ret < 0)
			bench_die("shmfd_chan_create: %s", strerror(-ret));
		t->share_fd = shmfd_chan_share_fd(t->chan);
		if (t->share_fd < 0)
			bench_die("shmfd_chan_share_fd: %s",
				  strerror(-t->share_fd));
		break;
	case T_PIPE:
		if (pipe2(t->fd, O_CLOEXEC) < 0)
			bench_die("pipe: %s", strerror(errno));
		break;
	case T_UNIX:
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
			       t->fd) < 0)
			bench_die("socketpair: %s", strerror(errno));
		break;
	case T_MQ:
		break;		/* opened by the caller: it may be missing */
	}
}

/* The producer's loops, one per kind so that no indirect call sits in
 * the hot loop of any row. */
static uint64_t produce(struct tput *t)
{
	uint64_t buf[MSG_WORDS] = { 0 }, seq = 0;
	uint64_t end = t->res->t0 + (uint64_t)(t->secs * 1e9);
	int ret;

	do {
		for (int i = 0; i < CHECK_EVERY; i++) {
			buf[0] = ++seq;
			switch (t->kind) {
			case T_SHMFD:
				ret = shmfd_send(t->chan, buf, MSG_LEN,
						 BENCH_TIMEOUT_MS);
				if (ret < 0)
					bench_die("throughput: shmfd_send: %s",
						  strerror(-ret));
				break;
			case T_PIPE:
			case T_UNIX:
				bench_write_all(t->fd[1], buf, MSG_LEN,
						t->name);
				break;
			case T_MQ:
				if (mq_send(t->mq, (char *)buf, MSG_LEN, 0) < 0)
					bench_die("throughput: mq_send: %s",
						  strerror(errno));
				break;
			}
		}
	} while (bench_now_ns() < end);
	return seq;
}

/* One round of one row: its rate, messages per second. */
static double run(struct tput *t)
{
	double rate;
	uint64_t sent, zero[MSG_WORDS] = { 0 };
	double secs;

	t->res = bench_shm(sizeof(*t->res));
	bench_ack_open(&t->ack);
	bench_fork(reader_main, t, 0);
	bench_ack_wait(&t->ack, 1);
	if (t->kind != T_SHMFD)
		close(t->fd[0]);	/* the reader's end is the reader's */
	t->fd[0] = -1;

	t->res->t0 = bench_now_ns();
	sent = produce(t);
	switch (t->kind) {
	case T_SHMFD:
		shmfd_chan_close(t->chan);	/* the reader gets -EPIPE */
		close(t->share_fd);
		break;
	case T_PIPE:
	case T_UNIX:
		close(t->fd[1]);		/* the reader gets EOF */
		break;
	case T_MQ:
		if (mq_send(t->mq, (char *)zero, MSG_LEN, 0) < 0)
			bench_die("throughput: mq_send: %s", strerror(errno));
		mq_close(t->mq);
		break;
	}
	bench_reap();
	bench_ack_close(&t->ack);

	if (t->res->errors)
		bench_die("throughput: %s: %llu messages out of sequence (the "
			  "first: expected %llu)", t->name,
			  (unsigned long long)t->res->errors,
			  (unsigned long long)t->res->first_bad);
	if (t->res->got != sent)
		bench_die("throughput: %s: %llu messages sent, %llu received",
			  t->name, (unsigned long long)sent,
			  (unsigned long long)t->res->got);
	secs = (double)(t->res->t_end - t->res->t0) / 1e9;
	rate = secs > 0 ? (double)t->res->got / secs : 0;
	bench_unshm(t->res, sizeof(*t->res));
	return rate;
}

/* One round of a row; -1 when the row cannot run here (mq), its note
 * then says why. */
static double round_of(enum tput_kind kind, const char *name,
		       struct bench_row *r, double secs)
{
	struct tput t = { .kind = kind, .name = name, .secs = secs };

	setup(&t);
	if (kind == T_MQ) {
		struct mq_attr attr = { .mq_maxmsg = 10,
					.mq_msgsize = MSG_LEN };
		char name_mq[64];

		snprintf(name_mq, sizeof(name_mq), "/shmfd-bench-%d",
			 (int)getpid());
		t.mq = mq_open(name_mq, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
			       0600, &attr);
		if (t.mq == (mqd_t)-1) {
			if (errno != ENOSYS && errno != EACCES &&
			    errno != EPERM)
				bench_die("mq_open %s: %s", name_mq,
					  strerror(errno));
			snprintf(r->note, sizeof(r->note), "mq_open: %s",
				 strerror(errno));
			return -1;
		}
		if (mq_unlink(name_mq) < 0)
			bench_die("mq_unlink %s: %s", name_mq, strerror(errno));
	}
	return run(&t);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

void bench_throughput(struct bench_scen *s)
{
	struct bench_row *shm, *sock;
	char buf[64];

	static const struct {
		enum tput_kind kind;
		const char *name;
	} rows[TPUT_KINDS] = {
		{ T_SHMFD, "shmfd" }, { T_PIPE, "pipe" },
		{ T_UNIX, "unix" }, { T_MQ, "mq" },
	};
	double rate[TPUT_KINDS][TPUT_ROUNDS];
	struct bench_row *r[TPUT_KINDS];
	double secs = bench_opt.seconds / TPUT_ROUNDS;

	s->kind = BENCH_RATE;
	snprintf(s->title, sizeof(s->title), "64-byte messages, %.1f s per "
		 "row in %d rounds, one send per message, reader sleeps when "
		 "idle", bench_opt.seconds, TPUT_ROUNDS);
	for (int k = 0; k < TPUT_KINDS; k++)
		r[k] = bench_row_add(s, rows[k].name);
	for (int i = 0; i < TPUT_ROUNDS; i++) {
		for (int k = 0; k < TPUT_KINDS; k++) {
			if (i && !r[k]->avail)
				continue;	/* unavailable in round 0 */
			bench_progress("throughput %s (%d/%d, round %d/%d)",
				       rows[k].name, k + 1, TPUT_KINDS, i + 1,
				       TPUT_ROUNDS);
			rate[k][i] = round_of(rows[k].kind, rows[k].name,
					      r[k], secs);
			r[k]->avail = rate[k][i] >= 0;
		}
	}
	for (int k = 0; k < TPUT_KINDS; k++) {
		if (!r[k]->avail)
			continue;
		qsort(rate[k], TPUT_ROUNDS, sizeof(double), cmp_double);
		r[k]->rate = rate[k][TPUT_ROUNDS / 2];
		snprintf(r[k]->note, sizeof(r[k]->note), "(rounds %.3g-%.3g "
			 "M/s%s)", rate[k][0] / 1e6,
			 rate[k][TPUT_ROUNDS - 1] / 1e6,
			 rows[k].kind == T_MQ ? ", queue of 10" : "");
	}

	shm = bench_row_find(s, "shmfd");
	sock = bench_row_find(s, "unix");
	snprintf(buf, sizeof(buf), "%.1f M msgs/s", shm->rate / 1e6);
	bench_target(s, true, shm->rate >= 40e6,
		     "throughput >= 40 M msgs/s:", "%s", buf);
	bench_target(s, sock->avail, sock->rate > 0 &&
		     shm->rate >= 30 * sock->rate,
		     "throughput >= 30x unix socket:", "%.1fx",
		     sock->rate > 0 ? shm->rate / sock->rate : 0.0);
}
