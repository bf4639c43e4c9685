/* Shared-memory primitives for streamlog's partition control block: atomics,
 * the seqlock that publishes a partition's end, and futex waits. Kept in C
 * because Cython has no atomics; every function is small and static. */
#ifndef STREAMLOG_NATIVE_H
#define STREAMLOG_NATIVE_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <errno.h>
#include <time.h>
#include <pthread.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/futex.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "streamlog stores little-endian fields with memcpy: a big-endian host needs byte swaps"
#endif

#define SL_CONTROL_BYTES 4096
#define SL_FLAG_DELETED 1u

/* The control block at the start of every partition's `control` file, shared
 * by every process through MAP_SHARED. Layout documented in docs/format.md. */
typedef struct {
    char magic[8];              /*   0 "SLCTRL01" */
    uint32_t version;           /*   8 */
    uint32_t flags;             /*  12 SL_FLAG_* */
    char boot_id[16];           /*  16 kernel boot id when initialised */
    union {                     /*  32 the partition's append lock */
        pthread_mutex_t mutex;
        char pad[64];
    } lock;
    uint64_t seq;               /*  96 seqlock: odd while a publish is in progress */
    uint64_t generation;        /* 104 bumped at roll and retention */
    uint64_t active_base;       /* 112 base offset of the active segment */
    uint64_t end_offset;        /* 120 next offset to be written */
    uint64_t end_pos;           /* 128 bytes written in the active segment */
    uint64_t pending_end;       /* 136 end of the write in progress (== end_pos when none) */
    uint64_t capacity;          /* 144 preallocated size of the active segment */
    int64_t max_timestamp_ms;   /* 152 running maximum timestamp of the partition */
    uint64_t start_offset;      /* 160 first retained offset */
    uint64_t recovery_point;    /* 168 bytes of the active segment known durable */
    uint64_t index_count;       /* 176 entries in the active .index/.timeindex */
    uint64_t last_index_pos;    /* 184 file_pos of the last index entry */
    uint64_t synced_offset;     /* 192 end offset covered by the last fsync */
    uint32_t notify_seq;        /* 200 futex word: bumped after each append */
    uint32_t waiters;           /* 204 processes waiting on notify_seq */
    uint64_t allocated_end;     /* 208 blocks of the active segment allocated up to here */
} sl_control;

_Static_assert(sizeof(pthread_mutex_t) <= 64, "pthread_mutex_t must fit the control block");
_Static_assert(sizeof(sl_control) <= SL_CONTROL_BYTES, "control block too large");
_Static_assert(offsetof(sl_control, seq) == 96, "control layout");
_Static_assert(offsetof(sl_control, notify_seq) == 200, "control layout");
_Static_assert(offsetof(sl_control, allocated_end) == 208, "control layout");

static inline uint64_t sl_load64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void sl_store64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline uint32_t sl_load32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

static inline void sl_publish_begin(sl_control *c) {
    __atomic_store_n(&c->seq, c->seq + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
}
static inline void sl_publish_end(sl_control *c) {
    __atomic_store_n(&c->seq, c->seq + 1, __ATOMIC_RELEASE);
}

typedef struct {
    uint64_t generation, active_base, end_offset, end_pos, capacity, start_offset;
    int64_t max_timestamp_ms;
} sl_view;

/* A consistent snapshot of the published fields, without the lock. */
static inline void sl_read_view(sl_control *c, sl_view *v) {
    for (;;) {
        uint64_t s1 = __atomic_load_n(&c->seq, __ATOMIC_ACQUIRE);
        if (s1 & 1) { continue; }
        v->generation = __atomic_load_n(&c->generation, __ATOMIC_RELAXED);
        v->active_base = __atomic_load_n(&c->active_base, __ATOMIC_RELAXED);
        v->end_offset = __atomic_load_n(&c->end_offset, __ATOMIC_RELAXED);
        v->end_pos = __atomic_load_n(&c->end_pos, __ATOMIC_RELAXED);
        v->capacity = __atomic_load_n(&c->capacity, __ATOMIC_RELAXED);
        v->start_offset = __atomic_load_n(&c->start_offset, __ATOMIC_RELAXED);
        v->max_timestamp_ms = __atomic_load_n(&c->max_timestamp_ms, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&c->seq, __ATOMIC_RELAXED) == s1) { return; }
    }
}

static inline void sl_notify(uint32_t *word, uint32_t *waiters) {
    __atomic_add_fetch(word, 1, __ATOMIC_RELEASE);
    if (__atomic_load_n(waiters, __ATOMIC_ACQUIRE)) {
        syscall(SYS_futex, word, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
    }
}

/* Wait until *word != expected or timeout_s passes. Returns 0 woken/changed, 1 timeout. */
static inline int sl_wait(uint32_t *word, uint32_t *waiters, uint32_t expected, double timeout_s) {
    struct timespec ts;
    int rc;
    if (timeout_s < 0) timeout_s = 0;
    ts.tv_sec = (time_t)timeout_s;
    ts.tv_nsec = (long)((timeout_s - (double)ts.tv_sec) * 1e9);
    __atomic_add_fetch(waiters, 1, __ATOMIC_ACQ_REL);
    if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != expected) {
        __atomic_sub_fetch(waiters, 1, __ATOMIC_ACQ_REL);
        return 0;
    }
    rc = (int)syscall(SYS_futex, word, FUTEX_WAIT, expected, &ts, NULL, 0);
    __atomic_sub_fetch(waiters, 1, __ATOMIC_ACQ_REL);
    if (rc == -1 && errno == ETIMEDOUT) return 1;
    return 0;
}

