"""What the page shows, from API answers (pure functions; the browser test covers the page)."""

from __future__ import annotations

from wbc_ray.ui._views import (
    agreement,
    finished_jobs,
    interval_picture,
    progress_text,
    queue_choices,
    release_choices,
    review_lines,
    slide_details,
    verdict_card,
)


def _row(tile: int, fused: float, a: float, b: float) -> dict:
    call = "malignant" if fused >= 0.5 else "benign"
    return {
        "tile": tile,
        "x": 10 * tile,
        "y": 0,
        "tissue": 0.8,
        "fused": fused,
        "call": call,
        "p_a": a,
        "p_b": b,
    }


def test_agreement_counts_calls_per_model_and_unanimity() -> None:
    rows = [_row(0, 0.9, 0.8, 0.7), _row(1, 0.2, 0.6, 0.1), _row(2, 0.1, 0.2, 0.3), _row(3, 0.7, 0.9, 0.4)]
    table = agreement(rows)
    assert table[0] == ["a", 0.75, 0.75]  # calls 0, 1, 3 malignant; disagrees with fused on tile 1
    assert table[1] == ["b", 0.25, 0.75]  # calls tile 0 only; disagrees on tile 3
    assert table[2] == ["all models agree", None, 0.5]  # tiles 0 and 2
    assert agreement([]) == []


def test_the_queue_and_the_slide_in_words() -> None:
    items = [
        {"tile": 7, "group": "suspicious", "fused": 1.0, "call": "malignant", "models": {"a": 0.9, "b": 0.7}},
        {"tile": 3, "group": "uncertain", "fused": 0.49, "call": "benign", "models": {"a": 0.5, "b": 0.4}},
    ]
    assert queue_choices(items) == [
        ("1. most suspicious · tile 7: fused 1.000, models' mean 0.800, called malignant", 7),
        ("2. uncertain · tile 3: fused 0.490, models' mean 0.450, called benign", 3),
    ]
    st = {"slide": "s.svs", "vendor": "aperio", "dimensions": [46000, 32914], "mpp": 0.2499}
    assert slide_details(st) == "`s.svs` · aperio · 46,000 × 32,914 px · 0.250 µm/px"
    assert slide_details({"slide": "x.png"}).endswith("resolution not recorded")


def test_release_choices_name_the_lineage() -> None:
    held = {
        "lab_a": {"version": "2+lab-1234abcd", "lineage": {"parent": "2", "lab_sha256": "1234abcd99"}},
        "main": {"version": "2", "lineage": None},
        "lab_b": {"error": "RayServeException: no app"},
    }
    assert release_choices(held) == [
        ("main (release 2)", "main"),
        ("lab_a (adapted from release 2, lab data 1234abcd)", "lab_a"),
        ("lab_b (not running: RayServeException: no app)", "lab_b"),
    ]


def test_the_summary_says_what_the_reviewer_did() -> None:
    assert review_lines(None) == []
    empty = {"reviewed": 0, "agreed": 0, "overturned": 0, "not_assessable": 0, "signoff": None}
    assert review_lines(empty) == ["- Review: not reviewed yet (the review workspace is below)"]
    done = {**empty, "reviewed": 12, "agreed": 9, "overturned": 2, "not_assessable": 1}
    done["signoff"] = {"verdict": "out_of_scope", "reviewer": "ana", "note": None, "at": 0}
    assert review_lines(done) == [
        "- Review: 12 tiles reviewed, 9 agreed, 2 overturned, 1 not assessable; "
        "signed off **out of scope** by ana"
    ]


def test_progress_and_verdict_text() -> None:
    st = {"status": "running", "slide": "s.tiff", "progress": {"done": 50, "total": 200, "eta_s": 12.4}}
    assert progress_text(st) == "**Running** — 50 / 200 tiles (25 %), about 12 s left"
    assert "planning" in progress_text({"status": "queued", "progress": {"done": 0, "total": None}})
    assert progress_text({"status": "failed", "error": "SlideError: truncated"}).endswith("truncated")
    result = {
        "verdict": "indeterminate",
        "malignant_fraction": 0.2134,
        "interval": [0.15, 0.28],
        "confidence": 0.95,
        "tau": 0.2,
        "n_tiles": 900,
        "n_malignant": 190,
        "n_excluded": 12,
        "raw_fraction": 0.211,
        "adjusted_by": {"tpr": 0.97, "fpr": 0.03},
        "fusion": "fuzzy_rank",
        "models": [{"name": "mobilenet", "version": "abc123abc123"}],
        "timings": {"total_s": 20.0, "tiles_per_s": 45.6},
    }
    card = verdict_card(result)
    assert "INDETERMINATE" in card and "straddles" in card
    assert "0.213" in card and "0.150–0.280" in card and "τ = 0.2" in card
    assert "mobilenet `abc123abc123`" in card and "900" in card


