// loadgen — the benchmark's load generator and upstream servers, one epoll loop
// per process, no threads. Built by bench/run.sh with `gcc -O2`.
//
//   loadgen sink   PORT          upstream that discards (recv MSG_TRUNC: no copy):
//                                a stream opens with its length (8 bytes), and the
//                                sink answers with the 8-byte count it received once
//                                it has that many, with no half-close in between
//                                (socket-proxyd, which closes both sides at a FIN,
//                                carries it too); at EOF it closes; holds idle
//                                connections forever
//   loadgen echo   PORT          upstream that echoes; closes on EOF
//   loadgen stream HOST PORT STREAMS BYTES
//                                STREAMS connections each send their length, then
//                                BYTES, and wait for the sink's count;
//                                prints JSON {bytes, seconds, gbps}
//   loadgen rate   HOST PORT CONC SECONDS SRC_FIRST
//                                CONC clients loop connect / 64 B / echo / close
//                                for SECONDS; client i binds 127.0.0.(SRC_FIRST+i);
//                                prints JSON {connections, rate, p50_us, p99_us, errors}
//   loadgen hold   HOST PORT N SRC_FIRST SRC_COUNT
//                                opens N idle connections from 127.0.0.SRC_FIRST ..
//                                +SRC_COUNT-1, prints "ready N" (or "failed K"),
//                                holds them until stdin closes or SIGTERM
//   loadgen tcpinfo N            the kernel's floor under the sweep: N loopback
//                                connections in this process, then the median of
//                                5 passes of getsockopt(TCP_INFO) over the N
//                                accepted sockets, and of one NETLINK_SOCK_DIAG
//                                dump (INET_DIAG_INFO) filtered to their port;
//                                prints JSON {getsockopt_us, netlink_us} per socket
//
// Every mode reports its own CPU time (user+sys seconds) in its JSON, so the
// harness can show the generator was not the bottleneck.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>  // glibc's struct tcp_info: fine for timing the call
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static struct sockaddr_in addr_of(const char *host, int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "loadgen: bad IPv4 address %s\n", host);
        exit(2);
    }
    return a;
}

static void ep_add(int ep, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev = {.events = events, .data.u64 = data};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl(ADD)");
}

static void ep_mod(int ep, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev = {.events = events, .data.u64 = data};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) < 0) die("epoll_ctl(MOD)");
}

// A non-blocking socket bound to 127.0.0.last (port chosen at connect time, per
// 4-tuple, so each source address has its own ephemeral port range), connecting.
static int start_connect(const struct sockaddr_in *dst, int last) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (last > 0) {
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in src;
        memset(&src, 0, sizeof src);
        src.sin_family = AF_INET;
        src.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)(last & 0xff));
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
            close(fd);
            return -1;
        }
    }
    if (connect(fd, (const struct sockaddr *)dst, sizeof *dst) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static int listen_on(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = addr_of("127.0.0.1", port);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(fd, 4096) < 0) die("listen");
    return fd;
}

// ---------------------------------------------------------------- servers

// Per-connection state of the sink (the fd indexes the arrays): bytes received
// after the length, the length as far as it has arrived, how much of it has.
static uint64_t *sink_counts;
static uint64_t *sink_expect;
static uint8_t *sink_header;
static int sink_cap;

