#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""points.py: 10,000 points from a producer process to a consumer process.

The case libshmfd was made for.  A producer holds 10,000 (x, y) points
and sends them to a consumer process, which needs them as a usable Qt
QPolygonF (or, without Qt, a numpy array).  The same points go through
shmfd, then through multiprocessing.Queue and multiprocessing.Pipe, in
the same run, and the one-way latencies are printed side by side with
their ratios:

  * Qt: shmfd sends the QPolygonF's point array (shmfd.qt.send_polygon)
    and the consumer gets a QPolygonF (shmfd.qt.recv_polygon): one
    memmove, no work per point.  Queue and Pipe must pickle a list of
    QPointF (a QPolygonF cannot be pickled), which the consumer turns
    into a QPolygonF.  One more shmfd row starts from the same list of
    QPointF, converted by Qt on the producer's side.
  * numpy: shmfd sends the (10000, 2) float64 array and the consumer
    makes a numpy array on the message in place (numpy.frombuffer);
    Queue and Pipe pickle the array.  The C library's own examples/points
    runs too, when it is found in the build tree, for reference.

Latency runs from just before the producer's send to the moment the
consumer holds the usable object, on CLOCK_MONOTONIC in both processes.
As in examples/points.c, messages are paced: the producer waits until
the consumer has checked the previous one, then 200 us more, so each
message finds the consumer asleep; producer and consumer are pinned to
CPUs 0 and 1.  Rows take turns in rounds, so that a change of load hits
them all.  Every message is checked (its last point says which message
it is), outside the timed part.

  python3 points.py [-n COUNT] [--slow-n COUNT] [--rounds N]
                    [--method fork|spawn|forkserver] [--spin USEC]
                    [--c-points PATH | --no-c]
"""

import argparse
import array
import multiprocessing
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# Run from the source tree, the package is next door.
sys.path.insert(0, os.path.join(HERE, ".."))

import shmfd  # noqa: E402

try:
    import numpy
except ImportError:
    numpy = None
try:
    import shmfd.qt as sqt
except ImportError:
    sqt = None

NPOINTS = 10000
GAP = 200e-6            # the consumer is asleep before each message
DEADLINE = 60           # seconds: no step of a healthy run comes near


def pin(cpu):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def now():
    return time.monotonic_ns()


# ---- the payloads: what the producer holds, and how it is marked ----

def qt_points(i):
    """The producer's points as a list of QPointF; the last says i."""
    pts = [sqt.QPointF(k, k * 0.5) for k in range(NPOINTS - 1)]
    pts.append(sqt.QPointF(i, -i))
    return pts


def mark_list(pts, i):
    pts[-1] = sqt.QPointF(i, -i)


def mark_polygon(poly, i):
    poly.replace(NPOINTS - 1, sqt.QPointF(i, -i))


def check_polygon(poly, i):
    last = poly.at(NPOINTS - 1) if hasattr(poly, "at") else poly[NPOINTS - 1]
    if poly.size() != NPOINTS or last.x() != i or last.y() != -i:
        raise SystemExit("points.py: message %d arrived wrong" % i)


def make_array():
    if numpy is not None:
        a = numpy.empty((NPOINTS, 2), numpy.float64)
        a[:, 0] = numpy.arange(NPOINTS)
        a[:, 1] = a[:, 0] * 0.5
        return a
    return array.array("d", (v for k in range(NPOINTS) for v in (k, k * .5)))


def mark_array(a, i):
    if numpy is not None:
        a[-1] = (i, -i)
    else:
        a[-2], a[-1] = i, -i


def check_array(a, i):
    if numpy is not None:
        ok = a.shape == (NPOINTS, 2) and a[-1, 0] == i and a[-1, 1] == -i
    else:
        ok = len(a) == 2 * NPOINTS and a[-2] == i and a[-1] == -i
    if not ok:
        raise SystemExit("points.py: message %d arrived wrong" % i)


def as_points(buf):
    """A message's bytes as points, in place."""
    if numpy is not None:
        return numpy.frombuffer(buf, numpy.float64).reshape(-1, 2)
    return buf.cast("d")


# ---- the consumer process ----

