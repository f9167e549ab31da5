#define _GNU_SOURCE
#include <stddef.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/tcp.h>

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

#define HAS_FIELD(len, field) \
    ((len) >= offsetof(struct tcp_info, field) + sizeof(((struct tcp_info *)0)->field))

int cls_tcp_info(int fd, struct cls_tcp_info *out) {
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
        return -1;
    memset(out, 0, sizeof(*out));
    out->state = ti.tcpi_state;
    out->ca_state = ti.tcpi_ca_state;
    out->retransmits = ti.tcpi_retransmits;
    out->probes = ti.tcpi_probes;
    out->backoff = ti.tcpi_backoff;
    out->rto_usec = ti.tcpi_rto;
    out->unacked = ti.tcpi_unacked;
    out->lost = ti.tcpi_lost;
    out->retrans = ti.tcpi_retrans;
    out->last_data_sent_ms = ti.tcpi_last_data_sent;
    out->last_data_recv_ms = ti.tcpi_last_data_recv;
    out->last_ack_recv_ms = ti.tcpi_last_ack_recv;
    out->rtt_usec = ti.tcpi_rtt;
    out->rttvar_usec = ti.tcpi_rttvar;
    out->total_retrans = ti.tcpi_total_retrans;
    if (HAS_FIELD(len, tcpi_bytes_acked)) out->bytes_acked = ti.tcpi_bytes_acked;
    if (HAS_FIELD(len, tcpi_bytes_received)) out->bytes_received = ti.tcpi_bytes_received;
    if (HAS_FIELD(len, tcpi_notsent_bytes)) out->notsent_bytes = ti.tcpi_notsent_bytes;
    if (HAS_FIELD(len, tcpi_snd_wnd)) out->snd_wnd = ti.tcpi_snd_wnd;
    out->length = len;
    return 0;
}