static __attribute__((noreturn)) void run_server(int port, int echo) {
    raise_nofile();
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    sink_cap = (int)rl.rlim_cur + 1;
    sink_counts = calloc((size_t)sink_cap, sizeof *sink_counts);
    sink_expect = calloc((size_t)sink_cap, sizeof *sink_expect);
    sink_header = calloc((size_t)sink_cap, sizeof *sink_header);
    int lfd = listen_on(port);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    ep_add(ep, lfd, EPOLLIN, (uint64_t)lfd);
    printf("listening %d\n", port);
    fflush(stdout);
    static char buf[256 * 1024];
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = (int)evs[i].data.u64;
            if (fd == lfd) {
                for (int k = 0; k < 256; k++) {
                    int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;
                    int one = 1;
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    if (c >= sink_cap) die("sink: descriptor past the limit");
                    sink_counts[c] = 0;
                    sink_expect[c] = 0;
                    sink_header[c] = 0;
                    ep_add(ep, c, EPOLLIN | EPOLLRDHUP, (uint64_t)c);
                }
                continue;
            }
            for (;;) {
                ssize_t r;
                if (echo) {
                    r = read(fd, buf, sizeof buf);
                    if (r > 0) {
                        // 64-byte echoes always fit the socket buffer; a short
                        // write here would only drop benchmark bytes, not hang.
                        ssize_t w = write(fd, buf, (size_t)r);
                        (void)w;
                        continue;
                    }
                } else if (sink_header[fd] < 8) {
                    r = read(fd, (char *)&sink_expect[fd] + sink_header[fd], 8 - (size_t)sink_header[fd]);
                    if (r > 0) {
                        sink_header[fd] += (uint8_t)r;
                        continue;
                    }
                } else {
                    r = recv(fd, NULL, 1 << 30, MSG_TRUNC | MSG_DONTWAIT);
                    if (r > 0) {
                        sink_counts[fd] += (uint64_t)r;
                        if (sink_counts[fd] == sink_expect[fd]) {
                            uint64_t total = sink_counts[fd];
                            ssize_t w = write(fd, &total, sizeof total);
                            (void)w;
                        }
                        continue;
                    }
                }
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) break;
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                close(fd);
                break;
            }
        }
    }
}

// ---------------------------------------------------------------- stream

static int run_stream(const char *host, int port, int streams, uint64_t bytes) {
    struct sockaddr_in dst = addr_of(host, port);
    static char buf[1 << 20];
    memset(buf, 'x', sizeof buf);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int fds[64];
    uint64_t sent[64] = {0};
    uint64_t reported[64] = {0};
    int got[64] = {0};
    if (streams < 1 || streams > 64) {
        fprintf(stderr, "loadgen: 1..64 streams\n");
        return 2;
    }
    double cpu0 = cpu_s();
    double t0 = now_s();
    for (int i = 0; i < streams; i++) {
        fds[i] = start_connect(&dst, 0);
        if (fds[i] < 0) die("connect");
        ep_add(ep, fds[i], EPOLLOUT, (uint64_t)i);
    }
    int header_sent[64] = {0};
    int done = 0;
    struct epoll_event evs[64];
    while (done < streams) {
        int n = epoll_wait(ep, evs, 64, 30000);
        if (n == 0) {
            fprintf(stderr, "loadgen: stream stalled for 30 s\n");
            return 1;
        }
        for (int e = 0; e < n; e++) {
            int i = (int)evs[e].data.u64;
            int fd = fds[i];
            if (!header_sent[i]) {
                // 8 bytes always fit an empty send buffer once connected.
                if (send(fd, &bytes, sizeof bytes, MSG_NOSIGNAL) != (ssize_t)sizeof bytes) {
                    if (errno == EAGAIN || errno == EINPROGRESS) continue;
                    die("send length");
                }
                header_sent[i] = 1;
            }
            if (sent[i] < bytes) {
                while (sent[i] < bytes) {
                    size_t want = sizeof buf;
                    if (bytes - sent[i] < want) want = (size_t)(bytes - sent[i]);
                    ssize_t w = send(fd, buf, want, MSG_NOSIGNAL);
                    if (w < 0) {
                        if (errno == EAGAIN) break;
                        die("send");
                    }
                    sent[i] += (uint64_t)w;
                }
                if (sent[i] == bytes) ep_mod(ep, fd, EPOLLIN, (uint64_t)i);
                continue;
            }
            // Waiting for the sink's 8-byte count (no FIN first: see the sink).
            char *p = (char *)&reported[i];
            for (;;) {
                ssize_t r = read(fd, p + got[i], (size_t)(8 - got[i]));
                if (r > 0) {
                    got[i] += (int)r;
                    if (got[i] < 8) continue;
                } else if (r < 0 && errno == EAGAIN) {
                    break;
                } else if (r < 0) {
                    die("read");
                }
                // The whole count, or EOF before it (checked below).
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                close(fd);
                done++;
                break;
            }
        }
    }
    double seconds = now_s() - t0;
    double cpu = cpu_s() - cpu0;
    for (int i = 0; i < streams; i++) {
        if (got[i] < 8 || reported[i] != bytes) {
            fprintf(stderr, "loadgen: stream %d: sink counted %llu of %llu bytes\n", i,
                    (unsigned long long)reported[i], (unsigned long long)bytes);
            return 1;
        }
    }
    double total = (double)bytes * streams;
    printf("{\"bytes\": %.0f, \"seconds\": %.6f, \"gbps\": %.4f, \"cpu_seconds\": %.4f}\n", total, seconds,
           total / seconds / 1e9, cpu);
    return 0;
}

