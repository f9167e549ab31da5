// Adopt mode's system calls (see include/adopt.h). The BPF program is written
// here as instructions, generated from the settings at load time: nothing is
// compiled by another toolchain, there is no object file to ship, and the
// settings are immediates, so the program needs no map.
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <netinet/in.h>
#include <linux/bpf.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/tcp.h>

#include "CLinuxShim.h"

void cls_fill_tcp_info(const struct tcp_info *ti, unsigned len, struct cls_tcp_info *out);

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

// ---------------------------------------------------------------- sock_ops

#define INSN(CODE, DST, SRC, OFF, IMM) \
    ((struct bpf_insn){.code = (CODE), .dst_reg = (DST), .src_reg = (SRC), .off = (OFF), .imm = (IMM)})
#define MOV64_REG(DST, SRC) INSN(BPF_ALU64 | BPF_MOV | BPF_X, DST, SRC, 0, 0)
#define MOV64_IMM(DST, IMM) INSN(BPF_ALU64 | BPF_MOV | BPF_K, DST, 0, 0, IMM)
#define ADD64_IMM(DST, IMM) INSN(BPF_ALU64 | BPF_ADD | BPF_K, DST, 0, 0, IMM)
#define LDX_W(DST, SRC, OFF) INSN(BPF_LDX | BPF_W | BPF_MEM, DST, SRC, OFF, 0)
#define ST_W(DST, OFF, IMM) INSN(BPF_ST | BPF_W | BPF_MEM, DST, 0, OFF, IMM)
#define JEQ_IMM(DST, IMM, OFF) INSN(BPF_JMP | BPF_JEQ | BPF_K, DST, 0, OFF, IMM)
#define JA(OFF) INSN(BPF_JMP | BPF_JA, 0, 0, OFF, 0)
#define CALL(FUNC) INSN(BPF_JMP | BPF_CALL, 0, 0, 0, FUNC)
#define EXIT() INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)

enum { MAX_INSNS = 256 };

struct emitter {
    struct bpf_insn insns[MAX_INSNS];
    int count;
};

static int emit(struct emitter *e, struct bpf_insn insn) {
    if (e->count >= MAX_INSNS) return -1;
    e->insns[e->count++] = insn;
    return e->count - 1;
}

// bpf_setsockopt(ctx, level, name, &value, 4), the value on the stack. The
// return value is not checked: an option the kernel refuses leaves the others.
static void emit_setsockopt(struct emitter *e, int level, int name, uint32_t value) {
    emit(e, ST_W(BPF_REG_10, -4, (int32_t)value));
    emit(e, MOV64_REG(BPF_REG_1, BPF_REG_6));
    emit(e, MOV64_IMM(BPF_REG_2, level));
    emit(e, MOV64_IMM(BPF_REG_3, name));
    emit(e, MOV64_REG(BPF_REG_4, BPF_REG_10));
    emit(e, ADD64_IMM(BPF_REG_4, -4));
    emit(e, MOV64_IMM(BPF_REG_5, 4));
    emit(e, CALL(BPF_FUNC_setsockopt));
}

// The program, in C terms:
//   if (op != ACTIVE_ESTABLISHED && op != PASSIVE_ESTABLISHED) return 1;
//   if (ports given && local_port not among them) return 1;
//   setsockopt(SO_KEEPALIVE 1, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT[, TCP_USER_TIMEOUT]);
//   return 1;
static int build_program(const struct cls_sockops_settings *s, struct emitter *e) {
    if (s->port_count > sizeof(s->ports) / sizeof(s->ports[0])) return -1;
    e->count = 0;
    emit(e, MOV64_REG(BPF_REG_6, BPF_REG_1));
    emit(e, LDX_W(BPF_REG_2, BPF_REG_6, offsetof(struct bpf_sock_ops, op)));
    emit(e, JEQ_IMM(BPF_REG_2, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, 2));
    emit(e, JEQ_IMM(BPF_REG_2, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, 1));
    int to_done = emit(e, JA(0));  // patched below
    int to_done_ports = -1;
    if (s->port_count > 0) {
        emit(e, LDX_W(BPF_REG_2, BPF_REG_6, offsetof(struct bpf_sock_ops, local_port)));
        // Each match jumps over the remaining compares and the "no match" jump.
        for (uint32_t i = 0; i < s->port_count; i++) {
            emit(e, JEQ_IMM(BPF_REG_2, s->ports[i], (int16_t)(s->port_count - i)));
        }
        to_done_ports = emit(e, JA(0));
    }
    if (s->keepalive_idle_sec > 0) {
        emit_setsockopt(e, SOL_SOCKET, SO_KEEPALIVE, 1);
        emit_setsockopt(e, IPPROTO_TCP, TCP_KEEPIDLE, s->keepalive_idle_sec);
        emit_setsockopt(e, IPPROTO_TCP, TCP_KEEPINTVL, s->keepalive_interval_sec);
        emit_setsockopt(e, IPPROTO_TCP, TCP_KEEPCNT, s->keepalive_count);
    }
    if (s->user_timeout_ms > 0) emit_setsockopt(e, IPPROTO_TCP, TCP_USER_TIMEOUT, s->user_timeout_ms);
    int done = emit(e, MOV64_IMM(BPF_REG_0, 1));
    if (emit(e, EXIT()) < 0) return -1;
    e->insns[to_done].off = (int16_t)(done - to_done - 1);
    if (to_done_ports >= 0) e->insns[to_done_ports].off = (int16_t)(done - to_done_ports - 1);
    return 0;
}

