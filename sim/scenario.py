"""Scenario files: one simulated machine as data (TOML).

Every key is checked: an unknown key, a wrong type or a contradiction is a
ScenarioError naming the file, the [table] and key, and what was expected.
"""

import dataclasses
import math
import os
import tomllib

from firmware_model.linux.releases import GUEST_KERNELS, default_guest
from firmware_model.slof.releases import UnknownRelease as UnknownSlof, release as slof_release
from sim import faults
from sim.costs import Costs
from sim.kvm import releases as linux_releases
from sim.qemu import releases as qemu_releases
from sim.releases import UnknownRelease
from sim.qemu.releases import shipped_slof


class ScenarioError(Exception):
    """A user error in a scenario file or on the command line."""


def check_writable(path: str, option: str) -> None:
    """path can be created or overwritten; a file it creates is removed again."""
    if os.path.isdir(path):
        raise ScenarioError(f"{path}: {option}: is a directory; expected a file name")
    existed = os.path.exists(path)
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise ScenarioError(f"{path}: {option}: cannot write: {exc.strerror}") from None
    if not existed:
        os.unlink(path)


# sim.report.verdict: booted, stalled (a device never woke), failed (with a
# reason), watchdog (the simulator's own bound on simulated time),
# hung-in-qemu (the vcpu thread blocked in QEMU: a drain waiting for a
# request that never completes, not the guest waiting; sim.faults),
# qemu-exited (QEMU called exit(1) on a guest error, before 2.8).
OUTCOMES = ("booted", "stalled", "failed", "watchdog", "hung-in-qemu", "qemu-exited")
VIRTQUEUE_MAX_SIZE = 1024   # include/hw/virtio/virtio.h
# No single cost may exceed the simulator's watchdog span (sim.machine
# WATCHDOG_S): one event costing more than the whole run could is a typo.
MAX_COST_S = 3600.0
# Figures an [expect] table may pin, with their types.
EXPECT_KEYS = {
    "outcome": str, "hcalls_in_kernel": int, "hcall_exits": int, "ioeventfd_signals": int,
    "requests_completed": int, "bytes_loaded": int, "notifies": int, "notifies_in_kernel": int,
    "notify_exits": int, "enable_cap": dict, "timeouts": int, "first_stalled_request": int,
    # the kernel stage (sim.report.kernel_stage)
    "kernel_stage": str, "kernel_notifies": int, "kernel_notifies_in_kernel": int, "kernel_notify_exits": int,
    "kernel_mmio_exits": int, "kernel_ioeventfd_signals": int, "kernel_interrupts": int,
    "kernel_irqfd_interrupts": int, "kernel_requests_completed": int, "kernel_guest": str,
    # GRUB (sim.report.grub_stage): "not reached", "kernel" or "prompt: <reason>"
    "grub_ended": str, "grub_disk_reads": int, "grub_bytes_loaded": int,
}

SCHEMA = {
    "": {"description": str, "kernel": dict, "qemu": dict, "machine": dict, "device": dict, "guest": dict,
         "disk": dict, "firmware": dict, "costs": dict, "expect": dict, "faults": list},
    "kernel": {"version": str, "kvm": str, "host_endian": str, "logical_ci_handlers": bool},
    "qemu": {"version": str, "enable_logical_ci_hcalls": bool, "forward_userspace_kick": bool,
             "emulate_ioeventfd": bool, "disable_modern": bool, "disable-modern": bool},
    "machine": {"ram_mib": int, "kernel": str},
    "guest": {"kernel": str},
    "device": {"iothread": bool, "ioeventfd": bool, "queue_size": int},
    "disk": {"image": str, "writable": bool, "persist": bool, "part_sectors": int, "part_start": int,
             "active": bool, "gpt": bool, "gpt_type": str, "size_mib": int, "layout": str},
    "firmware": {"virtio_timeout_ms": int, "max_prep_partition_blocks": int, "slof": str},
    "costs": {name: float for name in Costs.names()},
    "expect": EXPECT_KEYS,
}
# [expect] enable_cap is a table of some of sim.report.enable_cap's fields,
# e.g. { called = true, results = [0, 0] } or { called = false }.
ENABLE_CAP_KEYS = {"called": bool, "hcalls": list, "results": list, "errors": list}
TYPE_NAMES = {list: "an array", str: "a string", int: "an integer", bool: "true or false", dict: "a table",
              float: "a number"}


