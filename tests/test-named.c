/* SPDX-License-Identifier: MIT */
/*
 * Named channels: the socket in $SHMFD_DIR (or the default directories),
 * -ENOENT for a missing or stale channel, a stale socket of a SIGKILLed
 * producer replaced on create, -EADDRINUSE for a live one, the directory
 * checks, and (as root) the access checks between users: the socket
 * file's mode is not what protects a channel, SO_PEERCRED is.
 */
#define _GNU_SOURCE
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <shmfd.h>

#include "helpers.h"

#define KiB		1024u
#define NOBODY		65534

static void path_of(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", th_dir(), name);
}

static void send_seq(struct shmfd_chan *chan, uint64_t seq)
{
	char buf[100];

	th_fill(buf, sizeof(buf), seq);
	expect_ok(shmfd_send(chan, buf, sizeof(buf), -1));
}

static struct shmfd_chan *create_mode(const char *name, mode_t mode)
{
	struct shmfd_params p = { .mode = mode };
	struct shmfd_chan *chan = NULL;
	int ret = shmfd_chan_create(&chan, name, &p);

	expect(ret == 0, "shmfd_chan_create(%s, mode %#o) = %d (%s)", name,
	       (unsigned int)mode, ret, th_strerr(ret));
	return chan;
}

struct who {
	const char *name;
	uid_t uid;		/* become this user first, unless 0 */
	gid_t gid;
	int flags;
};

static void become(const struct who *w)
{
	if (!w->uid)
		return;
	expect_sys(setgroups(0, NULL));
	expect_sys(setgid(w->gid));
	expect_sys(setuid(w->uid));
}

/* Join by name, report the result, then read messages 1.. until -EPIPE
 * and report how many arrived intact. */
static int named_reader(int sock, void *arg)
{
	const struct who *w = arg;
	struct shmfd_reader *r = NULL;
	struct shmfd_msg m;
	uint64_t seq = 0;
	int ret;

	become(w);
	ret = shmfd_reader_open(&r, w->name, w->flags);
	th_put(sock, ret);
	if (ret < 0)
		return 0;
	while ((ret = shmfd_recv(r, &m, 0, -1)) == 0) {
		expect_eq(m.seq, seq + 1);
		expect_eq(m.len, 100);
		expect(th_check(m.data, m.len, m.seq) < 0, "message %llu "
		       "corrupt", (unsigned long long)m.seq);
		expect_eq(shmfd_msg_release(r, &m), 0);
		seq = m.seq;
	}
	expect_err(ret, EPIPE);
	th_put(sock, (int64_t)seq);
	shmfd_reader_close(r);
	return 0;
}

/* A reader of name as w: expect its open to return want; if it joined,
 * send n messages, close the channel and check it got them.  Closes
 * chan in every case. */
static void expect_join(struct shmfd_chan *chan, const struct who *w,
			int want, int n)
{
	struct th_child c = th_spawn(named_reader, (void *)w, 0);
	int64_t ret = th_get(c.sock);

	ck_assert_msg(ret == want, "%s as %u:%u: shmfd_reader_open = %lld "
		      "(%s), expected %d (%s)", w->name, (unsigned int)w->uid,
		      (unsigned int)w->gid, (long long)ret, th_strerr(ret),
		      want, th_strerr(want));
	if (ret == 0) {
		expect_eq(shmfd_chan_readers(chan), 1);
		for (int seq = 1; seq <= n; seq++)
			send_seq(chan, (uint64_t)seq);
	}
	shmfd_chan_close(chan);
	if (ret == 0)
		expect_eq(th_get(c.sock), n);
	expect_exit(c.pid, 0);
	close(c.sock);
}

START_TEST(test_missing)
{
	struct shmfd_reader *r = NULL;
	char dir[256];

	expect_err(shmfd_reader_open(&r, "nobody-home", 0), ENOENT);
	/* Nor does a reader create the directory. */
	snprintf(dir, sizeof(dir), "%s/absent", th_dir());
	setenv("SHMFD_DIR", dir, 1);
	expect_err(shmfd_reader_open(&r, "nobody-home", 0), ENOENT);
	expect_sys_err(access(dir, F_OK), ENOENT);
}
END_TEST

