"""compare --plot: each run's lanes in its own panel on its own time axis
(needs matplotlib: pip install 'slofsim[plot]').

The lanes are the trace's threads (sim.perfetto.TRACKS); the vcpu's is
split at the kernel stage (sim.trace.KERNEL_STAGE_PHASE) into SLOF and the
kernel, and the kernel stage is shaded. Each lane is one collection (one
broken_barh call), so drawing costs about as much as the boots.
"""

from sim.diagnosis import notify_addrs
from sim.perfetto import TRACKS, build
from sim.scenario import ScenarioError, check_writable
from sim.trace import KERNEL_STAGE_PHASE

COLORS = {"phase": "#c9d6ea", "hcall": "#4c72b0", "mmio": "#937860", "notify": "#dd8452",
          "request": "#55a868", "disk": "#8172b3"}
LEGEND = {"phase": "SLOF / kernel phase", "hcall": "hcall", "mmio": "MMIO load/store (kernel stage)",
          "notify": "QUEUE_NOTIFY path", "request": "request served", "disk": "disk I/O"}
FORMATS = (".svg", ".png")
_GUEST = TRACKS["guest"][0]


def check_plot(path: str) -> None:
    """Everything --plot needs, checked before any boot."""
    if not path.lower().endswith(FORMATS):
        raise ScenarioError(f"{path}: --plot: expected a file name ending in {' or '.join(FORMATS)}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ScenarioError(f"{path}: --plot needs matplotlib (pip install 'slofsim[plot]')") from None
    check_writable(path, "--plot")


def lanes(result) -> tuple[list[str], dict[int, list], float | None]:
    """Lane labels top to bottom, each lane's (start_s, width_s, category,
    name) slices by lane index, and the kernel stage's start in seconds (or None)."""
    events = build(result, notify_addrs(result))["traceEvents"]
    kstart = next((ev["ts"] / 1e6 for ev in events if ev.get("cat") == "phase" and ev["name"] == KERNEL_STAGE_PHASE),
                  None)
    labels = ["phases", "vcpu 0: SLOF", "vcpu 0: kernel stage"] + [label for tid, label in TRACKS.values()
                                                                   if tid != _GUEST]
    index = {tid: 3 + i for i, tid in enumerate(t for t, _ in TRACKS.values() if t != _GUEST)}
    out: dict[int, list] = {i: [] for i in range(len(labels))}
    for ev in events:
        if ev.get("ph") != "X":
            continue
        start, width = ev["ts"] / 1e6, ev["dur"] / 1e6
        if ev["cat"] == "phase":
            lane = 0
        elif ev["tid"] == _GUEST:
            lane = 2 if kstart is not None and start >= kstart else 1
        else:
            lane = index[ev["tid"]]
        out[lane].append((start, width, ev["cat"], ev["name"]))
    return labels, out, kstart


def plot_lanes(results, path: str) -> None:
    check_plot(path)
    import matplotlib
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"      # SVG text stays text: searchable, smaller
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    fig, axes = plt.subplots(len(results), 1, figsize=(12, 2.8 * len(results)), squeeze=False)
    seen = set()
    for ax, r in zip(axes[:, 0], results):
        end = r.end_ns / 1e9
        labels, by_lane, kstart = lanes(r)
        for lane, slices in by_lane.items():
            if not slices:
                continue
            # One collection per lane; a minimum width keeps instants visible.
            # Rasterized: as vectors thousands of slices make a multi-MB SVG.
            ax.broken_barh([(s, max(w, end / 2000)) for s, w, _, _ in slices], (lane - 0.4, 0.8),
                           facecolors=[COLORS.get(c, "grey") for _, _, c, _ in slices],
                           edgecolor="white" if lane == 0 else "face", linewidth=0.5, rasterized=True)
            seen |= {c for _, _, c, _ in slices}
        for s, w, _, name in by_lane[0]:
            inner = any(s < s2 < s + w for s2, _, _, _ in by_lane[0])
            if w > end / 12 and not inner:        # name the innermost phases wide enough to hold it
                ax.text(s + w / 2, 0, name, ha="center", va="center", fontsize=7, clip_on=True)
        if kstart is not None:
            ax.axvspan(kstart, end, color="#f2e6c9", alpha=0.5, zorder=0)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        ax.set_xlim(0, end)
        ax.set_xlabel(f"simulated time (s), 0 to {r.end_ns // 1000 / 1e6:.6f}", fontsize=8)   # as the summary
        ax.set_title(f"{r.scenario.name}: {r.scenario.description}", fontsize=9, loc="left")
    handles = [Patch(color=COLORS[c], label=LEGEND[c]) for c in COLORS if c in seen]
    handles.append(Patch(color="#f2e6c9", alpha=0.5, label="kernel stage"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    try:
        fig.savefig(path, dpi=150)
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot write: {exc.strerror}") from None
    finally:
        plt.close(fig)
