// Adopt mode's kernel interfaces: a BPF sock_ops program that turns keepalive
// on for a cgroup's connections, NETLINK_SOCK_DIAG dumps and SOCK_DESTROY, and
// pidfd_getfd for connections that existed before. Every function returns a
// descriptor or 0 on success and -errno on failure (errno is not used).
#ifndef REAPERD_CLINUXSHIM_ADOPT_H
#define REAPERD_CLINUXSHIM_ADOPT_H

#include <stdint.h>
#include <stddef.h>

struct cls_tcp_info;

/// What the sock_ops program sets on every connection it sees established.
struct cls_sockops_settings {
    /// 0 sets no keepalive (only the user timeout).
    uint32_t keepalive_idle_sec;
    uint32_t keepalive_interval_sec;
    uint32_t keepalive_count;
    /// TCP_USER_TIMEOUT in milliseconds; 0 leaves the kernel's default.
    uint32_t user_timeout_ms;
    /// Local ports to cover (host byte order); none covers every connection,
    /// outbound ones included.
    uint16_t ports[64];
    uint32_t port_count;
};

/// Loads the sock_ops program for `settings` (BPF_PROG_LOAD); the verifier's
/// log goes to `log` when loading fails. Returns the program's descriptor.
int cls_sockops_load(const struct cls_sockops_settings *settings, char *log, size_t log_size);

/// Attaches a loaded sock_ops program to the cgroup open at `cgroup_fd`
/// (BPF_LINK_CREATE). Closing the returned link descriptor detaches it.
int cls_sockops_attach(int program_fd, int cgroup_fd);

/// One TCP socket from a NETLINK_SOCK_DIAG dump.
struct cls_diag_socket {
    uint64_t cookie;
    uint32_t inode;
    uint32_t uid;
    uint8_t family;
    uint8_t state;
    /// 1 when `info` was in the answer.
    uint8_t has_info;
    uint8_t pad;
    uint16_t local_port;
    uint16_t remote_port;
    /// Network byte order; the first 4 bytes for AF_INET.
    uint8_t local_address[16];
    uint8_t remote_address[16];
    uint32_t receive_queue;
    uint32_t send_queue;
    /// The kernel's own id of the socket, handed back by SOCK_DESTROY.
    uint8_t id[48];
};

/// A NETLINK_SOCK_DIAG socket (close-on-exec, 1 s receive deadline).
int cls_diag_open(void);

/// Dumps the TCP sockets of `family` (AF_INET or AF_INET6) created in the
/// cgroup with v2 id `cgroup_id` (0: every cgroup), listening ones excepted.
/// Fills up to `capacity` entries of `out` and `infos` and returns how many
/// sockets matched, which may exceed `capacity` (call again with more room).
int cls_diag_dump(int diag_fd, int family, uint64_t cgroup_id, struct cls_diag_socket *out,
                  struct cls_tcp_info *infos, int capacity);

/// SOCK_DESTROY: the owner's next call fails with ECONNABORTED and the peer
/// gets an RST. The kernel matches the cookie, so only this socket goes.
int cls_diag_destroy(int diag_fd, const struct cls_diag_socket *socket);

/// pidfd_open(2) and pidfd_getfd(2) (no glibc wrappers in Debian 12).
int cls_pidfd_open(int pid);
int cls_pidfd_getfd(int pidfd, int target_fd);

/// getsockopt(SO_COOKIE) into *cookie.
int cls_socket_cookie(int fd, uint64_t *cookie);

#endif