START_TEST(test_round_trip)
{
	struct shmfd_chan *chan = th_chan("rt", 64 * KiB, 0, 0);
	struct who w = { .name = "rt" };
	struct shmfd_reader *r = NULL;
	char path[256];
	struct stat st;

	path_of(path, sizeof(path), "rt");
	expect_sys(lstat(path, &st));
	ck_assert_msg(S_ISSOCK(st.st_mode), "%s is not a socket", path);
	ck_assert_uint_eq(st.st_uid, geteuid());
	ck_assert_msg((st.st_mode & 07777) == 0600, "socket mode %#o, "
		      "expected the default 0600", st.st_mode & 07777);
	expect_join(chan, &w, 0, 1000);
	/* Closing removed the socket. */
	expect_sys_err(lstat(path, &st), ENOENT);
	expect_err(shmfd_reader_open(&r, "rt", 0), ENOENT);
	/* And the name is free again. */
	chan = th_chan("rt", 64 * KiB, 0, 0);
	expect_join(chan, &w, 0, 3);
}
END_TEST

static const mode_t modes[] = { 0600, 0640, 0660, 0604, 0666, 0700 };

START_TEST(test_socket_mode)
{
	struct shmfd_chan *chan = create_mode("m", modes[_i]);
	char path[256];
	struct stat st;

	path_of(path, sizeof(path), "m");
	expect_sys(lstat(path, &st));
	/* Execute bits mean nothing on a socket. */
	ck_assert_msg((st.st_mode & 0666) == (modes[_i] & 0666), "socket "
		      "mode %#o, asked for %#o", st.st_mode & 07777,
		      (unsigned int)modes[_i]);
	shmfd_chan_close(chan);
}
END_TEST

/* A named channel also hands out share fds. */
START_TEST(test_named_share_fd)
{
	struct shmfd_chan *chan = th_chan("sf", 64 * KiB, 0, 0);
	int fd = expect_ok(shmfd_chan_share_fd(chan));
	struct shmfd_reader *r = th_join(fd, 0);
	struct shmfd_msg m;

	expect_eq(shmfd_chan_readers(chan), 1);
	send_seq(chan, 1);
	expect_ok(shmfd_recv(r, &m, 0, 0));
	expect_eq(m.seq, 1);
	expect_eq(shmfd_msg_release(r, &m), 0);
	shmfd_reader_close(r);
	close(fd);
	shmfd_chan_close(chan);
}
END_TEST

static int create_and_report(int sock, void *arg)
{
	struct shmfd_chan *chan = NULL;
	int ret = shmfd_chan_create(&chan, arg, NULL);

	th_put(sock, ret);
	if (ret == 0) {
		th_get(sock);
		shmfd_chan_close(chan);
	}
	return 0;
}

START_TEST(test_addrinuse)
{
	struct shmfd_chan *chan = th_chan("busy", 64 * KiB, 0, 0);
	struct shmfd_chan *again = NULL;
	struct who w = { .name = "busy" };
	struct th_child c;
	struct stat before, after;
	char path[256];

	path_of(path, sizeof(path), "busy");
	expect_sys(lstat(path, &before));
	expect_err(shmfd_chan_create(&again, "busy", NULL), EADDRINUSE);
	c = th_spawn(create_and_report, "busy", 0);
	expect_err(th_get(c.sock), EADDRINUSE);
	expect_exit(c.pid, 0);
	close(c.sock);
	/* The live channel's socket is untouched and still answers. */
	expect_sys(lstat(path, &after));
	ck_assert_uint_eq(before.st_ino, after.st_ino);
	expect_join(chan, &w, 0, 10);
}
END_TEST

START_TEST(test_stale_replaced)
{
	struct th_child p = th_spawn(create_and_report, "stale", 0);
	struct who w = { .name = "stale" };
	struct shmfd_reader *r = NULL;
	struct shmfd_chan *chan;
	char path[256];
	struct stat st;

	expect_eq(th_get(p.sock), 0);
	kill(p.pid, SIGKILL);
	expect_signal(p.pid, SIGKILL);
	close(p.sock);

	path_of(path, sizeof(path), "stale");
	expect_sys(lstat(path, &st));		/* left behind */
	ck_assert(S_ISSOCK(st.st_mode));
	expect_err(shmfd_reader_open(&r, "stale", 0), ENOENT);
	chan = th_chan("stale", 64 * KiB, 0, 0);
	expect_join(chan, &w, 0, 10);
}
END_TEST

START_TEST(test_dir_created)
{
	struct shmfd_chan *chan;
	char dir[256];
	struct stat st;

	snprintf(dir, sizeof(dir), "%s/made", th_dir());
	setenv("SHMFD_DIR", dir, 1);
	chan = th_chan("d", 64 * KiB, 0, 0);
	expect_sys(stat(dir, &st));
	ck_assert(S_ISDIR(st.st_mode));
	ck_assert_msg((st.st_mode & 07777) == 0700, "created with mode %#o",
		      st.st_mode & 07777);
	ck_assert_uint_eq(st.st_uid, geteuid());
	shmfd_chan_close(chan);
}
END_TEST