def test_finished_jobs_newest_first_and_only_done() -> None:
    jobs = [
        {"job_id": "a", "status": "done", "slide": "one.svs", "submitted_at": 1_000.0},
        {"job_id": "b", "status": "failed", "slide": "two.svs", "submitted_at": 2_000.0},
        {"job_id": "c", "status": "done", "slide": "three.svs", "submitted_at": 3_000.0},
        {"job_id": "d", "status": "running", "slide": "four.svs", "submitted_at": 4_000.0},
    ]
    choices = finished_jobs(jobs)
    assert [j for _, j in choices] == ["c", "a"]
    assert choices[0][0].startswith("three.svs, ")


def test_interval_picture_marks_band_estimate_and_threshold() -> None:
    import numpy as np

    r = {"verdict": "malignant", "malignant_fraction": 0.6, "interval": [0.5, 0.7], "tau": 0.2}
    im = np.asarray(interval_picture(r, width_px=500)).astype(int)
    assert im.shape == (110, 500, 3)
    row = im[60]  # through the axes: band x in [0.5, 0.7] is red-tinted, outside it is not
    x = lambda f: int(15 + f * 470)  # noqa: E731  axes span 3 %..97 % of the width
    red = lambda px: px[0] - px[2] > 25  # noqa: E731
    assert red(row[x(0.55)]) and red(row[x(0.65)])
    assert not red(row[x(0.35)]) and not red(row[x(0.85)])
    assert row[x(0.2)].sum() < 200  # the dashed τ line is dark (x of τ = 0.2)


def test_tile_rows_parse_the_api_csv() -> None:
    from wbc_ray.ui._views import model_names, tile_rows

    data = b"tile,x,y,size,tissue,fused,call,p_mobilenet\n0,0,0,128.0,0.9,0.75,malignant,0.8\n"
    rows = tile_rows(data)
    assert rows == [
        {
            "tile": 0.0,
            "x": 0.0,
            "y": 0.0,
            "size": 128.0,
            "tissue": 0.9,
            "fused": 0.75,
            "call": "malignant",
            "p_mobilenet": 0.8,
        }
    ]
    assert model_names(rows) == ["mobilenet"]


def test_verdict_card_says_out_of_scope_and_what_screening_found() -> None:
    result = {
        "verdict": "out_of_scope",
        "malignant_fraction": 0.0,
        "interval": [0.0, 0.03],
        "confidence": 0.95,
        "tau": 0.2,
        "n_tiles": 81,
        "n_malignant": 0,
        "n_excluded": 0,
        "n_rejected": 7,
        "qc": {"enabled": True, "rejected": {"blur": 5, "ink": 2}},
        "n_out_of_range": 81,
        "out_of_range_share": 1.0,
        "stain": "none",
        "domain": {"checked": True, "threshold": 6.26, "max_out_of_range": 0.3, "why_not": None},
        "timings": {"total_s": 3.0, "tiles_per_s": 27.0},
    }
    card = verdict_card(result)
    assert "OUT_OF_SCOPE" in card and "adapt the models to this lab" in card
    assert "quality control (not scored) 7: blur 5, ink 2" in card
    assert "81 counted tiles (100.0 %) unlike the training images (limit 30 %)" in card
    off = verdict_card({**result, "verdict": "benign", "domain": {"checked": False, "why_not": "turned off"}})
    assert "Domain check not run: turned off" in off


def test_rejected_tiles_are_parsed_and_left_out_of_agreement() -> None:
    from wbc_ray.ui._views import agreement, tile_rows

    data = (
        b"tile,x,y,size,tissue,fused,call,qc,domain,out_of_range,p_mobilenet\n"
        b"0,0,0,128.0,0.9,0.75,malignant,ok,3.1,0,0.8\n"
        b"1,128,0,128.0,0.9,nan,rejected,blur,7.5,1,nan\n"
    )
    rows = tile_rows(data)
    assert rows[1]["qc"] == "blur" and rows[1]["call"] == "rejected" and rows[1]["fused"] != rows[1]["fused"]
    assert agreement(rows)[0] == ["mobilenet", 1.0, 1.0]
