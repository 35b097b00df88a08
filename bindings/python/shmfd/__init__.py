# SPDX-License-Identifier: MIT
"""Zero-copy message channels between processes, over libshmfd.

A :class:`Channel` is the producer end: it sends any bytes-like object
(bytes, bytearray, memoryview, numpy array) without pickling it.  A
:class:`Reader` joins a channel by name, or through :meth:`Channel.share`
in a child process, and receives :class:`Message` objects whose ``data``
is a read-only view straight into shared memory.  Nothing is copied on
the reader's side.

    import multiprocessing, numpy, shmfd

    def consumer(share):
        with shmfd.Reader.from_share(share) as reader:
            for msg in reader:                  # until the producer is gone
                with msg:
                    pts = numpy.frombuffer(msg.data, numpy.float64)
                    print(msg.seq, pts.reshape(-1, 2).sum(axis=0))
                    del pts                     # no view may outlive msg

    if __name__ == "__main__":
        with shmfd.Channel() as ch:
            p = multiprocessing.Process(target=consumer, args=(ch.share(),))
            p.start()
            ch.wait_readers(1)
            ch.send(numpy.arange(20000, dtype=numpy.float64))
        p.join()

Errors are OSError subclasses with errno set: TimeoutError,
BrokenPipeError (the producer is gone), PermissionError,
FileNotFoundError, BlockingIOError (timeout 0), ConnectionResetError (the
producer dropped this reader), :class:`ProtocolError`, and
:class:`ArgumentError`, which is also a ValueError.

Handles are for one process: a child started with the fork method must
not use its parent's Channel or Reader; it joins with
``Reader.from_share(share)``.
"""

import asyncio
import ctypes
import errno
import itertools
import multiprocessing.reduction
import operator
import os
import select
import sys
import threading
import time
import weakref

from . import _lib
from ._lib import ArgumentError, ProtocolError

__all__ = ["Channel", "Reader", "Message", "Share", "Reservation", "Blob",
           "ProtocolError", "ArgumentError", "library_version",
           "LIBRARY_PATH"]

__version__ = "0.1.0"

#: The path of the libshmfd shared object that was loaded.
LIBRARY_PATH = _lib.LIBRARY

_c = _lib.lib
_EAGAIN = -errno.EAGAIN
_ETIMEDOUT = -errno.ETIMEDOUT
_ESTALE = -errno.ESTALE
# A blocking recv sleeps in the library this long at most at a time, and
# Python runs signal handlers (Ctrl-C) in between.
_WAIT_SLICE_MS = 50


def library_version():
    """The version of the loaded libshmfd, "MAJOR.MINOR.PATCH"."""
    return _c.shmfd_version().decode()


# ---- exposed memory --------------------------------------------------------
#
# Python code reaches shared memory only through a ctypes array placed on
# it and the memoryviews made from that array.  Every memoryview, numpy
# array or slice made from it holds a reference to the array (through its
# managed buffer), so the array's reference count tells whether any view
# is still alive (CPython).  Memory is unmapped only when no view is
# left: an explicit release refuses (BufferError) while views exist, and
# an object dropped while views exist lets go when the last view does.

_UBYTE = ctypes.c_ubyte


def _span(addr, length, owner):
    """A ctypes array over length bytes at addr that keeps owner (whatever
    must outlive the mapping's users) alive for as long as any view of it
    lives."""
    if length:
        arr = (_UBYTE * length).from_address(addr)
    else:
        arr = (_UBYTE * 0)()
    arr._shmfd_owner = owner
    return arr


def _view(arr, readonly):
    mv = memoryview(arr).cast("B")
    return mv.toreadonly() if readonly else mv


_VIEWS_ALIVE = ("%s: a view of its memory (a numpy array, a slice, a "
                "memoryview) is still alive: delete it first, or copy what "
                "you need")


def _retire(obj, what):
    """Invalidate obj._view and check that nothing else views obj._arr.

    Raises BufferError, leaving obj._arr in place, when a view made from
    it (a numpy array, a slice, a memoryview of a memoryview) is alive."""
    view = obj._view
    if view is not None:
        try:
            view.release()
        except BufferError:
            raise BufferError(_VIEWS_ALIVE % what) from None
        obj._view = None
    # obj._arr itself, and getrefcount's argument: 2.  More is a view.
    if sys.getrefcount(obj._arr) > 2:
        raise BufferError(_VIEWS_ALIVE % what)


def _pid_check(pid, what):
    if os.getpid() != pid:
        raise RuntimeError(
            "%s belongs to process %d: a child must not use its parent's "
            "handles; pass Channel.share() to it and open a Reader "
            "there" % (what, pid))


