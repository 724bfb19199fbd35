"""Running cases, one machine each, and the campaign behind `slofsim fuzz`."""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
import traceback
from collections import Counter

import trio
import trio.testing

from devices.block import BlockBackend
from sim import vtime
from sim.abi import papr
from sim.abi.virtio import VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP
from sim.interrupt import EXIT_INTERRUPTED, is_interrupt, raise_if_swallowed, run_trio
from sim.cpu import PowerCPU
from sim.kvm.vm import KernelConfig, KvmVm
from sim.board.spapr import Console, SpaprMachine
from sim.ram import GuestRAM
from sim.trace import Trace
from sim.fuzz.cases import (
    KINDS, Case, CaseResult, DISK, RAM_SIZE, RandomChooser, Tally, WALL_LIMIT_S, WATCHDOG_S, _WallClockHang,
    gen_case,
)
from sim.fuzz.faults import gen_fault_case, run_fault_case
from sim.fuzz.guest import HostileGuest, Oracle
from sim.fuzz.disks import KINDS as DISK_KINDS, gen_disk_case, run_disk_case

DISK_SHARE = 0.25   # of the campaign's wall time spent booting hostile disks

# -- running a case --------------------------------------------------------

async def _machine(case: Case, result: CaseResult, disk_file: str | None) -> None:
    scn = case.config.scenario(case.queue_size)
    trace = Trace()
    # A file holding DISK's bytes is opened as a user's image would be:
    # read-only, or with writes in the memory overlay.
    backend = (BlockBackend(disk_file, writable=case.writable) if disk_file
               else BlockBackend.from_bytes(DISK, "fuzz-disk", writable=case.writable))
    ram = GuestRAM(RAM_SIZE)
    vm = KvmVm(KernelConfig(scn.kernel_version, scn.kvm, scn.host_endian), ram, trace, scn.costs)
    oracle = Oracle(None, vm, trace, result, case.config)   # sees every ENABLE_CAP and IOEVENTFD call
    m = oracle.m = SpaprMachine(scn, vm, ram, backend, trace, scn.costs, Console(trace))
    cpu = PowerCPU(ram)
    vcpu = vm.create_vcpu(cpu)
    vcpu.load_guest(HostileGuest(cpu, m, case, oracle).main())
    try:
        run_result, hung = await m.run(vcpu, WATCHDOG_S)
        done = not hung
    finally:
        vcpu.close()
        backend.close()
    result.sim_time = vtime.now()
    if done and run_result.get("stage") == "qemu exited":   # before 2.8: a guest error is exit(1)
        oracle.check_exit(run_result)
    elif done and oracle.expect_stop is not None:
        oracle.check_stopped_on_failure(run_result, cpu)
    elif done and run_result != {"stage": "hostile guest done"}:
        result.violations.append(f"the guest did not run to its end: the run ended with {run_result!r}")
    for e in trace.events:   # every hcall of the run, the driver's own included
        if e.name == "hcall_done" and e.fields.get("ret") == papr.H_TOO_HARD:
            result.violations.append(f"hcall 0x{e.fields['nr']:x}: H_TOO_HARD reached the guest")
    if not done:
        result.hung = f"the machine did not stop within {WATCHDOG_S} simulated seconds"
    elif result.sim_time <= 0:
        result.violations.append("simulated time did not advance")


_alarm_fired = False


def _alarm(signum, frame):
    global _alarm_fired
    _alarm_fired = True
    raise _WallClockHang()


def run_case(case: Case, wall_limit: float = WALL_LIMIT_S, disk_file: str | None = None) -> CaseResult:
    """One machine, one hostile guest; never raises for a host-side failure."""
    global _alarm_fired
    _alarm_fired = False
    result = CaseResult()
    use_alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    old = signal.signal(signal.SIGALRM, _alarm) if use_alarm else None
    if use_alarm:
        signal.setitimer(signal.ITIMER_REAL, wall_limit)
    try:
        vtime.deterministic_scheduling()
        run_trio(_machine, case, result, disk_file, clock=trio.testing.MockClock(autojump_threshold=0))
    except _WallClockHang:
        result.hung = f"still running after {wall_limit} s of wall time"
    except BaseException as exc:  # noqa: BLE001 -- every escape is the finding
        if is_interrupt(exc):      # Ctrl-C, however trio wrapped it, is never a finding
            raise KeyboardInterrupt from None
        if _alarm_fired:  # the alarm landed inside trio's own code
            result.hung = f"still running after {wall_limit} s of wall time"
        else:
            result.exception = "".join(traceback.format_exception(exc))
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    return result


# -- the campaign (slofsim fuzz) -------------------------------------------

@dataclasses.dataclass
class Campaign(Tally):
    cases: int = 0
    kinds: Counter = dataclasses.field(default_factory=Counter)
    exceptions: list = dataclasses.field(default_factory=list)
    hangs: list = dataclasses.field(default_factory=list)
    violations: list = dataclasses.field(default_factory=list)
    sim_time: float = 0.0
    interrupted: bool = False       # Ctrl-C ended it before its budget
    wall_s: float = 0.0             # wall seconds it ran
    disks: Counter = dataclasses.field(default_factory=Counter)         # (kind, outcome) -> boots
    worst_disk: tuple = (0.0, None)                                     # (wall s, case)

    @property
    def ok(self) -> bool:
        return not (self.exceptions or self.hangs or self.violations)

    def add(self, case: Case, r: CaseResult) -> None:
        self.cases += 1
        self.add_tally(r)
        self.kinds[case.kind] += 1
        self.sim_time += r.sim_time
        if r.exception:
            self.exceptions.append((case, r.exception))
        if r.hung:
            self.hangs.append((case, r.hung))
        self.violations += [(case, v) for v in r.violations]

    def add_disk(self, case, r) -> None:
        """A hostile-disk boot: its violations (host exception, hang,
        watchdog, booted without the marker) count with the others."""
        self.disks[(case.kind, r.outcome or "no outcome")] += 1
        self.sim_time += r.sim_s
        if r.wall_s > self.worst_disk[0]:
            self.worst_disk = (r.wall_s, case)
        self.violations += [(case, v) for v in r.violations]

