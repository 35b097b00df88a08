/* SPDX-License-Identifier: MIT */
/* Private declarations shared by lib/ files; nothing here is API. */
#ifndef SHMFD_INTERNAL_H
#define SHMFD_INTERNAL_H

#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "shmfd.h"
#include "compat.h"
#include "layout.h"

#define SHMFD_DEFAULT_RING	(4u << 20)
#define SHMFD_DEFAULT_READERS	64u
#define SHMFD_MAX_READERS	4096u
#define SHMFD_HELD_MAX		256u	/* messages one reader may hold */
#define HELD_NONE		0xffffu
#define SHMFD_JOIN_TIMEOUT_MS	10000	/* handshake answer deadline */
#define SHMFD_BOUNDS		64u	/* chunks of the ring, ring.c */
#define SHMFD_FALLBACK_SLICE_MS	100	/* self-wake without io_uring futex */
/* ring.c (9): a reservation this large wakes blocked readers ahead of its
 * commit, and a reader so woken watches for the commit this long. */
#define SHMFD_AHEAD_MIN		(64u << 10)
#define SHMFD_AHEAD_SPIN_US	200u

/* Shared-memory accesses: every load and store of a shared word goes
 * through these, so the ordering of each is visible where it is used. */
#define LOAD_RELAXED(p)		__atomic_load_n((p), __ATOMIC_RELAXED)
#define LOAD_ACQUIRE(p)		__atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE_RELAXED(p, v)	__atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define STORE_RELEASE(p, v)	__atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define FENCE_FULL()		__atomic_thread_fence(__ATOMIC_SEQ_CST)
/* Program order for the compiler only: the other half of a membarrier(2)
 * pair (ring.c (7)). */
#define COMPILER_BARRIER()	__atomic_signal_fence(__ATOMIC_SEQ_CST)
#define FENCE_ACQUIRE()		__atomic_thread_fence(__ATOMIC_ACQUIRE)
#define FENCE_RELEASE()		__atomic_thread_fence(__ATOMIC_RELEASE)

#define ALIGN_UP(x, a)		(((x) + ((a) - 1)) & ~((__typeof__(x))(a) - 1))
#define ARRAY_SIZE(a)		(sizeof(a) / sizeof((a)[0]))

static inline int shmfd__neg_errno(void)
{
	return errno > 0 ? -errno : -EIO;
}

/* ---- time: deadlines on CLOCK_MONOTONIC, in nanoseconds ---- */
uint64_t shmfd__now_ns(void);
/* -1 -> UINT64_MAX (never), 0 -> 0, else now + ms. */
uint64_t shmfd__deadline(int timeout_ms);

/* ---- barrier.c: membarrier(2), ring.c (7) ---- */
/* This process is registered for GLOBAL_EXPEDITED barriers. */
bool shmfd__membarrier_ready(void);
/* A full barrier in every running thread of every registered process. */
int shmfd__membarrier(void);
/* now + 1 ms, or deadline if sooner (ring.c). */
uint64_t shmfd__slice_end(uint64_t deadline);

/* ---- memfd.c ---- */
int shmfd__memfd_create(const char *name, size_t size, int *fdp);
int shmfd__memfd_seal(int fd, int seals);
/* Check fd is a memfd of exactly size bytes carrying every seal in
 * required and none in forbidden; -EPROTO otherwise. */
int shmfd__memfd_verify(int fd, size_t size, int required, int forbidden);
int shmfd__map(int fd, size_t size, int prot, void **addrp);
int shmfd__map_flags(int fd, size_t size, int prot, int flags, void **addrp);

/* ---- futex.c: shared (not private) futexes on 32-bit words ---- */
/* Bitsets of the waits on hdr.futex (ring.c (9)): a reader blocked in
 * recv, or a wait left in flight for a poll fd.  Other words: ANY. */
