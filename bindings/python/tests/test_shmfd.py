# SPDX-License-Identifier: MIT
"""The shmfd Python package against the real library, in real processes.

Run by `make check` through bindings/python/run-tests.sh, or by hand from
bindings/python:  python3 -m unittest discover -s tests -v
Nothing is mocked; nothing here judges speed.  Waits have generous
deadlines and tests assert what happened, not how fast.
"""

import array
import asyncio
import errno
import fcntl
import gc
import multiprocessing
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import shmfd

try:
    import numpy
except ImportError:
    numpy = None

DEADLINE = 30           # seconds: no healthy step comes near it
METHODS = ("fork", "spawn", "forkserver")

_dir = None


def setUpModule():
    # Named channels of this run live in a directory of their own, which
    # child processes inherit through the environment.
    global _dir
    _dir = tempfile.TemporaryDirectory(prefix="shmfd-py-")
    os.environ["SHMFD_DIR"] = _dir.name


def tearDownModule():
    _dir.cleanup()


def pair(**kw):
    """A channel and one reader joined to it, in this process."""
    ch = shmfd.Channel(**kw)
    return ch, shmfd.Reader.from_share(ch.share())


def held(reader):
    return len(reader._handle.held)


def fd_count():
    return len(os.listdir("/proc/self/fd"))


# ---- functions run in child processes (module level: spawn pickles
# them by name) ----

def child_collect(share, out, from_oldest=False):
    """Read until the producer is gone; put [(seq, lost, bytes)] on out."""
    got = []
    with shmfd.Reader.from_share(share, from_oldest=from_oldest) as r:
        for msg in r:
            with msg:
                got.append((msg.seq, msg.lost, msg.is_blob, bytes(msg.data)))
    out.put(got)


def child_sum_numpy(share, out):
    """Sum each message as float64 points, in place."""
    sums = []
    with shmfd.Reader.from_share(share) as r:
        for msg in r:
            with msg:
                pts = numpy.frombuffer(msg.data, numpy.float64)
                sums.append(float(pts.reshape(-1, 2).sum()))
                del pts
    out.put(sums)


def child_named(name, out):
    try:
        with shmfd.Reader(name) as r:
            with r.recv(timeout=DEADLINE) as msg:
                out.put(bytes(msg.data))
    except Exception as e:
        out.put(e)


def child_producer(out, count, die):
    """A producer in its own process: hands out its share, sends count
    messages, then dies by SIGKILL or returns (closing the channel)."""
    ch = shmfd.Channel()
    out.put(ch.share())
    ch.wait_readers(1, timeout=DEADLINE)
    for i in range(count):
        ch.send(b"m%d" % i)
    if die:
        os.kill(os.getpid(), signal.SIGKILL)
    ch.close()


def child_polygon(share, out):
    import shmfd.qt
    with shmfd.Reader.from_share(share) as r:
        poly = shmfd.qt.recv_polygon(r, timeout=DEADLINE)
        out.put([(p.x(), p.y()) for p in (poly[0], poly[poly.size() - 1])]
                + [poly.size()])


def child_uses_parent(ch, r, out):
    errs = []
    for f in (lambda: ch.send(b"x"), lambda: r.recv(timeout=0)):
        try:
            f()
        except RuntimeError:
            errs.append("refused")
    ch.close()                  # must not close the parent's channel
    r.close()
    out.put(errs)


def child_setuid_reader(name, out):
    try:
        os.setgid(65534)
        os.setuid(65534)
        shmfd.Reader(name)
        out.put("joined")
    except Exception as e:
        out.put(type(e).__name__)


def run_child(method, target, *args):
    """Start target(*args, queue) under a start method; return what it
    put on the queue and check it exited 0."""
    ctx = multiprocessing.get_context(method)
    q = ctx.Queue()
    p = ctx.Process(target=target, args=args + (q,))
    p.start()
    return p, q