def campaign(seconds: float, seed: int, clock=time.monotonic, disk_file: str | None = None,
             on_case=lambda c: None, disks: bool = True) -> Campaign:
    """Hostile guests, and (with disks) hostile disks for DISK_SHARE of the
    time, until the budget is spent or Ctrl-C; on_case(campaign) after each."""
    import random
    ch = RandomChooser(random.Random(seed))
    disk_ch = RandomChooser(random.Random(f"disks-{seed}"))   # its own stream: the guests' cases stay the seed's
    c = Campaign()
    start = clock()
    disk_time = 0.0
    try:
        while True:
            if disks and disk_time <= DISK_SHARE * (clock() - start):
                t = clock()
                dcase = gen_disk_case(disk_ch)
                c.add_disk(dcase, run_disk_case(dcase))
                disk_time += clock() - t
            else:
                case = gen_case(ch)
                c.add(case, run_case(case, disk_file=disk_file))
            if c.cases % 4 == 3:        # every fourth machine: SLOF under random faults (sim.fuzz.faults)
                fcase = gen_fault_case(ch)
                c.add(fcase, run_fault_case(fcase))
            c.wall_s = clock() - start
            raise_if_swallowed()        # a Ctrl-C that landed in a __del__ between machines
            on_case(c)
            if c.wall_s >= seconds:
                return c
    except BaseException as exc:
        if not is_interrupt(exc):      # Ctrl-C, however trio wrapped it; anything else goes on up
            raise
        c.interrupted = True
        c.wall_s = clock() - start
        return c


def format_campaign(c: Campaign, seconds: float, seed: int) -> str:
    names = {VIRTIO_BLK_S_OK: "OK", VIRTIO_BLK_S_IOERR: "IOERR", VIRTIO_BLK_S_UNSUPP: "UNSUPP"}
    lines = [f"slofsim fuzz: seed {seed}, {seconds:g} s budget"
             + (f", interrupted after {c.wall_s:.1f} s (the counts so far)" if c.interrupted else ""),
             f"inputs tried: {c.cases} machines, {sum(c.ops.values())} operations "
             f"({', '.join(f'{k} {v}' for k, v in sorted(c.ops.items()))}), "
             f"{c.sim_time:.3f} simulated s",
             "request statuses: " + (", ".join(f"{names.get(k, k)} {v}" for k, v in sorted(c.statuses.items()))
                                     or "none"),
             "machines by kind: " + ", ".join(f"{k} {c.kinds[k]}" for k in KINDS + ("faults",)),
             "raw hcalls: " + (", ".join(f"{k} {v}" for k, v in sorted(c.hcall_paths.items())) or "none"),
             "MMU-on loads/stores: " + (", ".join(f"{k} {v}" for k, v in sorted(c.mmio_paths.items()))
                                        or "none"),
             "device errors by reason (virtio_error):"]
    lines += [f"  {v:6d}  {k}" for k, v in c.device_errors.most_common()] or ["  none"]
    n_disks = sum(c.disks.values())
    lines.append(f"hostile disks: {n_disks} boots, " + ", ".join(
        f"{k} {sum(v for (kk, _), v in c.disks.items() if kk == k)}" for k in DISK_KINDS) +
        "; outcomes: " + (", ".join(f"{o} {sum(v for (_, oo), v in c.disks.items() if oo == o)}"
                                     for o in sorted({o for _, o in c.disks})) or "none") +
        (f"; worst wall time {c.worst_disk[0]:.2f} s ({c.worst_disk[1]})" if n_disks else ""))
    lines.append(f"host-side exceptions: {len(c.exceptions)}")
    lines.append(f"hangs: {len(c.hangs)}")
    lines.append(f"oracle violations: {len(c.violations)}")
    for case, text in (c.exceptions + c.hangs + c.violations)[:3]:
        lines.append(f"--- first failures: {case}\n{text}")
    return "\n".join(lines)


def counts(c: Campaign) -> str:
    """The running counts the progress line shows."""
    return (f"{c.cases} machines, {sum(c.ops.values())} ops, {len(c.exceptions)} exceptions, "
            f"{len(c.hangs)} hangs, {len(c.violations)} violations")


def cmd_fuzz(args) -> int:
    """slofsim fuzz: exit 0 only with no host-side exception, hang or
    oracle violation; 130 on Ctrl-C, after the counts so far."""
    import sys
    from sim import term
    from sim.scenario import ScenarioError
    if not args.seconds > 0:
        raise ScenarioError(f"--seconds: expected a positive number, got {args.seconds:g}")
    with term.rate_progress(args.seconds, f"slofsim fuzz: seed {args.seed}, {args.seconds:g} s budget",
                            "inputs") as update:
        c = campaign(args.seconds, args.seed, on_case=lambda c: update(c.wall_s, c.cases, counts(c)))
    print(format_campaign(c, args.seconds, args.seed))
    if c.interrupted:
        sys.stdout.flush()
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if c.ok else 1
