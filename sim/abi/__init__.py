"""Binary interfaces shared by more than one layer.

Like Linux's include/uapi and QEMU's include/standard-headers, these modules
hold only numbers and layouts that both sides of an interface agree on; no
behaviour. Every layout is declared once, with construct.
"""

import struct as _struct

import construct as _c


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