// ---------------------------------------------------------------- rate

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

enum { RATE_MAX = 4096 };

static int run_rate(const char *host, int port, int conc, double seconds, int src_first) {
    struct sockaddr_in dst = addr_of(host, port);
    if (conc < 1 || conc > RATE_MAX) {
        fprintf(stderr, "loadgen: 1..%d clients\n", RATE_MAX);
        return 2;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int fd[RATE_MAX];
    int state[RATE_MAX];  // 0 connecting, 1 reading the echo
    int got[RATE_MAX];
    double started[RATE_MAX];
    size_t cap = 1 << 20, count = 0;
    uint32_t *lat = malloc(cap * sizeof *lat);
    uint64_t errors = 0;
    char msg[64], buf[256];
    memset(msg, 'p', sizeof msg);
    double cpu0 = cpu_s();
    double t0 = now_s(), end = t0 + seconds;
    int active = 0;
    for (int i = 0; i < conc; i++) {
        started[i] = now_s();
        fd[i] = start_connect(&dst, src_first + i);
        if (fd[i] < 0) die("connect");
        state[i] = 0;
        got[i] = 0;
        ep_add(ep, fd[i], EPOLLOUT, (uint64_t)i);
        active++;
    }
    struct epoll_event evs[RATE_MAX];
    while (active > 0) {
        int n = epoll_wait(ep, evs, RATE_MAX, 1000);
        if (n < 0 && errno == EINTR) continue;
        double t = now_s();
        if (n == 0 && t > end + 5) break;  // stuck clients after the window: give up on them
        for (int e = 0; e < n; e++) {
            int i = (int)evs[e].data.u64;
            int failed = 0, finished = 0;
            if (state[i] == 0) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(fd[i], SOL_SOCKET, SO_ERROR, &err, &len);
                if (err || (evs[e].events & (EPOLLERR | EPOLLHUP))) {
                    failed = 1;
                } else if (write(fd[i], msg, sizeof msg) != (ssize_t)sizeof msg) {
                    failed = 1;
                } else {
                    state[i] = 1;
                    ep_mod(ep, fd[i], EPOLLIN, (uint64_t)i);
                }
            } else {
                for (;;) {
                    ssize_t r = read(fd[i], buf, sizeof buf);
                    if (r > 0) {
                        got[i] += (int)r;
                        if (got[i] >= (int)sizeof msg) {
                            finished = 1;
                            break;
                        }
                        continue;
                    }
                    if (r < 0 && errno == EAGAIN) break;
                    failed = 1;  // EOF or error before the whole echo
                    break;
                }
            }
            if (!failed && !finished) continue;
            if (finished && t <= end) {
                if (count == cap) {
                    cap *= 2;
                    lat = realloc(lat, cap * sizeof *lat);
                }
                lat[count++] = (uint32_t)((t - started[i]) * 1e6);
            }
            if (failed) errors++;
            epoll_ctl(ep, EPOLL_CTL_DEL, fd[i], NULL);
            close(fd[i]);
            active--;
            if (t < end) {
                started[i] = t;
                fd[i] = start_connect(&dst, src_first + i);
                if (fd[i] < 0) {
                    errors++;
                    continue;
                }
                state[i] = 0;
                got[i] = 0;
                ep_add(ep, fd[i], EPOLLOUT, (uint64_t)i);
                active++;
            }
        }
    }
    double cpu = cpu_s() - cpu0;
    qsort(lat, count, sizeof *lat, cmp_u32);
    uint32_t p50 = count ? lat[count / 2] : 0;
    uint32_t p99 = count ? lat[(size_t)((double)count * 0.99)] : 0;
    printf("{\"connections\": %zu, \"rate\": %.1f, \"p50_us\": %u, \"p99_us\": %u, \"errors\": %llu, "
           "\"cpu_seconds\": %.4f}\n",
           count, (double)count / seconds, p50, p99, (unsigned long long)errors, cpu);
    return 0;
}

