/* SPDX-License-Identifier: MIT */
/*
 * shmfd-stress: fault injection and load against the real library, real
 * processes and the real kernel (make check-stress).  Each scenario runs
 * numbered runs whose parameters all come from one seed, so a failure
 * names its run and seed and can be replayed alone.
 *
 * Processes report through one shared anonymous mapping (struct ctl),
 * set up by the harness before it forks: results survive a SIGKILL, and
 * a producer's last words (the phase it was in) are there after its
 * death.  The harness only ever looks at it; it never calls the library.
 */
#ifndef SHMFD_STRESS_H
#define SHMFD_STRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <shmfd.h>

#define KiB			1024u
#define MiB			(1024u * KiB)
#define NS_PER_MS		1000000ull

/* A run that has not finished this long after it should have is hung. */
#define RUN_DEADLINE_MS		60000
/* The DESIGN bound (§4.4) is 10 ms (io_uring) or 200 ms (fallback); on a
 * shared 2-CPU VM only a far larger figure means the library is wrong. */
#define WAKE_BOUND_MS		1000
/* How far past its timeout_ms a send may return before it counts as
 * having waited too long. */
#define SEND_GRACE_MS		1000

#define MAX_READERS		8

/* ---- random numbers: every choice of a run comes from its seed ---- */

struct rng {
	uint64_t s;
};

uint64_t mix64(uint64_t x);
void rng_seed(struct rng *r, uint64_t seed);
uint64_t rng_next(struct rng *r);
/* Uniform in [0, n); 0 when n is 0. */
uint64_t rng_below(struct rng *r, uint64_t n);
/* Uniform in [lo, hi]. */
uint64_t rng_range(struct rng *r, uint64_t lo, uint64_t hi);
/* True with probability pct/100. */
bool rng_pct(struct rng *r, unsigned int pct);

/* ---- time ---- */

uint64_t now_ns(void);
void sleep_us(uint64_t us);

/* ---- payloads that prove their own integrity ---- */

/*
 * A message of 16 bytes or more starts with its seq, its length and a
 * checksum of the bytes after the header, which are a pseudo-random
 * stream of (key, seq).  Shorter ones are the first bytes of that stream
 * and are compared whole.  key changes per run.
 */
#define PAYLOAD_HDR		16u

/* Write message seq of len bytes at buf. */
void payload_fill(void *buf, size_t len, uint64_t key, uint64_t seq);
/* NULL if buf holds exactly message seq of len bytes, else what is wrong
 * (a static string, valid until the next call). */
const char *payload_check(const void *buf, size_t len, uint64_t key,
			  uint64_t seq);

/* ---- the shared report area ---- */

/* What a producer was doing: stored before and after each library call,
 * so after a SIGKILL the word says where it died. */
enum phase {
	PH_START = 0,
	PH_IDLE,		/* between messages, or pausing */
	PH_SEND,		/* in shmfd_send, inline */
	PH_SEND_BIG,		/* in shmfd_send above max_inline: a blob */
	PH_RESERVE,		/* in shmfd_reserve */
	PH_FILL,		/* between reserve and commit */
	PH_COMMIT,		/* in shmfd_commit */
	PH_BLOB_CREATE,		/* in shmfd_blob_create */
	PH_BLOB_FILL,		/* writing the blob */
	PH_SEND_BLOB,		/* in shmfd_send_blob */
	PH_CLOSE,		/* in shmfd_chan_close */
	PH_COUNT
};
extern const char *const phase_names[PH_COUNT];

enum rstate {
	RS_NONE = 0,
	RS_JOINED,		/* registered: the producer counts it */
	RS_STALLED,		/* a STALL reader holding the ring */
	RS_DONE,		/* result filled in */
};

enum pstate {
	PS_NONE = 0,
	PS_READY,		/* channel made, readers may join */
	PS_STREAMING,		/* every reader joined, sending */
	PS_DONE,
};

#define ERR_LEN			512

struct ctl_reader {
	int32_t pid;
	uint32_t state;		/* enum rstate */
	int32_t result;		/* the recv result that ended it */
	uint32_t behaviour;
	uint64_t received;	/* messages taken, stale ones included */
	uint64_t lost;		/* sum of msg.lost */
	uint64_t stale;		/* releases that said -ESTALE */
	uint64_t blobs;
	uint64_t last_seq;
	uint64_t t_enter;	/* start of the recv that ended it */
	uint64_t t_end;		/* when that recv returned */
	uint64_t timeouts;	/* recv calls that returned -ETIMEDOUT/-EAGAIN */
	int32_t wstatus;	/* wait status, once reaped */
	uint32_t reaped;
	char err[ERR_LEN];
};