def finish(test, p, q):
    try:
        result = q.get(timeout=DEADLINE)
    finally:
        p.join(DEADLINE)
        if p.is_alive():
            p.kill()
    test.assertEqual(p.exitcode, 0)
    return result


# ---- in one process ----

class TestSend(unittest.TestCase):
    def test_buffer_types(self):
        ch, r = pair()
        with ch, r:
            objs = [b"bytes", bytearray(b"bytearray"),
                    memoryview(b"readonly view"),
                    memoryview(bytearray(b"writable view")),
                    array.array("i", [1, 2, 3]), b""]
            for obj in objs:
                ch.send(obj)
            for obj in objs:
                with r.recv(timeout=DEADLINE) as msg:
                    self.assertEqual(bytes(msg.data), bytes(obj))
                    self.assertEqual(len(msg), len(bytes(obj)))
                    self.assertFalse(msg.is_blob)
                    self.assertEqual(msg.fd, -1)

    def test_not_a_buffer(self):
        with shmfd.Channel() as ch:
            for obj in ("text", 3, [1, 2], None):
                with self.assertRaises(TypeError):
                    ch.send(obj)

    @unittest.skipIf(numpy is None, "numpy is not installed")
    def test_numpy(self):
        ch, r = pair()
        with ch, r:
            a = numpy.arange(20000, dtype=numpy.float64).reshape(-1, 2)
            ch.send(a)
            ch.send(a[::2])                 # strided: copied first
            ch.send(a.T)                    # Fortran order: copied first
            ro = a.copy()
            ro.flags.writeable = False
            ch.send(ro)
            for want in (a, a[::2], a.T, ro):
                with r.recv(timeout=DEADLINE) as msg:
                    got = numpy.frombuffer(msg.data, numpy.float64)
                    self.assertTrue(numpy.array_equal(
                        got, numpy.ascontiguousarray(want).ravel()))
                    self.assertFalse(got.flags.writeable)
                    del got

    def test_sequence_and_readers(self):
        ch = shmfd.Channel()
        self.assertEqual(ch.readers, 0)
        r1 = shmfd.Reader.from_share(ch.share())
        r2 = shmfd.Reader.from_share(ch.share())
        self.assertEqual(ch.readers, 2)
        for i in range(3):
            ch.send(b"%d" % i)
        for r in (r1, r2):
            self.assertEqual([m.seq for m in
                              (r.recv(timeout=DEADLINE) for _ in range(3))],
                             [1, 2, 3])
        r2.close()
        deadline = time.monotonic() + DEADLINE
        while ch.readers != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(ch.readers, 1)
        r1.close()
        ch.close()


class TestReserve(unittest.TestCase):
    def test_in_place(self):
        ch, r = pair()
        with ch, r:
            with ch.reserve(11) as buf:
                self.assertFalse(buf.readonly)
                buf[:] = b"in the ring"
            with self.assertRaises(ValueError):
                buf[0]                      # invalidated by the commit
            res = ch.reserve(100)
            res.buffer[:5] = b"short"
            res.commit(5)                   # publish only what was built
            with r.recv(timeout=DEADLINE) as m:
                self.assertEqual(bytes(m.data), b"in the ring")
            with r.recv(timeout=DEADLINE) as m:
                self.assertEqual(bytes(m.data), b"short")

    def test_one_at_a_time_and_size(self):
        with shmfd.Channel(ring_size=64 << 10) as ch:
            res = ch.reserve(8)
            with self.assertRaises(OSError) as cm:
                ch.reserve(8)
            self.assertEqual(cm.exception.errno, errno.EBUSY)
            res.commit()
            with self.assertRaises(ValueError) as cm:
                ch.reserve(1 << 20)         # above max_inline
            self.assertEqual(cm.exception.errno, errno.EMSGSIZE)
            with self.assertRaises(ValueError):
                ch.reserve(-1)

    def test_view_alive_refuses_commit(self):
        ch, r = pair()
        with ch, r:
            res = ch.reserve(4)
            part = res.buffer[1:]
            with self.assertRaises(BufferError):
                res.commit()
            self.assertIsNone(r.try_recv())     # nothing was published
            del part
            res.buffer[:] = b"ok!!"
            res.commit()
            with r.recv(timeout=DEADLINE) as m:
                self.assertEqual(bytes(m.data), b"ok!!")

    def test_block_raises(self):
        """An exception in the block publishes nothing, and the channel
        goes on: the next send reuses the reservation."""
        ch, r = pair()
        with ch, r:
            with self.assertRaises(KeyError):
                with ch.reserve(64) as buf:
                    buf[:3] = b"bad"
                    raise KeyError("the producer failed")
            self.assertIsNone(r.try_recv())
            ch.send(b"next")
            with ch.reserve(2) as buf:
                buf[:] = b"ok"
            with r.recv(timeout=DEADLINE) as m:
                self.assertEqual((m.seq, bytes(m.data)), (1, b"next"))
            with r.recv(timeout=DEADLINE) as m:
                self.assertEqual((m.seq, bytes(m.data)), (2, b"ok"))


