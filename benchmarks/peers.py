"""wbc-ray against TIAToolbox and WSInfer: same slide, same released weights, same tile size and
scale, same machine, one run (`make bench-peers`).

  one model    TIAToolbox PatchPredictor | WSInfer's CLI | wbc-ray with `models: [mobilenet]`
  three models TIAToolbox running the three networks in turn | wbc-ray's ensemble

Each peer lives in a venv of its own (pinned, made once under .peers/); the released networks are
exported once as TorchScript (fp32, the model card's calibration inside, so a peer's softmax is
wbc-ray's p(malignant)). Runs are interleaved, repeated, and the median kept. For each: wall time
of the whole command (start-up included, what a user waits), tiles scored, peak RSS of the
process tree, and agreement with wbc-ray on the tiles both scored (same corners, scores within
the tolerance of wbc-ray's serving precision). JSON in bench_results/peers.json, a bar plot, and
with --readme the README's table generated from it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from benchmarks._common import OUT_DIR, cpu_description, print_targets, target, write_result

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = Path(os.environ.get("WBC_RAY_PEERS", ROOT / ".peers"))
RUNNERS = Path(__file__).resolve().parent / "peer_runners"
# Pins found to install and run here (torch as wbc-ray's, from the same wheels).
PEERS = {
    "tiatoolbox": [
        "setuptools<81",
        "torch==2.14.1",
        "torchvision==0.29.1",
        "tiatoolbox==1.3.2",
        "openslide-bin",
    ],
    "wsinfer": ["torch==2.14.1", "torchvision==0.29.1", "wsinfer==0.6.1", "zarr<3", "openslide-bin"],
}
# WSInfer's tissue detector is tuned for H&E sections; smear fields on glass need it loosened.
WSINFER_TISSUE = [
    "--seg-binary-threshold", "1", "--seg-closing-kernel-size", "24", "--seg-min-object-size-um2", "100",
]  # fmt: skip
# Scores may differ by the serving precision (wbc-ray serves bf16 or int8 on CPUs, peers fp32)
# and by how each reader resamples a tile to the model's scale.
TOLERANCE = 0.05  # mean |p - p'| over the common tiles
SAME_CALL = 0.95
SERVICE_PORT = 8127


def ensure_venv(name: str) -> Path:
    """The peer's venv, made (and its pins installed) once; its python."""
    venv = PEERS_DIR / name
    stamp = venv / ".pins"
    py = venv / "bin" / "python"
    want = "\n".join(PEERS[name])
    if stamp.exists() and stamp.read_text() == want and py.exists():
        return py
    print(f"installing {name} into {venv} (once; a few minutes) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *PEERS[name]], check=True)
    stamp.write_text(want)
    return py


def export_torchscript(models_dir: str, names: list[str], out: Path, tile_px: int) -> dict[str, Path]:
    """Each released network as TorchScript: a normalised tile_px tile in, the card's calibrated
    two logits out (resized to the network's input inside, as wbc-ray's preprocessing does).
    """
    import torch
    import torch.nn.functional as F  # noqa: N812

    from wbc_ray.models import Classifier

    class Calibrated(torch.nn.Module):
        def __init__(self, clf: Classifier) -> None:
            super().__init__()
            self.net, self.size = clf.model, int(clf.card.input_size)
            self.t, self.bias = float(clf.card.temperature), float(clf.card.bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[-1] != self.size:
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
            z = self.net(x)[:, :2] / self.t
            return z + torch.tensor([0.0, self.bias])

    paths = {}
    for name in names:
        clf = Classifier.load(models_dir, name, precision="fp32", channels_last=False)
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        with torch.inference_mode():
            traced = torch.jit.trace(Calibrated(clf).eval(), torch.zeros(1, 3, tile_px, tile_px))
        traced.save(str(d / "torchscript_model.pt"))
        paths[name] = d / "torchscript_model.pt"
    return paths


def wsinfer_config(card: Any, tile_px: int, mpp: float, out: Path) -> Path:
    """WSInfer's model config (its schema 1.0) for one network."""
    cfg = {
        "spec_version": "1.0",
        "architecture": card.architecture,
        "num_classes": 2,
        "class_names": list(card.classes),
        "patch_size_pixels": tile_px,
        "spacing_um_px": mpp,
        "transform": [
            {"name": "Resize", "arguments": {"size": tile_px}},
            {"name": "ToTensor"},
            {"name": "Normalize", "arguments": {"mean": list(card.mean), "std": list(card.std)}},
        ],
    }
    path = out / "config.json"
    path.write_text(json.dumps(cfg, indent=2))
    return path


class TreeMemory:
    """Peak summed RSS of a process and all its descendants (Ray's included), sampled."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid, self.interval, self.peak_mb = pid, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                        total += p.memory_info().rss
            except psutil.NoSuchProcess:
                break
            self.peak_mb = max(self.peak_mb, total / 2**20)
            self._stop.wait(self.interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(self.peak_mb, 1)


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run a command; (wall seconds, peak tree RSS in MB, its output). Fails loudly."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT
    )
    mem = TreeMemory(proc.pid)
    output, _ = proc.communicate()
    wall = time.perf_counter() - t0
    peak = mem.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} ... failed ({proc.returncode}):\n{output[-3000:]}")
    return wall, peak, output


class Bench:
    """The slide, the exports and the commands of one benchmark run."""

    def __init__(self, work: Path, grid: int) -> None:
        from wbc_ray.config import load_settings
        from wbc_ray.manifest import read_manifest
        from wbc_ray.models import available, load_card, tile_scale
        from wbc_ray.pipeline import plan_slide
        from wbc_ray.slides import GridSpec, compose_slide

        s = load_settings()
        self.work, self.models_dir = work, str(s.models_dir)
        self.names = available(self.models_dir)
        self.cards = {n: load_card(self.models_dir, n) for n in self.names}
        self.mpp, self.tile_px = tile_scale([c.__dict__ for c in self.cards.values()])
        self.slide = work / "slides" / "smear.tiff"
        self.slide.parent.mkdir(parents=True)
        items = read_manifest(s.data_dir / "all_taleqani" / "split.csv", "test")
        compose_slide(items, self.slide, grid=(grid, grid), malignant_fraction=0.3, seed=5)
        spec = GridSpec(tile_px=self.tile_px, mpp=self.mpp, min_tissue=s.tiling.min_tissue)
        self.plan = plan_slide(self.slide, spec)
        self.size0 = float(self.plan.grid.size0)
        self.mask = self._mask()
        self.scripts = export_torchscript(self.models_dir, self.names, work / "exported", self.tile_px)
        for n, card in self.cards.items():
            wsinfer_config(card, self.tile_px, self.mpp, work / "exported" / n)

    def _mask(self) -> Path:
        """wbc-ray's tissue tiles as a mask image over the slide, 4 pixels a tile: TIAToolbox
        then scores the tiles wbc-ray scores (its own masker needs an objective power that a
        smear's scan may not record).
        """
        from PIL import Image

        g = self.plan.grid
        rows, cols = g.shape
        m = np.zeros((rows * 4, cols * 4), np.uint8)
        for r, c in g.cells:
            m[r * 4 + 1 : r * 4 + 3, c * 4 + 1 : c * 4 + 3] = 255  # the cell's middle: no bleed
        w0, h0 = self.plan.info["dimensions"]
        # Cover the whole slide, as TIAToolbox scales the mask to the slide's size.
        full = np.zeros((round(h0 / self.size0 * 4), round(w0 / self.size0 * 4)), np.uint8)
        full[: m.shape[0], : m.shape[1]] = m[: full.shape[0], : full.shape[1]]
        path = self.work / "mask.png"
        Image.fromarray(full).save(path)
        return path

    def key(self, x: float, y: float) -> tuple[int, int]:
        return round(x / self.size0), round(y / self.size0)

    # ---- the three tools ----------------------------------------------------------------------
    def _serve_config(self, names: list[str]) -> Path:
        import yaml

        cfg = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())
        cfg["applications"][0]["args"]["models"] = names
        path = self.work / f"serve_{len(names)}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def _run(self, store: str | Path, names: list[str], wall: float, peak: float) -> dict[str, Any]:
        """A wbc-ray run's record: its times and each model's score per tile, from its store."""
        from wbc_ray.store import array, attrs, open_store

        g = open_store(store)
        meta = attrs(g)
        coords, probs = np.asarray(array(g, "coords")[:]), np.asarray(array(g, "probs")[:])
        order = [m["name"] for m in meta["models"]]
        scores = {
            n: {self.key(*c): float(probs[i, order.index(n), 1]) for i, c in enumerate(coords)} for n in names
        }
        return {
            "wall_s": wall,
            "peak_rss_mb": peak,
            "tiles": len(coords),
            "compute_s": meta["result"]["timings"]["total_s"],
            "scores": scores,
        }

    def wbc_ray(self, names: list[str], tag: str) -> dict[str, Any]:
        """`wbc-ray analyze` as a one-off command: Ray and the Serve app start, then the slide."""
        out = self.work / f"wbc_{tag}"
        shutil.rmtree(out, ignore_errors=True)
        exe = str(Path(sys.executable).parent / "wbc-ray")
        cmd = [exe, "analyze", str(self.slide), "--out", str(out), "--json"]
        cmd += ["--serve-config", str(self._serve_config(names))]
        wall, peak, output = timed(cmd, env={**os.environ, "RAY_ADDRESS": ""})
        return self._run(json.loads(output[output.index("[") :])[0]["result"], names, wall, peak)

    def wbc_ray_service(self, names: list[str]) -> dict[str, Any]:
        """The slide submitted to a running `wbc-ray serve` (a lab's set-up: Ray and the models
        are up already), timed from the request to the job's end; the service is started before
        and stopped after, untimed, so no peer's run shares the machine with it.
        """
        import httpx

        results = self.work / "service"
        shutil.rmtree(results, ignore_errors=True)
        (results / "slides").mkdir(parents=True)
        os.link(self.slide, results / "slides" / self.slide.name)  # inside the service's folders
        exe = str(Path(sys.executable).parent / "wbc-ray")
        cmd = [exe, "serve", "--serve-config", str(self._serve_config(names)), "--results", str(results)]
        proc = subprocess.Popen(
            [*cmd, "--port", str(SERVICE_PORT)],
            env={**os.environ, "RAY_ADDRESS": ""},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        base = f"http://127.0.0.1:{SERVICE_PORT}"
        try:
            with httpx.Client(base_url=base, timeout=60) as api:
                deadline = time.time() + 300
                while True:
                    try:
                        if api.get("/health").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.time() > deadline or proc.poll() is not None:
                        raise RuntimeError("`wbc-ray serve` did not come up")
                    time.sleep(1)
                self._job(api, results)  # a resident service has scored slides before: warm
                mem = TreeMemory(proc.pid)
                t0 = time.perf_counter()
                job = self._job(api, results)
                wall = time.perf_counter() - t0
                peak = mem.stop()
        finally:
            proc.send_signal(2)  # Ctrl-C: the service shuts Serve down
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        return self._run(results / "jobs" / f"{job}.zarr", names, wall, peak)

    def _job(self, api: Any, results: Path) -> str:
        path = str(results / "slides" / self.slide.name)
        job = api.post("/jobs", json={"path": path}).raise_for_status().json()["job_id"]
        while (st := api.get(f"/jobs/{job}").json()["status"]) not in ("done", "failed", "cancelled"):
            time.sleep(0.2)
        if st != "done":
            raise RuntimeError(f"service job {job} {st}: {api.get(f'/jobs/{job}').json().get('error')}")
        return str(job)

    def tiatoolbox(self, names: list[str]) -> dict[str, Any]:
        py = str(PEERS_DIR / "tiatoolbox" / "bin" / "python")
        out = self.work / "tia.json"
        cmd = [py, str(RUNNERS / "tiatoolbox_run.py"), "--slide", str(self.slide), "--mask", str(self.mask)]
        cmd += [f"--model={n}={self.scripts[n]}" for n in names]
        cmd += ["--mpp", str(self.mpp), "--patch", str(self.tile_px), "--out", str(out)]
        wall, peak, _ = timed(cmd)
        res = json.loads(out.read_text())
        to0 = self.mpp / float(self.plan.info["mpp"])  # read-resolution pixels -> level 0
        scores = {
            n: {
                self.key(x * to0, y * to0): p
                for (x, y), p in zip(m["coordinates"], m["p_malignant"], strict=True)
            }
            for n, m in res["models"].items()
        }
        return {
            "wall_s": wall,
            "peak_rss_mb": peak,
            "tiles": len(next(iter(scores.values()))),
            "compute_s": sum(m["seconds"] for m in res["models"].values()),
            "scores": scores,
        }

    def wsinfer(self) -> dict[str, Any]:
        import csv

        py = str(PEERS_DIR / "wsinfer" / "bin" / "python")
        out = self.work / "wsinfer_out"
        shutil.rmtree(out, ignore_errors=True)
        timing = self.work / "wsinfer_timing.json"
        # WSInfer takes a folder of slides only (compose_slide writes its truth beside the slide).
        only = self.work / "wsinfer_in"
        if not only.exists():
            only.mkdir()
            os.link(self.slide, only / self.slide.name)
        cmd = [py, str(RUNNERS / "wsinfer_run.py"), "run", "-i", str(only), "-o", str(out)]
        cmd += [
            "-c",
            str(self.scripts["mobilenet"].parent / "config.json"),
            "-p",
            str(self.scripts["mobilenet"]),
            "-b",
            "32",
            *WSINFER_TISSUE,
        ]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "WSINFER_TIMING": str(timing), "HOME": str(self.work)}
        wall, peak, _ = timed(cmd, env=env)
        with open(next((out / "model-outputs-csv").glob("*.csv"))) as fh:
            rows = list(csv.DictReader(fh))
        scores = {self.key(float(r["minx"]), float(r["miny"])): float(r["prob_malignant"]) for r in rows}
        return {
            "wall_s": wall,
            "peak_rss_mb": peak,
            "tiles": len(rows),
            "compute_s": json.loads(timing.read_text())["run_s"],
            "scores": {"mobilenet": scores},
        }


def agreement(ours: dict[str, dict], theirs: dict[str, dict]) -> dict[str, Any]:
    """On the tiles both scored, per model: how many, the largest and mean score difference, and
    the share of tiles with the same call at 0.5.
    """
    out = {}
    for name, ref in ours.items():
        other = theirs.get(name, {})
        common = sorted(set(ref) & set(other))
        if not common:
            out[name] = {"common_tiles": 0}
            continue
        a = np.array([ref[k] for k in common])
        b = np.array([other[k] for k in common])
        out[name] = {
            "common_tiles": len(common),
            "only_ours": len(set(ref) - set(other)),
            "only_theirs": len(set(other) - set(ref)),
            "max_abs_diff": round(float(np.abs(a - b).max()), 4),
            "mean_abs_diff": round(float(np.abs(a - b).mean()), 5),
            "same_call": round(float(((a >= 0.5) == (b >= 0.5)).mean()), 4),
        }
    return out


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    walls = [r["wall_s"] for r in runs]
    wall, compute = statistics.median(walls), statistics.median(r["compute_s"] for r in runs)
    mid = runs[walls.index(statistics.median_low(walls))]
    return {
        "wall_s": round(wall, 2),
        "walls_s": [round(w, 2) for w in walls],
        "compute_s": round(compute, 2),
        "tiles": mid["tiles"],
        "tiles_per_s": round(mid["tiles"] / wall, 2),
        "compute_tiles_per_s": round(mid["tiles"] / compute, 2),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (label, key) in zip(
        axes, (("one model (MobileNetV2)", "one_model"), ("three models", "three_models")), strict=False
    ):
        runs = result[key]
        names = list(runs)
        ax.bar(
            names,
            [runs[n]["tiles_per_s"] for n in names],
            color=["#c0392b" if n.startswith("wbc-ray") else "#7f8c8d" for n in names],
        )
        for i, n in enumerate(names):
            ax.text(
                i,
                runs[n]["tiles_per_s"],
                f"{runs[n]['tiles_per_s']:.0f}\n({runs[n]['wall_s']:.0f} s)",
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_title(label)
        ax.set_ylabel("tiles/s, whole command (start-up included)")
    fig.suptitle(f"{result['slide']['tiles']} tiles, {result['machine']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def readme_table(result: dict[str, Any]) -> str:
    lines = [
        "| run | tool | tiles | wall s (median of 3) | tiles/s, whole command | tiles/s, scoring only "
        "| peak RSS MB | agreement with wbc-ray |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for key, label in (("one_model", "MobileNetV2"), ("three_models", "3 models")):
        for tool, r in result[key].items():
            agree = result["agreement"].get(f"{key}/{tool}")
            text = (
                "—"
                if agree is None
                else ", ".join(
                    f"{n}: {a['same_call']:.1%} same call, max Δp {a['max_abs_diff']:.3f}"
                    for n, a in agree.items()
                )
            )
            lines.append(
                f"| {label} | {tool} | {r['tiles']:,} | {r['wall_s']:.1f} | {r['tiles_per_s']:.1f} | "
                f"{r['compute_tiles_per_s']:.1f} | "
                f"{r['peak_rss_mb']:.0f} | {text} |"
            )
    return "\n".join(lines)


def write_readme(table: str, readme: Path = ROOT / "README.md") -> None:
    begin, end = "<!-- peers:begin -->", "<!-- peers:end -->"
    text = readme.read_text()
    if begin not in text:
        raise SystemExit(f"{readme} has no {begin} ... {end} block")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{table}\n{end}{tail}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", type=int, default=40, help="fields per side of the composed slide")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--readme", action="store_true", help="regenerate the README's table and the plot from the JSON"
    )
    args = ap.parse_args()
    if args.readme:  # the README's table and the plot, from the last run's JSON
        result = json.loads((OUT_DIR / "peers.json").read_text())
        write_readme(readme_table(result))
        plot(result, OUT_DIR / "peers.png")
        return 0
    for name in PEERS:
        ensure_venv(name)
    work = Path(tempfile.mkdtemp(prefix="wbc_peers_"))
    bench = Bench(work, args.grid)
    three = bench.names
    plan = [
        ("one_model", "tiatoolbox", lambda: bench.tiatoolbox(["mobilenet"])),
        ("one_model", "wsinfer", bench.wsinfer),
        ("one_model", "wbc-ray", lambda: bench.wbc_ray(["mobilenet"], "one")),
        ("one_model", "wbc-ray service", lambda: bench.wbc_ray_service(["mobilenet"])),
        ("three_models", "tiatoolbox", lambda: bench.tiatoolbox(three)),
        ("three_models", "wbc-ray", lambda: bench.wbc_ray(three, "three")),
        ("three_models", "wbc-ray service", lambda: bench.wbc_ray_service(three)),
    ]
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {(k, t): [] for k, t, _ in plan}
    for i in range(args.repeats):  # interleaved: a noisy minute hits every tool alike
        for key, tool, fn in plan:
            r = fn()
            runs[(key, tool)].append(r)
            print(
                f"[{i + 1}/{args.repeats}] {key:13s} {tool:11s} {r['tiles']:6d} tiles  {r['wall_s']:6.1f} s  "
                f"peak {r['peak_rss_mb']:7.0f} MB",
                flush=True,
            )
    result: dict[str, Any] = {
        "machine": cpu_description(),
        "slide": {
            "grid": args.grid,
            "tiles": len(bench.plan.grid),
            "tile_px": bench.tile_px,
            "mpp": bench.mpp,
        },
        "versions": {k: [p for p in v if "==" in p] for k, v in PEERS.items()},
        "one_model": {t: median_run(r) for (k, t), r in runs.items() if k == "one_model"},
        "three_models": {t: median_run(r) for (k, t), r in runs.items() if k == "three_models"},
        "agreement": {},
    }
    for key, tool, _ in plan:
        if not tool.startswith("wbc-ray"):
            ours = runs[(key, "wbc-ray")][-1]["scores"]
            result["agreement"][f"{key}/{tool}"] = agreement(ours, runs[(key, tool)][-1]["scores"])
    one, three_r = result["one_model"], result["three_models"]
    best_one = max(one["tiatoolbox"]["tiles_per_s"], one["wsinfer"]["tiles_per_s"])
    result["targets"] = {
        # Whole commands (start-up included), and the slide sent to a running service.
        "one_model_vs_faster_peer": target(one["wbc-ray"]["tiles_per_s"] / best_one, ">=", 2),
        "one_model_service_vs_faster_peer": target(one["wbc-ray service"]["tiles_per_s"] / best_one, ">=", 2),
        "three_models_vs_tiatoolbox": target(
            three_r["wbc-ray"]["tiles_per_s"] / three_r["tiatoolbox"]["tiles_per_s"], ">=", 2
        ),
        "three_models_service_vs_tiatoolbox": target(
            three_r["wbc-ray service"]["tiles_per_s"] / three_r["tiatoolbox"]["tiles_per_s"], ">=", 2
        ),
        # Same call at 0.5 on the tiles both scored: readers resample a tile differently (and
        # wbc-ray serves bf16 or int8 on CPUs), so single scores near 0.5 may flip.
        "same_call_share": target(
            min(a["same_call"] for v in result["agreement"].values() for a in v.values()), ">=", SAME_CALL
        ),
        "mean_abs_score_diff": target(
            max(a["mean_abs_diff"] for v in result["agreement"].values() for a in v.values()), "<=", TOLERANCE
        ),
    }
    out = write_result("peers", result)
    plot(result, OUT_DIR / "peers.png")
    print(readme_table(result))
    print_targets(result["targets"])
    print(f"wrote {out} and {OUT_DIR / 'peers.png'}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