def _bytes_of(obj):
    """A C-contiguous unsigned-byte memoryview of any buffer object."""
    mv = memoryview(obj)
    if mv.c_contiguous:
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        return mv
    return memoryview(mv.tobytes())     # strided: one copy, unavoidable


# ---- producer --------------------------------------------------------------

class _ChanHandle:
    """The C channel; closed once nothing refers to it: the Channel, a
    pending reservation, or a leftover view of ring memory."""
    __slots__ = ("ptr", "pid", "__weakref__")

    def __init__(self, ptr):
        self.ptr = ptr
        self.pid = os.getpid()

    def close(self):
        if self.ptr and os.getpid() == self.pid:
            _c.shmfd_chan_close(self.ptr)
        self.ptr = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Share:
    """A way into a channel for another process, from
    :meth:`Channel.share`.

    Pass it to ``multiprocessing.Process(args=...)`` (any start method:
    fork, spawn, forkserver) or through a multiprocessing queue or pipe;
    the receiving process joins with :meth:`Reader.from_share`.  Pickling
    it hands its file descriptor over with multiprocessing's own fd
    passing (``multiprocessing.reduction.DupFd``), as multiprocessing
    does for sockets.  Any number of readers may join through one Share.
    """
    __slots__ = ("_fd", "__weakref__")

    def __init__(self, fd):
        self._fd = fd

    def fileno(self):
        """The underlying file descriptor (see shmfd_chan_share_fd(3))."""
        if self._fd < 0:
            raise ValueError("share is closed")
        return self._fd

    def close(self):
        """Close this process's file descriptor of the share."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __reduce__(self):
        return _rebuild_share, (multiprocessing.reduction.DupFd(
            self.fileno()),)

    def __repr__(self):
        return "<shmfd.Share fd=%d>" % self._fd


def _rebuild_share(dupfd):
    return Share(dupfd.detach())


class Reservation:
    """Room for one message inside the ring, from :meth:`Channel.reserve`.

    ``buffer`` is a writable memoryview (format 'B') of the reserved
    bytes: build the message there, then :meth:`commit`.  As a context
    manager it yields ``buffer`` and commits all of it on a normal exit.
    If the block raises, nothing is published: the reservation is kept
    and the channel's next send or reserve reuses it.

    Commit refuses (BufferError) while a view made from ``buffer`` (a
    numpy array, a slice) is alive: readers must not see bytes that can
    still change.  ``buffer`` itself is invalidated by the commit.
    """
    __slots__ = ("_chan", "_addr", "_arr", "_view", "_len", "_done",
                 "__weakref__")

    def __init__(self, chan, addr, length):
        self._chan = chan
        self._addr = addr
        self._len = length
        self._arr = _span(addr, length, chan._handle)
        self._view = None
        self._done = False

    @property
    def buffer(self):
        """Writable memoryview of the reserved bytes."""
        if self._done:
            raise ValueError("reservation already committed")
        if self._view is None:
            self._view = _view(self._arr, False)
        return self._view

    def __len__(self):
        """The reserved size in bytes."""
        return self._len

    def commit(self, length=None):
        """Publish the first length bytes (default: all) as one message.

        Raises BufferError, publishing nothing, while views of ``buffer``
        are alive, and ValueError if length exceeds the reservation."""
        if self._done:
            raise ValueError("reservation already committed")
        if length is None:
            length = self._len
        if not 0 <= length <= self._len:
            raise ValueError("commit of %d bytes: reserved %d"
                             % (length, self._len))
        _retire(self, "reservation")
        self._chan._commit(self, length)

    def _finish(self):
        self._done = True
        self._arr = None

    def __enter__(self):
        """The writable buffer; leaving the block commits it."""
        return self.buffer

    def __exit__(self, exc_type, exc, tb):
        """Commit all of the buffer, or keep the reservation for the
        channel's next send when the block raised."""
        if exc_type is None:
            self.commit()
        else:
            self._chan._abort(self)


class _BlobHandle:
    """A C blob, freed once nothing refers to it any more."""
    __slots__ = ("ptr", "pid", "__weakref__")

    def __init__(self, ptr):
        self.ptr = ptr
        self.pid = os.getpid()

    def free(self):
        if self.ptr and os.getpid() == self.pid:
            _c.shmfd_blob_free(self.ptr)
        self.ptr = None

    def __del__(self):
        try:
            self.free()
        except Exception:
            pass