class TestBlob(unittest.TestCase):
    def test_large_send_is_a_blob(self):
        ch, r = pair(ring_size=64 << 10)
        with ch, r:
            big = os.urandom(1 << 20)
            ch.send(big)
            with r.recv(timeout=DEADLINE) as m:
                self.assertTrue(m.is_blob)
                self.assertEqual(bytes(m.data), big)
                seals = fcntl.fcntl(m.fd, fcntl.F_GET_SEALS)
                for s in (fcntl.F_SEAL_WRITE, fcntl.F_SEAL_SHRINK,
                          fcntl.F_SEAL_GROW, fcntl.F_SEAL_SEAL):
                    self.assertTrue(seals & s)

    def test_send_blob_and_keep_it(self):
        ch, r = pair()
        with ch, r:
            ch.send_blob(b"small but sealed")
            with r.recv(timeout=DEADLINE) as m:
                self.assertTrue(m.is_blob)
                kept = os.dup(m.fd)
            ch.close()
            # The blob outlives the message and the channel.
            self.assertEqual(os.pread(kept, 100, 0), b"small but sealed")
            os.close(kept)
            with self.assertRaises(ValueError):
                ch.send_blob(b"")

    def test_blob_in_place(self):
        ch, r = pair()
        with ch, r:
            blob = shmfd.Blob(3 << 20)
            blob.data[:4] = b"head"
            blob.data[-4:] = b"tail"
            view = blob.data[:4]
            with self.assertRaises(BufferError):
                ch.send_blob(blob)          # a view would outlive the map
            del view
            ch.send_blob(blob)
            with self.assertRaises(ValueError):
                blob.data                   # consumed by the send
            with r.recv(timeout=DEADLINE) as m:
                self.assertEqual(len(m), 3 << 20)
                self.assertEqual(bytes(m.data[:4]) + bytes(m.data[-4:]),
                                 b"headtail")
            with shmfd.Blob(10) as unsent:
                unsent.data[:] = b"0123456789"
            with self.assertRaises(ValueError):
                unsent.data
            with self.assertRaises(ValueError):
                shmfd.Blob(0)


