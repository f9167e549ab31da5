"""Helpers for test_reaper.py: upstream handlers that record what they saw,
the reap log line parser, raw control-socket and HTTP clients, and a strict
Prometheus text-format (0.0.4) parser."""
import math
import re
import socket
import struct
import threading
import time

# ---------------------------------------------------------------- upstream recorder


class Recorder:
    """What an upstream saw, per client tag: its socket, the daemon-side port,
    and when and how the upstream side ended (eof, reset, error)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.conns = {}
        self.daemon_ports = {}
        self.ended = {}

    def register(self, tag, conn):
        with self.lock:
            self.conns[tag] = conn
            self.daemon_ports[tag] = conn.getpeername()[1]

    def end(self, tag, how):
        with self.lock:
            self.ended.setdefault(tag, (time.monotonic(), how))

    def ended_tags(self):
        with self.lock:
            return set(self.ended)


def read_tag(conn, timeout=30.0):
    """Reads the first line a client sends (`TAG\\n`); returns (tag, rest)."""
    conn.settimeout(timeout)
    buf = b""
    while b"\n" not in buf:
        data = conn.recv(4096)
        if not data:
            return None, buf
        buf += data
    tag, rest = buf.split(b"\n", 1)
    return tag.decode(), rest


def tagged_echo(recorder, greeting=b"", actions=None):
    """Upstream handler: optional greeting, then the tag line, then echo everything.
    Records when the daemon closes its side (EOF or reset). `actions` maps a tag
    to what the upstream does right after echoing the tag line: "close" (FIN) or
    "reset" (RST through SO_LINGER 0)."""

    def handler(conn):
        if greeting:
            conn.sendall(greeting)
        tag, rest = read_tag(conn)
        if tag is None:
            return
        recorder.register(tag, conn)
        try:
            conn.sendall(tag.encode() + b"\n" + rest)
            action = (actions or {}).get(tag)
            if action == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if action:
                recorder.end(tag, "closed by upstream")
                conn.close()
                return
            while True:
                data = conn.recv(65536)
                if not data:
                    recorder.end(tag, "eof")
                    conn.shutdown(socket.SHUT_WR)
                    return
                conn.sendall(data)
        except ConnectionResetError:
            recorder.end(tag, "reset")
        except OSError as error:
            recorder.end(tag, f"error {error!r}")

    return handler


# ---------------------------------------------------------------- vanishing


def drop_flow(vanish, port, peer_port):
    """Like `vanish.drop(port)`, but only for the one TCP flow between `port` and
    `peer_port` on loopback, in the fixture's own table (removed with it). A
    port-only rule also blackholes any other loopback connection that happens to
    use the same port number (another test's, a concurrent suite's)."""
    vanish.ports.append(port)
    vanish._nft(f"add rule inet {vanish.table} out ip saddr 127.0.0.1 ip daddr 127.0.0.1 "
                f"tcp sport {port} tcp dport {peer_port} drop")
    vanish._nft(f"add rule inet {vanish.table} out ip saddr 127.0.0.1 ip daddr 127.0.0.1 "
                f"tcp sport {peer_port} tcp dport {port} drop")


# ---------------------------------------------------------------- clients


def tagged_client(address, tag, timeout=5.0):
    """Connects through the relay, sends the tag line and waits for its echo."""
    s = socket.create_connection(address, timeout=timeout)
    line = tag.encode() + b"\n"
    s.sendall(line)
    got = b""
    deadline = time.monotonic() + timeout
    while len(got) < len(line) and time.monotonic() < deadline:
        data = s.recv(len(line) - len(got))
        if not data:
            break
        got += data
    assert got == line, f"{tag}: echo of the tag line was {got!r}"
    return s


def wait_closed_by_peer(s, timeout):
    """Waits until the peer closes `s` (EOF or reset). Returns how, or None on
    timeout. Any bytes read on the way are discarded."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        s.settimeout(left)
        try:
            data = s.recv(65536)
        except socket.timeout:
            return None
        except ConnectionResetError:
            return "reset"
        if not data:
            return "eof"


