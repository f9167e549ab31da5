#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <pthread.h>
#include <sched.h>

#include "CLinuxShim.h"

int cls_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return accept4(fd, addr, len, flags);
}

ssize_t cls_splice_nonblocking(int fd_in, int fd_out, size_t len) {
    return splice(fd_in, NULL, fd_out, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
}

int cls_pipe_nonblocking(int fds[2]) {
    return pipe2(fds, O_NONBLOCK | O_CLOEXEC);
}

int cls_set_pipe_size(int fd, int size) {
    return fcntl(fd, F_SETPIPE_SZ, size);
}

int cls_pipe_size(int fd) {
    return fcntl(fd, F_GETPIPE_SZ);
}

ssize_t cls_send_with_fds(int fd, const void *buf, size_t len, const int *fds, int nfds, int flags) {
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    size_t space = CMSG_SPACE(sizeof(int) * (size_t)nfds);
    char control[CMSG_SPACE(sizeof(int) * 16)];
    if (nfds > 0) {
        if (nfds > 16) { errno = EINVAL; return -1; }
        memset(control, 0, sizeof(control));
        msg.msg_control = control;
        msg.msg_controllen = space;
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * (size_t)nfds);
    }
    return sendmsg(fd, &msg, flags);
}

#define HAS_FIELD(len, field) \
    ((len) >= offsetof(struct tcp_info, field) + sizeof(((struct tcp_info *)0)->field))

void cls_fill_tcp_info(const struct tcp_info *ti, unsigned len, struct cls_tcp_info *out) {
    memset(out, 0, sizeof(*out));
    out->state = ti->tcpi_state;
    out->ca_state = ti->tcpi_ca_state;
    out->retransmits = ti->tcpi_retransmits;
    out->probes = ti->tcpi_probes;
    out->backoff = ti->tcpi_backoff;
    out->rto_usec = ti->tcpi_rto;
    out->unacked = ti->tcpi_unacked;
    out->lost = ti->tcpi_lost;
    out->retrans = ti->tcpi_retrans;
    out->last_data_sent_ms = ti->tcpi_last_data_sent;
    out->last_data_recv_ms = ti->tcpi_last_data_recv;
    out->last_ack_recv_ms = ti->tcpi_last_ack_recv;
    out->rtt_usec = ti->tcpi_rtt;
    out->rttvar_usec = ti->tcpi_rttvar;
    out->total_retrans = ti->tcpi_total_retrans;
    if (HAS_FIELD(len, tcpi_bytes_acked)) out->bytes_acked = ti->tcpi_bytes_acked;
    if (HAS_FIELD(len, tcpi_bytes_received)) out->bytes_received = ti->tcpi_bytes_received;
    if (HAS_FIELD(len, tcpi_notsent_bytes)) out->notsent_bytes = ti->tcpi_notsent_bytes;
    if (HAS_FIELD(len, tcpi_snd_wnd)) out->snd_wnd = ti->tcpi_snd_wnd;
    out->length = len;
}

int cls_tcp_info(int fd, struct cls_tcp_info *out) {
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
        return -1;
    cls_fill_tcp_info(&ti, len, out);
    return 0;
}

int cls_socket_unread(int fd, int *out) { return ioctl(fd, SIOCINQ, out); }

int cls_socket_unacked(int fd, int *out) { return ioctl(fd, SIOCOUTQ, out); }

int cls_memfd_create(const char *name) {
    return memfd_create(name, MFD_CLOEXEC);
}

int cls_eventfd(int nonblocking) {
    return eventfd(0, EFD_CLOEXEC | (nonblocking ? EFD_NONBLOCK : 0));
}

void cls_name_this_thread(const char *name) {
    char truncated[16];
    strncpy(truncated, name, sizeof(truncated) - 1);
    truncated[sizeof(truncated) - 1] = 0;
    pthread_setname_np(pthread_self(), truncated);
}

int cls_usable_cpus(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return -1;
    return CPU_COUNT(&set);
}