@dataclasses.dataclass
class Scenario:
    path: str
    name: str
    description: str = ""
    kernel_version: str = "4.0"
    kvm: str = "HV"
    host_endian: str = "big"
    logical_ci_handlers: bool | None = None
    qemu_version: tuple[int, int] = (2, 3)
    enable_logical_ci: bool = False
    forward_userspace_kick: bool = False
    emulate_ioeventfd: bool = False
    disable_modern: bool = True
    iothread: bool = False
    ioeventfd: bool = True
    queue_size: int = 128
    ram_mib: int = 1024
    # "disk": SLOF boots the disk and starts the image it loaded; "direct":
    # QEMU -kernel loads the kernel and SLOF starts it without opening the disk.
    kernel: str = "disk"
    # The guest kernel after the hand-off (firmware_model/linux/releases.py):
    # "4.1" big-endian or "6.1" little-endian; by default the QEMU era's.
    guest_kernel: str = "4.1"
    disk_image: str = "mkdisk"
    disk_writable: bool = False
    disk_persist: bool = False
    mkdisk: dict = dataclasses.field(default_factory=dict)
    virtio_timeout_ms: int = 5000
    max_prep_blocks: int = 65536
    slof: str = "20150313"     # SLOF tag (firmware_model/slof/releases.py); default: what the QEMU shipped
    costs: Costs = dataclasses.field(default_factory=Costs)
    expect: dict = dataclasses.field(default_factory=dict)
    faults: tuple = ()         # sim.faults.Fault, from [[faults]] and --fault
    # Counterfactual release rows (field -> value), set by slofsim matrix only.
    qemu_overrides: dict = dataclasses.field(default_factory=dict)
    linux_overrides: dict = dataclasses.field(default_factory=dict)


def release_defaults(qemu_version: tuple[int, int], overrides: dict | None = None) -> dict:
    """What a scenario gets from its QEMU release when it does not say."""
    rel = qemu_releases.behaviour(qemu_version).replaced(overrides or {})
    return dict(enable_logical_ci=rel.enable_logical_ci, forward_userspace_kick=rel.userspace_kick != "handle_output",
                emulate_ioeventfd=rel.emulate_ioeventfd, queue_size=rel.blk_queue_size, slof=rel.slof)


def _version(path: str, where: str, text: str, table) -> tuple[int, int]:
    """A release the component's table models (sim.kvm.releases, sim.qemu.releases)."""
    try:
        return table.parse(text)
    except UnknownRelease:
        raise ScenarioError(f"{path}: {where}: {text!r} is not a modelled {table.TABLE.component} release; "
                            f"expected one of {table.TABLE.names()}") from None


def _check_types(path: str, data: dict) -> None:
    for table, value in data.items():
        if table not in SCHEMA[""]:
            raise ScenarioError(f"{path}: unknown key {table!r}; expected one of {', '.join(sorted(SCHEMA['']))}")
        want = SCHEMA[""][table]
        if not isinstance(value, want):
            raise ScenarioError(f"{path}: {table}: expected {TYPE_NAMES[want]}, got {type(value).__name__}")
        if want is not dict:
            continue
        for key, v in value.items():
            if key not in SCHEMA[table]:
                raise ScenarioError(f"{path}: [{table}] unknown key {key!r}; expected one of "
                                    f"{', '.join(sorted(SCHEMA[table]))}")
            t = SCHEMA[table][key]
            ok = isinstance(v, t) and not (t is int and isinstance(v, bool))
            if t is float and isinstance(v, int) and not isinstance(v, bool):
                ok = True
            if not ok:
                raise ScenarioError(f"{path}: [{table}] {key}: expected {TYPE_NAMES[t]}, got {v!r}")


def _fault(path: str, i: int, table) -> "faults.Fault":
    if not isinstance(table, dict):
        raise ScenarioError(f"{path}: [[faults]] #{i}: expected a table, got {table!r}")
    try:
        return faults.from_table(table)
    except faults.FaultError as exc:
        raise ScenarioError(f"{path}: [[faults]] #{i} {exc}") from None


def fault_option(text: str) -> "faults.Fault":
    """--fault KIND[:REQUESTS][,key=value...] (argparse type)."""
    try:
        return faults.from_option(text)
    except faults.FaultError as exc:
        raise ScenarioError(f"--fault {text}: {exc}") from None


