"""Scenario files: one simulated machine as data (TOML).

Every key is checked: an unknown key, a wrong type or a contradiction is a
ScenarioError naming the file, the [table] and key, and what was expected.
"""

import dataclasses
import os
import tomllib

from sim.costs import Costs


class ScenarioError(Exception):
    """A user error in a scenario file or on the command line."""


OUTCOMES = ("booted", "stalled", "failed")
# Figures an [expect] table may pin, with their types.
EXPECT_KEYS = {
    "outcome": str, "hcalls_in_kernel": int, "hcall_exits": int, "ioeventfd_signals": int,
    "requests_completed": int, "bytes_loaded": int, "notifies": int, "notifies_in_kernel": int,
    "notify_exits": int, "enable_cap": str, "timeouts": int, "first_stalled_request": int,
    # the kernel stage (sim.report.kernel_stage)
    "kernel_stage": str, "kernel_notifies": int, "kernel_notifies_in_kernel": int, "kernel_notify_exits": int,
    "kernel_mmio_exits": int, "kernel_ioeventfd_signals": int, "kernel_interrupts": int,
    "kernel_irqfd_interrupts": int, "kernel_requests_completed": int,
    # GRUB (sim.report.grub_stage): "not reached", "kernel" or "prompt: <reason>"
    "grub_ended": str, "grub_disk_reads": int, "grub_bytes_loaded": int,
}

SCHEMA = {
    "": {"description": str, "kernel": dict, "qemu": dict, "machine": dict, "device": dict,
         "disk": dict, "firmware": dict, "costs": dict, "expect": dict},
    "kernel": {"version": str, "kvm": str, "host_endian": str, "logical_ci_handlers": bool},
    "qemu": {"version": str, "enable_logical_ci_hcalls": bool, "forward_userspace_kick": bool,
             "emulate_ioeventfd": bool, "disable_modern": bool, "disable-modern": bool},
    "machine": {"ram_mib": int, "kernel": str},
    "device": {"iothread": bool, "ioeventfd": bool, "queue_size": int},
    "disk": {"image": str, "writable": bool, "persist": bool, "part_sectors": int, "part_start": int,
             "active": bool, "gpt": bool, "gpt_type": str, "size_mib": int, "layout": str},
    "firmware": {"virtio_timeout_ms": int, "max_prep_partition_blocks": int},
    "costs": {name: float for name in Costs.names()},
    "expect": EXPECT_KEYS,
}
TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", dict: "a table", float: "a number"}


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
    disk_image: str = "mkdisk"
    disk_writable: bool = False
    disk_persist: bool = False
    mkdisk: dict = dataclasses.field(default_factory=dict)
    virtio_timeout_ms: int = 5000
    max_prep_blocks: int = 65536
    costs: Costs = dataclasses.field(default_factory=Costs)
    expect: dict = dataclasses.field(default_factory=dict)


def _version(path: str, where: str, text: str) -> tuple[int, int]:
    parts = text.split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        raise ScenarioError(f"{path}: {where}: expected a version like \"4.1\", got {text!r}")
    return int(parts[0]), int(parts[1])


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
    _check_types(path, data)
    k, q, m, d = data.get("kernel", {}), data.get("qemu", {}), data.get("machine", {}), data.get("device", {})
    disk, fw = data.get("disk", {}), data.get("firmware", {})
    s = Scenario(path=path, name=os.path.splitext(os.path.basename(path))[0],
                 description=data.get("description", ""))
    s.kernel_version = k.get("version", s.kernel_version)
    _version(path, "[kernel] version", s.kernel_version)
    s.kvm = k.get("kvm", s.kvm)
    if s.kvm not in ("HV", "PR"):
        raise ScenarioError(f"{path}: [kernel] kvm: expected \"HV\" or \"PR\", got {s.kvm!r}")
    s.host_endian = k.get("host_endian", s.host_endian)
    if s.host_endian not in ("big", "little"):
        raise ScenarioError(f"{path}: [kernel] host_endian: expected \"big\" or \"little\", got {s.host_endian!r}")
    s.logical_ci_handlers = k.get("logical_ci_handlers")
    s.qemu_version = _version(path, "[qemu] version", q.get("version", "2.3"))
    s.enable_logical_ci = q.get("enable_logical_ci_hcalls", s.qemu_version >= (2, 4))
    if s.enable_logical_ci and s.qemu_version < (2, 4):
        raise ScenarioError(f"{path}: [qemu] enable_logical_ci_hcalls: QEMU {q['version']} predates "
                            "kvmppc_enable_logical_ci_hcalls (2.4); expected false or version >= 2.4")
    # "virtio: notify virtqueue via host notifier when available" (4.2) and
    # "memory: emulate ioeventfd" (2.5, 8c56c1a); overridable to show each alone.
    s.forward_userspace_kick = q.get("forward_userspace_kick", s.qemu_version >= (4, 2))
    s.emulate_ioeventfd = q.get("emulate_ioeventfd", s.qemu_version >= (2, 5))
    # virtio-pci disable-modern: true is a legacy-only device (the model's
    # default, whatever the version, so scenarios stay legacy unless they
    # ask); false is transitional (legacy BAR 0 plus the virtio 1.0
    # capabilities), which real QEMU 2.7+ gives by default and SLOF then
    # drives through the modern interface. QEMU's own spelling is accepted.
    if "disable_modern" in q and "disable-modern" in q:
        raise ScenarioError(f"{path}: [qemu] disable-modern: given twice (as disable_modern and "
                            "disable-modern); expected one")
    s.disable_modern = q.get("disable_modern", q.get("disable-modern", True))
    if not s.disable_modern and s.qemu_version < (2, 4):
        raise ScenarioError(f"{path}: [qemu] disable_modern: QEMU {q['version']} has no virtio 1.0 "
                            "(modern virtio-pci came in 2.4); expected true or version >= 2.4")
    s.iothread = d.get("iothread", False)
    s.ioeventfd = d.get("ioeventfd", True)
    if s.iothread and not s.ioeventfd:
        raise ScenarioError(f"{path}: [device] iothread: an iothread needs ioeventfd (the dataplane is "
                            "woken only by its host notifier); expected ioeventfd = true")
    # virtio-blk's queue-size default became 256 in QEMU 5.0.
    s.queue_size = d.get("queue_size", 256 if s.qemu_version >= (5, 0) else 128)
    if not 1 <= s.queue_size <= 1024 or s.queue_size & (s.queue_size - 1):
        raise ScenarioError(f"{path}: [device] queue_size: expected a power of two up to 1024, got {s.queue_size}")
    s.ram_mib = m.get("ram_mib", s.ram_mib)
    s.kernel = m.get("kernel", s.kernel)
    if s.kernel not in ("disk", "direct"):
        raise ScenarioError(f"{path}: [machine] kernel: expected \"disk\" (SLOF loads it from the disk) or "
                            f"\"direct\" (QEMU -kernel), got {s.kernel!r}")
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
    costs = data.get("costs", {})
    for key, v in costs.items():
        if v < 0:
            raise ScenarioError(f"{path}: [costs] {key}: expected a non-negative number of seconds, got {v}")
    s.costs = Costs(**{key: float(v) for key, v in costs.items()})
    s.expect = data.get("expect", {})
    if "outcome" in s.expect and s.expect["outcome"] not in OUTCOMES:
        raise ScenarioError(f"{path}: [expect] outcome: expected one of {', '.join(OUTCOMES)}, "
                            f"got {s.expect['outcome']!r}")
    return s
