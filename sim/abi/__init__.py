"""Binary interfaces shared by more than one layer.

Like Linux's include/uapi and QEMU's include/standard-headers, these modules
hold only numbers and layouts that both sides of an interface agree on; no
behaviour. Every layout is declared once, with construct.
"""

import importlib as _importlib
import struct as _struct
import sys as _sys
import types as _types


class _Deferred(_types.ModuleType):
    """Stands in for a module until it is used, then is replaced by it."""

    def __getattr__(self, name):
        real = self.__name__
        if _sys.modules.get(real) is self:
            del _sys.modules[real]
        return getattr(_importlib.import_module(real), name)


def _defer(*names: str) -> None:
    """construct imports pdb and pickle at import (construct/debug.py for
    its Debugger, construct/core.py for its Pickled field), neither of
    which slofsim uses on a run; pdb pulls in cmd, bdb, code, glob and more
    (13 ms), pickle _compat_pickle and _pickle (about 1.5 ms). Let each
    load on its first use instead: breakpoint(), construct's Debugger and a
    process pool still get the real module. (importlib's LazyLoader would
    not do: `import pdb` reads the module's __spec__, which loads it.)"""
    for name in names:
        if name not in _sys.modules:
            _sys.modules[name] = _Deferred(name)


_defer("pdb", "pickle")

import construct as _c  # noqa: E402  (after _defer)


def packer(layout: _c.Struct) -> _struct.Struct:
    """A struct.Struct view of a flat construct layout, for hot paths.

    Derived from the construct declaration (each field must be a fixed-size
    integer or padding, all of one byte order), so the layout still exists
    once.
    """
    order = None
    fmt = ""
    for sub in layout.subcons:
        field = sub
        while isinstance(field, _c.Renamed):
            field = field.subcon
        if isinstance(field, _c.FormatField):
            fo, code = field.fmtstr[0], field.fmtstr[1:]
            if order is None and fo in "<>":
                order = fo
            elif fo in "<>" and fo != order:
                raise ValueError(f"{sub.name}: mixed byte order")
            fmt += code
        elif isinstance(field, _c.Padded):
            fmt += f"{field.length}x"
        else:
            raise ValueError(f"{sub.name}: not a flat integer field")
    return _struct.Struct((order or "=") + fmt)
