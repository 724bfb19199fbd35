"""Did the loaded image reach its hand-off point? What "booted" rests on.

SLOF's jump is not the end of the firmware's job: the image must then run.
The mkdisk payload (sim.mkdisk.build_payload) is real PowerPC64 code that
prints PAYLOAD_MARKER with its own H_PUT_TERM_CHAR calls and then spins on
`b .`. It reached its hand-off only if, after SLOF's `kernel_entry`, the
console bytes QEMU's spapr_vty received (`vty_write`) hold the marker and
the CPU then stopped on that idle spin (`guest_stop`). A real Linux image
GRUB jumped to (its linux_banner found in what GRUB loaded) is not executed:
the kernel stage models it, so GRUB's jump is its hand-off point.
Everything is read from the trace, so the report and the machine decide alike.
"""

from sim.cpu import IDLE_SPIN
from sim.mkdisk import PAYLOAD_MARKER

MARKERS = (PAYLOAD_MARKER,)


def _after_entry(trace):
    """The events after the last kernel_entry (searched from the end: it is
    near it, and a 64 MiB boot holds about 280,000 events before it)."""
    ev = trace.events
    for i in range(len(ev) - 1, -1, -1):
        if ev[i].name == "kernel_entry":
            return ev[i + 1:]
    return []


def image_output(trace) -> str:
    """The console text the image itself printed (between SLOF's jump and its stop)."""
    out = []
    for e in _after_entry(trace):
        if e.name == "guest_stop":
            break
        if e.name == "vty_write":
            out.append(e.fields["data"])
    return "".join(out)


def reached(trace) -> tuple[bool, str]:
    """(True, "") if the image ran to its hand-off, else (False, why not)."""
    entry = next((e for e in reversed(trace.events) if e.name == "kernel_entry"), None)
    if entry is not None and entry.fields.get("linux_banner"):
        return True, ""      # GRUB jumped to a real Linux image: that jump is its hand-off point
    after = _after_entry(trace)
    stop = next((e for e in after if e.name == "guest_stop"), None)
    if stop is None:
        return False, "SLOF never jumped to an image"
    printed = image_output(trace)
    marker = next((m for m in MARKERS if m in printed), None)
    if stop.fields["reason"] != IDLE_SPIN:
        return False, f"the image stopped: {stop.fields['reason']}"
    if marker is None:
        return False, f"the image reached its idle spin at 0x{stop.fields['nip']:x} without printing " \
                      f"{' or '.join(MARKERS)}"
    return True, ""
