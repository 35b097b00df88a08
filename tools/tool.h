/* SPDX-License-Identifier: MIT */
/*
 * The shmfd command: one binary, one file per subcommand group.  Each
 * subcommand is int cmd_NAME(int argc, char **argv) with argv[0] the
 * subcommand's name, and returns the process exit status: 0 on success,
 * 1 on an error (one line on stderr naming the channel and the reason),
 * 2 on a usage error.
 */
#ifndef SHMFD_TOOL_H
#define SHMFD_TOOL_H

#include <stdbool.h>
#include <stddef.h>

int cmd_list(int argc, char **argv);
int cmd_stat(int argc, char **argv);
int cmd_cat(int argc, char **argv);
int cmd_pub(int argc, char **argv);
int cmd_bench(int argc, char **argv);

/* "shmfd SUB: " + the message + "\n" on stderr. */
void tool_err(const char *sub, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* "shmfd SUB: channel 'NAME': REASON" for a library error ret (-errno),
 * with the reasons a user of the command needs, not bare strerror. */
void tool_chan_err(const char *sub, const char *name, int ret);

/* Parse --timeout MS (0 or more) into *ms; false after saying why. */
bool tool_parse_ms(const char *sub, const char *s, int *ms);

/* Parse a size with an optional K, M or G suffix (powers of 1024). */
bool tool_parse_size(const char *s, size_t *out);

#endif /* SHMFD_TOOL_H */