// ---------------------------------------------------------------- hold

static volatile sig_atomic_t stop_holding;
static void on_term(int sig) {
    (void)sig;
    stop_holding = 1;
}

static int run_hold(const char *host, int port, int total, int src_first, int src_count) {
    raise_nofile();
    struct sockaddr_in dst = addr_of(host, port);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int *fds = calloc((size_t)total, sizeof *fds);
    const int window = 256;  // connects in flight: stays well under every backlog
    int next = 0, inflight = 0, up = 0, failed = 0;
    struct epoll_event evs[256];
    double deadline = now_s() + 120;
    while (up + failed < total) {
        while (inflight < window && next < total) {
            int last = src_first + next % src_count;
            int fd = start_connect(&dst, last);
            if (fd < 0) {
                failed++;
                next++;
                continue;
            }
            fds[next] = fd;
            ep_add(ep, fd, EPOLLOUT, (uint64_t)next);
            next++;
            inflight++;
        }
        if (inflight == 0) break;
        int n = epoll_wait(ep, evs, 256, 1000);
        if (now_s() > deadline) break;
        for (int e = 0; e < n; e++) {
            int i = (int)evs[e].data.u64;
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(fds[i], SOL_SOCKET, SO_ERROR, &err, &len);
            epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
            inflight--;
            if (err) {
                close(fds[i]);
                fds[i] = -1;
                failed++;
            } else {
                up++;
            }
        }
    }
    if (up == total) {
        printf("ready %d\n", up);
    } else {
        printf("failed %d of %d\n", total - up, total);
    }
    fflush(stdout);
    // No SA_RESTART: the signal must interrupt the read below.
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    char c;
    while (!stop_holding && read(0, &c, 1) > 0) {
    }
    return up == total ? 0 : 1;
}

// ---------------------------------------------------------------- tcpinfo

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// One NETLINK_SOCK_DIAG dump of the TCP sockets whose source port is `port`,
// with their tcp_info. Returns how many came back.
static int diag_dump(int port) {
    int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (nl < 0) die("socket(NETLINK_SOCK_DIAG)");
    struct {
        struct nlmsghdr header;
        struct inet_diag_req_v2 request;
        struct nlattr attribute;
        struct inet_diag_bc_op ops[4];  // sport >= port && sport <= port
    } req;
    memset(&req, 0, sizeof req);
    req.header.nlmsg_len = sizeof req;
    req.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    req.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.request.sdiag_family = AF_INET;
    req.request.sdiag_protocol = IPPROTO_TCP;
    req.request.idiag_ext = 1 << (INET_DIAG_INFO - 1);
    req.request.idiag_states = 1 << 1;  // TCP_ESTABLISHED
    req.attribute.nla_len = sizeof req.attribute + sizeof req.ops;
    req.attribute.nla_type = INET_DIAG_REQ_BYTECODE;
    // A failed test jumps past the end (length + 4): the socket is skipped.
    req.ops[0] = (struct inet_diag_bc_op){INET_DIAG_BC_S_GE, 8, 16 + 4};
    req.ops[1] = (struct inet_diag_bc_op){0, 0, (unsigned short)port};
    req.ops[2] = (struct inet_diag_bc_op){INET_DIAG_BC_S_LE, 8, 8 + 4};
    req.ops[3] = (struct inet_diag_bc_op){0, 0, (unsigned short)port};
    if (send(nl, &req, sizeof req, 0) < 0) die("send(netlink)");
    static char buf[1 << 16];
    int count = 0;
    for (;;) {
        ssize_t r = recv(nl, buf, sizeof buf, 0);
        if (r <= 0) break;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, r); h = NLMSG_NEXT(h, r)) {
            if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) {
                close(nl);
                return count;
            }
            count++;
        }
    }
    close(nl);
    return count;
}

