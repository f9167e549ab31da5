// The Linux interfaces Swift's Glibc module does not export, and nothing else.
// This header must NOT define _GNU_SOURCE: it would change fd_set and clash with
// the Glibc module. The calls that need _GNU_SOURCE (splice, pipe2, accept4,
// F_SETPIPE_SZ) are wrapped by functions in shim.c, which defines it.
#ifndef REAPERD_CLINUXSHIM_H
#define REAPERD_CLINUXSHIM_H

#include <stdint.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>

// epoll flags: glibc defines them as enum values plus macros; Swift sees neither
// form reliably, so they are re-exported as plain constants.
static const uint32_t CLS_EPOLLIN = EPOLLIN;
static const uint32_t CLS_EPOLLOUT = EPOLLOUT;
static const uint32_t CLS_EPOLLERR = EPOLLERR;
static const uint32_t CLS_EPOLLHUP = EPOLLHUP;
static const uint32_t CLS_EPOLLRDHUP = EPOLLRDHUP;
static const uint32_t CLS_EPOLLET = EPOLLET;
static const uint32_t CLS_EPOLLEXCLUSIVE = EPOLLEXCLUSIVE;

// Socket type flags live in glibc's enum __socket_type, which Swift imports as a
// struct; accept4 and socket want them as plain ints.
static const int CLS_SOCK_NONBLOCK = SOCK_NONBLOCK;
static const int CLS_SOCK_CLOEXEC = SOCK_CLOEXEC;
static const int CLS_SOCK_STREAM = SOCK_STREAM;
static const int CLS_SOCK_DGRAM = SOCK_DGRAM;

/// accept4(2); Glibc's Swift module hides it behind _GNU_SOURCE.
int cls_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);

/// splice(2) between a socket and a pipe, with SPLICE_F_MOVE | SPLICE_F_NONBLOCK.
ssize_t cls_splice_nonblocking(int fd_in, int fd_out, size_t len);

/// pipe2(2) with O_NONBLOCK | O_CLOEXEC.
int cls_pipe_nonblocking(int fds[2]);

/// fcntl(F_SETPIPE_SZ); returns the size granted or -1. (fcntl is variadic.)
int cls_set_pipe_size(int fd, int size);

/// fcntl(F_GETPIPE_SZ).
int cls_pipe_size(int fd);

/// sendmsg(2) of `len` bytes with `nfds` descriptors as SCM_RIGHTS; the CMSG_*
/// macros that build the control message cannot be called from Swift.
ssize_t cls_send_with_fds(int fd, const void *buf, size_t len, const int *fds, int nfds, int flags);

/// The fields of the kernel's struct tcp_info (<linux/tcp.h>) that reaperd reads.
/// glibc's struct tcp_info lacks the newer ones and the two headers conflict, so
/// shim.c includes only the kernel's and copies what the kernel filled in.
struct cls_tcp_info {
    uint8_t state;
    uint8_t ca_state;
    uint8_t retransmits;
    uint8_t probes;
    uint8_t backoff;
    uint32_t rto_usec;
    uint32_t unacked;
    uint32_t lost;
    uint32_t retrans;
    uint32_t last_data_sent_ms;
    uint32_t last_data_recv_ms;
    uint32_t last_ack_recv_ms;
    uint32_t rtt_usec;
    uint32_t rttvar_usec;
    uint32_t snd_wnd;
    uint32_t total_retrans;
    uint32_t notsent_bytes;
    uint64_t bytes_acked;
    uint64_t bytes_received;
    uint32_t length;   // bytes the kernel filled in, for fields newer kernels add
};

/// getsockopt(fd, IPPROTO_TCP, TCP_INFO); returns 0 or -1 with errno set.
int cls_tcp_info(int fd, struct cls_tcp_info *out);

/* ioctl(2) is variadic, which Swift cannot call: the two socket queue sizes,
   SIOCINQ (bytes received and not yet read) and SIOCOUTQ (bytes written and
   not yet acknowledged, FIN included), into *out. -1 and errno on failure. */
int cls_socket_unread(int fd, int *out);
int cls_socket_unacked(int fd, int *out);

/// memfd_create(2) with MFD_CLOEXEC; -1 and errno on failure.
int cls_memfd_create(const char *name);

/// eventfd(2) at zero with EFD_CLOEXEC, and EFD_NONBLOCK when `nonblocking`;
/// Glibc's Swift module does not export <sys/eventfd.h>. -1 and errno on failure.
int cls_eventfd(int nonblocking);

/// pthread_setname_np(pthread_self(), name), which needs _GNU_SOURCE: the
/// name `ps -L` and `top -H` show (at most 15 bytes are kept).
void cls_name_this_thread(const char *name);

/// CPUs this process may run on (sched_getaffinity, CPU_COUNT: a macro Swift
/// cannot call); -1 with errno set on failure.
int cls_usable_cpus(void);

#include "adopt.h"

#endif
