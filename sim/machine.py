"""One scenario, one simulated machine: build the stack, boot, report.

One trio.run on an autojump clock (sim.vtime.AutojumpClock) is one machine. The vcpu thread,
QEMU's main loop and the IOThread are tasks; every cost is simulated time
(sim.vtime), so
SLOF's 5-second timeouts cost no wall time.
"""

import functools
import gc

import trio

from devices.block import BlockBackend, BlockError
from firmware_model.linux.releases import GUEST_KERNELS
from firmware_model.linux.virtio_blk import LinuxVirtioBlk
from firmware_model.slof.boot import Slof
from firmware_model.slof.releases import release as slof_release
from firmware_model.slof.disk_label import GuestUnbounded
from sim.cpu import PowerCPU
from sim.kvm.vm import KernelConfig, KvmVm
from sim.board.spapr import Console, SpaprMachine
from sim.ram import GuestRAM, RamAllocError
from sim import handoff, vtime
from sim.interrupt import run_trio
from sim.scenario import Scenario, ScenarioError
from sim.trace import Trace

WATCHDOG_S = 3600.0   # simulated seconds before the simulator's own watchdog ends a run
GC_GEN0_THRESHOLD = 10_000   # allocations between young collections while a machine runs (run below)


class RunResult:
    def __init__(self, scenario, trace, console, guest_result, machine, end_ns, hung):
        self.scenario = scenario
        self.trace = trace
        self.console = console
        self.guest_result = guest_result
        self.machine = machine
        self.end_ns = end_ns
        self.hung = hung


@functools.lru_cache(maxsize=4)
def _mkdisk_image(params: tuple):
    """The built-in image for these [disk] parameters, built once per
    process (a backend keeps its writes in an overlay, so boots can share
    it; it is adopted, not copied, so its zero pages stay untouched)."""
    from sim.mkdisk import build_disk
    return build_disk(**dict(params))


def open_disk(scn: Scenario, disk_override: str | None = None) -> BlockBackend:
    image = disk_override or scn.disk_image
    if image == "mkdisk":
        try:
            data = _mkdisk_image(tuple(sorted(scn.mkdisk.items())))
        except (ValueError, MemoryError) as exc:
            raise ScenarioError(f"{scn.path}: [disk]: {exc}") from None
        return BlockBackend.from_bytes(data, "mkdisk", writable=scn.disk_writable)
    try:
        return BlockBackend(image, writable=scn.disk_writable, persist=scn.disk_persist)
    except BlockError as exc:
        raise ScenarioError(str(exc)) from None


async def _boot(scn: Scenario, backend, trace, echo):
    ram = GuestRAM(scn.ram_mib << 20)
    kernel = KernelConfig(scn.kernel_version, scn.kvm, scn.host_endian, scn.logical_ci_handlers,
                          overrides=scn.linux_overrides)
    vm = KvmVm(kernel, ram, trace, scn.costs)
    trace.emit("kvm", "vm_created", kernel=scn.kernel_version, flavour=scn.kvm,
               logical_ci_handlers=kernel.logical_ci_handlers, host_endian=scn.host_endian)
    console = Console(trace, echo)
    kernel_image = None
    if scn.kernel == "direct":     # -kernel: the same payload mkdisk puts on the disk
        from sim.mkdisk import build_payload
        from sim.board.spapr import KERNEL_LOAD_ADDR
        kernel_image = build_payload(KERNEL_LOAD_ADDR)
    m = SpaprMachine(scn, vm, ram, backend, trace, scn.costs, console, kernel_image=kernel_image)
    cpu = PowerCPU(ram)
    vcpu = vm.create_vcpu(cpu)
    # What QEMU hands SLOF in its device tree.
    device_tree = {"memory": ram.size, "phb": m.phb_node}
    if m.boot_kernel is not None:
        device_tree["chosen"] = {"qemu,boot-kernel": m.boot_kernel}
    slof = Slof(cpu, device_tree, trace, scn.costs, timeout_ms=scn.virtio_timeout_ms,
                max_prep_blocks=scn.max_prep_blocks, release=slof_release(scn.slof))
    slof.client_program = _client_program
    vcpu.load_guest(_guest(cpu, slof, device_tree, trace, scn.costs, GUEST_KERNELS[scn.guest_kernel]))
    try:
        result, hung = await m.run(vcpu, WATCHDOG_S)
    finally:
        vcpu.close()
    if hung:   # the simulator's bound, not the guest's: report.outcome says "watchdog"
        trace.emit("sim", "watchdog", seconds=WATCHDOG_S)
    return m, result, hung, round(vtime.now() * 1e9)


