"""slofsim matrix: which hosts stall? Every modelled QEMU release x Linux
release, for HV and PR KVM, with and without an iothread, legacy and
transitional (modern) virtio.

The model reads behaviour only from the release tables, so two releases
whose rows agree on every field the machine reads boot identically: the
matrix boots one representative per class (the first release of each run
of equal rows) and gives its outcome to the whole class. The boundaries
are where an outcome changes from one class to the next, with the table
rows (and commits) that changed there; one more boot per row, with that
row set back alone, tells a cause from a row that merely changed too.
"""

import functools
from concurrent.futures import ProcessPoolExecutor

from firmware_model.linux.releases import default_guest
from firmware_model.slof.releases import release as slof_release
from sim.kvm import releases as linux
from sim.qemu import releases as qemu

# Every field of the QEMU table the machine reads for a given scenario
# ("modern_default" is not: the matrix asks for legacy and modern itself).
# "slof" is compared as the SLOF model row its tag selects
# (firmware_model/slof/releases.py): tags with no modelled change between
# them boot alike.
QEMU_KEY = tuple(f for f in qemu.TABLE.fields if f != "modern_default")
# tce_multi is read only by KVM_ENABLE_CAP for H_PUT_TCE_INDIRECT/H_STUFF_TCE,
# which QEMU (kvmppc_enable_logical_ci_hcalls) never asks for.
LINUX_KEY = tuple(f for f in linux.TABLE.fields if f != "tce_multi")
# Fields the code reads only for a transitional device (the proxy's modern
# part, the length-0 notify ioeventfd QEMU asks KVM for) or only with a
# dataplane (VirtIOBlock.start_ioeventfd): a class boundary in them cannot
# change a legacy or no-iothread boot.
MODERN_ONLY = {"modern", "page_per_vq", "any_length_notify", "ioeventfd_any_length"}
DATAPLANE_ONLY = {"dataplane_start"}
CONFIGS = tuple((kvm, iothread, modern) for kvm in ("HV", "PR") for iothread in (False, True)
                for modern in (False, True))


def keys(cfg) -> tuple[tuple, tuple]:
    """(QEMU fields, Linux fields) a boot in this configuration reads."""
    _, iothread, modern = cfg
    skip = (set() if modern else MODERN_ONLY) | (set() if iothread else DATAPLANE_ONLY)
    return tuple(f for f in QEMU_KEY if f not in skip), tuple(f for f in LINUX_KEY if f not in skip)
SYMBOL = {"booted": ".", "stalled": "S", "failed": "F", "hung-in-qemu": "Q", "qemu-exited": "X", None: "-"}


def classes(table, key) -> list[list[tuple[int, int]]]:
    """Runs of consecutive releases whose rows agree on every key field."""
    out = []
    def k_of(v):
        b = table.behaviour(v)
        return tuple(slof_release(b.slof).tag if f == "slof" else getattr(b, f) for f in key)

    for v in table.releases:
        k = k_of(v)
        if out and k_of(out[-1][0]) == k:
            out[-1].append(v)
        else:
            out.append([v])
    return out


def config_name(cfg) -> str:
    kvm, iothread, modern = cfg
    return f"{kvm} {'iothread' if iothread else 'no-iothread'} {'modern' if modern else 'legacy'}"


def _boot(cell, qemu_overrides=None, linux_overrides=None, faults=()) -> tuple:
    """One representative boot (runs in a worker process); the overrides
    set table fields otherwise (a counterfactual release); faults
    (sim.faults, `matrix --fault`) act in every boot."""
    from sim import machine, report
    from sim.scenario import Scenario, release_defaults
    q, k, (kvm, iothread, modern) = cell
    qo, lo = qemu_overrides or {}, linux_overrides or {}
    if modern and not qemu.behaviour(q).replaced(qo).modern:
        return cell, None, None
    scn = Scenario(path="<matrix>", name=f"matrix-{q[0]}.{q[1]}-{k[0]}.{k[1]}", kernel_version=f"{k[0]}.{k[1]}",
                   kvm=kvm, qemu_version=q, iothread=iothread, disable_modern=not modern,
                   qemu_overrides=qo, linux_overrides=lo, guest_kernel=default_guest(q, k), faults=tuple(faults),
                   **release_defaults(q, qo))
    s = report.summary(machine.run(scn))
    return cell, s["outcome"], s["first_stalled_request"]