class Blob:
    """A message with shared memory of its own, built in place and sent
    sealed with :meth:`Channel.send_blob`: nobody copies its bytes, and
    after the send nobody (the producer included) can change them.

    ``Blob(size)`` makes a zero-filled blob of exactly size bytes (its
    memory is allocated page by page as it is written; see
    shmfd_blob_create(3)).  ``data`` is a writable memoryview of it.  It
    is not tied to a channel until sent.  :meth:`close` (or leaving a
    ``with`` block) frees a blob that was not sent.

    Sending or closing refuses (BufferError) while a view made from
    ``data`` is alive, since the blob's mapping goes away then.  The
    mapping is not inherited by forked children (MADV_DONTFORK).
    """
    __slots__ = ("_handle", "_arr", "_view", "_size", "_pid")

    def __init__(self, size):
        size = operator.index(size)
        if size <= 0:
            raise ValueError("blob size must be positive, not %d" % size)
        ptr = ctypes.c_void_p()
        _lib.check(_c.shmfd_blob_create(ctypes.byref(ptr), size),
                   "shmfd_blob_create")
        self._handle = _BlobHandle(ptr.value)
        self._size = size
        self._pid = os.getpid()
        self._arr = _span(_c.shmfd_blob_data(ptr), size, self._handle)
        self._view = None

    @property
    def data(self):
        """Writable memoryview (format 'B') of the blob's bytes."""
        if self._arr is None:
            raise ValueError("blob was sent or closed")
        _pid_check(self._pid, "this blob")
        if self._view is None:
            self._view = _view(self._arr, False)
        return self._view

    def __len__(self):
        """The blob's size in bytes."""
        return self._size

    def _retire(self):
        if self._arr is None:
            raise ValueError("blob was sent or closed")
        _retire(self, "blob")

    def close(self):
        """Free the blob unless it was sent.  BufferError while views of
        ``data`` are alive."""
        if self._arr is None:
            return
        self._retire()
        self._arr = None
        self._handle.free()

    def __enter__(self):
        """The blob itself; leaving the block frees it unless sent."""
        return self

    def __exit__(self, exc_type, exc, tb):
        """Free the blob unless it was sent (see close)."""
        self.close()


