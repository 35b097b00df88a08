/* SPDX-License-Identifier: MIT */
/*
 * shmfd bench: paced one-way latency, the method of examples/points.c
 * shared by every transport so that rows differ only in the transport.
 *
 * The producer waits until every reader has handled the previous message,
 * pauses --gap microseconds so that each reader is asleep again (or, in
 * the spin scenario, spinning), builds the message, stamps it with
 * CLOCK_MONOTONIC and sends it; the message also carries the time the
 * build began, for the points scenario's second figure.  Each reader stamps the moment its
 * receive returns (after the checksum, for points) and stores the
 * difference in shared memory; a message's latency is that of its last
 * reader.  The acks travel over a pipe outside the timed interval.
 */
#define _GNU_SOURCE
#include "tool.h"
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NPOINTS		10000

struct point {
	double x, y;
};

static double x_of(uint64_t seq, long i)
{
	return (double)seq + (double)i * 0.5;
}

static double y_of(uint64_t seq, long i)
{
	return (double)seq - (double)i * 0.25;
}

/* FNV-1a over the payload's 64-bit words, seeded with seq: the reader
 * touches every byte, as a real consumer of the points would. */
static uint64_t checksum(const struct bench_msg *m, size_t len)
{
	const unsigned char *p = (const unsigned char *)(m + 1);
	uint64_t h = 0xcbf29ce484222325u ^ m->seq, w;

	for (size_t i = 0; i + sizeof(w) <= len - sizeof(*m); i += sizeof(w)) {
		memcpy(&w, p + i, sizeof(w));
		h = (h ^ w) * 0x100000001b3u;
	}
	return h;
}

static void fill(const struct lat_ctx *c, struct bench_msg *m, uint64_t seq)
{
	m->seq = seq;
	m->sum = 0;
	if (c->check) {
		struct point *pts = (struct point *)(m + 1);

		for (long i = 0; i < NPOINTS; i++) {
			pts[i].x = x_of(seq, i);
			pts[i].y = y_of(seq, i);
		}
		m->sum = checksum(m, c->len);
	}
}

static void reader_main(void *arg, int rd)
{
	struct lat_ctx *c = arg;
	uint64_t *lat = c->lat + (size_t)rd * (size_t)c->count;

	c->x->join(c, rd);
	bench_ack_send(&c->ack);	/* joined: the next message is ours */
	for (long i = 0; i < c->count; i++) {
		const struct bench_msg *m = c->x->recv(c, rd);
		uint64_t sum = c->check ? checksum(m, c->len) : 0;
		uint64_t t = bench_now_ns();

		if (m->seq != (uint64_t)i + 1)
			bench_child_die("%s: reader %d got message %llu, "
					"expected %ld", c->x->name, rd,
					(unsigned long long)m->seq, i + 1);
		if (c->check && sum != m->sum)
			bench_child_die("%s: reader %d: message %ld is corrupt",
					c->x->name, rd, i + 1);
		lat[i] = t - m->sent_ns;
		if (c->lat_built)
			c->lat_built[(size_t)rd * (size_t)c->count +
				     (size_t)i] = t - m->built_ns;
		c->x->release(c, rd);
		bench_ack_send(&c->ack);
	}
}

/* The message reached everyone when its last reader had it. */
static void last_reader(uint64_t *out, const uint64_t *lat, long count,
			int nreaders)
{
	for (long i = 0; i < count; i++) {
		out[i] = lat[i];
		for (int rd = 1; rd < nreaders; rd++) {
			uint64_t v = lat[(size_t)rd * (size_t)count + (size_t)i];

			if (v > out[i])
				out[i] = v;
		}
	}
}

bool bench_lat_run(const struct lat_xport *x, struct bench_row *row,
		   uint64_t *out, uint64_t *out_built, long count, size_t len,
		   int nreaders, unsigned int spin_us, bool points)
{
	struct lat_ctx c = {
		.x = x,
		.len = points ? sizeof(struct bench_msg) +
				NPOINTS * sizeof(struct point) : len,
		.nreaders = nreaders,
		.count = count,
		.inplace = points,
		.check = points,
		.spin_us = spin_us,
		.share_fd = -1,
		.efd = -1,
		.mq = (mqd_t)-1,
	};
	size_t lat_n = (size_t)nreaders * (size_t)c.count;
	size_t lat_size = (out_built ? 2 : 1) * lat_n * sizeof(uint64_t);

	for (int i = 0; i < BENCH_MAX_READERS; i++)
		c.fd[i][0] = c.fd[i][1] = -1;
	if (x->setup(&c) > 0) {
		snprintf(row->note, sizeof(row->note), "%s", c.note);
		return false;
	}
	snprintf(row->note, sizeof(row->note), "%s", c.note);
	c.lat = bench_shm(lat_size);
	c.lat_built = out_built ? c.lat + lat_n : NULL;
	bench_ack_open(&c.ack);
	for (int rd = 0; rd < nreaders; rd++)
		bench_fork(reader_main, &c, rd);
	bench_ack_wait(&c.ack, nreaders);

	for (long i = 1; i <= c.count; i++) {
		struct bench_msg *m;
		uint64_t built;

		bench_pause_us(bench_opt.gap_us);
		built = bench_now_ns();
		m = x->buf(&c);
		fill(&c, m, (uint64_t)i);
		m->built_ns = built;
		m->sent_ns = bench_now_ns();
		x->send(&c);
		bench_ack_wait(&c.ack, nreaders);
	}
	if (x->finish)
		x->finish(&c);
	bench_reap();
	x->teardown(&c);
	bench_ack_close(&c.ack);

	last_reader(out, c.lat, c.count, nreaders);
	if (out_built)
		last_reader(out_built, c.lat_built, c.count, nreaders);
	bench_unshm(c.lat, lat_size);
	return true;
}