#define SHMFD_FUTEX_BLOCK	(1u << 0)
#define SHMFD_FUTEX_POLL	(1u << 1)
#define SHMFD_FUTEX_ANY		0xffffffffu
int shmfd__futex_wait(const uint32_t *word, uint32_t val, uint32_t bits,
		      uint64_t deadline_ns);
int shmfd__futex_wake(const uint32_t *word, int n);
/* Wake up to n waiters on word whose bitset shares a bit with bits. */
int shmfd__futex_wake_bits(const uint32_t *word, int n, uint32_t bits);

/* ---- uring.c ---- */
bool shmfd__uring_enabled(void);	/* io_uring usable and not forbidden */
bool shmfd__uring_has_futex(void);	/* IORING_OP_FUTEX_WAIT works */

/* One io_uring, or none: fd passing and, for readers, the sleep. */
struct shmfd__uring {
	struct io_uring ring;
	bool ok;
	bool futex_ok;
	bool futex_armed;		/* a FUTEX_WAIT is in flight */
	bool pidfd_armed;
	bool sock_armed;
};
int shmfd__uring_init(struct shmfd__uring *u, unsigned int entries);
void shmfd__uring_exit(struct shmfd__uring *u);
/* sendmsg through io_uring when u is usable, else sendmsg(2). */
int shmfd__sendmsg(struct shmfd__uring *u, int sock, const void *buf,
		   size_t len, const int *fds, unsigned int nfds);

/* Events a reader's sleep can end with. */
#define SHMFD_WAKE_FUTEX	(1u << 0)
#define SHMFD_WAKE_PEER_DEAD	(1u << 1)
#define SHMFD_WAKE_HANGUP	(1u << 2)
#define SHMFD_WAKE_TIMEOUT	(1u << 3)
/* Sleep until *word != val (or a wake that matches bits), the peer dies (its pidfd, or
 * its pid where the kernel has no pidfds), sock hangs up, or the
 * deadline.  Returns a mask of SHMFD_WAKE_*, or -errno. */
int shmfd__sleep(struct shmfd__uring *u, const uint32_t *word, uint32_t val,
		 uint32_t bits, int pidfd, pid_t pid, int sock,
		 uint64_t deadline_ns);
/* Has the peer exited?  Its pidfd if there is one, else kill(pid, 0). */
bool shmfd__peer_gone(int pidfd, pid_t pid);
/* Queue the sleep's waits that are not in flight (no submit). */
int shmfd__uring_arm(struct shmfd__uring *u, const uint32_t *word,
		     uint32_t val, uint32_t bits, int pidfd, int sock);
/* Take every completion; a mask of SHMFD_WAKE_* they carried. */
unsigned int shmfd__uring_reap(struct shmfd__uring *u);
/* Post a completion that only makes the ring fd readable. */
int shmfd__uring_nop(struct shmfd__uring *u);
/* Are completions waiting (the ring fd readable)? */
bool shmfd__uring_ready(struct shmfd__uring *u);
/* Non-blocking: is fd readable or hung up? */
bool shmfd__fd_ready(int fd);
/* Non-blocking: has the other end of a socket gone (data may be queued)? */
bool shmfd__sock_hung_up(int sock);

/* One message with one fd to many sockets: a single io_uring submission
 * (in batches of the ring's size), or sendmsg(2) each.  res[i] gets 0 or
 * -errno for socks[i]; never blocks (MSG_DONTWAIT). */
int shmfd__sendmsg_many(struct shmfd__uring *u, const int *socks,
			int *res, unsigned int n, const void *buf,
			size_t len, int fd);

/* ---- proto.c ---- */
int shmfd__recv_fds(int sock, void *buf, size_t len, int *fds,
		    unsigned int *nfds, unsigned int maxfds);
int shmfd__check_hello(const struct shmfd__hello *h, size_t len,
		       unsigned int nfds);
/* A stats answer: 0, its -errno status, or -EPROTO if malformed. */
int shmfd__check_stats(const struct shmfd__stats *a, size_t len);
int shmfd__check_welcome(const struct shmfd__welcome *w, size_t len);