class Channel:
    """The producer end of a channel: one producer, any number of readers.

    ``Channel(name=None, *, lossy=False, ring_size=None, max_inline=None,
    max_readers=None, mode=None)``

    name: a named channel, which any process of an allowed user joins
    with ``Reader(name)``; None (the default) makes an anonymous one,
    which other processes join through :meth:`share`.
    lossy: the producer never waits; readers that fall behind skip ahead
    (``Message.lost``).  By default (reliable) a full ring makes send wait
    up to its timeout for the slowest reader.
    ring_size: bytes of ring (default 4 MiB, at least 64 KiB; rounded up
    to a power of two).  max_inline: messages above it travel as sealed
    blobs (default ring_size / 4).  max_readers: default 64.  mode: who
    may join a named channel (default 0o600, this user).

    A reader receives the messages sent after it joined; use
    :meth:`wait_readers` before sending to readers that are starting up.
    The channel is closed by :meth:`close`, by leaving a ``with`` block,
    or when it is garbage collected; readers then receive what was sent
    and get BrokenPipeError.
    """

    def __init__(self, name=None, *, lossy=False, ring_size=None,
                 max_inline=None, max_readers=None, mode=None):
        params = _lib.Params()
        for field, value in (("ring_size", ring_size),
                             ("max_inline", max_inline),
                             ("max_readers", max_readers),
                             ("mode", mode)):
            if value is None:
                continue
            if not isinstance(value, int) or value <= 0:
                raise ValueError("%s must be a positive int, not %r"
                                 % (field, value))
            setattr(params, field, value)
        if lossy:
            params.flags = _lib.LOSSY
        if name is not None:
            if not isinstance(name, str) or not name:
                raise ValueError("name must be a non-empty str or None")
            cname = os.fsencode(name)
        else:
            cname = None
        ptr = ctypes.c_void_p()
        _lib.check(_c.shmfd_chan_create(ctypes.byref(ptr), cname,
                                        ctypes.byref(params)),
                   "shmfd_chan_create", name)
        self._handle = _ChanHandle(ptr.value)
        self._ptr = ptr.value
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self._share = None
        self._pending = None        # the Reservation not yet committed
        self._spare = None          # (addr, size) left by an aborted one
        self._lingering = []        # weakrefs: views kept past an abort
        self.name = name
        self.lossy = bool(lossy)

    # -- state --

    def _ready(self):
        if self._ptr is None:
            raise ValueError("channel is closed")
        if os.getpid() != self._pid:
            _pid_check(self._pid, "this Channel")

    @property
    def closed(self):
        """True once the channel was closed."""
        return self._ptr is None

    @property
    def readers(self):
        """The number of readers joined now."""
        self._ready()
        return _lib.check(_c.shmfd_chan_readers(self._ptr),
                          "shmfd_chan_readers")

    def wait_readers(self, count=1, timeout=None):
        """Wait until at least count readers have joined (polls every
        millisecond; the library has no wake-up for joins).  Raises
        TimeoutError after timeout seconds (None: wait forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.readers < count:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(errno.ETIMEDOUT,
                                   "%d of %d readers joined"
                                   % (self.readers, count))
            time.sleep(0.001)

    def share(self):
        """A :class:`Share` for other processes to join this channel.

        The same Share every time; it is closed with the channel, so pass
        it to processes (Process(args=...), a queue) while the channel is
        open."""
        self._ready()
        with self._lock:
            if self._share is None:
                fd = _lib.check(_c.shmfd_chan_share_fd(self._ptr),
                                "shmfd_chan_share_fd")
                self._share = Share(fd)
            return self._share

    # -- sending --

    def send(self, obj, timeout=None):
        """Send a bytes-like object as one message.

        Any object with the buffer protocol: bytes, bytearray, memoryview,
        array.array, a numpy array (its raw bytes; non-contiguous arrays
        are copied once first).  Nothing is pickled: the bytes are copied
        once into the ring, or, above max_inline, into a sealed blob.
        timeout (seconds, None: forever, 0: never wait) bounds the wait
        for ring space in a reliable channel: TimeoutError, or
        BlockingIOError for 0.  A lossy channel never waits."""
        ms = _lib.timeout_ms(timeout)
        self._ready()
        if type(obj) is bytes:
            n = len(obj)
            with self._lock:
                if self._spare is not None and self._fill_spare(obj, n):
                    return
                ret = _c.shmfd_send(self._ptr, obj, n, ms)
            _lib.check(ret, "shmfd_send")
            return
        mv = _bytes_of(obj)
        n = mv.nbytes
        with self._lock:
            if self._spare is not None and self._fill_spare(mv, n):
                return
            if n == 0:
                ret = _c.shmfd_send(self._ptr, None, 0, ms)
            elif not mv.readonly:
                ret = _c.shmfd_send(self._ptr,
                                    (ctypes.c_char * n).from_buffer(mv),
                                    n, ms)
            else:
                ret = self._send_copy(mv, n, ms)
        _lib.check(ret, "shmfd_send")

    def _send_copy(self, mv, n, ms):
        """A read-only buffer ctypes cannot point at: copy it into the
        ring ourselves, or into a blob above max_inline."""
        buf = ctypes.c_void_p()
        ret = _c.shmfd_reserve(self._ptr, n, ctypes.byref(buf), ms)
        if ret == -errno.EMSGSIZE:
            blob = Blob(n)
            blob.data[:] = mv
            return self._send_blob(blob, ms)
        if ret < 0:
            return ret
        _view(_span(buf.value, n, None), False)[:] = mv
        return _c.shmfd_commit(self._ptr, n)

    def _send_ptr(self, addr, n, timeout=None):
        """Send n bytes at address addr (for shmfd.qt)."""
        ms = _lib.timeout_ms(timeout)
        self._ready()
        with self._lock:
            if self._spare is not None:
                self._flush_spare()
            ret = _c.shmfd_send(self._ptr, addr, n, ms)
        _lib.check(ret, "shmfd_send")

    def reserve(self, size, timeout=None):
        """Reserve size bytes inside the ring to build a message in place.

        Returns a :class:`Reservation`; as a context manager it yields a
        writable memoryview and commits on exit::

            with ch.reserve(16) as buf:
                buf[:] = b"built in place.."

        size is at most max_inline (ArgumentError, a ValueError, above).
        One reservation at a time: until it is committed, another reserve
        raises OSError(EBUSY).  timeout as for :meth:`send`."""
        if not isinstance(size, int) or size < 0:
            raise ValueError("size must be an int >= 0, not %r" % (size,))
        ms = _lib.timeout_ms(timeout)
        self._ready()
        with self._lock:
            if self._pending is not None:
                raise OSError(errno.EBUSY,
                              "shmfd_reserve: a reservation is pending")
            spare = self._spare
            if spare is not None:
                if size <= spare[1]:
                    self._spare = None
                    self._pending = Reservation(self, spare[0], size)
                    return self._pending
                self._flush_spare()
            buf = ctypes.c_void_p()
            _lib.check(_c.shmfd_reserve(self._ptr, size, ctypes.byref(buf),
                                        ms), "shmfd_reserve")
            self._pending = Reservation(self, buf.value, size)
            return self._pending

    def _commit(self, res, length):
        with self._lock:
            if self._pending is not res or self._ptr is None:
                res._finish()
                raise ValueError("the channel of this reservation is closed")
            ret = _c.shmfd_commit(self._ptr, length)
            res._finish()
            self._pending = None
        _lib.check(ret, "shmfd_commit")

    def _abort(self, res):
        """A reservation whose with-block raised: the library cannot take
        it back, so keep it for the next send or reserve."""
        with self._lock:
            if self._pending is not res:
                return
            self._pending = None
            try:
                _retire(res, "reservation")
            except BufferError:
                # Views of the ring outlive the block: close() must not
                # unmap the ring under them.
                self._lingering.append(weakref.ref(res._arr))
            self._spare = (res._addr, res._len)
            res._finish()

    def _fill_spare(self, src, n):
        """Send n bytes of src through the aborted reservation if they fit
        (True); otherwise publish it empty so that the library takes
        sends again (False)."""
        addr, size = self._spare
        if n > size:
            self._flush_spare()
            return False
        self._spare = None
        if n:
            _view(_span(addr, n, None), False)[:] = src
        _lib.check(_c.shmfd_commit(self._ptr, n), "shmfd_commit")
        return True

    def _flush_spare(self):
        self._spare = None
        _lib.check(_c.shmfd_commit(self._ptr, 0), "shmfd_commit")

    def send_blob(self, obj, timeout=None):
        """Send a message as a sealed blob, whatever its size.

        obj is a :class:`Blob`, which is sealed and sent without a copy
        (and consumed: its data is gone from this process afterwards), or
        any bytes-like object, copied once into a new blob.  Readers get
        a read-only mapping of the blob (``Message.is_blob``) that no one
        can change, which they may keep after the producer exits.
        timeout as for :meth:`send`."""
        ms = _lib.timeout_ms(timeout)
        self._ready()
        if not isinstance(obj, Blob):
            mv = _bytes_of(obj)
            if mv.nbytes == 0:
                raise ValueError("a blob cannot be empty")
            blob = Blob(mv.nbytes)
            blob.data[:] = mv
            obj = blob
        with self._lock:
            if self._spare is not None:
                self._flush_spare()
            ret = self._send_blob(obj, ms)
        _lib.check(ret, "shmfd_send_blob")

    def _send_blob(self, blob, ms):
        blob._retire()
        ret = _c.shmfd_send_blob(self._ptr, blob._handle.ptr, ms)
        if ret == 0:
            blob._arr = None
            blob._handle.ptr = None     # consumed by the library
        return ret

    # -- lifetime --

    def close(self):
        """Close the channel: readers receive what was sent, then
        BrokenPipeError.  Raises BufferError, and stays open, while a view
        of a pending reservation's buffer is alive."""
        with self._lock:
            if self._ptr is None:
                return
            if os.getpid() != self._pid:
                # A forked child's copy: never close the parent's channel.
                self._ptr = None
                self._handle.ptr = None
                return
            if any(ref() is not None for ref in self._lingering):
                raise BufferError(_VIEWS_ALIVE % "a reservation left by an "
                                  "exception")
            res = self._pending
            if res is not None:
                _retire(res, "pending reservation")
                res._finish()
                self._pending = None
            self._spare = None
            if self._share is not None:
                self._share.close()
            self._ptr = None
            self._handle.close()

    def __enter__(self):
        """The channel itself; leaving the block closes it."""
        return self

    def __exit__(self, exc_type, exc, tb):
        """Close the channel (see close)."""
        self.close()

    def __repr__(self):
        state = "closed" if self._ptr is None else "open"
        return "<shmfd.Channel %s%s %s>" % (
            repr(self.name) if self.name else "anonymous",
            " lossy" if self.lossy else "", state)