static long bpf(int cmd, union bpf_attr *attr) { return syscall(SYS_bpf, cmd, attr, sizeof(*attr)); }

int cls_sockops_load(const struct cls_sockops_settings *settings, char *log, size_t log_size) {
    struct emitter e;
    if (build_program(settings, &e) < 0) return -EINVAL;
    // bpf_setsockopt is not a GPL-only helper; the string only has to be valid.
    static const char license[] = "GPL";
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.prog_type = BPF_PROG_TYPE_SOCK_OPS;
    attr.insns = (uint64_t)(uintptr_t)e.insns;
    attr.insn_cnt = (uint32_t)e.count;
    attr.license = (uint64_t)(uintptr_t)license;
    memcpy(attr.prog_name, "reaperd_adopt", sizeof("reaperd_adopt"));
    int fd = (int)bpf(BPF_PROG_LOAD, &attr);
    if (fd >= 0) return fd;
    int error = errno;
    if (log && log_size > 1 && error != EPERM) {
        // Again with the verifier's log, to say why.
        memset(log, 0, log_size);
        attr.log_buf = (uint64_t)(uintptr_t)log;
        attr.log_size = (uint32_t)log_size;
        attr.log_level = 1;
        int again = (int)bpf(BPF_PROG_LOAD, &attr);
        if (again >= 0) return again;
    }
    return -error;
}

int cls_sockops_attach(int program_fd, int cgroup_fd) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.link_create.prog_fd = (uint32_t)program_fd;
    attr.link_create.target_fd = (uint32_t)cgroup_fd;
    attr.link_create.attach_type = BPF_CGROUP_SOCK_OPS;
    int fd = (int)bpf(BPF_LINK_CREATE, &attr);
    return fd >= 0 ? fd : -errno;
}

// ---------------------------------------------------------------- sock_diag

int cls_diag_open(void) {
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0) return -errno;
    // The kernel answers a dump at once; the deadline only guards against a
    // lost answer, never a normal wait.
    struct timeval deadline = {.tv_sec = 1, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &deadline, sizeof(deadline));
    int size = 1 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    return fd;
}

// Every state but LISTEN and the request and TIME_WAIT minisockets.
static const uint32_t watched_states =
    (1u << BPF_TCP_ESTABLISHED) | (1u << BPF_TCP_SYN_SENT) | (1u << BPF_TCP_FIN_WAIT1) | (1u << BPF_TCP_FIN_WAIT2) |
    (1u << BPF_TCP_CLOSE) | (1u << BPF_TCP_CLOSE_WAIT) | (1u << BPF_TCP_LAST_ACK) | (1u << BPF_TCP_CLOSING);

struct dump_request {
    struct nlmsghdr header;
    struct inet_diag_req_v2 request;
    struct nlattr bytecode_attribute;
    struct inet_diag_bc_op condition;
    uint64_t cgroup_id;
};

static int send_all(int fd, const void *message, size_t length) {
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    ssize_t sent = sendto(fd, message, length, 0, (struct sockaddr *)&kernel, sizeof(kernel));
    if (sent < 0) return -errno;
    return sent == (ssize_t)length ? 0 : -EIO;
}