def load(path: str) -> Scenario:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                            f"{exc.start}); expected a TOML file") from None
    _check_types(path, data)
    k, q, m, d = data.get("kernel", {}), data.get("qemu", {}), data.get("machine", {}), data.get("device", {})
    disk, fw = data.get("disk", {}), data.get("firmware", {})
    s = Scenario(path=path, name=os.path.splitext(os.path.basename(path))[0],
                 description=data.get("description", ""))
    s.kernel_version = k.get("version", s.kernel_version)
    _version(path, "[kernel] version", s.kernel_version, linux_releases)
    s.kvm = k.get("kvm", s.kvm)
    if s.kvm not in ("HV", "PR"):
        raise ScenarioError(f"{path}: [kernel] kvm: expected \"HV\" or \"PR\", got {s.kvm!r}")
    s.host_endian = k.get("host_endian", s.host_endian)
    if s.host_endian not in ("big", "little"):
        raise ScenarioError(f"{path}: [kernel] host_endian: expected \"big\" or \"little\", got {s.host_endian!r}")
    s.logical_ci_handlers = k.get("logical_ci_handlers")
    s.qemu_version = _version(path, "[qemu] version", q.get("version", "2.3"), qemu_releases)
    rel = qemu_releases.behaviour(s.qemu_version)
    dflt = release_defaults(s.qemu_version)
    s.enable_logical_ci = q.get("enable_logical_ci_hcalls", dflt["enable_logical_ci"])
    if s.enable_logical_ci and not rel.enable_logical_ci:
        raise ScenarioError(f"{path}: [qemu] enable_logical_ci_hcalls: QEMU {q['version']} predates "
                            "kvmppc_enable_logical_ci_hcalls (2.4, 026bfd89); expected false or version >= 2.4")
    # The kick that reaches virtio_queue_notify is forwarded to the host
    # notifier from 2.9 for IOThread queues (handle_aio_output; 2.8.0 still drops
    # it, the 2.8.1 stable release has it), widened in
    # 4.2; "memory: emulate ioeventfd" (2.5, 8c56c1a). Overridable to show
    # each alone.
    s.forward_userspace_kick = q.get("forward_userspace_kick", dflt["forward_userspace_kick"])
    s.emulate_ioeventfd = q.get("emulate_ioeventfd", dflt["emulate_ioeventfd"])
    # virtio-pci disable-modern: true is a legacy-only device (the model's
    # default, whatever the version, so scenarios stay legacy unless they
    # ask); false is transitional (legacy BAR 0 plus the virtio 1.0
    # capabilities), which real QEMU 2.7+ gives by default and SLOF then
    # drives through the modern interface. QEMU's own spelling is accepted.
    if "disable_modern" in q and "disable-modern" in q:
        raise ScenarioError(f"{path}: [qemu] disable-modern: given twice (as disable_modern and "
                            "disable-modern); expected one")
    s.disable_modern = q.get("disable_modern", q.get("disable-modern", True))
    if not s.disable_modern and not rel.modern:
        raise ScenarioError(f"{path}: [qemu] disable_modern: QEMU {q['version']} has no virtio 1.0 "
                            "(modern virtio-pci came in 2.4); expected true or version >= 2.4")
    s.iothread = d.get("iothread", False)
    s.ioeventfd = d.get("ioeventfd", True)
    if s.iothread and not s.ioeventfd:
        raise ScenarioError(f"{path}: [device] iothread: an iothread needs ioeventfd (the dataplane is "
                            "woken only by its host notifier); expected ioeventfd = true")
    s.queue_size = d.get("queue_size", dflt["queue_size"])
    # hw/block/virtio-blk.c virtio_blk_device_realize refuses "invalid
    # queue-size property (%u), must be > 2" (added with seg_max =
    # queue_size - 2, "virtio: make seg_max virtqueue size dependent", 5.0)
    # and "... must be a power of 2 (max %d)", VIRTQUEUE_MAX_SIZE 1024. The
    # device model always has the 5.0 seg_max, so the > 2 rule always holds.
    if s.queue_size <= 2:
        raise ScenarioError(f"{path}: [device] queue_size: QEMU refuses queue-size {s.queue_size} "
                            "(virtio_blk_device_realize: must be > 2); expected a power of two 4..1024")
    if s.queue_size > VIRTQUEUE_MAX_SIZE or s.queue_size & (s.queue_size - 1):
        raise ScenarioError(f"{path}: [device] queue_size: QEMU refuses queue-size {s.queue_size} "
                            f"(must be a power of 2, max {VIRTQUEUE_MAX_SIZE}); expected a power of two 4..1024")
    s.ram_mib = m.get("ram_mib", s.ram_mib)
    s.kernel = m.get("kernel", s.kernel)
    if s.kernel not in ("disk", "direct"):
        raise ScenarioError(f"{path}: [machine] kernel: expected \"disk\" (SLOF loads it from the disk) or "
                            f"\"direct\" (QEMU -kernel), got {s.kernel!r}")
    g = data.get("guest", {})
    s.guest_kernel = g.get("kernel", default_guest(s.qemu_version, _version(path, "[kernel] version", s.kernel_version, linux_releases)))
    if s.guest_kernel not in GUEST_KERNELS:
        raise ScenarioError(f"{path}: [guest] kernel: expected one of {', '.join(sorted(GUEST_KERNELS))} "
                            f"(4.1 big-endian ppc64, 6.1 little-endian ppc64le), got {s.guest_kernel!r}")
    if not 64 <= s.ram_mib <= 65536:
        raise ScenarioError(f"{path}: [machine] ram_mib: expected 64..65536, got {s.ram_mib}")
    image = disk.get("image", "mkdisk")
    if image != "mkdisk" and not os.path.isabs(image):
        image = os.path.join(os.path.dirname(os.path.abspath(path)), image)
    s.disk_image = image
    s.disk_writable = disk.get("writable", False)
    s.disk_persist = disk.get("persist", False)
    if s.disk_persist and not s.disk_writable:
        raise ScenarioError(f"{path}: [disk] persist: needs writable = true")
    s.mkdisk = {key: disk[key] for key in ("part_sectors", "part_start", "active", "gpt", "gpt_type", "size_mib",
                                           "layout")
                if key in disk}
    if s.mkdisk and image != "mkdisk":
        raise ScenarioError(f"{path}: [disk] {next(iter(s.mkdisk))}: only applies to image = \"mkdisk\"")
    s.virtio_timeout_ms = fw.get("virtio_timeout_ms", s.virtio_timeout_ms)
    s.max_prep_blocks = fw.get("max_prep_partition_blocks", s.max_prep_blocks)
    if s.virtio_timeout_ms <= 0 or s.max_prep_blocks <= 0:
        raise ScenarioError(f"{path}: [firmware]: expected positive values")
    shipped = shipped_slof(s.qemu_version)
    s.slof = fw.get("slof", shipped).removeprefix("qemu-slof-")
    try:
        row = slof_release(s.slof)
    except UnknownSlof as exc:
        raise ScenarioError(f"{path}: [firmware] slof: {exc}") from None
    if not row.reads_qemu_pci_nodes and slof_release(shipped).reads_qemu_pci_nodes:
        # be9b2fa was made for QEMU's new PCI device nodes (its message), so a
        # QEMU that shipped it is taken to create them (ASSUMPTION: the QEMU
        # commit is not checked here). There the real 20150313 makes no block
        # request and stops at E3404 (real-slof-2015, QEMU 7.2).
        raise ScenarioError(f"{path}: [firmware] slof: {s.slof} scans PCI itself (no be9b2fa) and does not "
                            f"boot on QEMU {s.qemu_version[0]}.{s.qemu_version[1]}, which creates the PCI "
                            f"device nodes; not modelled; expected a SLOF from 20150429 on")
    costs = data.get("costs", {})
    for key, v in costs.items():
        if not math.isfinite(v) or not 0 <= v <= MAX_COST_S:
            raise ScenarioError(f"{path}: [costs] {key}: expected a finite number of seconds in "
                                f"0..{MAX_COST_S:g}, got {v}")
    s.costs = Costs(**{key: float(v) for key, v in costs.items()})
    s.faults = tuple(_fault(path, i, t) for i, t in enumerate(data.get("faults", []), 1))
    s.expect = data.get("expect", {})
    for key, v in s.expect.get("enable_cap", {}).items():
        want = ENABLE_CAP_KEYS.get(key)
        if want is None or not isinstance(v, want):
            raise ScenarioError(f"{path}: [expect] enable_cap: {key} = {v!r}; expected a table of called "
                                "(true or false), hcalls, results (arrays of integers), errors (array of strings)")
    if "outcome" in s.expect and s.expect["outcome"] not in OUTCOMES:
        raise ScenarioError(f"{path}: [expect] outcome: expected one of {', '.join(OUTCOMES)}, "
                            f"got {s.expect['outcome']!r}")
    return s