class TestRelease(unittest.TestCase):
    def test_use_after_release(self):
        ch, r = pair()
        with ch, r:
            ch.send(b"payload")
            with r.recv(timeout=DEADLINE) as msg:
                data = msg.data
                self.assertEqual(bytes(data), b"payload")
            self.assertTrue(msg.released)
            with self.assertRaises(ValueError):
                msg.data
            with self.assertRaises(ValueError):
                data[0]                     # the handed-out view too
            with self.assertRaises(ValueError):
                msg.fd
            self.assertTrue(msg.release())  # twice: harmless
            self.assertEqual(held(r), 0)

    def test_refused_while_views_live(self):
        ch, r = pair()
        with ch, r:
            ch.send(b"0123456789")
            msg = r.recv(timeout=DEADLINE)
            views = [msg.data[2:5], memoryview(msg.data)]
            if numpy is not None:
                views.append(numpy.frombuffer(msg.data, numpy.uint8))
            for _ in range(len(views)):
                with self.assertRaises(BufferError):
                    msg.release()
                self.assertFalse(msg.released)
                # Still mapped and held: the views work.
                self.assertEqual(bytes(views[0]), b"234")
                with self.assertRaises(BufferError):
                    r.close()
                self.assertFalse(r.closed)
                views.pop()
            self.assertTrue(msg.release())
            self.assertEqual(held(r), 0)

    def test_with_exit_refuses_too(self):
        ch, r = pair()
        with ch, r:
            ch.send(b"abc")
            with self.assertRaises(BufferError):
                with r.recv(timeout=DEADLINE) as msg:
                    keep = msg.data[1:]
            self.assertFalse(msg.released)
            self.assertEqual(bytes(keep), b"bc")
            del keep
            msg.release()
            # An exception leaving the block is not masked.
            ch.send(b"def")
            with self.assertRaises(KeyError):
                with r.recv(timeout=DEADLINE) as msg:
                    keep = msg.data[1:]
                    raise KeyError("mine")
            del keep

    def test_dropped_message_lives_as_long_as_its_views(self):
        ch, r = pair()
        with ch, r:
            ch.send(b"kept by its view")
            view = r.recv(timeout=DEADLINE).data[5:]   # Message dropped
            gc.collect()
            self.assertEqual(held(r), 1)
            self.assertEqual(bytes(view), b"by its view")
            del view
            gc.collect()
            self.assertEqual(held(r), 0)

    def test_dropped_reader_keeps_memory_for_views(self):
        ch = shmfd.Channel()
        r = shmfd.Reader.from_share(ch.share())
        ch.send(b"still mapped")
        view = r.recv(timeout=DEADLINE).data
        del r
        gc.collect()
        self.assertEqual(ch.readers, 1)         # not closed under the view
        self.assertEqual(bytes(view), b"still mapped")
        del view
        gc.collect()
        deadline = time.monotonic() + DEADLINE
        while ch.readers and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(ch.readers, 0)
        ch.close()

    def test_close_releases_held(self):
        ch, r = pair()
        with ch:
            ch.send(b"a")
            ch.send(b"b")
            msgs = [r.recv(timeout=DEADLINE), r.recv(timeout=DEADLINE)]
            r.close()
            for m in msgs:
                self.assertTrue(m.released)
                with self.assertRaises(ValueError):
                    m.data
            with self.assertRaises(ValueError):
                r.recv()

    @unittest.skipIf(sys.version_info < (3, 12), "PEP 688 is Python 3.12")
    def test_buffer_protocol(self):
        ch, r = pair()
        with ch, r:
            ch.send(b"direct")
            msg = r.recv(timeout=DEADLINE)
            view = memoryview(msg)
            self.assertEqual(bytes(view), b"direct")
            self.assertTrue(view.readonly)
            with self.assertRaises(BufferError):
                msg.release()
            view.release()
            msg.release()


