/* SPDX-License-Identifier: MIT */
/*
 * Kernel and liburing compatibility: everything libshmfd needs that older
 * headers (Debian 12 ships 6.1 uapi headers and liburing 2.3) lack.  Only
 * constants and thin wrappers live here; whether the running kernel
 * supports a feature is probed at run time (uring.c, memfd.c).
 */
#ifndef SHMFD_COMPAT_H
#define SHMFD_COMPAT_H

#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/futex.h>
#include <liburing.h>

/* memfd_create(MFD_NOEXEC_SEAL): Linux 6.3. */
#if !HAVE_DECL_MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL		0x0008U
#endif

/* F_SEAL_FUTURE_WRITE: Linux 5.1. */
#if !HAVE_DECL_F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE	0x0010
#endif

/* futex2 flags used by IORING_OP_FUTEX_WAIT: Linux 6.7. */
#if !HAVE_DECL_FUTEX2_SIZE_U32
#define FUTEX2_SIZE_U32		0x02
#endif
#if !HAVE_DECL_FUTEX_BITSET_MATCH_ANY
#define FUTEX_BITSET_MATCH_ANY	0xffffffff
#endif

/* IORING_OP_FUTEX_WAIT: Linux 6.7, liburing 2.5. */
#if !HAVE_DECL_IORING_OP_FUTEX_WAIT
#define SHMFD_IORING_OP_FUTEX_WAIT	51
#else
#define SHMFD_IORING_OP_FUTEX_WAIT	IORING_OP_FUTEX_WAIT
#endif

/*
 * io_uring_prep_futex_wait(): liburing 2.5.  The kernel reads the futex
 * address from addr, the expected value from addr2, the bitset from addr3
 * and the futex2 flags from the fd field; op flags and len stay zero.
 */
static inline void shmfd__prep_futex_wait(struct io_uring_sqe *sqe,
					  const uint32_t *uaddr, uint32_t val,
					  uint32_t bits)
{
#if HAVE_DECL_IO_URING_PREP_FUTEX_WAIT
	io_uring_prep_futex_wait(sqe, (uint32_t *)uaddr, val, bits,
				 FUTEX2_SIZE_U32, 0);
#else
	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = SHMFD_IORING_OP_FUTEX_WAIT;
	sqe->fd = FUTEX2_SIZE_U32;
	sqe->addr = (uint64_t)(uintptr_t)uaddr;
	sqe->off = val;			/* addr2 shares the off field */
	sqe->addr3 = bits;
#endif
}

/* SO_PEERGROUPS: Linux 4.13, glibc 2.27 (the asm-generic value). */
#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS		59
#endif

/* pidfd_open(): Linux 5.3, glibc 2.36. */
static inline int shmfd__pidfd_open(pid_t pid)
{
#ifdef SYS_pidfd_open
	return (int)syscall(SYS_pidfd_open, pid, 0);
#else
	return (int)syscall(434, pid, 0);
#endif
}

#endif /* SHMFD_COMPAT_H */
