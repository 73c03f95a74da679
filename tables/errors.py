"""Kernel error codes and the exception the synchronous API raises."""

from __future__ import annotations

import errno as _errno
import os

# The kernel's values (Linux, positive). The algorithms return them negated, as the
# kernel does; the synchronous API turns a negative return into PTError.
EPERM = _errno.EPERM
ENOENT = _errno.ENOENT
ENXIO = _errno.ENXIO
EAGAIN = _errno.EAGAIN
ENOMEM = _errno.ENOMEM
EINVAL = _errno.EINVAL
ERANGE = _errno.ERANGE
EOVERFLOW = _errno.EOVERFLOW
EPROTOTYPE = _errno.EPROTOTYPE
EOPNOTSUPP = _errno.EOPNOTSUPP
EADDRINUSE = _errno.EADDRINUSE


# Python names some codes by their aliases (ENOTSUP); use the kernel's spelling.
KERNEL_NAMES = {EOPNOTSUPP: "EOPNOTSUPP", EAGAIN: "EAGAIN"}


def errno_name(err: int) -> str:
    """"-EINVAL" for -22 or 22."""
    code = abs(err)
    return "-" + KERNEL_NAMES.get(code, _errno.errorcode.get(code, str(code)))


class PTError(Exception):
    """A page-table operation failed; ``errno`` holds the positive kernel errno."""

    def __init__(self, err: int, what: str = "") -> None:
        self.errno = abs(err)
        self.what = what
        text = f"{errno_name(err)} ({os.strerror(self.errno)})"
        super().__init__(f"{what}: {text}" if what else text)

    def __reduce__(self) -> tuple[type, tuple[int, str]]:
        # Rebuild from (errno, what), so the error survives a trip between processes.
        return PTError, (self.errno, self.what)


class PTWarning(Exception):
    """Raised for a PT_WARN_ON when a table is created with ``strict=True``."""