def control_exchange(path, payload, timeout=10.0, shut_write=False):
    """Sends raw bytes on the control socket; returns (answer bytes, how it ended)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        try:
            s.sendall(payload)
            if shut_write:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_all(s, timeout)
    finally:
        s.close()


def read_all(s, timeout):
    """Reads until EOF, reset or timeout; returns (bytes, 'eof'|'reset'|'timeout')."""
    chunks = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), "timeout"
        s.settimeout(left)
        try:
            data = s.recv(65536)
        except socket.timeout:
            return b"".join(chunks), "timeout"
        except ConnectionResetError:
            return b"".join(chunks), "reset"
        if not data:
            return b"".join(chunks), "eof"
        chunks.append(data)


def http_exchange(address, payload, timeout=10.0, shut_write=False):
    """Sends raw bytes to the metrics port; returns (status or None, headers, body, how)."""
    s = socket.create_connection(address, timeout=timeout)
    try:
        try:
            s.sendall(payload)
            if shut_write:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw, how = read_all(s, timeout)
    finally:
        s.close()
    return parse_http(raw) + (how,)


def parse_http(raw):
    if b"\r\n\r\n" not in raw:
        return None, {}, raw
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    match = re.fullmatch(r"HTTP/1\.[01] (\d{3}) .*", lines[0])
    assert match, f"bad status line {lines[0]!r}"
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(match.group(1)), headers, body


def get_metrics(address, timeout=10.0):
    status, headers, body, how = http_exchange(
        address, b"GET /metrics HTTP/1.1\r\nHost: reaperd\r\nAccept: text/plain\r\n\r\n", timeout)
    assert status == 200, f"GET /metrics: {status} {headers} {body[:200]!r} ({how})"
    assert headers.get("content-type", "").startswith("text/plain"), headers
    assert "version=0.0.4" in headers.get("content-type", ""), headers
    assert int(headers["content-length"]) == len(body), (headers, len(body))
    return body.decode("utf-8")


# ---------------------------------------------------------------- reap log lines

# Console lines start with the local time (RFC 3339, milliseconds, UTC offset).
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"
REAP_LINE = re.compile(rf"^{TIMESTAMP} notice: reaped connection (\d+) from (\S+) on (\S+) after (\d+)s: (.*)$")
FIELD = re.compile(r'(?<= )([a-z_]+)=("(?:[^"\\]|\\.)*"|\S+)')
REAP_FIELDS = ("connection_id", "listener", "peer", "upstream", "reason", "age_sec", "idle_sec",
               "bytes_in", "bytes_out", "probes")


def reap_records(log_text):
    """Every reap record on the console: a dict of its fields plus the sentence's
    own id/peer/listener/age."""
    records = []
    for line in log_text.splitlines():
        match = REAP_LINE.match(line)
        if not match:
            continue
        fields = {k: v.strip('"') for k, v in FIELD.findall(line)}
        fields["_line"] = line
        fields["_id"], fields["_peer"], fields["_listener"], fields["_after"] = (
            match.group(1), match.group(2), match.group(3), int(match.group(4)))
        records.append(fields)
    return records


def check_reap_record(record, *, listener, peer_port, upstream, reason, bytes_in=None, bytes_out=None):
    """Asserts every REAPERD field of SPEC §5 is present, typed and right."""
    line = record["_line"]
    for key in REAP_FIELDS:
        assert key in record, f"reap record lacks {key}=: {line}"
    assert record["listener"] == listener == record["_listener"], line
    assert record["peer"] == f"127.0.0.1:{peer_port}" == record["_peer"], line
    assert record["upstream"] == upstream, line
    assert record["reason"] == reason, line
    assert record["connection_id"] == record["_id"], line
    for key in ("age_sec", "idle_sec", "bytes_in", "bytes_out", "probes"):
        assert re.fullmatch(r"\d+", record[key]), f"{key} is not a count: {line}"
    assert int(record["idle_sec"]) <= int(record["age_sec"]), line
    assert int(record["age_sec"]) == record["_after"], line
    if bytes_in is not None:
        assert int(record["bytes_in"]) == bytes_in, line
    if bytes_out is not None:
        assert int(record["bytes_out"]) == bytes_out, line


# ---------------------------------------------------------------- Prometheus text 0.0.4

METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
SAMPLE = re.compile(rf"^({METRIC_NAME})(\{{.*\}})?[ \t]+(\S+)(?:[ \t]+(-?\d+))?$")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


class PromError(AssertionError):
    pass


def parse_value(text):
    if text in ("+Inf", "Inf"):
        return math.inf
    if text == "-Inf":
        return -math.inf
    if text == "NaN":
        return math.nan
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
        raise PromError(f"bad sample value {text!r}")
    return float(text)


def parse_labels(text, lineno):
    """`{a="x",b="y\\"z"}` → dict; strict about quoting and escapes."""
    labels = {}
    body = text[1:-1]
    i = 0
    while i < len(body):
        match = re.match(rf"[ \t]*({LABEL_NAME})[ \t]*=[ \t]*\"", body[i:])
        if not match:
            raise PromError(f"line {lineno}: bad label list {text!r}")
        name = match.group(1)
        i += match.end()
        value = []
        while True:
            if i >= len(body):
                raise PromError(f"line {lineno}: unterminated label value in {text!r}")
            c = body[i]
            if c == "\\":
                if i + 1 >= len(body) or body[i + 1] not in '\\"n':
                    raise PromError(f"line {lineno}: bad escape in {text!r}")
                value.append({"\\": "\\", '"': '"', "n": "\n"}[body[i + 1]])
                i += 2
            elif c == '"':
                i += 1
                break
            elif c == "\n":
                raise PromError(f"line {lineno}: raw newline in label value")
            else:
                value.append(c)
                i += 1
        if name in labels:
            raise PromError(f"line {lineno}: label {name} twice")
        labels[name] = "".join(value)
        rest = body[i:].lstrip(" \t")
        if rest.startswith(","):
            i = len(body) - len(rest) + 1
            if not body[i:].strip():  # a trailing comma is allowed by 0.0.4
                break
        elif rest == "":
            break
        else:
            raise PromError(f"line {lineno}: junk after label {name}: {rest!r}")
    return labels


def family_of(name, types):
    """The declared family a sample name belongs to (histogram/summary suffixes)."""
    if name in types:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            if base in types and types[base] in ("histogram", "summary"):
                if suffix == "_bucket" and types[base] != "histogram":
                    continue
                return base
    return None


class Metrics:
    def __init__(self, text):
        self.types = {}
        self.helps = {}
        self.samples = []  # (name, labels, value)
        self._parse(text)
        self._check_histograms()

    def _parse(self, text):
        if not text.endswith("\n"):
            raise PromError("exposition does not end with a newline")
        done_families = set()
        current = None
        seen = set()
        for lineno, line in enumerate(text.split("\n")[:-1], 1):
            if line.strip() == "":
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 2 and parts[1] in ("HELP", "TYPE"):
                    if len(parts) < 3 or not re.fullmatch(METRIC_NAME, parts[2]):
                        raise PromError(f"line {lineno}: bad {parts[1]} line {line!r}")
                    name = parts[2]
                    if name in done_families or name == current:
                        raise PromError(f"line {lineno}: {parts[1]} for {name} after its samples")
                    if parts[1] == "TYPE":
                        if len(parts) != 4 or parts[3] not in TYPES:
                            raise PromError(f"line {lineno}: bad TYPE {line!r}")
                        if name in self.types:
                            raise PromError(f"line {lineno}: second TYPE for {name}")
                        if any(family_of(s[0], {name: parts[3]}) == name for s in self.samples):
                            raise PromError(f"line {lineno}: TYPE for {name} after its samples")
                        self.types[name] = parts[3]
                    else:
                        if name in self.helps:
                            raise PromError(f"line {lineno}: second HELP for {name}")
                        self.helps[name] = parts[3] if len(parts) == 4 else ""
                continue
            match = SAMPLE.match(line)
            if not match:
                raise PromError(f"line {lineno}: not a sample: {line!r}")
            name, labels_text, value_text, _timestamp = match.groups()
            family = family_of(name, self.types)
            if family is None:
                raise PromError(f"line {lineno}: sample {name} has no TYPE declared before it")
            if family != current:
                if current is not None:
                    done_families.add(current)
                if family in done_families:
                    raise PromError(f"line {lineno}: samples of {family} are not one group")
                current = family
            labels = parse_labels(labels_text, lineno) if labels_text else {}
            key = (name, tuple(sorted(labels.items())))
            if key in seen:
                raise PromError(f"line {lineno}: duplicate series {key}")
            seen.add(key)
            value = parse_value(value_text)
            if self.types[family] == "counter" and not value >= 0:
                raise PromError(f"line {lineno}: counter {name} is {value}")
            self.samples.append((name, labels, value))

    def _check_histograms(self):
        for family, kind in self.types.items():
            if kind != "histogram":
                continue
            groups = {}
            for name, labels, value in self.samples:
                if family_of(name, self.types) != family:
                    continue
                other = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                group = groups.setdefault(other, {"buckets": [], "sum": None, "count": None})
                if name == family + "_bucket":
                    if "le" not in labels:
                        raise PromError(f"{family}_bucket without le")
                    group["buckets"].append((parse_value(labels["le"]), value))
                elif name == family + "_sum":
                    group["sum"] = value
                elif name == family + "_count":
                    group["count"] = value
                else:
                    raise PromError(f"histogram {family} has a bare sample {name}")
            if not groups:
                raise PromError(f"histogram {family} has no samples")
            for other, group in groups.items():
                buckets = group["buckets"]
                if [b[0] for b in buckets] != sorted(b[0] for b in buckets):
                    raise PromError(f"{family}{other}: buckets not in increasing le order")
                if not buckets or buckets[-1][0] != math.inf:
                    raise PromError(f"{family}{other}: buckets do not end at le=+Inf")
                counts = [b[1] for b in buckets]
                if any(b < a for a, b in zip(counts, counts[1:])):
                    raise PromError(f"{family}{other}: buckets not cumulative: {buckets}")
                if group["count"] is None or group["sum"] is None:
                    raise PromError(f"{family}{other}: _sum or _count missing")
                if counts[-1] != group["count"]:
                    raise PromError(f"{family}{other}: +Inf bucket {counts[-1]} != _count {group['count']}")

    def get(self, name, **labels):
        """The one sample with exactly these labels (missing → AssertionError)."""
        found = [v for n, l, v in self.samples if n == name and l == labels]
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
        return found[0]

    def all(self, name):
        return [(l, v) for n, l, v in self.samples if n == name]