/* ---- validate.c: the ring as a reader finds it; pure functions ---- */
/* ring_size a power of two in range, max_inline fitting, flags known. */
int shmfd__check_ring_geometry(uint64_t ring_size, uint64_t max_inline,
			       uint32_t flags);
/* 4096 + ring_size, or -ENOMEM where a size_t cannot hold it. */
int shmfd__ring_map_size(uint64_t ring_size, size_t *sizep);
/* The mapped header: right magic, version and size, sane on its own and
 * equal to what the welcome announced.  -EPROTO otherwise. */
int shmfd__check_ring_hdr(const struct shmfd__ring_hdr *hdr,
			  const struct shmfd__welcome *w);

/* ---- rendezvous.c ---- */
int shmfd__chan_path(const char *name, char *buf, size_t len);
int shmfd__runtime_dir(char *buf, size_t len, bool create);
int shmfd__listen(const char *name, mode_t mode, int *fdp,
		  char *path, size_t pathlen);
int shmfd__connect(const char *name, int *fdp);
int shmfd__peer_cred(int sock, pid_t *pid, uid_t *uid, gid_t *gid);
/* May this peer join a named channel of this mode?  As connect(2)
 * decides for the socket file: 1, 0, or -errno. */
int shmfd__peer_allowed(int sock, mode_t mode, uid_t uid, gid_t gid);

/* ---- ring.c: producer side ---- */
struct shmfd_chan;
struct shmfd_reader;

/* A reader as the producer sees it.  The admission thread fills a free
 * slot and publishes it; the sender only reads live slots. */
enum {
	SLOT_FREE = 0,
	SLOT_LIVE = 1,
	SLOT_DEAD = 2,
};

struct shmfd__slot {
	uint32_t state;			/* SLOT_*, written by the thread */
	struct shmfd__reader_page *page;/* mapped read-write, sealed */
	uint64_t start;			/* tail before the reader wrote one */
	uint64_t woken;			/* sleep_pos already woken (sender) */
	uint64_t blob_sent;		/* last blob id sent to it (sender) */
	uint32_t gen;			/* joins so far (thread) */
	bool fenced;			/* counted in chan.nfenced (thread) */
	int sock;
	int pidfd;
	int wake_sock;			/* ring.c (8): thread stores, sender loads */
	pid_t pid;			/* watched by kill(2) if pidfd is -1 */
};

struct shmfd_chan {
	/* Sender state, touched on every send. */
	struct shmfd__ring_hdr *hdr;	/* writable mapping */
	uint8_t *data;
	uint64_t size;			/* data area, power of two */
	uint64_t mask;
	uint64_t max_inline;
	bool lossy;
	uint64_t head;			/* private copy of hdr->head */
	uint64_t seq;
	uint64_t oldest;
	uint64_t min_tail;		/* readers' tails known to be >= this */
	/* ring.c, retire_point: for each of SHMFD_BOUNDS chunk boundaries
	 * of the last ring's worth, the first record start at or past it. */
	uint64_t bounds[SHMFD_BOUNDS];
	uint64_t chunk;			/* size / SHMFD_BOUNDS */
	uint64_t resv_pos;		/* reserved record start, or UINT64_MAX */
	uint64_t resv_len;
	uint64_t epoch;			/* odd while the sender reads slots */
	bool asym;			/* ring.c (7): no fence when publishing */
	uint32_t nfenced;		/* LIVE readers without membarrier, atomic */
	uint32_t wait_slot;		/* 1 + slot the sender sleeps on, or 0 */
	uint32_t nslots;
	uint32_t slot_hi;		/* 1 + highest slot ever LIVE (thread) */
	struct shmfd__slot *slots;
	uint32_t seen_joins;		/* joins when min_tail was computed */
	uint64_t blob_id;		/* last blob id used */
	uint32_t *tx_slot;		/* nslots entries: blob send scratch */
	int *tx_sock;
	int *tx_res;
	struct shmfd__uring tx_uring;	/* the sender's, made on first blob */
	bool tx_uring_init;