class TestModes(unittest.TestCase):
    def test_lossy_counts_lost(self):
        ch, r = pair(lossy=True, ring_size=64 << 10)
        with ch, r:
            for i in range(1000):
                ch.send(b"%04d" % i + bytes(1020))
            got = 0
            seqs = []
            while True:
                m = r.try_recv()
                if m is None:
                    break
                got += 1 + m.lost
                seqs.append(m.seq)
                m.release()
            self.assertEqual(got, 1000)     # received or counted lost
            self.assertLess(len(seqs), 1000)
            self.assertEqual(seqs[-1], 1000)

    def test_latest(self):
        ch, r = pair()
        with ch, r:
            for i in range(10):
                ch.send(b"%d" % i)
            with r.recv(timeout=DEADLINE, latest=True) as m:
                self.assertEqual((m.seq, m.lost, bytes(m.data)),
                                 (10, 9, b"9"))

    def test_stale(self):
        ch, r = pair(lossy=True, ring_size=64 << 10)
        with ch, r:
            ch.send(b"first")
            msg = r.recv(timeout=DEADLINE)
            for i in range(200):            # laps the ring under msg
                ch.send(bytes(1024))
            self.assertFalse(msg.release())
            self.assertTrue(msg.stale)


class TestTimeouts(unittest.TestCase):
    def test_recv(self):
        ch, r = pair()
        with ch, r:
            self.assertIsNone(r.try_recv())
            with self.assertRaises(BlockingIOError):
                r.recv(timeout=0)
            t = time.monotonic()
            with self.assertRaises(TimeoutError) as cm:
                r.recv(timeout=0.05)
            self.assertGreaterEqual(time.monotonic() - t, 0.05)
            self.assertEqual(cm.exception.errno, errno.ETIMEDOUT)
            with self.assertRaises(ValueError):
                r.recv(timeout=-1)

    def test_waits_with_and_without_held_messages(self):
        # Nothing held: the wait sleeps in the library, in slices; a
        # message held: in poll(2) on the reader's fd.  Either way a
        # message sent meanwhile from another thread ends it, and the
        # timeout holds across the slices.
        ch, r = pair()
        with ch, r:
            for keep in (None, b"kept"):
                kept = None
                if keep is not None:
                    ch.send(keep)
                    kept = r.recv(timeout=DEADLINE)
                t = threading.Timer(0.12, ch.send, args=(b"late",))
                t.start()
                try:
                    m = r.recv(timeout=DEADLINE)
                finally:
                    t.join()
                self.assertEqual(bytes(m.data), b"late")
                m.release()
                start = time.monotonic()
                with self.assertRaises(TimeoutError):
                    r.recv(timeout=0.13)
                self.assertGreaterEqual(time.monotonic() - start, 0.13)
                if kept is not None:
                    self.assertEqual(bytes(kept.data), keep)
                    kept.release()

    def test_close_from_another_thread_ends_a_wait(self):
        # The wait notices within a slice, not at its own deadline.
        ch, r = pair()
        with ch:
            t = threading.Timer(0.1, r.close)
            start = time.monotonic()
            t.start()
            try:
                with self.assertRaises(ValueError):
                    r.recv(timeout=DEADLINE)
            finally:
                t.join()
            self.assertLess(time.monotonic() - start, DEADLINE / 2)

    def test_send_waits_for_a_reader(self):
        ch, r = pair(ring_size=64 << 10)
        with ch, r:
            held_msgs = []
            with self.assertRaises(TimeoutError):
                for _ in range(1000):
                    ch.send(bytes(1024), timeout=0.05)
                    m = r.try_recv()
                    if m is not None:
                        held_msgs.append(m)     # never released
            self.assertGreater(len(held_msgs), 10)
            with self.assertRaises(BlockingIOError):
                ch.send(bytes(1024), timeout=0)
            for m in held_msgs:
                m.release()
            ch.send(bytes(1024), timeout=DEADLINE)

    def test_signal_interrupts_a_wait(self):
        if threading.current_thread() is not threading.main_thread():
            self.skipTest("signals go to the main thread")

        def on_alarm(signum, frame):
            raise InterruptedError("alarm")
        old = signal.signal(signal.SIGALRM, on_alarm)
        try:
            ch, r = pair()
            with ch, r:
                signal.setitimer(signal.ITIMER_REAL, 0.05)
                with self.assertRaises(InterruptedError):
                    r.recv()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