# ---- reader ----------------------------------------------------------------

class _ReaderHandle:
    """The C reader and the messages it holds.

    Each held message is keyed in ``held`` by a number, with its struct
    shmfd_msg, a weak reference to the array that exposes its bytes, and
    a weak reference to its Message.  When the array dies (its Message
    and every view of it gone) a weakref callback releases the message.
    The array keeps this handle alive, so the reader is closed only once
    no view of its memory is left.  ``lock`` serialises the C calls: a
    release may come from the garbage collector in any thread.
    """
    __slots__ = ("ptr", "pid", "lock", "held", "keys", "spin_us",
                 "pollfd", "poller", "__weakref__")

    def __init__(self, ptr):
        self.ptr = ptr
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.held = {}
        self.keys = itertools.count()
        self.spin_us = 0
        self.pollfd = -1
        self.poller = None

    def release(self, key):
        """Release the held message key: 0, -ESTALE, or 0 if it is gone
        already (the reader closed, or a forked child's copy)."""
        with self.lock:
            entry = self.held.pop(key, None)
            if entry is None or not self.ptr or os.getpid() != self.pid:
                return 0
            return _c.shmfd_msg_release(self.ptr, ctypes.byref(entry[0]))

    def close(self):
        with self.lock:
            if self.ptr and os.getpid() == self.pid:
                _c.shmfd_reader_close(self.ptr)
            self.ptr = None
            self.held.clear()
            self.poller = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _reaper(handle_ref, key):
    def reap(_):
        handle = handle_ref()
        if handle is not None:
            try:
                handle.release(key)
            except Exception:
                pass
    return reap


