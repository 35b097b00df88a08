/* SPDX-License-Identifier: MIT */
/*
 * shmfd: see what channels run, read and write them from the shell, and
 * measure the library against the baselines (shmfd(1)).
 */
#include "tool.h"

#include <shmfd.h>

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *what;
} cmds[] = {
	{ "list", cmd_list, "the named channels of this user" },
	{ "stat", cmd_stat, "one channel in detail (--watch: rates)" },
	{ "cat", cmd_cat, "join a channel and print its messages" },
	{ "pub", cmd_pub, "create a channel and publish stdin or a file" },
	{ "bench", cmd_bench, "libshmfd against pipe, socket, futex..." },
};

#define NCMDS	(sizeof(cmds) / sizeof(cmds[0]))

void tool_err(const char *sub, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "shmfd %s: ", sub);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void tool_chan_err(const char *sub, const char *name, int ret)
{
	const char *why;

	switch (ret) {
	case -ENOENT:
		why = "no such channel (no producer serves it)";
		break;
	case -EACCES:
		why = "permission denied (the channel's mode does not allow "
		      "this user, or its producer is another user)";
		break;
	case -EINVAL:
		why = "invalid name (it must be non-empty, without '/', and "
		      "not . or ..)";
		break;
	case -EADDRINUSE:
		why = "already served by a live producer";
		break;
	case -ETIMEDOUT:
		why = "the producer did not answer in time";
		break;
	case -EPIPE:
		why = "the producer is gone";
		break;
	case -ECONNRESET:
		why = "the producer dropped this reader";
		break;
	case -EPROTO:
		why = "the peer broke the protocol";
		break;
	case -ENAMETOOLONG:
		why = "name too long for a Unix socket path";
		break;
	default:
		why = strerror(-ret);
		break;
	}
	tool_err(sub, "channel '%s': %s", name, why);
}

bool tool_parse_ms(const char *sub, const char *s, int *ms)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 0 || v > INT32_MAX) {
		tool_err(sub, "--timeout: '%s' is not a number of "
			 "milliseconds", s);
		return false;
	}
	*ms = (int)v;
	return true;
}

bool tool_parse_size(const char *s, size_t *out)
{
	unsigned long long v;
	char *end;

	if (!s || !*s || *s == '-')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return false;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	}
	if (*end || v > SIZE_MAX / 2)
		return false;
	*out = (size_t)v;
	return true;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: shmfd COMMAND [ARGS]   (shmfd COMMAND --help)\n\n");
	for (size_t i = 0; i < NCMDS; i++)
		fprintf(f, "  %-6s %s\n", cmds[i].name, cmds[i].what);
	fprintf(f, "\n  --version  print libshmfd's version\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("shmfd (libshmfd) %s\n", shmfd_version());
		return 0;
	}
	for (size_t i = 0; i < NCMDS; i++) {
		char prog[32];

		if (strcmp(argv[1], cmds[i].name))
			continue;
		/* getopt's own messages then start "shmfd SUB:". */
		snprintf(prog, sizeof(prog), "shmfd %s", cmds[i].name);
		argv[1] = prog;
		return cmds[i].fn(argc - 1, argv + 1);
	}
	fprintf(stderr, "shmfd: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
