// Experiment, not product code (bench/README.md, "Small reads against the raw UCX round
// trip"): measures what UCX's polling of an idle tcp interface costs the engine.
// epoll_wait(timeout 0) on an epoll set that never had a descriptor added answers 0 without a
// system call. Tracks epoll_create1/epoll_ctl of the process (sets created after it loads).
// Build and run:
//   gcc -O2 -shared -fPIC -o /tmp/libepshim.so bench/experiments/empty-epoll-shim.c -ldl
//   LD_PRELOAD=/tmp/libepshim.so target/release/bench --scenario ucx.am_rtt.sm --blocks 8
// The count is not corrected for a closed epoll descriptor whose number is reused: good
// enough for a measurement, not for a product.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/epoll.h>
#include <stdatomic.h>
static atomic_int nfds[65536];
static atomic_int known[65536];
static int (*real_wait)(int, struct epoll_event *, int, int);
static int (*real_ctl)(int, int, int, struct epoll_event *);
static int (*real_create1)(int);
int epoll_create1(int flags) {
    if (!real_create1) real_create1 = dlsym(RTLD_NEXT, "epoll_create1");
    int fd = real_create1(flags);
    if (fd >= 0 && fd < 65536) { atomic_store(&nfds[fd], 0); atomic_store(&known[fd], 1); }
    return fd;
}
int epoll_create(int size) { return epoll_create1(0); }
int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev) {
    if (!real_ctl) real_ctl = dlsym(RTLD_NEXT, "epoll_ctl");
    int r = real_ctl(epfd, op, fd, ev);
    if (r == 0 && epfd >= 0 && epfd < 65536) {
        if (op == EPOLL_CTL_ADD) atomic_fetch_add(&nfds[epfd], 1);
        if (op == EPOLL_CTL_DEL) atomic_fetch_sub(&nfds[epfd], 1);
    }
    return r;
}
int epoll_wait(int epfd, struct epoll_event *evs, int max, int timeout) {
    if (!real_wait) real_wait = dlsym(RTLD_NEXT, "epoll_wait");
    if (timeout == 0 && epfd >= 0 && epfd < 65536 && atomic_load(&known[epfd]) && atomic_load(&nfds[epfd]) == 0) return 0;
    return real_wait(epfd, evs, max, timeout);
}
