"""Hostile disks: a bootable mkdisk image with its MBR, EBRs, GPT or ELF corrupted.

Each case is a whole boot (sim.machine.run) on the fixed stack, so SLOF's
disk-label and ELF loader, then the kernel stage, read what the generator
wrote. The properties, checked from what the run printed and how long it
took, not from the code under test:

- the run ends within a bound: no host-side exception, an outcome other
  than the simulator's watchdog, and at most WALL_LIMIT_S of wall time;
- "booted" implies the marker: the console holds PAYLOAD_MARKER after
  SLOF's "Successfully loaded" (or QEMU's -kernel line), and the kernel
  stage completed its reads.
"""

from __future__ import annotations

import dataclasses
import signal
import struct
import threading
import time
import traceback

from devices.block import BlockBackend
from sim.abi import elf as E
from sim.abi import gpt as G
from sim.abi import mbr as M
from sim.mkdisk import PAYLOAD_MARKER, SEG_OFFSET, build_disk, build_payload
from sim.qemu.releases import shipped_slof
from sim.scenario import Scenario

PART_START = 2048
GPT_PART_START = 64
WALL_LIMIT_S = 20.0
U32 = 0xFFFF_FFFF
U64 = (1 << 64) - 1
KINDS = ("mbr", "ebr", "gpt", "elf")


@dataclasses.dataclass
class DiskCase:
    kind: str
    gpt: bool
    max_prep_blocks: int
    edits: list          # (what, offset, bytes): the corruption, for the report and for shrinking

    def __str__(self) -> str:
        return f"{self.kind} disk ({'GPT' if self.gpt else 'MBR'}): " + \
            ", ".join(w for w, _, _ in self.edits if w) + \
            (f", max_prep_partition_blocks={self.max_prep_blocks}" if self.max_prep_blocks != 65536 else "")

    def image(self):
        img = build_disk(size_mib=4, gpt=self.gpt, part_start=GPT_PART_START if self.gpt else PART_START,
                         part_sectors=64)
        for _, off, data in self.edits:
            img[off:off + len(data)] = data
        return img


def _u32(ch) -> int:
    return ch.choice((0, 1, 2, 3, 63, 64, 100, 2047, 2048, 4095, 8191, 8192, U32 - 1, U32, ch.integer(0, U32)))


def _u64(ch) -> int:
    return ch.choice((0, 1, 2, 34, 100, 8191, 8192, U32, 1 << 63, U64, ch.integer(0, U64)))


def _mbr_entry(ch, n: int, **fix) -> tuple:
    fields = dict(boot_indicator=ch.choice((0, 0x80, 0x80, 0xFF)), chs_start=bytes(3),
                  type=ch.choice((M.PART_TYPE_PREP, 0x05, 0x0F, 0x85, M.PART_TYPE_GPT_PROTECTIVE, 0x83, 0)),
                  chs_end=bytes(3), lba_start=_u32(ch), sectors=_u32(ch))
    fields.update(fix)
    return (f"MBR entry {n} type 0x{fields['type']:x} start {fields['lba_start']} "
            f"sectors {fields['sectors']} flag 0x{fields['boot_indicator']:x}",
            446 + 16 * (n - 1), M.partition_entry.build(fields))


def gen_mbr(ch) -> list:
    edits = [_mbr_entry(ch, ch.integer(1, 4)) for _ in range(ch.integer(1, 3))]
    if ch.integer(0, 5) == 0:
        edits.append(("no 55AA signature", 510, b"\x00\x00"))
    return edits


def _ebr_sector(first: int, k: int) -> int:
    """EBR k of a generated chain: the first at `first`, then every other sector."""
    return first + (0 if k == 0 else 1 + 2 * k)


