# SPDX-License-Identifier: MIT
"""libshmfd through ctypes: finding the library, its prototypes, errors.

Private to the package: the public names are in shmfd/__init__.py.
"""

import ctypes
import ctypes.util
import errno
import os

__all__ = ["lib", "Msg", "Params", "ProtocolError", "ArgumentError",
           "check", "error", "timeout_ms", "LIBRARY"]


class Msg(ctypes.Structure):
    """struct shmfd_msg (shmfd.h); the library keeps private state in
    reserved[], so one instance per held message."""
    _fields_ = [("data", ctypes.c_void_p),
                ("len", ctypes.c_size_t),
                ("seq", ctypes.c_uint64),
                ("lost", ctypes.c_uint64),
                ("flags", ctypes.c_uint32),
                ("fd", ctypes.c_int),
                ("reserved", ctypes.c_uint64 * 3)]


class Params(ctypes.Structure):
    """struct shmfd_params (shmfd.h); all zero means the defaults."""
    _fields_ = [("ring_size", ctypes.c_size_t),
                ("max_inline", ctypes.c_size_t),
                ("max_readers", ctypes.c_uint32),
                ("flags", ctypes.c_uint32),
                ("mode", ctypes.c_uint)]        # mode_t on Linux


# shmfd.h flags
LOSSY = 1 << 0              # shmfd_params.flags
FROM_OLDEST = 1 << 0        # shmfd_reader_open*()
RECV_LATEST = 1 << 0        # shmfd_recv()
MSG_BLOB = 1 << 0           # shmfd_msg.flags

_SONAME = "libshmfd.so.0"


def _candidates():
    """Where to look for libshmfd, first match wins: $SHMFD_LIBRARY; the
    build tree this package sits in (bindings/python/shmfd -> lib/.libs),
    so tests and examples run before `make install`; the libdir configure
    chose; then the dynamic loader's own search and ldconfig's cache."""
    env = os.environ.get("SHMFD_LIBRARY")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "..", "..", "..", "lib", ".libs", _SONAME)
    try:
        from . import _paths
        yield os.path.join(_paths.LIBDIR, _SONAME)
    except ImportError:
        pass
    yield _SONAME
    found = ctypes.util.find_library("shmfd")
    if found:
        yield found


def _load():
    tried = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(path + " (no such file)")
            continue
        try:
            return ctypes.CDLL(path, use_errno=False), path
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    raise ImportError(
        "shmfd: cannot load libshmfd; install it (make install && ldconfig) "
        "or set SHMFD_LIBRARY to the path of libshmfd.so.0. Tried: "
        + "; ".join(tried))


lib, LIBRARY = _load()

_vp = ctypes.c_void_p
_int = ctypes.c_int
_size = ctypes.c_size_t
_PROTOS = {
    "shmfd_chan_create": (_int, [ctypes.POINTER(_vp), ctypes.c_char_p,
                                 ctypes.POINTER(Params)]),
    "shmfd_chan_share_fd": (_int, [_vp]),
    "shmfd_chan_readers": (_int, [_vp]),
    "shmfd_send": (_int, [_vp, _vp, _size, _int]),
    "shmfd_reserve": (_int, [_vp, _size, ctypes.POINTER(_vp), _int]),
    "shmfd_commit": (_int, [_vp, _size]),
    "shmfd_blob_create": (_int, [ctypes.POINTER(_vp), _size]),
    "shmfd_blob_data": (_vp, [_vp]),
    "shmfd_send_blob": (_int, [_vp, _vp, _int]),
    "shmfd_blob_free": (None, [_vp]),
    "shmfd_chan_close": (None, [_vp]),
    "shmfd_reader_open": (_int, [ctypes.POINTER(_vp), ctypes.c_char_p, _int]),
    "shmfd_reader_open_fd": (_int, [ctypes.POINTER(_vp), _int, _int]),
    "shmfd_recv": (_int, [_vp, ctypes.POINTER(Msg), _int, _int]),
    "shmfd_msg_release": (_int, [_vp, ctypes.POINTER(Msg)]),
    "shmfd_reader_pollfd": (_int, [_vp]),
    "shmfd_reader_set_spin": (_int, [_vp, ctypes.c_uint]),
    "shmfd_reader_close": (None, [_vp]),
    "shmfd_version": (ctypes.c_char_p, []),
}
for _name, (_res, _args) in _PROTOS.items():
    _f = getattr(lib, _name)
    _f.restype = _res
    _f.argtypes = _args


class ProtocolError(OSError):
    """A peer broke the libshmfd protocol (EPROTO): an unsealed or
    undersized memfd, an impossible ring header, a bad handshake.  The
    channel stays usable for everyone else."""


class ArgumentError(OSError, ValueError):
    """The library refused an argument (EINVAL, EMSGSIZE).  A ValueError,
    and an OSError whose errno says which."""


_CLASSES = {
    errno.EPROTO: ProtocolError,
    errno.EINVAL: ArgumentError,
    errno.EMSGSIZE: ArgumentError,
}


def error(ret, what, filename=None):
    """The exception for a -errno result of the C function `what`.

    OSError picks its subclass from errno itself: ETIMEDOUT gives
    TimeoutError, EPIPE BrokenPipeError, EACCES PermissionError, ENOENT
    FileNotFoundError, EAGAIN BlockingIOError, ECONNRESET
    ConnectionResetError.  EPROTO and EINVAL/EMSGSIZE get ours."""
    code = -ret
    cls = _CLASSES.get(code, OSError)
    msg = "%s: %s" % (what, os.strerror(code))
    if filename is not None:
        return cls(code, msg, filename)
    return cls(code, msg)


def check(ret, what, filename=None):
    """Return ret if it is not a -errno value, else raise its exception."""
    if ret < 0:
        raise error(ret, what, filename)
    return ret


_INT_MAX = 2**31 - 1


def timeout_ms(timeout):
    """Seconds (None: forever) as the library's timeout_ms, rounded up so
    that a wait never ends before the time asked."""
    if timeout is None:
        return -1
    if timeout < 0:
        raise ValueError("timeout must be None or >= 0 seconds, not %r"
                         % (timeout,))
    ms = int(timeout * 1000)
    if ms < timeout * 1000:
        ms += 1
    return min(ms, _INT_MAX)