class TestErrors(unittest.TestCase):
    def test_bad_arguments(self):
        for kw in ({"ring_size": -1}, {"ring_size": "big"},
                   {"max_readers": 0}, {"name": ""}):
            with self.assertRaises(ValueError):
                shmfd.Channel(**kw)
        # Refused by the library itself: an ArgumentError (EINVAL).
        for kw in ({"ring_size": 1000}, {"name": "a/b"},
                   {"mode": 0o7777}):
            with self.assertRaises(ValueError) as cm:
                shmfd.Channel(**kw)
            self.assertIsInstance(cm.exception, shmfd.ArgumentError)
            self.assertEqual(cm.exception.errno, errno.EINVAL)
        with self.assertRaises(TypeError):
            shmfd.Reader.from_share(3)
        ch, r = pair()
        with ch, r:
            with self.assertRaises(ValueError):
                r.spin = -1
            r.spin = 50
            self.assertEqual(r.spin, 50)

    def test_missing_channel(self):
        with self.assertRaises(FileNotFoundError) as cm:
            shmfd.Reader("no-such-channel")
        self.assertEqual(cm.exception.filename, "no-such-channel")

    def test_closed_handles(self):
        ch, r = pair()
        ch.close()
        r.close()
        ch.close()
        r.close()
        for f in (lambda: ch.send(b"x"), lambda: ch.readers,
                  lambda: r.recv(), r.fileno):
            with self.assertRaises(ValueError):
                f()

    def test_protocol_error(self):
        """A fake producer that answers the handshake with garbage."""
        path = os.path.join(os.environ["SHMFD_DIR"], "fake")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        srv.bind(path)
        srv.listen()

        def fake():
            conn, _ = srv.accept()
            with conn:
                _, fds, _, _ = socket.recv_fds(conn, 64, 4)
                for fd in fds:
                    os.close(fd)
                conn.send(b"garbage!")
                conn.recv(64)       # until the reader hangs up
        t = threading.Thread(target=fake)
        t.start()
        try:
            with self.assertRaises(shmfd.ProtocolError) as cm:
                shmfd.Reader("fake")
            self.assertEqual(cm.exception.errno, errno.EPROTO)
        finally:
            t.join(DEADLINE)
            srv.close()
            os.unlink(path)

    def test_no_fd_leak(self):
        before = fd_count()
        for _ in range(3):
            ch, r = pair()
            ch.send(os.urandom(2 << 20))        # a blob: one more fd
            with r.recv(timeout=DEADLINE) as m:
                self.assertTrue(m.is_blob)
            r.fileno()
            r.close()
            ch.close()
        self.assertEqual(fd_count(), before)


class TestEventLoops(unittest.TestCase):
    def test_selectors(self):
        ch, r = pair()
        with ch, r, selectors.DefaultSelector() as sel:
            sel.register(r.fileno(), selectors.EVENT_READ)
            self.assertIsNone(r.try_recv())     # arms the descriptor
            self.assertEqual(sel.select(0), [])
            ch.send(b"ready")
            self.assertEqual(len(sel.select(DEADLINE)), 1)
            with r.try_recv() as m:
                self.assertEqual(bytes(m.data), b"ready")
            self.assertIsNone(r.try_recv())
            ch.close()
            self.assertEqual(len(sel.select(DEADLINE)), 1)
            with self.assertRaises(BrokenPipeError):
                r.try_recv()

    def test_asyncio(self):
        ch, r = pair()

        def produce():
            for i in range(5):
                time.sleep(0.01)
                ch.send(b"async %d" % i)
            ch.close()

        async def consume():
            got = []
            first = await asyncio.wait_for(r.arecv(), DEADLINE)
            with first:
                got.append(bytes(first.data))
            async for msg in r:
                with msg:
                    got.append(bytes(msg.data))
            return got

        async def main():
            loop = asyncio.get_running_loop()
            fut = loop.run_in_executor(None, produce)
            got = await asyncio.wait_for(consume(), DEADLINE)
            await fut
            return got

        with r:
            got = asyncio.run(main())
        self.assertEqual(got, [b"async %d" % i for i in range(5)])

    def test_asyncio_timeout(self):
        ch, r = pair()
        with ch, r:
            async def main():
                with self.assertRaises(asyncio.TimeoutError):
                    await asyncio.wait_for(r.arecv(), 0.05)
                ch.send(b"late")
                return await asyncio.wait_for(r.arecv(), DEADLINE)
            msg = asyncio.run(main())
            with msg:
                self.assertEqual(bytes(msg.data), b"late")