def _ablate(job) -> tuple:
    """(boundary index, field, outcome with that one field as before the boundary)."""
    i, axis, cell, field, value, faults = job
    over = {field: value}
    _, outcome, _ = _boot(cell, over if axis == "QEMU" else None, over if axis == "Linux" else None, faults)
    return i, field, outcome


def run(jobs: int = 1, step=lambda text=None, advance=0: None, faults=()) -> dict:
    """Boot one representative per (QEMU class, Linux class) of each
    configuration; every release gets its class's outcome. faults: the
    same faults in every boot (the map under a failing disk, say)."""
    boot = functools.partial(_boot, faults=tuple(faults))
    qc, lc = classes(qemu.TABLE, QEMU_KEY), classes(linux.TABLE, LINUX_KEY)
    per_cfg = {cfg: (classes(qemu.TABLE, keys(cfg)[0]), classes(linux.TABLE, keys(cfg)[1])) for cfg in CONFIGS}
    cells = [(q[0], k[0], cfg) for cfg, (cq, ck) in per_cfg.items() for q in cq for k in ck]
    if jobs > 1:
        with ProcessPoolExecutor(min(jobs, len(cells))) as pool:
            done = []
            for r in pool.map(boot, cells, chunksize=4):
                done.append(r)
                step(advance=1)
    else:
        done = []
        for c in cells:
            done.append(boot(c))
            step(advance=1)
    booted = {cell: (o, first) for cell, o, first in done}
    done = None
    outcome = {}
    for cfg, (cq, ck) in per_cfg.items():
        for q in cq:
            for k in ck:
                for qv in q:
                    for kv in k:
                        outcome[(qv, kv, cfg)] = booted[(q[0], k[0], cfg)]
    found = boundaries(qc, lc, outcome)
    jobs_ab = [j + (tuple(faults),) for j in attribution_jobs(found)]
    if jobs > 1 and jobs_ab:
        with ProcessPoolExecutor(min(jobs, len(jobs_ab))) as pool:
            ablated = list(pool.map(_ablate, jobs_ab))
    else:
        ablated = [_ablate(j) for j in jobs_ab]
    for i, field, got in ablated:
        e = found[i]
        e["causes"][field] = got == e["from"]
    return {"qemu_classes": qc, "linux_classes": lc, "outcome": outcome, "boots": len(cells) + len(jobs_ab),
            "boundaries": found, "faults": [f.text() for f in faults]}


def attribution_jobs(found) -> list[tuple]:
    """For each boundary, one boot per changed row: its first cell after the
    boundary (the first configuration and class listed) with that row's
    field back at its value before it. A row whose reversal alone gives back
    the old outcome is a cause of the change there."""
    out = []
    for i, e in enumerate(found):
        o, cfg = e["where"][0]
        cell = (e["release"], o[0], cfg) if e["axis"] == "QEMU" else (o[0], e["release"], cfg)
        table = qemu.TABLE if e["axis"] == "QEMU" else linux.TABLE
        old = table.behaviour(e["before"])
        e["causes"] = {}
        for r in e["rows"]:
            out.append((i, e["axis"], cell, r.field, getattr(old, r.field)))
    return out


def _changed_rows(table, fields, before, at) -> list:
    b0, b1 = table.behaviour(before), table.behaviour(at)
    return [table.row_for(at, f) for f in table.fields if f in fields and getattr(b0, f) != getattr(b1, f)]


def boundaries(qc, lc, outcome) -> list[dict]:
    """Where an outcome changes between neighbouring classes, along either
    axis, merged over the configs and the other axis's classes."""
    found = {}
    for axis, (mine, other, table) in (("QEMU", (qc, lc, qemu.TABLE)), ("Linux", (lc, qc, linux.TABLE))):
        for a, b in zip(mine, mine[1:]):
            for o in other:
                for cfg in CONFIGS:
                    cell = (lambda x: (x, o[0], cfg)) if axis == "QEMU" else (lambda x: (o[0], x, cfg))
                    before, after = outcome[cell(a[0])][0], outcome[cell(b[0])][0]
                    if before is None or after is None or before == after:
                        continue
                    k = (axis, b[0], before, after)
                    entry = found.setdefault(k, {"axis": axis, "release": b[0], "from": before, "to": after,
                                                 "where": [], "before": a[0], "table": table})
                    entry["where"].append((o, cfg))
    for e in found.values():   # the changed rows a boot in one of these configurations reads
        read = {f for _, cfg in e["where"] for f in keys(cfg)[e["axis"] == "Linux"]}
        e["rows"] = [r for r in _changed_rows(e.pop("table"), read, e["before"], e["release"])]
    return sorted(found.values(), key=lambda e: (e["axis"] != "QEMU", e["release"], e["from"]))