class Message:
    """One received message: a zero-copy view of shared memory.

    ``data`` is a read-only memoryview (format 'B') of the message's bytes
    where they lie in the producer's ring or blob; use it directly, or
    ``numpy.frombuffer(msg.data, dtype)``, ``bytes(msg.data)``.  On Python
    3.12 and later the message is a buffer itself: ``memoryview(msg)``.

    ``seq`` numbers the channel's messages 1, 2, 3...; ``lost`` counts the
    messages this reader skipped just before this one (lossy channels,
    ``latest=True``); ``is_blob`` tells a message that came as a sealed
    blob, whose memfd is ``fd`` until the release.

    The message stays held, and its memory mapped, until :meth:`release`
    or the end of a ``with`` block.  Both refuse with BufferError while a
    view made from ``data`` (a numpy array, a slice) is still alive, and
    the message stays held: delete such views first, or copy what you
    need.  ``data`` itself is invalidated.  After the release, ``data``
    raises ValueError; memory that may be unmapped is never touched.  A
    message that is simply dropped is released once its last view is
    gone.  In a reliable channel held messages keep the producer from
    reusing their ring space: release them promptly.
    """
    __slots__ = ("seq", "lost", "is_blob", "stale", "_handle", "_key",
                 "_cmsg", "_arr", "_view", "_len", "__weakref__")

    def __init__(self, handle, cmsg):
        # Called with handle.lock held, right after shmfd_recv.
        self.seq = cmsg.seq
        self.lost = cmsg.lost
        self.is_blob = bool(cmsg.flags & _lib.MSG_BLOB)
        self.stale = None
        self._handle = handle
        self._cmsg = cmsg
        self._len = cmsg.len
        self._view = None
        key = next(handle.keys)
        self._key = key
        arr = self._arr = _span(cmsg.data, cmsg.len, handle)
        handle.held[key] = (cmsg, weakref.ref(arr, _reaper(
            weakref.ref(handle), key)), weakref.ref(self))

    @property
    def released(self):
        """True once the message was released."""
        return self._arr is None

    @property
    def data(self):
        """Read-only memoryview of the message's bytes, in place."""
        if self._arr is None:
            raise ValueError("message %d was released" % self.seq)
        view = self._view
        if view is None:
            view = self._view = _view(self._arr, True)
        return view

    def __len__(self):
        """The message's length in bytes."""
        return self._len

    @property
    def fd(self):
        """A blob's sealed memfd, or -1.  It belongs to the reader and is
        closed by the release: os.dup() it to keep the blob."""
        if self._arr is None:
            raise ValueError("message %d was released" % self.seq)
        return self._cmsg.fd

    def tobytes(self):
        """A copy of the message's bytes."""
        return bytes(self.data)

    def release(self):
        """Give the message back.  Returns True, or False when the
        producer overwrote it while it was held (lossy channel): then what
        was read from it may be torn and must be discarded (``stale`` says
        the same afterwards).  Raises BufferError while views of ``data``
        are alive; releasing twice is harmless."""
        if self._arr is None:
            return not self.stale
        _retire(self, "message %d" % self.seq)
        ret = self._handle.release(self._key)
        self._arr = None
        self.stale = ret == _ESTALE
        if ret < 0 and ret != _ESTALE:
            raise _lib.error(ret, "shmfd_msg_release")
        return not self.stale

    def _detach(self):
        """The reader released us (close): forget the memory."""
        self._view = None
        self._arr = None

    def __enter__(self):
        """The message itself; leaving the block releases it."""
        return self

    def __exit__(self, exc_type, exc, tb):
        """Release the message (see release); when the block raised,
        a BufferError from live views does not mask that exception
        (the message is then released once its views are gone)."""
        if exc_type is None:
            self.release()
            return
        # Leaving on an exception: do not mask it with a BufferError;
        # a message whose views live on is released when they die.
        try:
            self.release()
        except BufferError:
            pass

    if sys.version_info >= (3, 12):
        def __buffer__(self, flags):
            """PEP 688: memoryview(msg), numpy.frombuffer(msg)."""
            if self._arr is None:
                raise ValueError("message %d was released" % self.seq)
            return _view(self._arr, True)

        def __release_buffer__(self, view):
            view.release()

    def __repr__(self):
        return "<shmfd.Message seq=%d len=%d lost=%d%s%s>" % (
            self.seq, self._len, self.lost, " blob" if self.is_blob else "",
            " released" if self._arr is None else "")