/* A group- or world-writable directory must be sticky, or anyone could
 * replace our socket. */
START_TEST(test_dir_unsafe)
{
	struct shmfd_chan *chan = NULL;

	expect_sys(chmod(th_dir(), 0777));
	expect_err(shmfd_chan_create(&chan, "u", NULL), EACCES);
	expect_sys(chmod(th_dir(), 0770));
	expect_err(shmfd_chan_create(&chan, "u", NULL), EACCES);
	expect_sys(chmod(th_dir(), 01777));
	chan = th_chan("u", 64 * KiB, 0, 0);
	shmfd_chan_close(chan);
	expect_sys(chmod(th_dir(), 0755));
	chan = th_chan("u", 64 * KiB, 0, 0);
	shmfd_chan_close(chan);
}
END_TEST

/* Without SHMFD_DIR: $XDG_RUNTIME_DIR/shmfd, else /tmp/shmfd-$UID. */
START_TEST(test_default_dirs)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	char name[64], path[256], saved[256] = "";
	struct shmfd_chan *chan;
	struct who w;
	struct stat st;

	/* Put the environment back for CK_FORK=no runs. */
	if (xdg)
		snprintf(saved, sizeof(saved), "%s", xdg);
	snprintf(name, sizeof(name), "dflt-%d", (int)getpid());
	w = (struct who){ .name = name };

	unsetenv("SHMFD_DIR");
	setenv("XDG_RUNTIME_DIR", th_dir(), 1);
	chan = th_chan(name, 64 * KiB, 0, 0);
	snprintf(path, sizeof(path), "%s/shmfd/%s", th_dir(), name);
	expect_sys(lstat(path, &st));
	ck_assert(S_ISSOCK(st.st_mode));
	expect_join(chan, &w, 0, 3);

	unsetenv("XDG_RUNTIME_DIR");
	chan = th_chan(name, 64 * KiB, 0, 0);
	snprintf(path, sizeof(path), "/tmp/shmfd-%u/%s",
		 (unsigned int)getuid(), name);
	expect_sys(lstat(path, &st));
	ck_assert(S_ISSOCK(st.st_mode));
	expect_join(chan, &w, 0, 3);
	expect_sys_err(lstat(path, &st), ENOENT);
	if (xdg)
		setenv("XDG_RUNTIME_DIR", saved, 1);
}
END_TEST

/* ---- figures from outside: shmfd_chan_stat ---- */

#define STAT_MS		5000

static struct shmfd_stat stat_ok_at(const char *file, int line,
				    const char *name)
{
	struct shmfd_stat st;
	int ret;

	memset(&st, 0xa5, sizeof(st));
	ret = shmfd_chan_stat(name, &st, STAT_MS);
	if (ret != 0)
		th_fail(file, line, "shmfd_chan_stat(%s) = %d (%s)", name, ret,
			th_strerr(ret));
	return st;
}
#define stat_ok(name) stat_ok_at(__FILE__, __LINE__, name)

/* Poll the figures until readers == n (the admission thread counts a
 * reader that left a moment after it is gone). */
static struct shmfd_stat stat_readers(const char *name, uint32_t n)
{
	struct shmfd_stat st;

	for (int i = 0; i < 1000 * th_slowdown(); i++) {
		st = stat_ok(name);
		if (st.readers == n)
			return st;
		usleep(10000);
	}
	ck_abort_msg("%s: %u readers, expected %u", name, st.readers, n);
	return st;
}

START_TEST(test_stat_dir)
{
	char buf[256];
	int n = shmfd_dir(buf, sizeof(buf));

	expect_eq(n, (int64_t)strlen(th_dir()));
	ck_assert_str_eq(buf, th_dir());
	expect_err(shmfd_dir(NULL, 10), EINVAL);
	expect_err(shmfd_dir(buf, 0), EINVAL);
	expect_err(shmfd_dir(buf, (size_t)n), ENAMETOOLONG);
	expect_eq(shmfd_dir(buf, (size_t)n + 1), n);
}
END_TEST