async def _guest(cpu, slof, device_tree, trace, costs, guest_kernel) -> dict:
    """What the CPU executes: SLOF from 0x100, then, only if the image SLOF
    jumped to ran to its hand-off point (sim.handoff), the guest kernel's
    virtio-blk stage."""
    try:
        result = await slof.main()
    except GuestUnbounded as exc:    # real SLOF would not finish: the run ends here, with why
        return {"stage": "unbounded", "kind": exc.kind, "why": str(exc)}
    if result.get("stage") == "kernel":
        result["handed_off"], result["why"] = handoff.reached(trace)
        if result["handed_off"]:
            result["linux"] = await LinuxVirtioBlk(cpu, device_tree, trace, costs, kernel=guest_kernel).run()
    return result


async def _client_program(slof, kind, entry, segments, dev):
    """SLOF's hand-off to a client program the machine models: GRUB's core
    image (recognised by its module area) runs as the GRUB model, calling
    SLOF's client interface; any other image runs as machine code (None)."""
    from firmware_model.grub import core_image
    image = core_image(slof.cpu.ram, segments)
    if image is None:
        return None
    from firmware_model.grub.main import Grub      # imported only for a GRUB image
    from firmware_model.slof.client import ClientInterface
    slof.phase("hand-off", program="grub", entry=entry)
    cif = ClientInterface(slof, dev, scratch=slof.data + 0x8000)
    return await Grub(slof.cpu, cif, image, slof.trace, slof.costs).main()


def run(scn: Scenario, disk_override: str | None = None, echo=None, backend=None, instruments=()) -> RunResult:
    """Boot scn; backend, if given, is the disk (the scenario's is not opened);
    instruments are trio Instruments (benchmarks/bench.py counts passes)."""
    backend = backend or open_disk(scn, disk_override)
    trace = Trace()
    clock = vtime.AutojumpClock()
    vtime.use_clock(clock)
    vtime.deterministic_scheduling()
    # A boot keeps every trace event (about 280,000 in a 64 MiB load) to
    # its end, and CPython never untracks them (tuple subclasses): at the
    # default gen-0 threshold of 700 allocations the collector's passes
    # over them were 14% of that boot. Collections still happen, 14x rarer.
    gc_threshold = gc.get_threshold()
    gc.set_threshold(max(gc_threshold[0], GC_GEN0_THRESHOLD), *gc_threshold[1:])
    # What the process held before this machine (its modules, an earlier
    # run's result) is not the machine's garbage: out of the collector's
    # passes while it runs (gc.freeze), back in the oldest generation after.
    gc.freeze()
    try:
        m, result, hung, end_ns = run_trio(_boot, scn, backend, trace, echo, clock=clock,
                                            instruments=instruments)
    except RamAllocError as exc:
        raise ScenarioError(f"{scn.path}: [machine] ram_mib: {exc}") from None
    except BlockError as exc:       # the image file failed mid-run (a corrupt .xz): the user's input
        raise ScenarioError(str(exc)) from None
    except BaseExceptionGroup as group:     # the same, as a task's error wrapped by trio
        blk, rest = group.split(BlockError)
        if blk is not None and rest is None:
            raise ScenarioError(str(_leaves(blk)[0])) from None
        raise
    finally:
        gc.unfreeze()
        gc.set_threshold(*gc_threshold)
        vtime.use_clock(None)
        backend.close()
    return RunResult(scn, trace, m.console, result, m, end_ns, hung)


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    return [e for x in group.exceptions for e in (_leaves(x) if isinstance(x, BaseExceptionGroup) else [x])]