# ---- across processes ----

class TestProcesses(unittest.TestCase):
    def test_round_trip(self):
        for method in METHODS:
            with self.subTest(method=method):
                ch = shmfd.Channel()
                p, q = run_child(method, child_collect, ch.share())
                ch.wait_readers(1, timeout=DEADLINE)
                ch.send(b"inline")
                ch.send(os.urandom(16) * 100000)            # a blob
                with ch.reserve(5) as buf:
                    buf[:] = b"built"
                ch.close()
                got = finish(self, p, q)
                self.assertEqual([(s, b) for s, _, b, _ in got],
                                 [(1, False), (2, True), (3, False)])
                self.assertEqual(got[0][3], b"inline")
                self.assertEqual(len(got[1][3]), 1600000)
                self.assertEqual(got[2][3], b"built")

    @unittest.skipIf(numpy is None, "numpy is not installed")
    def test_numpy_points(self):
        for method in ("fork", "spawn"):
            with self.subTest(method=method):
                ch = shmfd.Channel()
                p, q = run_child(method, child_sum_numpy, ch.share())
                ch.wait_readers(1, timeout=DEADLINE)
                pts = numpy.random.rand(10000, 2)
                for k in range(1, 4):
                    ch.send(pts * k)
                ch.close()
                sums = finish(self, p, q)
                for k, s in enumerate(sums, 1):
                    self.assertAlmostEqual(s, float((pts * k).sum()))

    def test_share_through_a_queue(self):
        """A share pickled outside process start (resource_sharer)."""
        ctx = multiprocessing.get_context("spawn")
        q = ctx.Queue()
        p = ctx.Process(target=child_producer, args=(q, 3, False))
        p.start()
        try:
            share = q.get(timeout=DEADLINE)
            with shmfd.Reader.from_share(share, from_oldest=True) as r:
                got = [bytes(m.data) for m in r]
        finally:
            p.join(DEADLINE)
        self.assertEqual(got, [b"m0", b"m1", b"m2"])

    def test_producer_killed(self):
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=child_producer, args=(q, 3, True))
        p.start()
        share = q.get(timeout=DEADLINE)
        r = shmfd.Reader.from_share(share, from_oldest=True)
        p.join(DEADLINE)
        self.assertEqual(p.exitcode, -signal.SIGKILL)
        with r:
            got = []
            with self.assertRaises(BrokenPipeError) as cm:
                while True:
                    with r.recv(timeout=DEADLINE) as m:
                        got.append(bytes(m.data))
            self.assertEqual(cm.exception.errno, errno.EPIPE)
            self.assertEqual(got, [b"m0", b"m1", b"m2"])

    def test_named(self):
        for method in ("fork", "spawn"):
            with self.subTest(method=method):
                with shmfd.Channel("py-named-" + method) as ch:
                    p, q = run_child(method, child_named, ch.name)
                    ch.wait_readers(1, timeout=DEADLINE)
                    ch.send(b"by name")
                    self.assertEqual(finish(self, p, q), b"by name")

    @unittest.skipUnless(os.geteuid() == 0, "needs root to change user")
    def test_other_user_refused(self):
        os.chmod(os.environ["SHMFD_DIR"], 0o755)
        with shmfd.Channel("py-private", mode=0o600) as ch:
            p, q = run_child("fork", child_setuid_reader, ch.name)
            self.assertEqual(finish(self, p, q), "PermissionError")

    def test_forked_child_cannot_use_parent_handles(self):
        ch, r = pair()
        with ch, r:
            p, q = run_child("fork", child_uses_parent, ch, r)
            self.assertEqual(finish(self, p, q), ["refused", "refused"])
            ch.send(b"parent still sends")          # not closed by the child
            with r.recv(timeout=DEADLINE) as m:
                self.assertEqual(bytes(m.data), b"parent still sends")


