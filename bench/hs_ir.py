"""Instructions per new TLS connection (handshake + one query + close), user space only,
for whole servers under callgrind: load-independent, so two trees (or dnstls and kresd)
can be compared on a busy machine.

Usage::

    flock /tmp/dnstls-bench.lock .venv/bin/python bench/hs_ir.py
        [--servers kresd,dnstls,new] [--variant new=TREE] [--modes 1.3,1.3r,1.2,1.2r] [-n 200]

In a private network namespace (as bench/run.py): nsd, then each server under
``valgrind --tool=callgrind --instr-atstart=no`` (start-up runs uninstrumented). After a
warm-up (1000 names cached, through resumed TLS 1.3 connections) instrumentation is
switched on (``callgrind_control -i on``) for each mode, ``bench/tlsload.py handshakes``
(4 threads) opens ``n`` connections, and the counters are dumped and zeroed; the figure
is the dump's total instructions / connections. The kernel's part (TCP, system calls) is
not counted; everything in the server's process is: crypto library, event loop,
interpreter, the server's own code.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import peers  # noqa: E402
from run import CLIENT_CPU, SERVER_CPU, assert_isolated, reexec_in_netns  # noqa: E402

MODES = {"1.3": ("1.3", False), "1.3r": ("1.3", True), "1.2": ("1.2", False),
         "1.2r": ("1.2", True)}


def callgrind_control(pid: int, *args: str) -> str:
    return subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True,
                          text=True, timeout=120).stdout


def total_ir(directory: Path, before: set[Path]) -> int:
    total = 0
    for path in sorted(set(directory.glob("cg.out*")) - before):
        text = path.read_text(errors="replace")
        m = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
        if m:
            total += int(m.group(1))
    return total


def by_object(directory: Path, before: set[Path], top: int) -> list[str]:
    """Self instructions by shared object and the top functions (callgrind_annotate)."""
    from collections import Counter
    objects: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    for path in sorted(set(directory.glob("cg.out*")) - before):
        text = subprocess.run(["callgrind_annotate", "--threshold=100", str(path)],
                              capture_output=True, text=True, timeout=300).stdout
        for line in text.splitlines():
            m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*?)\s+\[(.*)\]\s*$", line)
            if not m:
                continue
            ir = int(m.group(1).replace(",", ""))
            obj = Path(m.group(3)).name
            objects[obj] += ir
            functions[f"{m.group(2)[:60]} [{obj[:24]}]"] += ir
    out = [f"    {ir:12,}  {obj}" for obj, ir in objects.most_common(12)]
    out += [f"      {ir:12,}  {fn}" for fn, ir in functions.most_common(top)]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="kresd,dnstls")
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--modes", default="1.3,1.3r,1.2,1.2r")
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--objects", type=int, default=-1, metavar="TOP",
                        help="also self instructions by shared object and the TOP functions")
    args = parser.parse_args()
    reexec_in_netns()
    assert_isolated()
    work = Path(tempfile.mkdtemp(prefix="dnstls-hs-ir-"))
    group = peers.PeerGroup(work)
    variants = {k: Path(v).resolve() for k, v in (x.split("=", 1) for x in args.variant)}
    original = peers._pinned
    results: dict[tuple[str, str], float] = {}
    try:
        pki = peers.make_pki(work / "pki")
        nsd = peers.start_nsd(group, cpu=CLIENT_CPU)
        servers = {}
        for name in args.servers.split(","):
            out = work / f"cg-{name}"
            out.mkdir()

            def wrapped(cpu: str | None, argv: list[str], out: Path = out) -> list[str]:
                return original(cpu, ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                      f"--callgrind-out-file={out}/cg.out.%p", *argv])
            peers._pinned = wrapped
            try:
                if name == "kresd":
                    peer = peers.start_kresd(group, pki, nsd, cpu=SERVER_CPU)
                else:
                    peer = peers.start_dnstls(group, pki, nsd, cpu=SERVER_CPU, name=name,
                                              src=variants.get(name, Path("/work/main")))
            finally:
                peers._pinned = original
            servers[name] = (peer, out)
        for peer, _out in servers.values():
            subprocess.run([sys.executable, str(BENCH / "tlsload.py"), "handshakes",
                            "--port", str(peer.port), "--ca", str(pki.ca_pem), "--version",
                            "1.3", "-n", "1000", "--threads", "4", "--seconds", "120",
                            "--resume"], capture_output=True, timeout=300)
        for mode in args.modes.split(","):
            version, resume = MODES[mode]
            for name, (peer, out) in servers.items():
                pid = peer.pid
                before = set(out.glob("cg.out*"))
                callgrind_control(pid, "-i", "on")
                callgrind_control(pid, "-z")
                argv = ["taskset", "-c", CLIENT_CPU, sys.executable,
                        str(BENCH / "tlsload.py"), "handshakes", "--port", str(peer.port),
                        "--ca", str(pki.ca_pem), "--version", version, "-n", str(args.n),
                        "--threads", "4", "--seconds", "300"]
                if resume:
                    argv.append("--resume")
                proc = subprocess.run(argv, capture_output=True, text=True, timeout=400)
                callgrind_control(pid, "-d")
                callgrind_control(pid, "-i", "off")
                time.sleep(1.0)
                import json
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                conns = result["connections"]
                ir = total_ir(out, before)
                per = ir / conns if conns else float("nan")
                results[(mode, name)] = per
                print(f"{name:8} TLS {mode:5} {conns} connections {result['stats']}: "
                      f"{per / 1e6:7.3f} M instructions per connection", flush=True)
                if args.objects >= 0 and conns:
                    print(f"  self instructions per connection x{conns} (totals):")
                    print("\n".join(by_object(out, before, args.objects)), flush=True)
        names = list(servers)
        print("\nM instructions per connection (user space, callgrind)")
        print(f"{'mode':6}" + "".join(f"{n:>10}" for n in names)
              + "".join(f"{n + '/' + names[0]:>16}" for n in names[1:]))
        for mode in args.modes.split(","):
            row = [results[(mode, n)] for n in names]
            print(f"{mode:6}" + "".join(f"{v / 1e6:10.3f}" for v in row)
                  + "".join(f"{v / row[0]:16.2f}" for v in row[1:]))
    finally:
        for failure in group.stop_all():
            print(f"hs_ir: {failure}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
