"""Random faults under the real firmware: the campaign's fault cases.

A fault case boots SLOF on a random modelled stack (QEMU and Linux
release, iothread or not, SLOF's timeout) with one to three random
faults (sim.faults) and checks the campaign's properties:

- no host-side exception, and the run ends within a bound: never at the
  machine's watchdog, and a case has
  cases.WALL_LIMIT_S of wall time (run_case's alarm);
- every outcome is explained by the trace:
  - a fault that never acted changes nothing: the outcome and the block
    requests equal the same stack's without faults;
  - hung-in-qemu: a drain began and never ended, and every request it
    waits for was suspended by a hang fault; a run that reached the
    watchdog is a finding (a drain that cannot end stops the machine);
  - an io_error on one of SLOF's reads is answered with status 1, which
    SLOF prints;
  - the diagnosis names every fault.
"""

import dataclasses
import time
import traceback

from sim.faults import KINDS, LAYERS, Fault
from sim.fuzz.cases import CaseResult, WALL_LIMIT_S

STACKS = (("2.3", "4.0"), ("2.4", "4.1"), ("2.8", "4.1"), ("7.2", "6.1"), ("7.2", "4.0"))


@dataclasses.dataclass(frozen=True)
class FaultCase:
    qemu: str
    kernel: str
    iothread: bool
    timeout_ms: int
    faults: tuple
    kind: str = "faults"

    def __str__(self) -> str:
        return (f"faults case: QEMU {self.qemu}, Linux {self.kernel}, "
                f"{'iothread' if self.iothread else 'no iothread'}, timeout {self.timeout_ms} ms, "
                + "; ".join(f.text() for f in self.faults))


def gen_fault(ch) -> Fault:
    kind = ch.choice(KINDS)
    first = ch.integer(1, 40)
    last = ch.choice((first, None, first + ch.integer(0, 8)))
    if kind == "lost_kick":
        return Fault(kind, first, last, layer=ch.choice(LAYERS))
    sectors = None
    if ch.boolean():
        lo = ch.choice((0, 1, 2, 64, 2048, ch.integer(0, 40000)))
        sectors = (lo, lo + ch.integer(0, 100))
    return Fault(kind, first, last, sectors, ch.integer(1, 7000) if kind == "delay" else 0)


def gen_fault_case(ch) -> FaultCase:
    qemu, kernel = ch.choice(STACKS)
    return FaultCase(qemu, kernel, ch.boolean(), ch.choice((50, 500, 5000)),
                     tuple(gen_fault(ch) for _ in range(ch.integer(1, 3))))


def _scenario(case: FaultCase, faults):
    from firmware_model.linux.releases import default_guest
    from sim.kvm import releases as linux
    from sim.qemu import releases as qemu
    from sim.scenario import Scenario, release_defaults
    q = qemu.parse(case.qemu)
    return Scenario(path="<fuzz>", name="fuzz-faults", kernel_version=case.kernel, qemu_version=q,
                    iothread=case.iothread, virtio_timeout_ms=case.timeout_ms,
                    guest_kernel=default_guest(q, linux.parse(case.kernel)), faults=tuple(faults),
                    **release_defaults(q))


def check(case: FaultCase, r, base) -> list[str]:
    """The oracle: what the run's trace must show, given its faults."""
    from sim import report
    out = []
    got = report.outcome(r)
    acted = r.trace.named("blkdebug") or r.trace.named("fault_lost_kick")
    if not acted:
        if got != report.outcome(base):
            out.append(f"no fault acted, yet the outcome is {got}, not {report.outcome(base)}")
        if report.block_requests(r.trace) != report.block_requests(base.trace):
            out.append("no fault acted, yet the block requests differ")
    drain = report.hung_in_qemu(r)
    if r.hung:
        out.append("the run reached the watchdog" + ("" if drain is None else " in a drain"))
    if drain is not None:
        hung = {e.fields["request"] for e in r.trace.named("blkdebug") if e.fields["kind"] == "hang"}
        if not drain.fields["suspended"] or not set(drain.fields["suspended"]) <= hung:
            out.append(f"hung in QEMU waiting for {drain.fields['suspended']}, not for hang faults' {sorted(hung)}")
    eio = {e.fields["request"] for e in r.trace.named("blkdebug") if e.fields["kind"] == "io_error"}
    firmware = report.firmware_trace(r.trace)
    failed = [e for e in firmware.named("blk_complete") if e.fields["status"] == 1]
    if len(failed) < len([e for e in firmware.named("blkdebug") if e.fields["request"] in eio]):
        out.append("an injected EIO was not answered with VIRTIO_BLK_S_IOERR")
    # SLOF reads the status of the request it waits for; one it gave up on
    # (a virtio_timeout before its next request) may fail later unseen.
    if [e for e in failed if e.fields["used_idx"] not in _timed_out(firmware)] \
            and "status = 1" not in r.console.text():
        out.append("SLOF got status 1 and did not say so")
    named = " ".join(s["text"] for s in report.diagnose(r))
    out += [f"the diagnosis does not name {f.text()}" for f in case.faults if f"injected: {f.text()}" not in named]
    return out


def _timed_out(firmware) -> set:
    """The avail_idx of each request SLOF timed out on: a virtio_timeout
    comes after its submit and before the next one."""
    out, current = set(), None
    for e in firmware.events:
        if e.name == "virtio_blk_submit":
            current = e.fields["avail_idx"]
        elif e.name == "virtio_timeout" and current is not None:
            out.add(current)
    return out


def run_fault_case(case: FaultCase, wall_limit: float = WALL_LIMIT_S) -> CaseResult:
    """One boot with faults and one without; never raises for a host-side failure."""
    from sim import machine
    result = CaseResult()
    start = time.monotonic()
    try:
        base = machine.run(_scenario(case, ()))
        r = machine.run(_scenario(case, case.faults))
        result.sim_time = r.end_ns / 1e9
        result.ops["fault boots"] += 2
        result.violations += check(case, r, base)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 -- every escape is the finding
        result.exception = "".join(traceback.format_exception(exc))
    if time.monotonic() - start > wall_limit:
        result.hung = f"still running after {wall_limit} s of wall time"
    return result
