"""``dnstls control``: send one command to a running ``dnstls serve`` (unbound-control).

``dnstls control [-s PATH | -c CONFIG] [-q] COMMAND [ARGS...]``: the socket is ``-s``,
else ``server.control`` of ``-c CONFIG``, else :data:`~dnstls.control.DEFAULT_CONTROL_PATH`.
Prints the answer; exit status 0, or 1 when the answer is an error or the service
cannot be reached -- 3 for ``status`` when nothing runs there, as unbound-control.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from typing import Any

from dnstls.control import DEFAULT_CONTROL_PATH, encode_request, is_error
from dnstls.errors import ConfigError

#: Seconds to wait for the whole answer (a flush_zone or dump_cache of a large cache
#: walks it all)
TIMEOUT = 60.0
MAX_ANSWER = 256 << 20

_COMMANDS = """\
commands (as unbound-control's, where the meaning is the same):
  status                     version, workers, uptime, pid
  stop                       stop the service (as SIGTERM)
  reload                     as SIGHUP: certificates, local data, access control,
                             private addresses
  flush NAME                 drop NAME's A, AAAA, NS, SOA, CNAME, DNAME, MX, PTR, SRV,
                             NAPTR, SVCB and HTTPS answers from the cache
  flush_type NAME TYPE       drop NAME's answers of TYPE
  flush_zone NAME            drop every answer at or under NAME (flush_zone . : all)
  flush_negative             drop NXDOMAIN, NODATA and SERVFAIL answers
  stats_noreset              counters as key=value lines (stats: counters never reset)
  list_forwards              the upstreams of "." and of each forward zone
  list_stubs                 with recursion: the root hints and each stub zone
  list_local_zones           local zones and their types
  list_local_data            records of local data
  lookup NAME                what answers NAME: local data, which upstreams, or
                             where the recursion starts
  dump_cache                 the cache as zone-file-like text
  dnstap_reopen              close the [dnstap] file and open it anew (log rotation;
                             as rndc dnstap -reopen)
"""


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "control", help="control a running dnstls serve (as unbound-control)",
        description="Send one command to a running dnstls serve over its control socket "
                    "([server] control = PATH, or serve --control PATH).",
        epilog=_COMMANDS, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group()
    where.add_argument("-s", "--socket", metavar="PATH",
                       help=f"the control socket (default: server.control of -c, else "
                            f"{DEFAULT_CONTROL_PATH})")
    where.add_argument("-c", "--config", metavar="FILE",
                       help="read the socket path from this dnstls serve config file")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print nothing when the command succeeds")
    p.add_argument("control_command", metavar="COMMAND", help="the command (below)")
    p.add_argument("control_args", metavar="ARGS", nargs="*", help="its arguments")
    p.set_defaults(func=main)


def socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    if args.config:
        from dnstls import config as config_mod

        cfg = config_mod.load(args.config)
        if not cfg.server.control:
            raise ConfigError("server.control", f"not set in {args.config}: the service "
                              "has no control socket (set [server] control = PATH)")
        return cfg.server.control
    return DEFAULT_CONTROL_PATH


def exchange(path: str, command: str, args: list[str], *, timeout: float = TIMEOUT) -> str:
    """Send one request and read the whole answer (until the service closes)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(encode_request(command, args))
        chunks = []
        size = 0
        while size <= MAX_ANSWER:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks).decode("utf-8", "replace")


def main(args: argparse.Namespace) -> int:
    path = socket_path(args)
    command = args.control_command
    words = list(args.control_args)
    if any(not w.isascii() or not w.isprintable() for w in [command, *words]):
        print("error: commands and arguments must be printable ASCII", file=sys.stderr)
        return 1
    try:
        answer = exchange(path, command, words)
    except TimeoutError:
        print(f"error: no answer from {path} within {TIMEOUT:g} s", file=sys.stderr)
        return 1
    except OSError as exc:
        if command == "status" and exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            print(f"error: connect: {exc.strerror} for {path}", file=sys.stderr)
            print("dnstls is stopped")
            return 3
        print(f"error: connect: {exc.strerror or exc} for {path}", file=sys.stderr)
        return 1
    failed = is_error(answer)
    if answer and (failed or not args.quiet):
        sys.stdout.write(answer)
    return 1 if failed else 0