START_TEST(test_stat_figures)
{
	struct shmfd_params p = {
		.ring_size = 64 * KiB, .max_readers = 8, .mode = 0600,
	};
	struct who w = { .name = "st" };
	struct shmfd_chan *chan = NULL;
	struct shmfd_stat st;
	struct th_child c;

	expect_err(shmfd_chan_stat("st", &st, STAT_MS), ENOENT);
	expect_err(shmfd_chan_stat("a/b", &st, STAT_MS), EINVAL);
	expect_err(shmfd_chan_stat(NULL, &st, STAT_MS), EINVAL);
	expect_err(shmfd_chan_stat("st", NULL, STAT_MS), EINVAL);

	expect_ok(shmfd_chan_create(&chan, "st", &p));
	st = stat_ok("st");
	expect_eq(st.producer_pid, getpid());
	expect_eq(st.flags, 0);
	expect_eq(st.ring_size, 64 * KiB);
	expect_eq(st.max_inline, 16 * KiB);
	expect_eq(st.max_readers, 8);
	expect_eq(st.readers, 0);
	expect_eq(st.published, 0);
	expect_eq(st.lost, 0);
	expect_eq(st.joins, 0);
	for (size_t i = 0; i < sizeof(st.reserved) / sizeof(st.reserved[0]);
	     i++)
		expect_eq(st.reserved[i], 0);
	/* Asking is not joining. */
	expect_eq(shmfd_chan_readers(chan), 0);

	c = th_spawn(named_reader, &w, 0);
	expect_eq(th_get(c.sock), 0);
	st = stat_readers("st", 1);
	expect_eq(st.joins, 1);
	for (int seq = 1; seq <= 7; seq++)
		send_seq(chan, (uint64_t)seq);
	st = stat_ok("st");
	expect_eq(st.published, 7);
	expect_eq(st.readers, 1);
	expect_eq(shmfd_chan_readers(chan), 1);
	shmfd_chan_close(chan);
	expect_eq(th_get(c.sock), 7);
	expect_exit(c.pid, 0);
	close(c.sock);
	/* A closed channel has no name any more. */
	expect_err(shmfd_chan_stat("st", &st, STAT_MS), ENOENT);
}
END_TEST

/* Join "lossy", wait for the go, then read to the end (seq last) and
 * report the sum of msg.lost; leave when told. */
static int lossy_reader(int sock, void *arg)
{
	struct shmfd_reader *r = NULL;
	struct shmfd_msg m;
	int64_t last = (int64_t)(intptr_t)arg;
	uint64_t lost = 0;

	expect_ok(shmfd_reader_open(&r, "lossy", 0));
	th_put(sock, 1);
	th_get(sock);
	do {
		expect_ok(shmfd_recv(r, &m, 0, STAT_MS));
		lost += m.lost;
		shmfd_msg_release(r, &m);
	} while ((int64_t)m.seq < last);
	th_put(sock, (int64_t)lost);
	th_get(sock);
	shmfd_reader_close(r);
	return 0;
}

/* lost: what lossy readers were told they missed, summed over readers,
 * and kept when a reader leaves. */
START_TEST(test_stat_lost)
{
	struct shmfd_params p = { .ring_size = 64 * KiB, .flags = SHMFD_LOSSY };
	struct shmfd_chan *chan = NULL;
	struct shmfd_stat st;
	struct th_child a, b;
	int64_t lost_a, lost_b;
	int seq = 0;

	expect_ok(shmfd_chan_create(&chan, "lossy", &p));
	a = th_spawn(lossy_reader, (void *)(intptr_t)3000, 0);
	expect_eq(th_get(a.sock), 1);
	while (seq < 3000)
		send_seq(chan, (uint64_t)++seq);
	th_put(a.sock, 1);
	lost_a = th_get(a.sock);
	/* 3,000 records of 128 bytes lapped a 64 KiB ring. */
	expect(lost_a > 0, "reader a lost nothing");
	st = stat_ok("lossy");
	expect_eq(st.flags, SHMFD_LOSSY);
	expect_eq(st.published, 3000);
	expect_eq(st.lost, lost_a);
	th_put(a.sock, 1);
	expect_exit(a.pid, 0);
	close(a.sock);
	st = stat_readers("lossy", 0);
	expect_eq(st.lost, lost_a);

	b = th_spawn(lossy_reader, (void *)(intptr_t)6000, 0);
	expect_eq(th_get(b.sock), 1);
	while (seq < 6000)
		send_seq(chan, (uint64_t)++seq);
	th_put(b.sock, 1);
	lost_b = th_get(b.sock);
	expect(lost_b > 0, "reader b lost nothing");
	st = stat_ok("lossy");
	expect_eq(st.lost, lost_a + lost_b);
	expect_eq(st.joins, 2);
	expect_eq(st.readers, 1);
	th_put(b.sock, 1);
	expect_exit(b.pid, 0);
	close(b.sock);
	shmfd_chan_close(chan);
}
END_TEST

