"""PNG charts of a bench run (matplotlib, optional): packets/s against concurrent flows, the
port-pool use of each ENI over the churn replay's time, and the replay's scaling with workers."""
from __future__ import annotations

import os
from typing import Optional


def matplotlib_missing() -> Optional[str]:
    """None when matplotlib can draw here, else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
    except ImportError as exc:
        return f"matplotlib is not installed ({exc}); pip install matplotlib to get the charts"
    return None


def write_charts(data: dict, folder: str) -> list[str]:
    """The charts the data allows, as PNG files in ``folder``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(folder, exist_ok=True)
    written = []

    series = data.get("established") or []
    if series:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        flows = [p["flows"] for p in series]
        rate = [p["rate"] for p in series]
        low = [p["rate"] - p["min"] for p in series]
        high = [p["max"] - p["rate"] for p in series]
        ax.errorbar(flows, rate, yerr=[low, high], marker="o", capsize=4, label=f"hyperplane {series[0]['backend']}")
        kernel = (data.get("kernel") or {}).get("established") or {}
        if kernel:
            import statistics

            ks = sorted((int(k), statistics.median(v["rates"])) for k, v in kernel.items() if v.get("rates"))
            ax.plot([k for k, _ in ks], [r for _, r in ks], marker="s", linestyle="--", label="Linux kernel (nft SNAT)")
        ax.set_xscale("log")
        ax.set_xlabel("concurrent flows")
        ax.set_ylabel("packets/s (median, min-max)")
        ax.set_title("Established flows")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        path = os.path.join(folder, "established-flows.png")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    timeline = data.get("port_pool_timeline")
    if timeline and timeline.get("points"):
        points = timeline["points"]
        enis = []
        for p in points:
            for eni in p["connections"]:
                if eni not in enis:
                    enis.append(eni)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        t = [p["t"] for p in points]
        for eni in enis:
            ax.plot(t, [p["connections"].get(eni, 0) for p in points], label=eni)
        ax.axhline(timeline["capacity"], color="grey", linestyle=":", label="capacity")
        ax.set_xlabel("capture time (s)")
        ax.set_ylabel("live connections (port-pool use)")
        ax.set_title("Port-pool use of each Hyperplane ENI (UDP churn, overflow)")
        ax.legend(fontsize="small")
        ax.grid(True, alpha=0.3)
        path = os.path.join(folder, "eni-port-pool.png")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    scaling = data.get("scaling")
    if scaling:
        fig, ax = plt.subplots(figsize=(5, 4))
        w = scaling["workers"]
        ax.bar([str(x) for x in w], scaling["rate"],
               yerr=[[r - lo for r, lo in zip(scaling["rate"], scaling["min"])],
                     [hi - r for r, hi in zip(scaling["rate"], scaling["max"])]], capsize=4)
        ax.set_xlabel("worker processes")
        ax.set_ylabel("packets/s (file to file)")
        ax.set_title("Parallel replay")
        path = os.path.join(folder, "replay-scaling.png")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