	/* Set-up and the admission thread. */
	int ring_fd;
	size_t map_size;
	int listen_fd;			/* named channels, else -1 */
	char path[108];
	dev_t path_dev;
	ino_t path_ino;
	mode_t mode;
	int epfd;
	int stop_fd;			/* eventfd: tells the thread to stop */
	pthread_t thread;
	bool thread_running;
	pthread_mutex_t lock;		/* shares[] */
	int *shares;			/* our ends of share fds */
	uint32_t nshares;
	uint32_t cap_shares;
	int pending[64];		/* accepted, hello not yet read */
	uint32_t npending;		/* pending[] and ndead: thread only */
	uint32_t ndead;
	bool listen_paused;		/* accept failed for want of fds */
	bool watch_pids;		/* thread: no pidfds, poll readers' pids */
	uint32_t nreaders;		/* live readers, atomic */
	uint32_t joins;			/* bumped by the thread on each join */
	uint64_t welcomed;		/* thread: readers sent a welcome */
	uint64_t lost_gone;		/* thread: page.lost of dropped readers */
	struct shmfd__uring uring;	/* the thread's */
	pid_t pid;
};

int shmfd__ring_init(struct shmfd_chan *c, size_t ring_size,
		     size_t max_inline, uint32_t max_readers, bool lossy);
int shmfd__ring_reserve(struct shmfd_chan *c, size_t len, void **bufp,
			int timeout_ms);
int shmfd__ring_commit(struct shmfd_chan *c, size_t len);
/* Blob publish, in two steps: open makes commit_gen odd and fences, so a
 * reader the admission thread registers from then on either is seen LIVE
 * by the caller or starts past this record; publish writes the record. */
void shmfd__ring_commit_open(struct shmfd_chan *c);
void shmfd__ring_commit_blob(struct shmfd_chan *c, uint64_t id, uint64_t size);
/* Drop a reservation that will not be committed. */
void shmfd__ring_cancel(struct shmfd_chan *c);
/* The slots bracket of ring.c (5). */
void shmfd__slots_enter(struct shmfd_chan *c);
void shmfd__slots_exit(struct shmfd_chan *c);
void shmfd__ring_close(struct shmfd_chan *c);
/* reader side */
/* A record ring_take found: where it is and, for a blob, what it names. */
struct shmfd__taken {
	uint64_t pos;
	uint64_t end;
	uint32_t type;			/* SHMFD_REC_MSG or SHMFD_REC_BLOB */
	bool skipped;			/* records were passed over to get here */
	struct shmfd__blob_desc blob;
};
int shmfd__ring_take(struct shmfd_reader *r, struct shmfd_msg *msg,
		     unsigned int flags, struct shmfd__taken *t);
void shmfd__ring_wake_needy(struct shmfd_reader *r);
void shmfd__ring_publish_tail(struct shmfd_reader *r, uint64_t tail);
bool shmfd__ring_stale(const struct shmfd_reader *r, uint64_t pos);

/* ---- admit.c: the producer's admission thread ---- */
int shmfd__admit_start(struct shmfd_chan *c);
void shmfd__admit_stop(struct shmfd_chan *c);
int shmfd__admit_add_share(struct shmfd_chan *c, int fd);

/* ---- reader.c internals used by ring.c ---- */
struct shmfd__held {
	uint64_t pos;			/* record start */
	uint32_t gen;			/* 0 when the entry is free */
	uint16_t prev;			/* list in receive (= position) order */
	uint16_t next;
	/* A blob holds its own mapping, not the ring: it is off the list. */
	void *blob_map;
	size_t blob_len;
	int blob_fd;
};

/* A blob fd that arrived before its record was read. */
struct shmfd__queued_fd {
	uint64_t id;
	uint64_t seq;
	uint64_t size;
	int fd;
};