struct ctl {
	uint64_t run_seed;
	/* producer */
	int32_t producer_pid;
	uint32_t pstate;	/* enum pstate */
	uint32_t phase;		/* enum phase */
	uint32_t pad0;
	uint64_t published;	/* last seq a call reported published */
	uint64_t t_kill;	/* set by the harness just before a kill */
	uint64_t sends;
	uint64_t retries;	/* sends that timed out and were retried */
	uint64_t blobs;
	uint64_t max_send_ns;	/* the longest send call */
	uint64_t unblock_ns;	/* a send in progress at t_kill: end - t_kill */
	uint64_t drop_ns;	/* t_kill until readers() counted the loss */
	uint64_t ops[PH_COUNT];
	/* exhaustion: commands to a producer that streams until told to
	 * stop, and what each attempt that met a limit returned */
	uint32_t cmd;
	uint32_t ack;		/* the last cmd done */
	int32_t readers_now;	/* shmfd_chan_readers, after each send */
	uint32_t nattempts;
	struct attempt {
		int32_t ret;
		int32_t headroom;	/* fds or KiB left free */
		uint32_t done;
		uint32_t faults;	/* calls that met the limit */
		uint64_t received, lost, blobs;
		char what[64];
		char err[256];
	} attempts[64];
	char err[ERR_LEN];
	struct ctl_reader r[MAX_READERS];
};

/* The mapping, made once by the harness and inherited by every child. */
extern struct ctl *ctl;

