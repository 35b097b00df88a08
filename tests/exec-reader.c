/* SPDX-License-Identifier: MIT */
/*
 * A reader on the far side of exec(), for test-basic:
 *
 *   exec-reader SHARE_FD SOCK COUNT MAX
 *
 * Checks that only stdio, SHARE_FD and SOCK crossed exec (every fd the
 * library opens is close-on-exec), joins through SHARE_FD, says so on
 * SOCK, then expects messages 1..COUNT filled by th_fill() with lengths
 * th_msg_len(seq, MAX), and -EPIPE after them.  Exits 0 when all is well.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <shmfd.h>

#include "helpers.h"

/*
 * Fds at or above the soft RLIMIT_NOFILE are not the producer's: no
 * process can open one there, and valgrind, when it runs this program
 * (make check-valgrind), keeps its own fds there, out of our way.
 */
static void check_fds(int share_fd, int sock)
{
	DIR *d = opendir("/proc/self/fd");
	struct rlimit lim;
	struct dirent *e;
	int extra = 0;

	expect(d, "opendir /proc/self/fd: %s", strerror(errno));
	expect(getrlimit(RLIMIT_NOFILE, &lim) == 0, "getrlimit: %s",
	       strerror(errno));
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name);
		char path[64], link[256];
		ssize_t n;

		if (e->d_name[0] == '.' || fd == dirfd(d) || fd <= 2 ||
		    fd == share_fd || fd == sock || (rlim_t)fd >= lim.rlim_cur)
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		n = readlink(path, link, sizeof(link) - 1);
		link[n > 0 ? n : 0] = '\0';
		fprintf(stderr, "exec-reader: fd %d -> %s crossed exec\n", fd,
			link);
		extra++;
	}
	closedir(d);
	expect(extra == 0, "%d fd(s) of the producer are not close-on-exec",
	       extra);
}

int main(int argc, char **argv)
{
	struct shmfd_reader *r = NULL;
	struct shmfd_msg m;
	int share_fd, sock;
	uint64_t count;
	size_t max;

	th_in_child = true;
	if (argc != 5) {
		fprintf(stderr, "usage: %s SHARE_FD SOCK COUNT MAX\n", argv[0]);
		return 2;
	}
	share_fd = atoi(argv[1]);
	sock = atoi(argv[2]);
	count = strtoull(argv[3], NULL, 10);
	max = strtoul(argv[4], NULL, 10);

	check_fds(share_fd, sock);
	expect_ok(shmfd_reader_open_fd(&r, share_fd, 0));
	th_put(sock, 1);
	for (uint64_t seq = 1; seq <= count; seq++) {
		long bad;

		expect_ok(shmfd_recv(r, &m, 0, -1));
		expect_eq(m.seq, seq);
		expect_eq(m.lost, 0);
		expect_eq(m.fd, -1);
		expect_eq(m.len, th_msg_len(seq, max));
		bad = th_check(m.data, m.len, seq);
		expect(bad < 0, "message %llu corrupt at byte %ld",
		       (unsigned long long)seq, bad);
		expect_eq(shmfd_msg_release(r, &m), 0);
	}
	expect_err(shmfd_recv(r, &m, 0, -1), EPIPE);
	shmfd_reader_close(r);
	/* The reader owned share_fd and closed it. */
	expect(fcntl(share_fd, F_GETFD) == -1 && errno == EBADF,
	       "share fd %d still open after shmfd_reader_close", share_fd);
	return 0;
}