def consumer(row, transport, count, ack, cpu, spin):
    """Receive count messages of a row; send back when each was usable."""
    pin(cpu)
    kind, payload = row[:2]
    if kind == "shmfd":
        reader = shmfd.Reader.from_share(transport)
        reader.spin = spin
    ack.send("ready")
    got = []
    for i in range(count):
        if payload == "qt":
            if kind == "shmfd":
                poly = sqt.recv_polygon(reader)
            elif kind == "queue":
                poly = sqt.QPolygonF(transport.get())
            else:
                poly = sqt.QPolygonF(transport.recv())
            got.append(now())
            check_polygon(poly, i)
        else:
            if kind == "shmfd":
                msg = reader.recv()
                a = as_points(msg.data)
                got.append(now())
                check_array(a, i)
                if hasattr(a, "release"):
                    a.release()
                del a
                msg.release()
            else:
                a = transport.get() if kind == "queue" else transport.recv()
                got.append(now())
                check_array(a, i)
        ack.send_bytes(b"")
    ack.send(got)


# ---- the producer: one row ----

def run_row(ctx, row, count, cpus, spin):
    kind, payload = row[:2]
    ack_r, ack_w = ctx.Pipe(duplex=False)
    chan = None
    if kind == "shmfd":
        chan = shmfd.Channel()
        transport = chan.share()
    elif kind == "queue":
        transport = ctx.Queue()
    else:
        transport, send_end = ctx.Pipe(duplex=False)
    p = ctx.Process(target=consumer, args=(row, transport, count, ack_w,
                                           cpus[1], spin))
    p.start()
    try:
        if not ack_r.poll(DEADLINE):
            raise SystemExit("points.py: the consumer did not start")
        ack_r.recv()
        if chan is not None:
            chan.wait_readers(1, timeout=DEADLINE)
        if payload == "qt":
            data = qt_points(0)
            if kind == "shmfd" and row[2:] != ("list",):
                data = sqt.QPolygonF(data)
                mark = mark_polygon
            else:
                mark = mark_list
        else:
            data = make_array()
            mark = mark_array
        sent = []
        for i in range(count):
            mark(data, i)
            time.sleep(GAP)
            if row[2:] == ("inplace",):
                # Built in the ring, as examples/points.c does: the
                # clock starts at the commit; the copy is the building.
                res = chan.reserve(NPOINTS * 16)
                res.buffer[:] = memoryview(data).cast("B")
                t0 = now()
                res.commit()
            elif kind == "shmfd":
                t0 = now()
                if payload == "qt":
                    sqt.send_polygon(chan, data)
                else:
                    chan.send(data)
            elif kind == "queue":
                t0 = now()
                transport.put(data)
            else:
                t0 = now()
                send_end.send(data)
            sent.append(t0)
            if not ack_r.poll(DEADLINE):
                raise SystemExit("points.py: the consumer is stuck")
            ack_r.recv_bytes()
        got = ack_r.recv()
    finally:
        if chan is not None:
            chan.close()
        p.join(DEADLINE)
        if p.is_alive():
            p.kill()
    if p.exitcode != 0:
        raise SystemExit("points.py: the consumer failed")
    return sorted((b - a) / 1000.0 for a, b in zip(sent, got))


def pct(lat, q):
    """The q-th percentile, nearest rank."""
    k = max(0, min(len(lat) - 1, int(round(q / 100.0 * len(lat) + 0.5)) - 1))
    return lat[k]