/* A listener that takes the request and answers as told. */
static int fake_producer(int sock, void *arg)
{
	const char *how = arg;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct shmfd_stat_answer {
		uint32_t type, version;
		int32_t status;
		uint32_t rest[15];
	} a = { .type = 6, .version = 1 };
	int l = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0), fd;
	char req[64];

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/fake", th_dir());
	expect_sys(bind(l, (struct sockaddr *)&sa, sizeof(sa)));
	expect_sys(listen(l, 4));
	th_put(sock, 1);
	fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	expect_sys(fd);
	expect(recv(fd, req, sizeof(req), 0) == 8, "stat request size");
	if (!strcmp(how, "garbage")) {
		a.type = 2;		/* a welcome, not stats */
		expect_sys(send(fd, &a, sizeof(a), MSG_NOSIGNAL));
	} else if (!strcmp(how, "short")) {
		expect_sys(send(fd, &a, 20, MSG_NOSIGNAL));
	} else if (!strcmp(how, "status")) {
		a.status = -EMFILE;
		expect_sys(send(fd, &a, sizeof(a), MSG_NOSIGNAL));
	} else if (!strcmp(how, "mute")) {
		th_get(sock);		/* until the test is done waiting */
	}
	/* "hangup": close at once */
	close(fd);
	close(l);
	return 0;
}

static const struct {
	const char *how;
	int timeout_ms;
	int want;
} fake_cases[] = {
	{ "garbage", STAT_MS, -EPROTO },
	{ "short", STAT_MS, -EPROTO },
	{ "status", STAT_MS, -EMFILE },
	{ "hangup", STAT_MS, -EPIPE },
	{ "mute", 200, -ETIMEDOUT },
	{ "mute", 0, -EAGAIN },
};

START_TEST(test_stat_bad_producer)
{
	struct th_child c = th_spawn(fake_producer, (void *)fake_cases[_i].how,
				     0);
	struct shmfd_stat st;
	struct th_fds fds;
	int ret;

	th_get(c.sock);
	th_fd_snapshot(&fds);
	ret = shmfd_chan_stat("fake", &st, fake_cases[_i].timeout_ms);
	ck_assert_msg(ret == fake_cases[_i].want, "%s: shmfd_chan_stat = %d "
		      "(%s), expected %d (%s)", fake_cases[_i].how, ret,
		      th_strerr(ret), fake_cases[_i].want,
		      th_strerr(fake_cases[_i].want));
	expect_eq(th_fd_leaks(&fds, NULL, 0), 0);
	if (!strcmp(fake_cases[_i].how, "mute"))
		th_put(c.sock, 1);
	expect_exit(c.pid, 0);
	close(c.sock);
}
END_TEST

/* ---- other users (root only) ---- */

/* A directory both users can reach; sockets that the file system would
 * let anyone connect to: only the library's checks stand in the way. */
static void share_dir(void)
{
	expect_sys(chmod(th_dir(), 01777));
}

/* shmfd_chan_stat() of w->name as w; reports the result. */
static int stat_as(int sock, void *arg)
{
	const struct who *w = arg;
	struct shmfd_stat st;

	become(w);
	th_put(sock, shmfd_chan_stat(w->name, &st, STAT_MS));
	return 0;
}

static int64_t stat_result(const struct who *w)
{
	struct th_child c = th_spawn(stat_as, (void *)w, 0);
	int64_t ret = th_get(c.sock);

	expect_exit(c.pid, 0);
	close(c.sock);
	return ret;
}

START_TEST(test_other_uid_refused)
{
	struct who nobody = { .name = "priv", .uid = NOBODY, .gid = NOBODY };
	struct shmfd_chan *chan;
	char path[256];

	share_dir();
	chan = create_mode("priv", 0);
	path_of(path, sizeof(path), "priv");
	expect_sys(chmod(path, 0666));
	/* Figures too are for those who may join. */
	expect_eq(stat_result(&nobody), -EACCES);
	expect_join(chan, &nobody, -EACCES, 0);
}
END_TEST