def gen_ebr(ch) -> list:
    """An extended partition (entry 2) and a chain of EBRs from sector 100:
    valid, long, looping, pointing at itself, at 0xFFFFFFFF, or off the disk.
    Entry 2 of an EBR is relative to the first EBR (lpart-start)."""
    first = 100
    edits = [_mbr_entry(ch, 2, type=ch.choice((0x05, 0x0F, 0x85)), lba_start=first, sectors=1000,
                        boot_indicator=0)]
    n = ch.choice((1, 2, 5, 40, 300))
    shape = ch.choice(("end", "loop", "self", "ffffffff", "beyond", "random"))
    edits.append((f"{n} EBRs, chain {shape}", 0, b""))
    for i in range(n):
        if i + 1 < n:
            rel = _ebr_sector(first, i + 1) - first
        else:
            rel = {"end": 0, "loop": _ebr_sector(first, ch.integer(0, n - 1)) - first, "self": 0,
                   "ffffffff": U32, "beyond": 1 << 24, "random": _u32(ch)}[shape]
            if shape == "self":
                rel = _ebr_sector(first, i) - first
        prep = ch.integer(0, 7) == 0
        e1 = dict(boot_indicator=0x80 if prep else 0, chs_start=bytes(3), type=M.PART_TYPE_PREP if prep else 0x83,
                  chs_end=bytes(3), lba_start=ch.choice((1, 1, 0, _u32(ch))), sectors=_u32(ch))
        e2 = dict(boot_indicator=0, chs_start=bytes(3), type=0x05, chs_end=bytes(3), lba_start=rel, sectors=1)
        body = M.partition_entry.build(e1) + M.partition_entry.build(e2) + bytes(32) + b"\x55\xaa"
        edits.append(("", _ebr_sector(first, i) * 512 + 446, body))
    return edits


def gen_gpt(ch) -> list:
    hdr = dict(signature=G.SIGNATURE, revision=G.REVISION_1_0, header_size=G.HEADER_SIZE, reserved=0,
               current_lba=1, backup_lba=8191, first_usable_lba=34, last_usable_lba=8158,
               disk_guid=bytes(16), part_entry_lba=2, num_part_entries=128, part_entry_size=128,
               part_array_crc32=0)
    what = []
    for _ in range(ch.integer(1, 3)):
        field = ch.choice(("part_entry_lba", "num_part_entries", "part_entry_size", "signature", "entry"))
        if field == "part_entry_lba":
            hdr[field] = _u64(ch)
        elif field == "num_part_entries":
            hdr[field] = ch.choice((0, 1, 129, 1024, 1025, 65536, U32))
        elif field == "part_entry_size":
            hdr[field] = ch.choice((0, 1, 92, 127, 129, 512, 4096, 4097, U32))
        elif field == "signature":
            hdr[field] = b"EFI PARX"
        if field != "entry":
            what.append(f"GPT {field} {hdr[field]!r}")
    edits = [(", ".join(what) or "GPT header", 512, G.build_header(**hdr))]
    if ch.boolean():
        first, last = _u64(ch), _u64(ch)
        entry = G.gpt_entry.build(dict(type_guid=G.PREP, part_guid=bytes(16), first_lba=first, last_lba=last,
                                       attributes=0, name=bytes(72)))
        edits.append((f"PReP entry LBA {first}..{last}", 2 * 512, entry))
    if hdr["part_entry_lba"] not in (2,) and hdr["part_entry_lba"] < 8000 and ch.boolean():
        # a valid entry where the header now points (e.g. LBA 100)
        entry = G.gpt_entry.build(dict(type_guid=G.PREP, part_guid=bytes(16), first_lba=GPT_PART_START,
                                       last_lba=GPT_PART_START + 63, attributes=0, name=bytes(72)))
        edits.append((f"PReP entry moved to LBA {hdr['part_entry_lba']}", hdr["part_entry_lba"] * 512, entry))
    return edits