def c_points(path, count, cpus, spin):
    """p50 and p99 of the C library's examples/points, or None.  It pins
    its own processes, given the CPUs this one was started with."""
    try:
        out = subprocess.run([path, "-n", str(count), "--spin", str(spin)],
                             capture_output=True,
                             text=True, timeout=600,
                             preexec_fn=lambda: os.sched_setaffinity(0, cpus)
                             ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"^\s*shmfd\s+(\d+)\s+([\d.]+) us\s+([\d.]+) us", out, re.M)
    return (float(m.group(2)), float(m.group(3))) if m else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=2000,
                    help="messages per shmfd row and numpy row (2000)")
    ap.add_argument("--slow-n", type=int, default=100,
                    help="messages per Queue and Pipe row of QPointF "
                    "lists, ~0.1 s each (100)")
    ap.add_argument("--rounds", type=int, default=5,
                    help="rows take turns in this many rounds (5)")
    ap.add_argument("--method", default="fork",
                    choices=("fork", "spawn", "forkserver"),
                    help="multiprocessing start method (fork)")
    ap.add_argument("--spin", type=int, default=0,
                    help="shmfd reader spin, microseconds (0: sleep)")
    ap.add_argument("--c-points", default=os.path.join(
        HERE, "..", "..", "..", "examples", "points"),
        help="the C examples/points to run for reference")
    ap.add_argument("--no-c", action="store_true",
                    help="do not run the C examples/points")
    args = ap.parse_args()

    ctx = multiprocessing.get_context(args.method)
    allowed = os.sched_getaffinity(0)
    cpus = (0, 1) if {0, 1} <= allowed else (None, None)
    pin(cpus[0])
    print("points.py: %d (x, y) float64 points per message (%d bytes); "
          "libshmfd %s; Python %s; %s"
          % (NPOINTS, NPOINTS * 16, shmfd.library_version(),
             sys.version.split()[0], args.method))
    print("producer on CPU %s, consumer on CPU %s, %s"
          % (cpus[0], cpus[1],
             "the shmfd readers spin up to %d us before sleeping (both "
             "libraries)" % args.spin if args.spin else
             "consumer asleep before each message"))
    targets = []

    def share(count, rnd):
        return count // args.rounds + (rnd < count % args.rounds)

    def table(title, rows, base, c_row=False):
        print("\n" + title)
        print("  %-32s %6s %11s %11s" % ("us", "n", "p50", "p99"))
        # The rows take turns, a share of each row's messages per round,
        # so that a change of load on a shared machine hits them all.
        lats = {name: [] for name, _, _ in rows}
        c_rounds = []
        for rnd in range(args.rounds):
            for name, row, count in rows:
                if share(count, rnd):
                    lats[name] += run_row(ctx, row, share(count, rnd), cpus,
                                          args.spin)
            if c_row and share(args.n, rnd):
                c_rounds.append(c_points(args.c_points, share(args.n, rnd),
                                         allowed, args.spin))
        res = {}
        for name, row, count in rows:
            lat = sorted(lats[name])
            res[name] = (pct(lat, 50), pct(lat, 99))
            print("  %-32s %6d %11.1f %11.1f" % (name, count, *res[name]))
        if c_row and None not in c_rounds:
            # Its own program prints p50 and p99 only: the median round.
            res["C"] = tuple(sorted(r[k] for r in c_rounds)[len(c_rounds) // 2]
                             for k in (0, 1))
            print("  %-32s %6d %11.1f %11.1f   (median of %d rounds)"
                  % ("C library, examples/points", args.n, *res["C"],
                     len(c_rounds)))
        elif c_row:
            print("  (C library row: %s failed)" % args.c_points)
        b50, b99 = res[base]
        for name in res:
            if name.startswith(("Queue", "Pipe")):
                print("  %-32s %6s %10.0fx %10.0fx" % (
                    name.split(",")[0] + " / shmfd", "",
                    res[name][0] / b50, res[name][1] / b99))
        return res

    if sqt is not None:
        res = table("Qt (%s): the consumer gets a usable QPolygonF" %
                    sqt.QT_API,
                    [("shmfd, QPolygonF", ("shmfd", "qt"), args.n),
                     ("shmfd, list of QPointF", ("shmfd", "qt", "list"),
                      args.n),
                     ("Queue, list of QPointF", ("queue", "qt"),
                      args.slow_n),
                     ("Pipe, list of QPointF", ("pipe", "qt"),
                      args.slow_n)],
                    "shmfd, QPolygonF")
        ratio = res["Queue, list of QPointF"][0] / res["shmfd, QPolygonF"][0]
        targets.append("Qt p50 >= 500x faster than multiprocessing.Queue: "
                       "%s (%.0fx)" % ("met" if ratio >= 500 else "MISSED",
                                       ratio))
    else:
        print("\nQt: skipped (neither PyQt5 nor PyQt6; Debian: apt install "
              "python3-pyqt5)")

    kind = "numpy array" if numpy is not None else \
        "memoryview of doubles (no numpy)"
    c_row = not args.no_c and os.access(args.c_points, os.X_OK)
    res = table("numpy: the consumer gets a %s" % kind,
                [("shmfd, send(array)", ("shmfd", "np"), args.n),
                 ("shmfd, built in place", ("shmfd", "np", "inplace"),
                  args.n),
                 ("Queue", ("queue", "np"), args.n),
                 ("Pipe", ("pipe", "np"), args.n)],
                "shmfd, send(array)", c_row)
    if "C" in res:
        limit = 2 * res["C"][0] + 10
        for name in ("shmfd, built in place", "shmfd, send(array)"):
            view = res[name][0]
            targets.append("numpy view p50 <= 2x the C library's + 10 us, "
                           "%s: %s (%.1f us vs %.1f us)"
                           % (name[7:], "met" if view <= limit else "MISSED",
                              view, limit))
    elif not c_row:
        print("  (C library row: no examples/points; build the tree, or "
              "--c-points PATH)")
    print()
    for t in targets:
        print("target: " + t)


if __name__ == "__main__":
    main()