static int run_tcpinfo(int n) {
    raise_nofile();
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = addr_of("127.0.0.1", 0);
    socklen_t len = sizeof a;
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 4096) < 0) die("listen");
    getsockname(lfd, (struct sockaddr *)&a, &len);
    int *accepted = calloc((size_t)n, sizeof *accepted);
    for (int i = 0; i < n; i++) {
        int c = start_connect(&a, 10 + i % 20);
        if (c < 0) die("connect");
        accepted[i] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (accepted[i] < 0) die("accept");
        int on = 1;
        setsockopt(accepted[i], SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    }
    double per_call[5], per_dump[5];
    int dumped = 0;
    for (int rep = 0; rep < 5; rep++) {
        unsigned states = 0;
        double t0 = now_s();
        for (int i = 0; i < n; i++) {
            struct tcp_info info;
            socklen_t size = sizeof info;
            if (getsockopt(accepted[i], IPPROTO_TCP, TCP_INFO, &info, &size) == 0) states += info.tcpi_state;
        }
        double t1 = now_s();
        dumped = diag_dump(ntohs(a.sin_port));
        double t2 = now_s();
        per_call[rep] = (t1 - t0) * 1e6 / n;
        per_dump[rep] = (t2 - t1) * 1e6 / n;
        if (states != (unsigned)n * 1) fprintf(stderr, "loadgen: not all sockets established\n");
        usleep(100000);
    }
    qsort(per_call, 5, sizeof(double), cmp_double);
    qsort(per_dump, 5, sizeof(double), cmp_double);
    printf("{\"sockets\": %d, \"getsockopt_us\": %.4f, \"netlink_us\": %.4f, \"netlink_sockets\": %d}\n", n,
           per_call[2], per_dump[2], dumped);
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 3 && strcmp(argv[1], "sink") == 0) run_server(atoi(argv[2]), 0);
    if (argc >= 3 && strcmp(argv[1], "echo") == 0) run_server(atoi(argv[2]), 1);
    if (argc >= 6 && strcmp(argv[1], "stream") == 0)
        return run_stream(argv[2], atoi(argv[3]), atoi(argv[4]), strtoull(argv[5], NULL, 10));
    if (argc >= 7 && strcmp(argv[1], "rate") == 0)
        return run_rate(argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]), atoi(argv[6]));
    if (argc >= 7 && strcmp(argv[1], "hold") == 0)
        return run_hold(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), atoi(argv[6]));
    if (argc >= 3 && strcmp(argv[1], "tcpinfo") == 0) return run_tcpinfo(atoi(argv[2]));
    fprintf(stderr,
            "usage: loadgen sink PORT | echo PORT | stream HOST PORT STREAMS BYTES |\n"
            "       rate HOST PORT CONC SECONDS SRC_FIRST | hold HOST PORT N SRC_FIRST SRC_COUNT |\n"
            "       tcpinfo N\n");
    return 64;
}
