"""What the page shows, as plain functions of the API's answers (testable without a browser)."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

from PIL import Image

from ..ensemble import VERDICT_MEANING


def progress_text(status: dict[str, Any]) -> str:
    p = status.get("progress") or {}
    done, total, eta = p.get("done") or 0, p.get("total"), p.get("eta_s")
    state = status.get("status", "?")
    if state == "failed":
        return f"**Failed:** {status.get('error', 'no reason given')}"
    if not total:
        return f"**{state.capitalize()}** — {status.get('slide', '')}: planning tiles…"
    line = f"**{state.capitalize()}** — {done:,} / {total:,} tiles ({100 * done / total:.0f} %)"
    return line + (f", about {eta:.0f} s left" if eta and state != "done" else "")


def verdict_card(result: dict[str, Any]) -> str:
    meaning = VERDICT_MEANING.get(result["verdict"], "")
    lo, hi = result["interval"]
    models = ", ".join(f"{m['name']} `{m['version']}`" for m in result.get("models") or [])
    raw = result.get("raw_fraction")
    adjusted = (
        f" (share of tiles called malignant {raw:.3f}, corrected for the models' measured tile error rates)"
        if raw is not None and result.get("adjusted_by")
        else ""
    )
    t = result.get("timings", {})
    return "\n".join(
        [
            f"## Verdict: {result['verdict'].upper()}",
            meaning,
            "",
            f"- Malignant share of the tiles **{result['malignant_fraction']:.3f}** "
            f"({100 * result['confidence']:.0f} % interval {lo:.3f}–{hi:.3f}){adjusted}; "
            f"slide threshold τ = {result['tau']}",
            f"- Tissue tiles counted {result['n_tiles']:,}, called malignant {result['n_malignant']:,}, "
            f"excluded as mostly empty glass (scored, not counted) {result['n_excluded']:,}",
            *screening_lines(result),
            f"- Fusion `{result.get('fusion', '?')}`; models {models}"
            + (f" (release `{result['release']}`)" if result.get("release") not in (None, "main") else ""),
            f"- {t.get('total_s', 0):.1f} s, {t.get('tiles_per_s', 0):.1f} tiles/s",
            *review_lines(result.get("review")),
        ]
    )


def review_lines(review: dict[str, Any] | None) -> list[str]:
    """The pathologist's review of the calls, as the slide summary gives it (none for results
    read without the service).
    """
    if review is None:
        return []
    if not review["reviewed"] and not review.get("signoff"):
        return ["- Review: not reviewed yet (the review workspace is below)"]
    line = (
        f"- Review: {review['reviewed']:,} tiles reviewed, {review['agreed']:,} agreed, "
        f"{review['overturned']:,} overturned, {review['not_assessable']:,} not assessable"
    )
    signed = review.get("signoff")
    if signed:
        line += f"; signed off **{signed['verdict'].replace('_', ' ')}** by {signed['reviewer']}"
    return [line]


def screening_lines(result: dict[str, Any]) -> list[str]:
    """What quality control and the domain check found (nothing for results from before them)."""
    lines = []
    rejected = (result.get("qc") or {}).get("rejected")
    if rejected is not None:
        why = ", ".join(f"{k} {v:,}" for k, v in rejected.items()) or "none"
        lines.append(f"- Rejected by quality control (not scored) {result.get('n_rejected', 0):,}: {why}")
    dom = result.get("domain") or {}
    if dom.get("checked"):
        share = result.get("out_of_range_share")
        pct = "-" if share is None else f"{100 * share:.1f} %"
        lines.append(
            f"- Domain check: {result.get('n_out_of_range', 0):,} counted tiles ({pct}) unlike the "
            f"training images (limit {100 * dom['max_out_of_range']:.0f} %); stain normalisation "
            f"`{result.get('stain') or 'not recorded'}`"
        )
    elif dom:
        lines.append(f"- Domain check not run: {dom.get('why_not')}")
    return lines


TEXT_COLUMNS = {"call", "qc"}


def tile_rows(tiles_csv: bytes) -> list[dict[str, Any]]:
    """The API's tile CSV as one dict per tile, numbers as floats (empty cells as NaN)."""
    rows = csv.DictReader(io.StringIO(tiles_csv.decode()))
    return [{k: (v if k in TEXT_COLUMNS else float(v or "nan")) for k, v in r.items()} for r in rows]


def model_names(rows: list[dict[str, Any]]) -> list[str]:
    return [k[2:] for k in (rows[0] if rows else {}) if k.startswith("p_")]


