# SPDX-License-Identifier: MIT
"""Qt polygons over shmfd channels, with PyQt5 or PyQt6.

A QPolygonF keeps its points in one contiguous array of (x, y) doubles.
:func:`send_polygon` sends that array as it lies in memory, and
:func:`to_polygon` makes a QPolygonF of a received message with one
memmove into a polygon of the right size: no Python work per point on
either side (a list of QPointF is turned into a QPolygonF by Qt first).

    # producer                              # consumer
    shmfd.qt.send_polygon(ch, polygon)      poly = shmfd.qt.recv_polygon(r)

:func:`notifier` receives in a Qt event loop through QSocketNotifier.
The binding is PyQt6 if the program imported it and not PyQt5, else
PyQt5, else PyQt6; importing this module raises ImportError when neither
is installed.
"""

import ctypes
import sys

if "PyQt6" in sys.modules and "PyQt5" not in sys.modules:
    _order = ("PyQt6", "PyQt5")
else:
    _order = ("PyQt5", "PyQt6")
for _api in _order:
    try:
        if _api == "PyQt5":
            from PyQt5.QtCore import QPointF, QSocketNotifier
            from PyQt5.QtGui import QPolygonF
        else:
            from PyQt6.QtCore import QPointF, QSocketNotifier
            from PyQt6.QtGui import QPolygonF
        break
    except ImportError:
        continue
else:
    raise ImportError("shmfd.qt needs PyQt5 or PyQt6 (Debian: apt install "
                      "python3-pyqt5)")

# QPointF and QPolygonF are those of the binding in use.
__all__ = ["send_polygon", "to_polygon", "recv_polygon", "notifier",
           "QT_API", "POINT_SIZE", "QPointF", "QPolygonF"]

#: The Qt binding in use: "PyQt5" or "PyQt6".
QT_API = _api
#: Bytes per point: a QPointF is two qreal (double) coordinates.
POINT_SIZE = 2 * ctypes.sizeof(ctypes.c_double)

try:
    _READ = QSocketNotifier.Type.Read
except AttributeError:          # PyQt5 before scoped enums
    _READ = QSocketNotifier.Read


def _new_polygon(n):
    """An n-point QPolygonF whose points are about to be overwritten."""
    if hasattr(QPolygonF, "resize"):    # PyQt6: QPolygonF is a QList
        poly = QPolygonF()
        poly.resize(n)
        return poly
    return QPolygonF(n)                 # PyQt5: QVector(int size)


def send_polygon(channel, points, timeout=None):
    """Send a QPolygonF, or a sequence of QPointF, as one message of
    len(points) * 16 bytes: the polygon's point array, copied once into
    the ring (or a blob if larger than max_inline).  timeout as for
    :meth:`shmfd.Channel.send`."""
    poly = points if isinstance(points, QPolygonF) else QPolygonF(points)
    n = poly.size()
    if n == 0:
        channel._send_ptr(None, 0, timeout)
        return
    # data() detaches an implicitly shared polygon (one copy by Qt) and
    # gives the address of its contiguous QPointF array.
    channel._send_ptr(int(poly.data()), n * POINT_SIZE, timeout)


def to_polygon(msg):
    """A new QPolygonF holding the points of a received message (from
    :func:`send_polygon`, or any array of (x, y) doubles).  Raises
    ValueError when the message's length is not a whole number of
    points.  The message stays held: release it as usual."""
    length = len(msg)
    if length % POINT_SIZE:
        raise ValueError("message %d has %d bytes: not a whole number of "
                         "%d-byte points" % (msg.seq, length, POINT_SIZE))
    n = length // POINT_SIZE
    poly = _new_polygon(n)
    if n:
        if msg.released:
            raise ValueError("message %d was released" % msg.seq)
        ctypes.memmove(int(poly.data()), msg._cmsg.data, length)
    return poly


def recv_polygon(reader, timeout=None, latest=False):
    """Receive the next message as a QPolygonF and release it.
    Arguments and errors as for :meth:`shmfd.Reader.recv`."""
    msg = reader.recv(timeout=timeout, latest=latest)
    try:
        return to_polygon(msg)
    finally:
        msg.release()


def notifier(reader, on_message, on_closed=None, parent=None):
    """Receive in the Qt event loop: a QSocketNotifier on the reader's
    :meth:`~shmfd.Reader.fileno` that calls on_message(msg) for each
    message as it arrives, then releases it (unless on_message did, or
    kept views of it).  When the producer is gone, or on any other error,
    the notifier disables itself and calls on_closed(exc).  Keep a
    reference to the returned notifier (or give it a parent)."""
    note = QSocketNotifier(reader.fileno(), _READ, parent)

    def ready(*_):
        while True:
            try:
                msg = reader.try_recv()
            except Exception as exc:    # BrokenPipeError: producer gone
                note.setEnabled(False)
                if on_closed is not None:
                    on_closed(exc)
                return
            if msg is None:
                return
            on_message(msg)
            try:
                msg.release()
            except BufferError:
                pass    # views kept: released when the last one goes

    note.activated.connect(ready)
    return note
