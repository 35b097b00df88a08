/* SPDX-License-Identifier: MIT */
/*
 * epoll: one event loop that waits on a channel and on standard input at
 * once, through shmfd_reader_pollfd().
 *
 *   epoll            publish a message every 200 ms, ten in all, to a
 *                    child process that runs the loop; type lines
 *                    meanwhile
 *   epoll NAME       join the named channel NAME instead (try it with
 *                    `shmfd pub NAME` in another terminal)
 *
 * Each message and each line of input is printed as it comes; the loop
 * ends at end of input or when the producer is gone.
 *
 *   cc epoll.c $(pkg-config --cflags --libs shmfd)
 */
#include <shmfd.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

static int fail(const char *what, int err)
{
	fprintf(stderr, "epoll: %s: %s\n", what, strerror(-err));
	return 1;
}

/* The parent: ten messages, 200 ms apart, then close the channel. */
static int publish(struct shmfd_chan *chan)
{
	char text[64];

	for (int i = 1; i <= 10; i++) {
		int n = snprintf(text, sizeof(text), "tick %d", i);
		int ret = shmfd_send(chan, text, (size_t)n, -1);

		if (ret < 0)
			return fail("shmfd_send", ret);
		usleep(200 * 1000);
	}
	shmfd_chan_close(chan);	/* the reader sees -EPIPE */
	return 0;
}

/* Everything the channel has now; 1 once the producer is gone. */
static int drain(struct shmfd_reader *r)
{
	struct shmfd_msg m;
	int ret;

	while ((ret = shmfd_recv(r, &m, 0, 0)) == 0) {
		printf("channel: %.*s (seq %llu%s)\n", (int)m.len,
		       (const char *)m.data, (unsigned long long)m.seq,
		       m.lost ? ", some lost before it" : "");
		shmfd_msg_release(r, &m);
	}
	if (ret == -EAGAIN)
		return 0;
	printf("channel: %s\n", ret == -EPIPE ? "the producer is gone"
					       : strerror(-ret));
	return 1;
}

/* 1 at end of input. */
static int read_input(void)
{
	char line[256];
	ssize_t n = read(STDIN_FILENO, line, sizeof(line));

	if (n <= 0)
		return 1;
	printf("stdin: %.*s", (int)n, line);
	if (line[n - 1] != '\n')
		putchar('\n');
	return 0;
}

static int loop(struct shmfd_reader *r)
{
	struct epoll_event ev = { .events = EPOLLIN };
	int ep, fd, done = 0;

	fd = shmfd_reader_pollfd(r);
	if (fd < 0)
		return fail("shmfd_reader_pollfd", fd);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		return fail("epoll_create1", -errno);
	ev.data.fd = fd;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		return fail("epoll_ctl", -errno);
	ev.data.fd = STDIN_FILENO;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, STDIN_FILENO, &ev) < 0)
		ev.data.fd = -1;	/* not pollable (a file): no input */

	while (!done) {
		struct epoll_event got[2];
		int n = epoll_wait(ep, got, 2, -1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return fail("epoll_wait", -errno);
		for (int i = 0; i < n; i++) {
			if (got[i].data.fd == fd)
				done |= drain(r);
			else
				done |= read_input();
		}
		fflush(stdout);
	}
	close(ep);
	return 0;
}

/* The child: join through the inherited fd and run the loop.
 * SHMFD_FROM_OLDEST: ticks sent before it joined are not missed. */
static int reader(int fd)
{
	struct shmfd_reader *r;
	int ret;

	ret = shmfd_reader_open_fd(&r, fd, SHMFD_FROM_OLDEST);
	if (ret < 0)
		return fail("shmfd_reader_open_fd", ret);
	ret = loop(r);
	shmfd_reader_close(r);
	return ret;
}

int main(int argc, char **argv)
{
	struct shmfd_reader *r;
	struct shmfd_chan *chan;
	int fd, ret, status;
	pid_t pid;

	if (argc > 1) {
		ret = shmfd_reader_open(&r, argv[1], 0);
		if (ret < 0)
			return fail(argv[1], ret);
		ret = loop(r);
		shmfd_reader_close(r);
		return ret;
	}

	ret = shmfd_chan_create(&chan, NULL, NULL);
	if (ret < 0)
		return fail("shmfd_chan_create", ret);
	fd = shmfd_chan_share_fd(chan);
	if (fd < 0)
		return fail("shmfd_chan_share_fd", fd);
	pid = fork();
	if (pid < 0)
		return fail("fork", -errno);
	if (pid == 0)
		_exit(reader(fd));	/* nothing of the parent's channel */
	close(fd);
	ret = publish(chan);
	if (waitpid(pid, &status, 0) < 0)
		return fail("waitpid", -errno);
	return ret || !WIFEXITED(status) || WEXITSTATUS(status);
}
