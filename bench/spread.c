// spread — how the kernel spreads clients over the threads of one server, for
// issue 14's choice between SO_REUSEPORT listeners and one listener watched with
// EPOLLEXCLUSIVE (reaperd's workers use the second). Built by bench/run.sh.
//
//   spread MODE PORT THREADS
//       MODE exclusive: one listening socket, in every thread's epoll set with
//                       EPOLLIN | EPOLLEXCLUSIVE (the kernel wakes one waiter);
//       MODE reuseport: a listening socket per thread, all bound to PORT with
//                       SO_REUSEPORT (the kernel hashes each client's 4-tuple).
//   Each thread accepts and echoes (64 B is what the rate clients send) and
//   closes at EOF. Prints "listening PORT", serves until stdin closes, then
//   prints JSON {accepted: [per thread], open: [per thread], cpu_seconds:
//   [per thread]}: the connections each thread took, those it still holds, and
//   the CPU each used.
//
// No reaperd here: it is the kernel's half of the choice, with nothing on top
// (reaperd also sends its busiest worker to the back of the wait queue).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { MAX_THREADS = 64 };

static int reuseport;
static int port;
static int shared_listener = -1;

struct worker {
    pthread_t thread;
    int listener;
    long accepted;
    long open;
    double cpu_seconds;
};
static struct worker workers[MAX_THREADS];

static void die(const char *what) {
    fprintf(stderr, "spread: %s: %s\n", what, strerror(errno));
    exit(2);
}

static int listen_on(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) die("SO_REUSEPORT");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(fd, 4096) < 0) die("listen");
    return fd;
}

static double thread_cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *serve(void *arg) {
    struct worker *self = arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN | (reuseport ? 0 : EPOLLEXCLUSIVE), .data.fd = self->listener};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, self->listener, &ev) < 0) die("epoll_ctl(listener)");
    struct epoll_event evs[256];
    char buf[4096];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, 200);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == self->listener) {
                for (int k = 0; k < 16; k++) {
                    int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;
                    int one = 1;
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = c};
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev) < 0) die("epoll_ctl(client)");
                    __atomic_add_fetch(&self->accepted, 1, __ATOMIC_RELAXED);
                    __atomic_add_fetch(&self->open, 1, __ATOMIC_RELAXED);
                }
                continue;
            }
            for (;;) {
                ssize_t r = read(fd, buf, sizeof buf);
                if (r > 0) {
                    ssize_t w = write(fd, buf, (size_t)r);  // 64 B always fits
                    (void)w;
                    continue;
                }
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) break;
                close(fd);
                __atomic_sub_fetch(&self->open, 1, __ATOMIC_RELAXED);
                break;
            }
        }
        double cpu = thread_cpu();
        __atomic_store(&self->cpu_seconds, &cpu, __ATOMIC_RELAXED);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4 || (strcmp(argv[1], "exclusive") != 0 && strcmp(argv[1], "reuseport") != 0)) {
        fprintf(stderr, "usage: spread exclusive|reuseport PORT THREADS\n");
        return 64;
    }
    reuseport = strcmp(argv[1], "reuseport") == 0;
    port = atoi(argv[2]);
    int threads = atoi(argv[3]);
    if (threads < 1 || threads > MAX_THREADS) {
        fprintf(stderr, "spread: 1..%d threads\n", MAX_THREADS);
        return 64;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (!reuseport) shared_listener = listen_on();
    for (int i = 0; i < threads; i++) {
        workers[i].listener = reuseport ? listen_on() : shared_listener;
        if (pthread_create(&workers[i].thread, NULL, serve, &workers[i]) != 0) die("pthread_create");
    }
    printf("listening %d\n", port);
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {
    }
    usleep(300 * 1000);  // every thread's CPU figure is at most one epoll timeout old
    printf("{\"mode\": \"%s\", \"accepted\": [", argv[1]);
    for (int i = 0; i < threads; i++) printf("%s%ld", i ? ", " : "", __atomic_load_n(&workers[i].accepted, __ATOMIC_RELAXED));
    printf("], \"open\": [");
    for (int i = 0; i < threads; i++) printf("%s%ld", i ? ", " : "", __atomic_load_n(&workers[i].open, __ATOMIC_RELAXED));
    printf("], \"cpu_seconds\": [");
    for (int i = 0; i < threads; i++) {
        double cpu;
        __atomic_load(&workers[i].cpu_seconds, &cpu, __ATOMIC_RELAXED);
        printf("%s%.4f", i ? ", " : "", cpu);
    }
    printf("]}\n");
    fflush(stdout);
    _exit(0);
}
