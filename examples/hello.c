/* SPDX-License-Identifier: MIT */
/*
 * hello: the smallest complete libshmfd program.  The parent creates an
 * anonymous channel, forks a reader that joins through an inherited fd,
 * and sends "hello"; the reader prints what it received.
 *
 *   cc hello.c $(pkg-config --cflags --libs shmfd)
 */
#include <shmfd.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int fail(const char *what, int err)
{
	fprintf(stderr, "hello: %s: %s\n", what, strerror(-err));
	return 1;
}

/*
 * The child owns nothing of the parent's channel: it joins through the fd
 * alone.  SHMFD_FROM_OLDEST lets it also see what the parent sent before
 * it joined, so neither side has to wait for the other.
 */
static int reader(int fd)
{
	struct shmfd_reader *r;
	struct shmfd_msg msg;
	int ret;

	ret = shmfd_reader_open_fd(&r, fd, SHMFD_FROM_OLDEST);
	if (ret < 0)
		return fail("shmfd_reader_open_fd", ret);
	ret = shmfd_recv(r, &msg, 0, 10000);
	if (ret < 0)
		return fail("shmfd_recv", ret);
	/* msg.data points into the shared ring: no copy was made. */
	printf("received \"%.*s\" (seq %llu)\n", (int)msg.len,
	       (const char *)msg.data, (unsigned long long)msg.seq);
	shmfd_msg_release(r, &msg);
	shmfd_reader_close(r);
	return 0;
}

int main(void)
{
	struct shmfd_chan *chan;
	int fd, ret, status;
	pid_t pid;

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
		exit(reader(fd));
	close(fd);

	ret = shmfd_send(chan, "hello", 5, 10000);
	if (ret < 0)
		return fail("shmfd_send", ret);
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0) {
		fprintf(stderr, "hello: the reader failed\n");
		return 1;
	}
	shmfd_chan_close(chan);
	return 0;
}