class TestExample(unittest.TestCase):
    def test_points_runs(self):
        """examples/points.py prints its tables (no timing is judged)."""
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "..", "examples", "points.py")
        out = subprocess.run([sys.executable, script, "-n", "20",
                              "--slow-n", "2", "--no-c"],
                             capture_output=True, text=True,
                             timeout=10 * DEADLINE)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("shmfd, built in place", out.stdout)
        self.assertIn("Queue / shmfd", out.stdout)
        if qt_available():
            self.assertIn("shmfd, QPolygonF", out.stdout)


def qt_available():
    try:
        import shmfd.qt  # noqa: F401
        return True
    except ImportError:
        return False


@unittest.skipUnless(qt_available(), "neither PyQt5 nor PyQt6 is installed")
class TestQt(unittest.TestCase):
    def setUp(self):
        import shmfd.qt
        self.qt = shmfd.qt
        self.QPointF = shmfd.qt.QPointF
        self.QPolygonF = shmfd.qt.QPolygonF

    def test_polygon_round_trip(self):
        ch, r = pair()
        with ch, r:
            pts = [self.QPointF(i, i * 0.5) for i in range(10000)]
            self.qt.send_polygon(ch, pts)               # a list of QPointF
            self.qt.send_polygon(ch, self.QPolygonF(pts[:3]))
            self.qt.send_polygon(ch, [])
            poly = self.qt.recv_polygon(r, timeout=DEADLINE)
            self.assertIsInstance(poly, self.QPolygonF)
            self.assertEqual(poly, self.QPolygonF(pts))
            self.assertEqual(self.qt.recv_polygon(r).size(), 3)
            self.assertEqual(self.qt.recv_polygon(r).size(), 0)
            self.assertEqual(held(r), 0)
            ch.send(b"odd length")
            with r.recv(timeout=DEADLINE) as m:
                with self.assertRaises(ValueError):
                    self.qt.to_polygon(m)

    def test_polygon_to_spawned_child(self):
        ch = shmfd.Channel()
        p, q = run_child("spawn", child_polygon, ch.share())
        ch.wait_readers(1, timeout=DEADLINE)
        self.qt.send_polygon(ch, [self.QPointF(i, -i) for i in range(10000)])
        ch.close()
        self.assertEqual(finish(self, p, q),
                         [(0.0, 0.0), (9999.0, -9999.0), 10000])

    def test_notifier(self):
        core = sys.modules[self.QPolygonF.__module__.replace("QtGui",
                                                             "QtCore")]
        app = core.QCoreApplication.instance() or core.QCoreApplication([])
        ch, r = pair()
        got = []

        def closed(exc):
            got.append(type(exc))
            app.quit()
        with r:
            note = self.qt.notifier(
                r, lambda m: got.append(self.qt.to_polygon(m).size()),
                closed)
            core.QTimer.singleShot(0, lambda: (
                self.qt.send_polygon(ch, [self.QPointF(1, 2)] * 5),
                self.qt.send_polygon(ch, [self.QPointF(3, 4)] * 7)))
            core.QTimer.singleShot(100, ch.close)
            core.QTimer.singleShot(DEADLINE * 1000, app.quit)
            (app.exec if hasattr(app, "exec") else app.exec_)()
            self.assertFalse(note.isEnabled())
        self.assertEqual(got, [5, 7, BrokenPipeError])


if __name__ == "__main__":
    unittest.main()
