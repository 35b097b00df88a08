/* SPDX-License-Identifier: MIT */
/*
 * Shared by the libFuzzer targets in tests/fuzz/: reading the fuzzer's
 * bytes as a stream of small integers (zeros once it runs dry, so every
 * input means something), the oracle's assertion, and fd accounting.
 *
 * The targets compile the library's sources into themselves
 * (tests/fuzz/Makemodule.am), so its internal functions and structures
 * are theirs to use.
 */
#ifndef SHMFD_FUZZ_H
#define SHMFD_FUZZ_H

#include "internal.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A broken promise of the library: libFuzzer keeps the input. */
#define FUZZ_ASSERT(cond, ...)						\
	do {								\
		if (!(cond)) {						\
			fprintf(stderr, "%s:%d: %s: ", __FILE__, __LINE__, \
				#cond);					\
			fprintf(stderr, __VA_ARGS__);			\
			fputc('\n', stderr);				\
			abort();					\
		}							\
	} while (0)

/* SHMFD_FUZZ_VERBOSE=1: say what each step did, to read a crash. */
extern bool fuzz_verbose;
#define FUZZ_LOG(...)							\
	do {								\
		if (fuzz_verbose)					\
			fprintf(stderr, __VA_ARGS__);			\
	} while (0)

struct fuzz_in {
	const uint8_t *p;
	size_t left;
};

static inline void fuzz_take(struct fuzz_in *in, void *buf, size_t n)
{
	size_t k = n < in->left ? n : in->left;

	memcpy(buf, in->p, k);
	memset((uint8_t *)buf + k, 0, n - k);
	in->p += k;
	in->left -= k;
}

static inline uint8_t fuzz_u8(struct fuzz_in *in)
{
	uint8_t v;

	fuzz_take(in, &v, sizeof(v));
	return v;
}

static inline uint16_t fuzz_u16(struct fuzz_in *in)
{
	uint16_t v;

	fuzz_take(in, &v, sizeof(v));
	return v;
}

static inline uint32_t fuzz_u32(struct fuzz_in *in)
{
	uint32_t v;

	fuzz_take(in, &v, sizeof(v));
	return v;
}

static inline uint64_t fuzz_u64(struct fuzz_in *in)
{
	uint64_t v;

	fuzz_take(in, &v, sizeof(v));
	return v;
}

/* Open fds of this process (the listing's own excluded). */
static inline int fuzz_fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = -1;

	if (!d)
		abort();
	while (readdir(d))
		n++;
	closedir(d);
	return n - 2;		/* "." and ".." */
}

#endif /* SHMFD_FUZZ_H */