int cls_diag_dump(int diag_fd, int family, uint64_t cgroup_id, struct cls_diag_socket *out,
                  struct cls_tcp_info *infos, int capacity) {
    struct dump_request message;
    memset(&message, 0, sizeof(message));
    size_t length = offsetof(struct dump_request, bytecode_attribute);
    message.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    message.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    message.header.nlmsg_seq = 1;
    message.request.sdiag_family = (uint8_t)family;
    message.request.sdiag_protocol = IPPROTO_TCP;
    message.request.idiag_states = watched_states;
    message.request.idiag_ext = 1 << (INET_DIAG_INFO - 1);
    if (cgroup_id != 0) {
        // One condition: yes falls through to the end (accept), no jumps past it (reject).
        message.bytecode_attribute.nla_type = INET_DIAG_REQ_BYTECODE;
        message.bytecode_attribute.nla_len = NLA_HDRLEN + sizeof(message.condition) + sizeof(message.cgroup_id);
        message.condition.code = INET_DIAG_BC_CGROUP_COND;
        message.condition.yes = sizeof(message.condition) + sizeof(message.cgroup_id);
        message.condition.no = message.condition.yes + 4;
        message.cgroup_id = cgroup_id;
        length = sizeof(message);
    }
    message.header.nlmsg_len = (uint32_t)length;
    int sent = send_all(diag_fd, &message, length);
    if (sent < 0) return sent;

    static __thread char buffer[256 * 1024];
    int matched = 0;
    for (;;) {
        ssize_t received = recv(diag_fd, buffer, sizeof(buffer), 0);
        if (received < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (received == 0) return -EIO;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buffer; NLMSG_OK(h, (unsigned)received);
             h = NLMSG_NEXT(h, received)) {
            if (h->nlmsg_type == NLMSG_DONE) return matched;
            if (h->nlmsg_type == NLMSG_ERROR) {
                const struct nlmsgerr *error = NLMSG_DATA(h);
                return error->error < 0 ? error->error : -EIO;
            }
            if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) continue;
            const struct inet_diag_msg *diag = NLMSG_DATA(h);
            if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*diag))) continue;
            if (matched < capacity) {
                struct cls_diag_socket *s = &out[matched];
                memset(s, 0, sizeof(*s));
                s->cookie = (uint64_t)diag->id.idiag_cookie[0] | ((uint64_t)diag->id.idiag_cookie[1] << 32);
                s->inode = diag->idiag_inode;
                s->uid = diag->idiag_uid;
                s->family = diag->idiag_family;
                s->state = diag->idiag_state;
                s->local_port = ntohs(diag->id.idiag_sport);
                s->remote_port = ntohs(diag->id.idiag_dport);
                memcpy(s->local_address, diag->id.idiag_src, 16);
                memcpy(s->remote_address, diag->id.idiag_dst, 16);
                s->receive_queue = diag->idiag_rqueue;
                s->send_queue = diag->idiag_wqueue;
                _Static_assert(sizeof(s->id) == sizeof(diag->id), "inet_diag_sockid size");
                memcpy(s->id, &diag->id, sizeof(diag->id));
                memset(&infos[matched], 0, sizeof(infos[matched]));
                int attributes = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*diag)));
                for (struct rtattr *a = (struct rtattr *)(diag + 1); RTA_OK(a, attributes);
                     a = RTA_NEXT(a, attributes)) {
                    if (a->rta_type != INET_DIAG_INFO) continue;
                    struct tcp_info info;
                    unsigned size = RTA_PAYLOAD(a);
                    // Newer kernels send more than this header knows: read by length.
                    if (size > sizeof(info)) size = sizeof(info);
                    memset(&info, 0, sizeof(info));
                    memcpy(&info, RTA_DATA(a), size);
                    cls_fill_tcp_info(&info, size, &infos[matched]);
                    s->has_info = 1;
                }
            }
            matched++;
        }
    }
}

int cls_diag_destroy(int diag_fd, const struct cls_diag_socket *socket) {
    struct {
        struct nlmsghdr header;
        struct inet_diag_req_v2 request;
    } message;
    memset(&message, 0, sizeof(message));
    message.header.nlmsg_len = sizeof(message);
    message.header.nlmsg_type = SOCK_DESTROY;
    message.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    message.header.nlmsg_seq = 2;
    message.request.sdiag_family = socket->family;
    message.request.sdiag_protocol = IPPROTO_TCP;
    message.request.idiag_states = ~0u;
    memcpy(&message.request.id, socket->id, sizeof(message.request.id));
    int sent = send_all(diag_fd, &message, sizeof(message));
    if (sent < 0) return sent;
    char buffer[4096];
    for (;;) {
        ssize_t received = recv(diag_fd, buffer, sizeof(buffer), 0);
        if (received < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        for (struct nlmsghdr *h = (struct nlmsghdr *)buffer; NLMSG_OK(h, (unsigned)received);
             h = NLMSG_NEXT(h, received)) {
            if (h->nlmsg_type == NLMSG_ERROR) {
                const struct nlmsgerr *error = NLMSG_DATA(h);
                return error->error;
            }
        }
    }
}

// ---------------------------------------------------------------- pidfd

int cls_pidfd_open(int pid) {
    long fd = syscall(SYS_pidfd_open, pid, 0);
    return fd >= 0 ? (int)fd : -errno;
}

int cls_pidfd_getfd(int pidfd, int target_fd) {
    long fd = syscall(SYS_pidfd_getfd, pidfd, target_fd, 0);
    return fd >= 0 ? (int)fd : -errno;
}

int cls_socket_cookie(int fd, uint64_t *cookie) {
    socklen_t length = sizeof(*cookie);
    return getsockopt(fd, SOL_SOCKET, SO_COOKIE, cookie, &length) == 0 ? 0 : -errno;
}