static const struct {
	mode_t mode;
	uid_t uid;
	gid_t gid;
	int want;
} access_cases[] = {
	{ 0600, NOBODY, NOBODY, -EACCES },
	{ 0640, NOBODY, NOBODY, -EACCES },
	{ 0660, NOBODY, NOBODY, -EACCES },
	{ 0660, NOBODY, 0, 0 },		/* our group */
	{ 0606, NOBODY, NOBODY, 0 },
	{ 0666, NOBODY, NOBODY, 0 },
	{ 0666, NOBODY, 0, 0 },
};

START_TEST(test_mode_access)
{
	struct who w = {
		.name = "acc",
		.uid = access_cases[_i].uid,
		.gid = access_cases[_i].gid,
	};
	struct shmfd_chan *chan;
	char path[256];

	share_dir();
	chan = create_mode("acc", access_cases[_i].mode);
	/* The file system lets everyone connect: SO_PEERCRED decides. */
	path_of(path, sizeof(path), "acc");
	expect_sys(chmod(path, 0666));
	expect_eq(stat_result(&w), access_cases[_i].want);
	expect_join(chan, &w, access_cases[_i].want, 5);
}
END_TEST

/* A producer running as another user (not root) is refused by the
 * reader, whatever the channel's mode. */
static int nobody_producer(int sock, void *arg)
{
	struct who *w = arg;
	struct shmfd_chan *chan;

	become(w);
	chan = create_mode(w->name, 0666);
	th_put(sock, 1);
	th_get(sock);
	expect_eq(shmfd_chan_readers(chan), 1);	/* only the nobody one */
	send_seq(chan, 1);
	shmfd_chan_close(chan);
	return 0;
}

START_TEST(test_foreign_producer_refused)
{
	struct who prod = { .name = "theirs", .uid = NOBODY, .gid = NOBODY };
	struct who same = prod;
	struct shmfd_reader *r = NULL;
	struct shmfd_stat st;
	struct th_child p, c;

	share_dir();
	p = th_spawn(nobody_producer, &prod, 0);
	th_get(p.sock);
	expect_err(shmfd_reader_open(&r, "theirs", 0), EACCES);
	expect_err(shmfd_chan_stat("theirs", &st, STAT_MS), EACCES);
	c = th_spawn(named_reader, &same, 0);
	expect_eq(th_get(c.sock), 0);
	th_put(p.sock, 0);
	expect_exit(p.pid, 0);
	expect_eq(th_get(c.sock), 1);
	expect_exit(c.pid, 0);
	close(p.sock);
	close(c.sock);
}
END_TEST

/* The directory must be ours (or root's). */
START_TEST(test_dir_not_ours)
{
	struct shmfd_chan *chan = NULL;
	char dir[256];

	snprintf(dir, sizeof(dir), "%s/theirs", th_dir());
	expect_sys(mkdir(dir, 0700));
	expect_sys(chown(dir, NOBODY, NOBODY));
	setenv("SHMFD_DIR", dir, 1);
	expect_err(shmfd_chan_create(&chan, "x", NULL), EACCES);
}
END_TEST

static Suite *named_suite(void)
{
	Suite *s = suite_create("named");
	TCase *tc;

	tc = th_tcase("named");
	tcase_add_test(tc, test_missing);
	tcase_add_test(tc, test_round_trip);
	tcase_add_loop_test(tc, test_socket_mode, 0,
			    (int)(sizeof(modes) / sizeof(modes[0])));
	tcase_add_test(tc, test_named_share_fd);
	tcase_add_test(tc, test_addrinuse);
	tcase_add_test(tc, test_stale_replaced);
	tcase_add_test(tc, test_dir_created);
	tcase_add_test(tc, test_dir_unsafe);
	tcase_add_test(tc, test_default_dirs);
	tcase_add_test(tc, test_stat_dir);
	tcase_add_test(tc, test_stat_figures);
	tcase_add_test(tc, test_stat_lost);
	tcase_add_loop_test(tc, test_stat_bad_producer, 0,
			    (int)(sizeof(fake_cases) / sizeof(fake_cases[0])));
	suite_add_tcase(s, tc);

	if (geteuid() != 0) {
		th_skip("the access tests between users need root (to "
			"setuid to %d)", NOBODY);
		return s;
	}
	tc = th_tcase("users");
	tcase_add_test(tc, test_other_uid_refused);
	tcase_add_loop_test(tc, test_mode_access, 0,
			    (int)(sizeof(access_cases) /
				  sizeof(access_cases[0])));
	tcase_add_test(tc, test_foreign_producer_refused);
	tcase_add_test(tc, test_dir_not_ours);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return th_run(named_suite());
}