/* As sl_wait, for a process that maps the word read-only (a read-only open)
   and so cannot count itself among the waiters: a writer wakes it only when
   another waiter is registered, so it sleeps in slices of at most 50 ms and
   looks at the word between them. Returns 0 changed, 1 timeout. */
static inline int sl_wait_ro(uint32_t *word, uint32_t expected, double timeout_s) {
    struct timespec ts, now;
    double deadline, left, slice;
    clock_gettime(CLOCK_MONOTONIC, &now);
    deadline = (double)now.tv_sec + (double)now.tv_nsec * 1e-9 + (timeout_s > 0 ? timeout_s : 0);
    for (;;) {
        if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != expected) return 0;
        clock_gettime(CLOCK_MONOTONIC, &now);
        left = deadline - ((double)now.tv_sec + (double)now.tv_nsec * 1e-9);
        if (left <= 0) return 1;
        slice = left < 0.05 ? left : 0.05;
        ts.tv_sec = (time_t)slice;
        ts.tv_nsec = (long)((slice - (double)ts.tv_sec) * 1e9);
        syscall(SYS_futex, word, FUTEX_WAIT, expected, &ts, NULL, 0);
    }
}

/* futex_waitv (Linux 5.16): sleep on up to 128 words at once. Declared here
   when the C library's headers predate it. */
#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif
#ifndef FUTEX_32
#define FUTEX_32 2
#endif
#define SL_WAITV_MAX 128

typedef struct {
    uint64_t val;
    uint64_t uaddr;
    uint32_t flags;
    uint32_t reserved;
} sl_futex_waitv;

/* Sleep until one of n process-shared words differs from its expected value,
   or timeout_s passes (< 0: no end). Word i is the uint32 at addrs[i]; when
   counted[i], the uint32 after it counts waiters (the layout sl_wait uses) and
   is raised for the sleep, so that a writer's sl_notify issues its wake-up.
   Returns the index of a word woken (>= 0), or -errno: -EAGAIN (a word already
   differed), -ETIMEDOUT, -EINTR, -ENOSYS (kernel older than 5.16), -EINVAL. */
static inline int sl_waitv(const uint64_t *addrs, const uint32_t *vals,
                           const unsigned char *counted, unsigned n, double timeout_s) {
    sl_futex_waitv w[SL_WAITV_MAX];
    struct timespec ts, *tp = NULL;
    unsigned i;
    long rc;
    int err;
    if (n > SL_WAITV_MAX) return -EINVAL;
    for (i = 0; i < n; i++) {
        w[i].val = vals[i];
        w[i].uaddr = addrs[i];
        w[i].flags = FUTEX_32;  /* shared: the words live in MAP_SHARED files */
        w[i].reserved = 0;
        if (counted[i]) __atomic_add_fetch((uint32_t *)(uintptr_t)(addrs[i] + 4), 1, __ATOMIC_ACQ_REL);
    }
    if (timeout_s >= 0) {  /* futex_waitv takes an absolute time */
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += (time_t)timeout_s;
        ts.tv_nsec += (long)((timeout_s - (double)(time_t)timeout_s) * 1e9);
        if (ts.tv_nsec >= 1000000000L) { ts.tv_sec += 1; ts.tv_nsec -= 1000000000L; }
        tp = &ts;
    }
    rc = syscall(SYS_futex_waitv, n ? w : NULL, n, 0, tp, CLOCK_MONOTONIC);
    err = errno;
    for (i = 0; i < n; i++) {
        if (counted[i]) __atomic_sub_fetch((uint32_t *)(uintptr_t)(addrs[i] + 4), 1, __ATOMIC_ACQ_REL);
    }
    return rc >= 0 ? (int)rc : -err;
}

static inline int sl_mutex_init(sl_control *c) {
    pthread_mutexattr_t attr;
    int rc = pthread_mutexattr_init(&attr);
    if (rc) return rc;
    rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (!rc) rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (!rc) {
        memset(&c->lock, 0, sizeof(c->lock));
        rc = pthread_mutex_init(&c->lock.mutex, &attr);
    }
    pthread_mutexattr_destroy(&attr);
    return rc;
}

static inline void sl_store_u64le(char *p, uint64_t v) { memcpy(p, &v, 8); }
static inline void sl_store_u32le(char *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void sl_store_i64le(char *p, int64_t v) { memcpy(p, &v, 8); }
static inline uint64_t sl_get_u64le(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t sl_get_u32le(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline int32_t sl_get_i32le(const unsigned char *p) { int32_t v; memcpy(&v, p, 4); return v; }
static inline int64_t sl_get_i64le(const unsigned char *p) { int64_t v; memcpy(&v, p, 8); return v; }
static inline uint16_t sl_get_u16le(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }

#endif