class Reader:
    """A reader of a channel: ``Reader(name)`` joins a named channel,
    :meth:`from_share` one passed down by its producer.

    from_oldest: start at the oldest message still in the ring instead of
    the next one sent (blobs published before the join are skipped and
    counted as lost).

    :meth:`recv` returns :class:`Message` objects; iterating over the
    reader receives until the producer is gone.  :meth:`fileno` is a file
    descriptor for event loops (asyncio's ``loop.add_reader``,
    ``selectors``, Qt's ``QSocketNotifier``), readable when a message or
    the producer's end is there; :meth:`arecv` is the asyncio form of
    :meth:`recv`.  Close with :meth:`close` or a ``with`` block.
    """

    def __init__(self, name, *, from_oldest=False):
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty str (for a Share, "
                             "use Reader.from_share)")
        ptr = ctypes.c_void_p()
        _lib.check(_c.shmfd_reader_open(ctypes.byref(ptr),
                                        os.fsencode(name),
                                        _lib.FROM_OLDEST if from_oldest
                                        else 0),
                   "shmfd_reader_open", name)
        self._init(ptr.value, name)

    @classmethod
    def from_share(cls, share, *, from_oldest=False):
        """Join through a :class:`Share` from :meth:`Channel.share`,
        typically received as an argument of a child process.  The share
        stays usable: the reader takes its own duplicate of it."""
        if not isinstance(share, Share):
            raise TypeError("from_share() takes a shmfd.Share, not %s"
                            % type(share).__name__)
        fd = os.dup(share.fileno())     # close-on-exec, like the original
        ptr = ctypes.c_void_p()
        ret = _c.shmfd_reader_open_fd(ctypes.byref(ptr), fd,
                                      _lib.FROM_OLDEST if from_oldest else 0)
        if ret < 0:
            os.close(fd)                # ours again on failure
            raise _lib.error(ret, "shmfd_reader_open_fd")
        self = cls.__new__(cls)
        self._init(ptr.value, None)
        return self

    def _init(self, ptr, name):
        self._handle = _ReaderHandle(ptr)
        self._pid = os.getpid()
        self.name = name

    def _ready(self):
        handle = self._handle
        if handle.ptr is None:
            raise ValueError("reader is closed")
        if os.getpid() != self._pid:
            _pid_check(self._pid, "this Reader")
        return handle

    @property
    def closed(self):
        """True once the reader was closed."""
        return self._handle.ptr is None

    # -- receiving --

    def _recv_once(self, handle, flags, ms):
        cmsg = _lib.Msg()
        with handle.lock:
            if handle.ptr is None:
                raise ValueError("reader is closed")
            ret = _c.shmfd_recv(handle.ptr, ctypes.byref(cmsg), flags, ms)
            if ret == 0:
                return Message(handle, cmsg)
        if ret == _EAGAIN or ret == _ETIMEDOUT:
            return None
        raise _lib.error(ret, "shmfd_recv", self.name)

    def try_recv(self, latest=False):
        """The next message if one is there now, else None (never waits).
        Raises BrokenPipeError once the producer is gone and everything
        it sent was received."""
        return self._recv_once(self._ready(), _lib.RECV_LATEST if latest
                               else 0, 0)

    def recv(self, timeout=None, latest=False):
        """Receive the next message, waiting up to timeout seconds (None:
        as long as needed; 0: not at all).

        latest=True skips to the newest message (``Message.lost`` counts
        the skipped ones).  Raises TimeoutError when nothing came in time
        (BlockingIOError for timeout 0), BrokenPipeError when the producer
        closed the channel or died and everything it sent was received,
        ConnectionResetError when the producer dropped this reader.

        After the library's spin (:attr:`spin`), the wait sleeps in the
        library in slices of at most 50 ms, between which Python runs
        signal handlers (Ctrl-C) and another thread may close the reader
        (this recv then raises ValueError).  Sleeping in the library lets
        a producer that reserves a large message wake this reader while
        it builds the message (shmfd_reserve(3)).  While this reader holds
        messages it sleeps in poll(2) on :meth:`fileno` instead, so that
        releasing one from another thread never waits for a slice; once
        the reader has a poll fd, early wake-ups no longer reach it."""
        handle = self._ready()
        flags = _lib.RECV_LATEST if latest else 0
        if timeout is None:
            deadline = None
        else:
            if timeout < 0:
                raise ValueError("timeout must be None or >= 0 seconds")
            deadline = time.monotonic() + timeout
        # A spinning reader lets the library spin, and then sleep at most
        # a millisecond, before the interruptible wait below.
        first = 0
        if handle.spin_us and timeout != 0:
            first = _lib.timeout_ms(handle.spin_us / 1e6)
            if deadline is not None:
                first = min(first, _lib.timeout_ms(timeout))
        msg = self._recv_once(handle, flags, first)
        if msg is not None:
            return msg
        if timeout == 0:
            raise BlockingIOError(errno.EAGAIN,
                                  "shmfd_recv: no message ready")
        while True:
            left = None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(errno.ETIMEDOUT,
                                       "shmfd_recv: no message within %gs"
                                       % timeout)
            if handle.held:
                poller = handle.poller or self._poller(handle)
                poller.poll(-1 if left is None else _lib.timeout_ms(left))
                msg = self._recv_once(handle, flags, 0)
            else:
                ms = _WAIT_SLICE_MS
                if left is not None:
                    ms = min(ms, _lib.timeout_ms(left))
                msg = self._recv_slice(handle, flags, ms)
            if msg is not None:
                return msg

    def _recv_slice(self, handle, flags, ms):
        """One slice of a blocking wait in the library, without the spin,
        which the first look did."""
        with handle.lock:
            if handle.spin_us and handle.ptr is not None:
                _c.shmfd_reader_set_spin(handle.ptr, 0)
            try:
                return self._recv_once(handle, flags, ms)
            finally:
                if handle.spin_us and handle.ptr is not None:
                    _c.shmfd_reader_set_spin(handle.ptr, handle.spin_us)

    def _poller(self, handle):
        poller = select.poll()
        poller.register(self.fileno(), select.POLLIN)
        handle.poller = poller
        return poller

    def __iter__(self):
        """Receive messages until the producer is gone (BrokenPipeError
        ends the iteration)."""
        while True:
            try:
                msg = self.recv()
            except BrokenPipeError:
                return
            yield msg

    async def arecv(self, latest=False):
        """recv() for asyncio: waits on :meth:`fileno` with the running
        loop's add_reader.  Use asyncio.wait_for() for a timeout."""
        handle = self._ready()
        flags = _lib.RECV_LATEST if latest else 0
        msg = self._recv_once(handle, flags, 0)
        if msg is not None:
            return msg
        loop = asyncio.get_running_loop()
        fd = self.fileno()
        while True:
            ready = loop.create_future()
            loop.add_reader(fd, _wake, ready)
            try:
                await ready
            finally:
                loop.remove_reader(fd)
            msg = self._recv_once(handle, flags, 0)
            if msg is not None:
                return msg

    def __aiter__(self):
        """``async for msg in reader``: until the producer is gone."""
        return self._aiter()

    async def _aiter(self):
        while True:
            try:
                msg = await self.arecv()
            except BrokenPipeError:
                return
            yield msg

    def fileno(self):
        """A file descriptor that is readable when :meth:`try_recv` would
        return a message or raise (the producer is gone), for select,
        poll, epoll, asyncio, selectors or QSocketNotifier.  After it
        fires, receive with try_recv() until it returns None.  Owned by
        the reader: do not read, write or close it."""
        handle = self._ready()
        if handle.pollfd < 0:
            with handle.lock:
                handle.pollfd = _lib.check(_c.shmfd_reader_pollfd(handle.ptr),
                                           "shmfd_reader_pollfd")
        return handle.pollfd

    @property
    def spin(self):
        """Microseconds to spin for the next message before sleeping
        (default 0, at most 1,000,000): for readers that expect data soon.
        """
        return self._handle.spin_us

    @spin.setter
    def spin(self, usec):
        handle = self._ready()
        if not isinstance(usec, int) or not 0 <= usec <= 1000000:
            raise ValueError("spin must be an int of 0..1000000 "
                             "microseconds")
        with handle.lock:
            _lib.check(_c.shmfd_reader_set_spin(handle.ptr, usec),
                       "shmfd_reader_set_spin")
        handle.spin_us = usec

    # -- lifetime --

    def close(self):
        """Leave the channel, releasing every held message.

        Raises BufferError, and stays open, while a view of a held
        message's data is alive; messages without views are released
        (their ``data`` raises ValueError afterwards)."""
        handle = self._handle
        with handle.lock:
            if handle.ptr is None:
                return
            if os.getpid() != self._pid:
                handle.ptr = None       # a forked child's copy
                return
            msgs = []
            for key, (cmsg, arr_ref, msg_ref) in list(handle.held.items()):
                msg = msg_ref()
                if msg is not None and msg._arr is not None:
                    _retire(msg, "message %d" % msg.seq)
                    msgs.append(msg)
                elif arr_ref() is not None:
                    raise BufferError(
                        "a view of a received message's data is still "
                        "alive; delete it before closing the reader")
            for msg in msgs:
                msg._detach()
            handle.close()

    def __enter__(self):
        """The reader itself; leaving the block closes it."""
        return self

    def __exit__(self, exc_type, exc, tb):
        """Close the reader (see close)."""
        self.close()

    def __repr__(self):
        return "<shmfd.Reader %s%s>" % (
            repr(self.name) if self.name else "of a share",
            " closed" if self._handle.ptr is None else "")


def _wake(future):
    if not future.done():
        future.set_result(None)