struct shmfd_reader {
	const struct shmfd__ring_hdr *hdr;
	const uint8_t *data;
	uint64_t size;
	uint64_t mask;
	uint64_t max_inline;
	bool lossy;
	bool asym;			/* ring.c (7): membarrier, not fences */
	uint64_t pos;			/* next record to read */
	uint64_t head;			/* hdr.head as last loaded */
	uint64_t join_head;		/* head when we were registered */
	uint64_t next_seq;		/* 0: take the first seq as it comes */
	uint64_t tail;			/* last tail published */
	uint64_t last_want;		/* ring.want we already woke for */
	struct shmfd__reader_page *page;
	size_t map_size;
	unsigned int spin_us;
	uint64_t ahead_seen;		/* ring.c (9): hdr.ahead spun for */
	int sock;
	int pidfd;			/* -1 where pidfd_open(2) is missing */
	pid_t peer_pid;
	int share_fd;			/* open_fd: owned until close */
	bool peer_dead;
	bool hangup;
	uint32_t gen;
	/* Held messages: entries with stable indices (msg.reserved names
	 * one), linked in receive order, which is position order, so the
	 * oldest unreleased one -- the tail -- is always the list head. */
	uint32_t held_count;		/* entries in use, blobs included */
	uint16_t held_first;		/* HELD_NONE when empty */
	uint16_t held_last;
	uint16_t held_free;		/* free list through .next */
	struct shmfd__held held[SHMFD_HELD_MAX];
	/* Blob fds read from the socket ahead of their records, in order:
	 * those that came with or before the welcome, or one read past a
	 * record whose fd never came. */
	struct shmfd__queued_fd *fdq;
	uint32_t fdq_head;
	uint32_t fdq_count;
	uint32_t fdq_cap;
	bool fdq_garbage;		/* a malformed message was discarded */
	uint64_t extra_lost;		/* blobs skipped since the last message */
	uint64_t lost_total;		/* msg.lost so far: page.lost */
	struct shmfd__uring uring;
	/* shmfd_reader_pollfd (poll.c) */
	uint8_t poll_mode;		/* SHMFD_POLL_* */
	int poll_fd;			/* what pollfd returned */
	int wake_rx;			/* SHMFD_POLL_SOCK: our end of the pair */
	int wake_tx;			/* ... and a copy of the producer's end */
};

/* ---- reader.c ---- */
struct shmfd_reader *shmfd__reader_alloc(void);	/* NULL: no memory */

/* ---- poll.c ---- */
enum {
	SHMFD_POLL_NONE = 0,
	SHMFD_POLL_URING,		/* the io_uring fd, futex wait armed */
	SHMFD_POLL_SOCK,		/* an epoll fd: wake socket, pidfd, hang-up */
};
/* Before recv returns -EAGAIN or -ETIMEDOUT: forget old readiness and
 * arm for the next message.  1: something is ready after all (look
 * again); 0: armed; -errno. */
int shmfd__poll_rearm(struct shmfd_reader *r);
/* Before recv returns a message or a final error: leave the fd readable
 * if recv would not say -EAGAIN, armed otherwise. */
void shmfd__poll_settle(struct shmfd_reader *r, bool final);
void shmfd__poll_free(struct shmfd_reader *r);

/* ---- blob.c ---- */
int shmfd__blob_copy(struct shmfd_blob **blobp, const void *data, size_t len);
int shmfd__blob_take(struct shmfd_reader *r, const struct shmfd__taken *t,
		     int *fdp, void **mapp);
void shmfd__blob_drain(struct shmfd_reader *r, uint64_t seq);
int shmfd__fdq_push(struct shmfd_reader *r, const struct shmfd__blob_fd *m,
		    int fd);
void shmfd__fdq_clear(struct shmfd_reader *r);
void shmfd__blob_send_cleanup(struct shmfd_chan *c);

#endif /* SHMFD_INTERNAL_H */
