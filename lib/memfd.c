/* SPDX-License-Identifier: MIT */
/* Create, seal, verify and map memfds. */
#include "internal.h"

#include <sys/stat.h>

/*
 * MFD_NOEXEC_SEAL (Linux 6.3) keeps the memfd from ever becoming
 * executable.  Older kernels reject the flag with EINVAL: probe once and
 * cache the answer (0 unknown, 1 supported, -1 not).
 */
static int noexec_state;

int shmfd__memfd_create(const char *name, size_t size, int *fdp)
{
	unsigned int flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;
	int state = LOAD_RELAXED(&noexec_state);
	int fd;

	if (state >= 0) {
		fd = (int)syscall(SYS_memfd_create, name, flags | MFD_NOEXEC_SEAL);
		if (fd >= 0) {
			STORE_RELAXED(&noexec_state, 1);
			goto sized;
		}
		if (errno != EINVAL)
			return shmfd__neg_errno();
		STORE_RELAXED(&noexec_state, -1);
	}
	fd = (int)syscall(SYS_memfd_create, name, flags);
	if (fd < 0)
		return shmfd__neg_errno();
sized:
	if (ftruncate(fd, (off_t)size) < 0) {
		int ret = shmfd__neg_errno();

		close(fd);
		return ret;
	}
	*fdp = fd;
	return 0;
}

int shmfd__memfd_seal(int fd, int seals)
{
	if (fcntl(fd, F_ADD_SEALS, seals) < 0)
		return shmfd__neg_errno();
	return 0;
}

int shmfd__memfd_verify(int fd, size_t size, int required, int forbidden)
{
	struct stat st;
	int seals;

	/* F_GET_SEALS fails with EINVAL on anything but memfd/shmem files,
	 * so a pipe, socket or regular file never gets this far. */
	seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0)
		return -EPROTO;
	if ((seals & required) != required || (seals & forbidden))
		return -EPROTO;
	if (fstat(fd, &st) < 0)
		return shmfd__neg_errno();
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != (uint64_t)size)
		return -EPROTO;
	return 0;
}

int shmfd__map(int fd, size_t size, int prot, void **addrp)
{
	return shmfd__map_flags(fd, size, prot, 0, addrp);
}

/*
 * MAP_POPULATE for the ring, on both sides: every page allocated (the
 * producer's mapping allocates them, shmem fills holes on any fault) and
 * mapped now, rather than a fault on the first message to reach each new
 * page -- 50 to 80 us here on a VM, in the middle of a send.
 */
int shmfd__map_flags(int fd, size_t size, int prot, int flags, void **addrp)
{
	void *p = mmap(NULL, size, prot, MAP_SHARED | flags, fd, 0);

	if (p == MAP_FAILED)
		return shmfd__neg_errno();
	*addrp = p;
	return 0;
}
