/* SPDX-License-Identifier: MIT */
/*
 * Named channels: the runtime directory, the listening socket of a
 * producer, a reader's connection, and peer credentials.
 *
 * A named channel is a SOCK_SEQPACKET Unix socket DIR/NAME, DIR being
 * $SHMFD_DIR, else $XDG_RUNTIME_DIR/shmfd, else /tmp/shmfd-$UID.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

int shmfd__runtime_dir(char *buf, size_t len, bool create)
{
	const char *env = getenv("SHMFD_DIR");
	struct stat st;
	int n;

	if (env && *env)
		n = snprintf(buf, len, "%s", env);
	else if ((env = getenv("XDG_RUNTIME_DIR")) && *env)
		n = snprintf(buf, len, "%s/shmfd", env);
	else
		n = snprintf(buf, len, "/tmp/shmfd-%u", (unsigned int)geteuid());
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	if (!create)
		return 0;

	if (mkdir(buf, 0700) < 0 && errno != EEXIST)
		return shmfd__neg_errno();
	if (lstat(buf, &st) < 0)
		return shmfd__neg_errno();
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	/* Someone else's directory, or one anybody may replace our socket
	 * in, would let another user pose as this channel. */
	if (st.st_uid != geteuid() && st.st_uid != 0)
		return -EACCES;
	if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX))
		return -EACCES;
	return 0;
}

static bool name_ok(const char *name)
{
	return name && *name && !strchr(name, '/') &&
	       strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

int shmfd__chan_path(const char *name, char *buf, size_t len)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int ret, n;

	if (!name_ok(name))
		return -EINVAL;
	ret = shmfd__runtime_dir(dir, sizeof(dir), false);
	if (ret < 0)
		return ret;
	n = snprintf(buf, len, "%s/%s", dir, name);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	return 0;
}

static int make_addr(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	strcpy(sa->sun_path, path);
	return 0;
}

/* Is a producer answering at path?  1 yes, 0 stale or absent, -errno. */
static int probe_live(const struct sockaddr_un *sa)
{
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	int ret;

	if (fd < 0)
		return shmfd__neg_errno();
	ret = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
	if (ret == 0)
		ret = 1;
	else if (errno == ECONNREFUSED || errno == ENOENT)
		ret = 0;
	else
		ret = shmfd__neg_errno();
	close(fd);
	return ret;
}

int shmfd__listen(const char *name, mode_t mode, int *fdp, char *path,
		  size_t pathlen)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct sockaddr_un sa;
	int fd, ret, tries;

	if (!name_ok(name))
		return -EINVAL;
	ret = shmfd__runtime_dir(dir, sizeof(dir), true);
	if (ret < 0)
		return ret;
	ret = shmfd__chan_path(name, path, pathlen);
	if (ret < 0)
		return ret;
	ret = make_addr(path, &sa);
	if (ret < 0)
		return ret;

	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return shmfd__neg_errno();
	for (tries = 0;; tries++) {
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		if (errno != EADDRINUSE || tries >= 3) {
			ret = shmfd__neg_errno();
			goto fail;
		}
		/* A socket file is there: a live producer keeps its name,
		 * a dead one's leftover is replaced. */
		ret = probe_live(&sa);
		if (ret < 0)
			goto fail;
		if (ret > 0) {
			ret = -EADDRINUSE;
			goto fail;
		}
		if (unlink(path) < 0 && errno != ENOENT) {
			ret = shmfd__neg_errno();
			goto fail;
		}
	}
	/* connect(2) needs write permission on the socket file: give it to
	 * exactly the classes mode allows (SO_PEERCRED is checked too).  The
	 * file's group is ours even in a set-group-ID directory, so that
	 * the kernel's group class is the one shmfd__peer_allowed() sees. */
	if (fchownat(AT_FDCWD, path, (uid_t)-1, getegid(),
		     AT_SYMLINK_NOFOLLOW) < 0 ||
	    chmod(path, mode & 0666) < 0 || listen(fd, 64) < 0) {
		ret = shmfd__neg_errno();
		unlink(path);
		goto fail;
	}
	*fdp = fd;
	return 0;
fail:
	close(fd);
	return ret;
}

int shmfd__connect(const char *name, int *fdp)
{
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct sockaddr_un sa;
	int fd, ret;

	ret = shmfd__chan_path(name, path, sizeof(path));
	if (ret < 0)
		return ret;
	ret = make_addr(path, &sa);
	if (ret < 0)
		return ret;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return shmfd__neg_errno();
	do {
		ret = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	} while (ret < 0 && errno == EINTR);
	if (ret < 0) {
		/* A socket nobody listens on is a producer that died. */
		ret = errno == ECONNREFUSED ? -ENOENT : shmfd__neg_errno();
		close(fd);
		return ret;
	}
	*fdp = fd;
	return 0;
}

int shmfd__peer_cred(int sock, pid_t *pid, uid_t *uid, gid_t *gid)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return shmfd__neg_errno();
	if (len != sizeof(cred) || cred.pid <= 0)
		return -EPROTO;
	*pid = cred.pid;
	*uid = cred.uid;
	*gid = cred.gid;
	return 0;
}

/* Is one of the peer's supplementary groups ours?  1, 0 or -errno. */
static int peer_in_group(int sock, gid_t ours)
{
	gid_t small[64], *groups = small;
	socklen_t len = sizeof(small);
	int ret = 0;

	if (getsockopt(sock, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0) {
		/* Before Linux 4.13 only the primary group is known. */
		if (errno == ENOPROTOOPT)
			return 0;
		if (errno != ERANGE)
			return shmfd__neg_errno();
		/* len now says how much room the list needs. */
		groups = malloc(len);
		if (!groups)
			return -ENOMEM;
		if (getsockopt(sock, SOL_SOCKET, SO_PEERGROUPS, groups,
			       &len) < 0) {
			ret = shmfd__neg_errno();
			goto out;
		}
	}
	for (size_t i = 0; i < len / sizeof(*groups); i++) {
		if (groups[i] == ours) {
			ret = 1;
			break;
		}
	}
out:
	if (groups != small)
		free(groups);
	return ret;
}

/*
 * May the peer on sock (uid, gid from SO_PEERCRED) join a channel of this
 * mode?  Exactly what connect(2) decides for the socket file, which is
 * ours, of our group and mode & 0666 (shmfd__listen): root always (it
 * overrides file permissions); else the peer's class -- owner if its uid
 * is ours, else group if its primary or a supplementary group is ours,
 * else other -- must have its write bit, the one connect(2) needs.
 * Checking it here too means a socket file chmod-ed wider, or reached
 * through another path, still admits no one mode does not.  1, 0, or
 * -errno.
 */
int shmfd__peer_allowed(int sock, mode_t mode, uid_t uid, gid_t gid)
{
	int ret;

	if (uid == 0)
		return 1;
	if (uid == geteuid())
		return !!(mode & S_IWUSR);
	if (gid == getegid())
		return !!(mode & S_IWGRP);
	ret = peer_in_group(sock, getegid());
	if (ret < 0)
		return ret;
	if (ret)
		return !!(mode & S_IWGRP);
	return !!(mode & S_IWOTH);
}