def agreement(rows: list[dict[str, Any]], threshold: float = 0.5) -> list[list[Any]]:
    """Per model: share of tiles it calls malignant and how often it agrees with the fused call;
    a last row for the tiles all models call alike.
    """
    names = model_names(rows)
    rows = [r for r in rows if r["call"] != "rejected"]  # not scored: quality control rejected them
    if not rows:
        return []
    fused = [r["call"] == "malignant" for r in rows]
    calls = {n: [r[f"p_{n}"] >= threshold for r in rows] for n in names}
    n = len(rows)
    table = [
        [m, round(sum(c) / n, 3), round(sum(a == f for a, f in zip(c, fused, strict=True)) / n, 3)]
        for m, c in calls.items()
    ]
    unanimous = sum(len({calls[m][i] for m in names}) == 1 for i in range(n))
    table.append(["all models agree", None, round(unanimous / n, 3)])
    return table


QUEUE_WORDS = {
    "suspicious": "most suspicious",
    "uncertain": "uncertain",
    "out_of_range": "out of range",
}


def queue_choices(items: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """The service's review queue (most suspicious, then most uncertain, then out of the domain
    check's range) as (label, tile index) dropdown choices; ties on the fused score are ranked by
    the models' mean probability, which the label shows.
    """
    out = []
    for k, it in enumerate(items, start=1):
        probs = [p for p in it["models"].values() if p is not None]
        mean = sum(probs) / len(probs) if probs else float("nan")
        out.append(
            (
                f"{k}. {QUEUE_WORDS.get(it['group'], it['group'])} · tile {it['tile']}: fused "
                f"{it['fused']:.3f}, models' mean {mean:.3f}, called {it['call']}",
                int(it["tile"]),
            )
        )
    return out


def release_choices(releases: dict[str, Any]) -> list[tuple[str, str]]:
    """The service's releases as (label, name) choices: the main one first, each adapted one with
    its parent release and the lab data's hash.
    """
    out = []
    for name in sorted(releases, key=lambda n: (n != "main", n)):
        r = releases[name]
        lineage = r.get("lineage") or {}
        if name == "main":
            label = f"main (release {r.get('version', '?')})"
        elif "error" in r:
            label = f"{name} (not running: {r['error'][:60]})"
        else:
            lab = str(lineage.get("lab_sha256", ""))[:8]
            label = f"{name} (adapted from release {lineage.get('parent', '?')}, lab data {lab})"
        out.append((label, name))
    return out


def slide_details(status: dict[str, Any]) -> str:
    """The slide's name, scanner, size and resolution, as one line."""
    parts = [f"`{status.get('slide', '')}`"]
    if status.get("vendor"):
        parts.append(str(status["vendor"]))
    if status.get("dimensions"):
        w, h = status["dimensions"]
        parts.append(f"{w:,} × {h:,} px")
    mpp = status.get("mpp")
    parts.append(f"{float(mpp):.3f} µm/px" if mpp else "resolution not recorded")
    return " · ".join(parts)


def finished_jobs(jobs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Finished analyses, newest first, as (label, job id) dropdown choices."""
    done = sorted((j for j in jobs if j.get("status") == "done"), key=lambda j: -(j.get("submitted_at") or 0))
    return [
        (
            f"{j.get('slide', '?')}, {time.strftime('%Y-%m-%d %H:%M', time.localtime(j['submitted_at']))}",
            j["job_id"],
        )
        for j in done
    ]


def interval_picture(result: dict[str, Any], width_px: int = 640) -> Image.Image:
    """The malignant fraction on a 0-1 line: its interval as a band, the estimate as a dot, the
    slide threshold τ as a line, coloured by the verdict.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend to choose

    colour = {"malignant": "#b2182b", "benign": "#2166ac"}.get(result["verdict"], "#d6a400")
    lo, hi = result["interval"]
    fig = Figure(figsize=(width_px / 100, 1.1), dpi=100)
    ax = fig.add_axes((0.03, 0.42, 0.94, 0.4))
    ax.axvspan(lo, hi, color=colour, alpha=0.3, lw=0)
    ax.plot([result["malignant_fraction"]], [0.5], "o", color=colour, ms=9)
    ax.axvline(result["tau"], color="black", lw=1.5, ls="--")
    ax.text(result["tau"], 1.08, f"τ = {result['tau']}", ha="center", va="bottom", fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_xlabel("share of the slide's scored tiles called malignant (band: interval)", fontsize=9)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return Image.open(buf).convert("RGB")