def gen_elf(ch, gpt: bool) -> list:
    """Corrupt the payload's ELF header, its program header or its code."""
    base = (GPT_PART_START if gpt else PART_START) * 512
    ehdr_t, phdr_t, _ = E.elf64(True)
    ph = ehdr_t.sizeof()
    fields = {  # offset in the image, size, name
        "e_entry": (base + 24, 8), "e_phoff": (base + 32, 8), "e_phnum": (base + 56, 2),
        "e_phentsize": (base + 54, 2), "e_type": (base + 16, 2), "e_machine": (base + 18, 2),
        "p_type": (base + ph, 4), "p_offset": (base + ph + 8, 8), "p_vaddr": (base + ph + 16, 8),
        "p_paddr": (base + ph + 24, 8), "p_filesz": (base + ph + 32, 8), "p_memsz": (base + ph + 40, 8),
    }
    edits = []
    for _ in range(ch.integer(1, 2)):
        g = ch.integer(0, 9)
        if g == 0:
            off = base + SEG_OFFSET + ch.integer(0, len(build_payload()) - SEG_OFFSET - 4) // 4 * 4
            word = ch.choice((0, 0x48000000, U32, ch.integer(0, U32)))
            edits.append((f"code word 0x{word:08x} at +0x{off - base:x}", off, struct.pack(">I", word)))
            continue
        if g == 1:
            edits.append(("no ELF magic", base, b"\x7fELG"))
            continue
        name = ch.choice(sorted(fields))
        off, size = fields[name]
        v = ch.choice((0, 1, 0x3FFF, 0x400003, 0x3E374000, 1 << 30, U32, _u64(ch))) & ((1 << (8 * size)) - 1)
        edits.append((f"{name} 0x{v:x}", off, v.to_bytes(size, "big")))
    return edits


def gen_disk_case(ch, kind: str | None = None) -> DiskCase:
    kind = kind or ch.choice(KINDS)
    gpt = kind == "gpt" or (kind == "elf" and ch.boolean())
    edits = {"mbr": gen_mbr, "ebr": gen_ebr, "gpt": gen_gpt}[kind](ch) if kind != "elf" else gen_elf(ch, gpt)
    max_prep = ch.choice((65536,) * 7 + (1, 8))
    return DiskCase(kind, gpt, max_prep, edits)


# -- running one case and checking the properties ---------------------------

@dataclasses.dataclass
class DiskResult:
    outcome: str | None = None
    reason: str = ""
    wall_s: float = 0.0
    sim_s: float = 0.0
    violations: list = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


class _Timeout(BaseException):
    pass


def scenario(case: DiskCase, slof: str | None = None) -> Scenario:
    """The fixed stack (Linux 4.1, QEMU 2.4, an iothread) booting the case's
    disk, with the SLOF QEMU 2.4 shipped unless slof names another."""
    return Scenario(path="<hostile disk>", name="hostile-disk", kernel_version="4.1", qemu_version=(2, 4),
                    enable_logical_ci=True, iothread=True, max_prep_blocks=case.max_prep_blocks,
                    slof=slof or shipped_slof((2, 4)))


def booted_with_marker(console: str) -> bool:
    """The marker printed after SLOF's hand-off line, read from the console."""
    for handoff in ("Successfully loaded", "Booting from memory"):
        at = console.rfind(handoff)
        if at >= 0 and PAYLOAD_MARKER in console[at:]:
            return True
    return False


def run_disk_case(case: DiskCase, wall_limit: float = WALL_LIMIT_S) -> DiskResult:
    """Boot the case's disk; never raises for a host-side failure."""
    from sim import machine, report
    r = DiskResult()
    use_alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")

    def _alarm(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, _alarm) if use_alarm else None
    if use_alarm:
        signal.setitimer(signal.ITIMER_REAL, wall_limit)
    t0 = time.perf_counter()
    try:
        backend = BlockBackend.from_bytes(case.image(), "hostile-disk")
        run = machine.run(scenario(case), backend=backend)
        s = report.summary(run)
        r.outcome, r.reason, r.sim_s = s["outcome"], s["reason"], run.end_ns / 1e9
        if r.outcome == "watchdog":
            r.violations.append(f"the simulator's watchdog ended the run ({r.reason})")
        if r.outcome == "booted" and not (booted_with_marker(run.console.text())
                                          and s["kernel_stage"] == "done"):
            r.violations.append("booted without the marker after the hand-off, or without the kernel stage")
    except _Timeout:
        r.violations.append(f"still running after {wall_limit} s of wall time")
    except Exception:   # noqa: BLE001 -- every escape is the finding
        r.violations.append("host-side exception:\n" + traceback.format_exc())
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    r.wall_s = time.perf_counter() - t0
    return r
