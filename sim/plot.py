"""Both runs' actor lanes on one time axis (needs matplotlib: pip install 'slofsim[plot]')."""

from sim.diagnosis import notify_addrs
from sim.perfetto import TRACKS, build
from sim.scenario import ScenarioError

COLORS = {"phase": "#c9d6ea", "hcall": "#4c72b0", "notify": "#dd8452", "request": "#55a868", "disk": "#8172b3"}


def plot_lanes(results, path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ScenarioError(f"{path}: --plot needs matplotlib (pip install 'slofsim[plot]')") from None
    if not path.endswith((".svg", ".png")):
        raise ScenarioError(f"{path}: --plot: expected a .svg or .png file name")
    fig, axes = plt.subplots(len(results), 1, figsize=(12, 2.2 * len(results)), sharex=True, squeeze=False)
    end = max(r.end_ns for r in results) / 1e9
    names = {tid: label for tid, label in TRACKS.values()}
    for ax, r in zip(axes[:, 0], results):
        for ev in build(r, notify_addrs(r))["traceEvents"]:
            if ev.get("ph") != "X":
                continue
            # Rasterized: a boot has thousands of slices; as vectors they make a multi-MB SVG.
            ax.broken_barh([(ev["ts"] / 1e6, max(ev["dur"] / 1e6, end / 2000))], (ev["tid"] - 0.4, 0.8),
                           color=COLORS.get(ev["cat"], "grey"), rasterized=True)
        ax.set_yticks(list(names), [names[t] for t in names])
        ax.invert_yaxis()
        ax.set_title(f"{r.scenario.name}: {r.scenario.description}", fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("simulated time (s)")
    axes[-1, 0].set_xlim(0, end)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=150)
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot write: {exc.strerror}") from None
    plt.close(fig)