/* "0", or "-EPIPE" for -EPIPE: static, valid until the next call. */
const char *errname(int ret);
/* In a child: record what went wrong in err and _exit(1). */
void child_fail(char *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));
/* Append to a report without overflowing it. */
void report_add(char *buf, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ---- processes ---- */

#define SPAWN_ORPHAN	(1u << 0)	/* outlives its parent (no PDEATHSIG) */

/* Seconds after which a spawned child dies of SIGALRM, whatever it is
 * doing: 2 * RUN_DEADLINE_MS unless a scenario needs longer. */
extern unsigned int spawn_alarm_s;

/* fork() a child that runs fn(arg) and _exit()s with its value; a child
 * dies at its parent's death unless SPAWN_ORPHAN, and after
 * spawn_alarm_s in any case. */
pid_t spawn(int (*fn)(void *), void *arg, unsigned int flags);
/* Wait for pid until deadline_ns; its wait status, or -1 if still
 * running then (it is left running). */
int wait_until_ns(pid_t pid, uint64_t deadline_ns);
/* SIGKILL and reap, ignoring errors: clean-up after a failed run. */
void kill_reap(pid_t pid);
/* "exited 0", "killed by SIGKILL"... */
const char *describe_status(int status);

/* Pass one fd over a Unix socket. */
int send_fd(int sock, int fd);
int recv_fd(int sock);

/* ---- what a process holds: fds and mappings ---- */

struct holdings;
struct holdings *holdings_new(void);
void holdings_free(struct holdings *h);
/* Record this process's fds and mappings. */
void holdings_take(struct holdings *h);
/*
 * Compare with now: what is open or mapped now that was not then, and
 * the reverse, described in buf.  anon_ok: anonymous mappings may differ
 * (a process with threads: glibc keeps the stacks of joined threads).
 * Returns the number of differences.
 */
int holdings_diff(const struct holdings *then, bool anon_ok, char *buf,
		  size_t len);

/* ---- the streams: producer and readers, shared by the scenarios ---- */

struct stream_cfg {
	uint64_t key;		/* payload key, per run */
	bool lossy;
	size_t ring_size;	/* 0: default */
	size_t max_inline;	/* 0: default */
	uint32_t max_readers;	/* 0: default */
};

/* What a reader does with what it receives. */
enum behaviour {
	B_FAST = 0,		/* release at once */
	B_HOLDER,		/* hold several, release in random order */
	B_SLOW,			/* pause now and then */
	B_LATEST,		/* SHMFD_RECV_LATEST now and then (lossy) */
	B_SPIN,			/* shmfd_reader_set_spin */
	B_STALL,		/* stop releasing after a while, hold on */
	B_COUNT
};
extern const char *const behaviour_names[B_COUNT];

struct reader_cfg {
	const struct stream_cfg *stream;
	enum behaviour behaviour;
	uint64_t seed;
	uint64_t stall_after;	/* B_STALL: messages before it stalls */
	unsigned int timeout_pct;	/* recv calls with a 0 or short
					 * timeout instead of -1 */
	bool check_holdings;	/* compare fds and maps before and after */
	int slot;		/* ctl->r[slot] */
};

/*
 * How a reader gets to the channel: by name, through a share fd the
 * producer passes over a socket, or forked by the producer itself (it
 * then holds copies of every producer fd).
 */
enum join_how {
	JOIN_NAMED = 0,
	JOIN_PASSED,
	JOIN_FORKED,
	JOIN_COUNT
};
extern const char *const join_names[JOIN_COUNT];

struct reader_proc {
	struct reader_cfg cfg;
	enum join_how how;
	const char *name;	/* JOIN_NAMED */
	int sock;		/* JOIN_PASSED: where the share fd comes */
	int share_fd;		/* JOIN_FORKED: inherited */
};

/* A reader process: join, read until an error ends it (-EPIPE expected),
 * verify everything, report in ctl->r[slot].  Exit 0, or 1 on failure. */
int reader_main(void *arg);

struct producer_cfg {
	const struct stream_cfg *stream;
	uint64_t seed;
	int timeout_ms;		/* for every send */
	unsigned int blob_permille;	/* messages sent as blobs, per 1000 */
	unsigned int idle_pct;	/* chance of a pause after a message */
	unsigned int slow_fill_pct;	/* chance of a slow reserve..commit */
	bool check_holdings;
};

/* The stream's sending half, inside a producer process. */
struct producer;
struct producer *producer_new(struct shmfd_chan *chan,
			      const struct producer_cfg *cfg);
void producer_free(struct producer *p);
/* Send the next message, retrying timeouts; fails the child on any other
 * error or a send that waited too long.  final: an inline message, so
 * that a lossy reader's last message counts every loss before it. */
void producer_send_next(struct producer *p, bool final);
uint64_t producer_published(const struct producer *p);
/* Change the share of blobs from now on. */
void producer_set_blobs(struct producer *p, unsigned int permille);
/* The caller published message seq published + 1 itself. */
void producer_skip(struct producer *p);

/* Wait (polling every ms) until the channel counts n readers, or fail. */
void wait_readers(struct shmfd_chan *chan, int n, uint64_t deadline_ns);

#define CMD_STOP	0xffffffffu	/* ctl->cmd: finish and close */

/*
 * A producer process: create the channel, hand it to the readers that
 * need it (passed share fds, readers it forks), wait until all joined,
 * then stream.  until_killed: forever.  until_stopped: until ctl->cmd is
 * CMD_STOP.  Otherwise until the harness sets ctl->t_kill (or at once if
 * victim < 0), then after_kill more messages, then -- if a reader was
 * killed -- until the channel stops counting it.  Then a last inline
 * message and close.
 */
struct producer_proc {
	struct stream_cfg stream;
	struct producer_cfg pcfg;
	const char *name;		/* NULL: anonymous */
	int nreaders;
	struct reader_proc readers[MAX_READERS];
	int pass_sock[MAX_READERS];	/* JOIN_PASSED: our end, else -1 */
	int extra_sock;			/* one more share fd goes here, or -1 */
	bool until_killed;
	bool until_stopped;		/* until ctl->cmd is CMD_STOP */
	uint64_t after_kill;
	int victim;			/* the reader the harness kills, or -1 */
};
int producer_main(void *arg);

/* ---- one run's processes (run.c) ---- */

struct run {
	struct producer_proc pp;
	pid_t producer;
	bool producer_reaped;
	pid_t pid[MAX_READERS];		/* readers we forked, else 0 */
	bool reaped[MAX_READERS];
	int status[MAX_READERS];
	char name[32];
	char why[1024];			/* what went wrong */
};

/* The channel and the producer's habits for this run. */
void pick_stream(struct run *r, struct rng *rng, uint64_t seed,
		 unsigned int lossy_pct);
/* Reader i: how it joins, how it reads; stall: it is a B_STALL victim. */
void pick_reader(struct run *r, struct rng *rng, uint64_t seed, int i,
		 bool stall);
/* Fork the producer and the readers it does not fork itself. */
void run_start(struct run *r);
pid_t reader_pid(const struct run *r, int i);
/* Has a process of the run ended before its time?  Says so in r->why. */
bool early_exit(struct run *r);
/* Every reader joined and the producer streaming; false on a failure. */
bool run_wait_streaming(struct run *r, uint64_t deadline_ns);
/* Reap reader i (ours, or adopted once its producer died). */
bool reap_reader(struct run *r, int i, uint64_t deadline_ns);
/* Kill and reap whatever of the run is left. */
void run_cleanup(struct run *r);
void describe_readers(const struct run *r, char *buf, size_t len);
void print_params(const struct run *r, unsigned int run);

/* ---- scenarios ---- */

struct summary {
	const char *name;
	unsigned int runs;
	unsigned int faults;
	unsigned int failures;
	uint64_t max_wake_ns;	/* UINT64_MAX: not measured */
	uint64_t max_epipe_ns;	/* UINT64_MAX: not measured */
	char notes[256];
};

struct options {
	uint64_t seed;
	unsigned int runs;	/* kill scenarios: runs each */
	uint64_t load_msgs;	/* load scenario: messages per mode */
	int only_run;		/* -1: all */
	bool verbose;
	const char *dir;	/* SHMFD_DIR for named channels */
};

/* Report a failed run: printed at once, counted in the summary. */
void run_failed(struct summary *s, unsigned int run, uint64_t seed,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));
uint64_t run_seed(uint64_t master, const char *scenario, unsigned int run);
/* Reset ctl for a new run. */
void ctl_reset(uint64_t seed);

void scenario_kill_producer(const struct options *o, struct summary *s);
void scenario_kill_reader(const struct options *o, struct summary *s);
void scenario_load(const struct options *o, struct summary *s, bool lossy);
void scenario_exhaust(const struct options *o, struct summary *s);

#endif /* SHMFD_STRESS_H */