def _span(cls) -> str:
    a, b = cls[0], cls[-1]
    return f"{a[0]}.{a[1]}" if a == b else f"{a[0]}.{a[1]}-{b[0]}.{b[1]}"


def _where(entry, axis_other) -> str:
    """'Linux 3.17-4.0; HV+PR; iothread; legacy+modern' for a boundary."""
    others = sorted({_span(o) for o, _ in entry["where"]}, key=lambda s: [int(x) for x in s.split("-")[0].split(".")])
    cfgs = {cfg for _, cfg in entry["where"]}
    parts = []
    for i, names in enumerate((("HV", "PR"), (False, True), (False, True))):
        vals = sorted({c[i] for c in cfgs}, key=str)
        if len(vals) < len(names):
            parts.append({0: lambda v: v, 1: lambda v: "iothread" if v else "no iothread",
                          2: lambda v: "modern" if v else "legacy"}[i](vals[0]))
    return f"{axis_other} {', '.join(others)}" + (f"; {', '.join(parts)}" if parts else "")


def format_text(m: dict) -> str:
    qc, lc, outcome = m["qemu_classes"], m["linux_classes"], m["outcome"]
    lines = ["stall map: S stalled, . booted, F failed, Q hung in QEMU, X QEMU exited, - not offered (modern virtio before QEMU 2.4)",
             "columns: QEMU releases; rows: Linux (host KVM) releases; one block per configuration",
             f"(releases whose table rows agree on all a boot reads are one class: {m['boots']} boots)"]
    if m.get("faults"):
        lines.append(f"every boot with the fault(s): {'; '.join(m['faults'])}")
    lines.append("")
    heads = [_span(c) for c in qc]
    wl = max(len("Linux " + _span(c)) for c in lc) + 2
    for cfg in CONFIGS:
        lines.append(config_name(cfg))
        lines.append(" " * wl + " ".join(f"{h:>{max(len(h), 1)}}" for h in heads))
        for k in lc:
            row = [f"{SYMBOL[outcome[(q[0], k[0], cfg)][0]]:>{len(h)}}" for q, h in zip(qc, heads)]
            lines.append(f"{'Linux ' + _span(k):<{wl}}" + " ".join(row))
        lines.append("")
    lines.append("boundaries: where an outcome changes, and the rows of the release tables that change there;")
    lines.append("a row is a cause if setting it back alone (one more boot) gives back the old outcome")
    for e in m["boundaries"]:
        other = "Linux" if e["axis"] == "QEMU" else "QEMU"
        lines.append(f"  {e['axis']} {e['release'][0]}.{e['release'][1]}: {e['from']} -> {e['to']}  "
                     f"({_where(e, other)})")
        for r in e["rows"]:
            mark = "cause" if e["causes"].get(r.field) else "also changed"
            lines.append(f"      [{mark}] {r.field} = {r.value!r}: {r.commit or '(initial)'}")
    return "\n".join(lines)


def to_json(m: dict) -> dict:
    qc, lc, outcome = m["qemu_classes"], m["linux_classes"], m["outcome"]
    ver = lambda v: f"{v[0]}.{v[1]}"
    stall_map = {}
    for cfg in CONFIGS:
        per = stall_map[config_name(cfg)] = {}
        for k in lc:
            for kv in k:
                per[ver(kv)] = {ver(qv): outcome[(q[0], k[0], cfg)][0] for q in qc for qv in q}
    return {
        "boots": m["boots"],
        "faults": m.get("faults", []),
        "qemu_classes": [[ver(v) for v in c] for c in qc],
        "linux_classes": [[ver(v) for v in c] for c in lc],
        "configs": [config_name(c) for c in CONFIGS],
        "map": stall_map,
        "boundaries": [{"axis": e["axis"], "release": ver(e["release"]), "from": e["from"], "to": e["to"],
                        "where": [{"other": _span(o), "config": config_name(c)} for o, c in e["where"]],
                        "rows": [{"field": r.field, "value": r.value, "since": ver(r.release), "commit": r.commit,
                                  "source": r.source, "cause": e["causes"].get(r.field, False)} for r in e["rows"]]}
                       for e in m["boundaries"]],
    }
