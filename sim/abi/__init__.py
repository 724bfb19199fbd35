"""Binary interfaces shared by more than one layer.

Like Linux's include/uapi and QEMU's include/standard-headers, these modules
hold only numbers and layouts that both sides of an interface agree on; no
behaviour. Every layout is declared once, with construct.
"""

import importlib as _importlib
import struct as _struct
import sys as _sys
import types as _types


class _DeferredPdb(_types.ModuleType):
    """Stands in for pdb until pdb is used, then is replaced by it."""

    def __getattr__(self, name):
        if _sys.modules.get("pdb") is self:
            del _sys.modules["pdb"]
        return getattr(_importlib.import_module("pdb"), name)


def _defer_pdb() -> None:
    """construct imports pdb at import (construct/debug.py, for its
    Debugger, which slofsim never uses), and pdb pulls in cmd, bdb, code,
    glob and more. Let pdb load on its first use instead: breakpoint() and
    construct's Debugger still get the real module. (importlib's LazyLoader
    would not do: `import pdb` reads the module's __spec__, which loads it.)"""
    if "pdb" not in _sys.modules:
        _sys.modules["pdb"] = _DeferredPdb("pdb")


_defer_pdb()

import construct as _c  # noqa: E402  (after _defer_pdb)


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
