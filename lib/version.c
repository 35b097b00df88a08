/* SPDX-License-Identifier: MIT */
#include "internal.h"

#define STR_(x) #x
#define STR(x) STR_(x)

SHMFD_API const char *shmfd_version(void)
{
	return STR(SHMFD_VERSION_MAJOR) "." STR(SHMFD_VERSION_MINOR) "."
	       STR(SHMFD_VERSION_PATCH);
}