/* ---- libshmfd ---- */

static int shmfd_setup(struct lat_ctx *c)
{
	int ret;

	/* Default parameters: what a user gets without tuning. */
	ret = shmfd_chan_create(&c->chan, NULL, NULL);
	if (ret < 0)
		bench_die("shmfd_chan_create: %s", strerror(-ret));
	c->share_fd = shmfd_chan_share_fd(c->chan);
	if (c->share_fd < 0)
		bench_die("shmfd_chan_share_fd: %s", strerror(-c->share_fd));
	c->wbuf = calloc(1, c->len);
	if (!c->wbuf)
		bench_die("out of memory");
	if (c->spin_us)
		snprintf(c->note, sizeof(c->note), "(spins %u us)", c->spin_us);
	return 0;
}

static void shmfd_join(struct lat_ctx *c, int rd)
{
	int ret;

	ret = shmfd_reader_open_fd(&c->reader, c->share_fd, 0);
	if (ret < 0)
		bench_child_die("shmfd: reader %d: shmfd_reader_open_fd: %s",
				rd, strerror(-ret));
	if (c->spin_us) {
		ret = shmfd_reader_set_spin(c->reader, c->spin_us);
		if (ret < 0)
			bench_child_die("shmfd_reader_set_spin(%u): %s",
					c->spin_us, strerror(-ret));
	}
}

static const struct bench_msg *shmfd_recv_msg(struct lat_ctx *c, int rd)
{
	int ret = shmfd_recv(c->reader, &c->msg, 0, BENCH_TIMEOUT_MS);

	if (ret < 0)
		bench_child_die("shmfd: reader %d: shmfd_recv: %s", rd,
				strerror(-ret));
	if (c->msg.len != c->len || c->msg.fd != -1)
		bench_child_die("shmfd: reader %d: a %zu-byte message (fd %d), "
				"expected %zu bytes inline", rd, c->msg.len,
				c->msg.fd, c->len);
	return c->msg.data;
}

static void shmfd_release(struct lat_ctx *c, int rd)
{
	int ret = shmfd_msg_release(c->reader, &c->msg);

	if (ret < 0)
		bench_child_die("shmfd: reader %d: shmfd_msg_release: %s", rd,
				strerror(-ret));
}

/* A small message is copied in by shmfd_send, as a pipe copies it; the
 * points are built in the ring, which is the point of reserve/commit. */
static struct bench_msg *shmfd_buf(struct lat_ctx *c)
{
	void *p;
	int ret;

	if (!c->inplace)
		return c->wbuf;
	ret = shmfd_reserve(c->chan, c->len, &p, BENCH_TIMEOUT_MS);
	if (ret < 0)
		bench_die("shmfd_reserve(%zu): %s", c->len, strerror(-ret));
	return p;
}

static void shmfd_send_msg(struct lat_ctx *c)
{
	int ret;

	if (c->inplace)
		ret = shmfd_commit(c->chan, c->len);
	else
		ret = shmfd_send(c->chan, c->wbuf, c->len, BENCH_TIMEOUT_MS);
	if (ret < 0)
		bench_die("shmfd_%s: %s", c->inplace ? "commit" : "send",
			  strerror(-ret));
}

static void shmfd_teardown(struct lat_ctx *c)
{
	close(c->share_fd);
	shmfd_chan_close(c->chan);
	free(c->wbuf);
}

const struct lat_xport bench_x_shmfd = {
	.name = "shmfd",
	.setup = shmfd_setup,
	.join = shmfd_join,
	.recv = shmfd_recv_msg,
	.release = shmfd_release,
	.buf = shmfd_buf,
	.send = shmfd_send_msg,
	.teardown = shmfd_teardown,
};
