"""The lab service: tokens and roles, the durable bounded queue, cancel/remove, the audit log,
the disk threshold, and Schemathesis driving every route from the service's own schema.

The app is redeployed here with accounts on (and as before at the end), so these tests
see the service as a lab runs it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_app
from tests.serve.conftest import run_schemathesis, wait_done


def _restart(models_dir: Path, results_dir: Path, slide_dir: Path, service: dict | None) -> str:
    """The app redeployed in place with `service` settings (Serve replaces every replica; a full
    stop and start of Serve is tests/serve/test_restart.py's)."""
    return start_app(models_dir, results_dir, slide_dir, service=service)


@pytest.fixture(scope="module")
def lab(server, models_dir, results_dir, tmp_path_factory, slide_dir):
    """The app with accounts, a queue of 3, 2 slides per user, and a free-disk threshold no disk
    meets (every upload is refused with 507); tokens for four users."""
    from wbc_ray.serve import ServiceDB

    results = tmp_path_factory.mktemp("lab_results")
    db = ServiceDB(results / "service.db")
    tokens = {}
    for user, role in (("ana", "submit"), ("ben", "submit"), ("rita", "read"), ("root", "admin")):
        tokens[user] = db.create_token(user, role)[1]
    service = {
        "auth": True,
        "max_running": 1,
        "max_queued": 3,
        "max_queued_per_user": 2,
        "min_free_gb": 1e6,  # a petabyte: no disk here has it
    }
    base = _restart(models_dir, results, slide_dir, service)
    yield {"base": base, "tokens": tokens, "results": results, "db": db}
    # Back to the app the other tests use (accounts off, the session's results folder).
    _restart(models_dir, results_dir, slide_dir, None)


def client(lab, user: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {lab['tokens'][user]}"} if user else {}
    return httpx.Client(base_url=lab["base"], headers=headers, timeout=60)


def test_tokens_are_needed_and_users_see_only_their_own_jobs(lab, mixed_slide) -> None:
    anon, ana, ben, rita, root = (client(lab, u) for u in (None, "ana", "ben", "rita", "root"))
    assert anon.get("/health").status_code == 200  # the one open route
    for path in ("/jobs", "/models", "/jobs/0123456789abcdef"):
        r = anon.get(path)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer", path
    bad = httpx.get(f"{lab['base']}/jobs", headers={"Authorization": "Bearer wbc_x_y"})
    assert bad.status_code == 401
    assert rita.post("/jobs", json={"path": str(mixed_slide)}).status_code == 403  # read role
    job = ana.post("/jobs", json={"path": str(mixed_slide)}).json()["job_id"]
    assert wait_done(ana, job)["status"] == "done"
    assert ben.get(f"/jobs/{job}").status_code == 404  # not yours: as if absent
    assert ben.get(f"/jobs/{job}/result").status_code == 404
    assert [j["job_id"] for j in ben.get("/jobs").json()] == []
    assert [j["job_id"] for j in ana.get("/jobs").json()] == [job]
    listed = root.get("/jobs").json()
    assert job in [j["job_id"] for j in listed] and all("path" not in j for j in listed)
    assert root.get(f"/jobs/{job}/result").json()["slide"] == str(mixed_slide)
    # A revoked token is refused at once.
    token_id = lab["tokens"]["ben"].split("_")[1]
    assert lab["db"].revoke(token_id)
    assert ben.get("/jobs").status_code == 401


def test_the_queue_is_bounded_in_order_and_per_user(lab, mixed_slide) -> None:
    ana, root = client(lab, "ana"), client(lab, "root")
    # One runs (or is about to), one waits: ana's 2 are her limit.
    first = ana.post("/jobs", json={"path": str(mixed_slide)}).json()["job_id"]
    second = ana.post("/jobs", json={"path": str(mixed_slide)})
    assert second.status_code == 202
    # ana has 2 queued or running: her limit.
    r = ana.post("/jobs", json={"path": str(mixed_slide)})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 5 and "ana" in r.json()["detail"]
    third = root.post("/jobs", json={"path": str(mixed_slide)}).json()["job_id"]
    # Other users, one slide each (under their own limit), fill the queue; jobs end meanwhile only
    # every few seconds, so it is full within a few submissions.
    extra, full = [], None
    for n in range(8):
        other = httpx.Client(
            base_url=lab["base"],
            headers={"Authorization": f"Bearer {lab['db'].create_token(f'user{n}', 'submit')[1]}"},
            timeout=60,
        )
        r = other.post("/jobs", json={"path": str(mixed_slide)})
        if r.status_code == 429:
            full = r
            break
        assert r.status_code == 202, r.text
        extra.append(r.json()["job_id"])
    assert full is not None, "the queue of 3 never filled"
    assert "queue is full (3 slides waiting)" in full.json()["detail"]
    assert 1 <= int(full.headers["Retry-After"]) <= 3600
    for job in extra:  # not needed for the order below
        assert root.delete(f"/jobs/{job}").status_code == 200  # an admin may cancel anyone's
    st = root.get(f"/jobs/{third}").json()
    assert st["status"] in {"queued", "running", "done"}
    ends = [wait_done(root, j) for j in (first, second.json()["job_id"], third)]
    assert [e["status"] for e in ends] == ["done"] * 3
    # In submission order, never more than one at a time.
    jobs = {j["job_id"]: j for j in lab["db"].jobs()}
    spans = sorted(
        (jobs[j]["started_at"], jobs[j]["finished_at"]) for j in (first, second.json()["job_id"], third)
    )
    assert all(a[1] <= b[0] + 0.5 for a, b in zip(spans, spans[1:], strict=False))


def test_a_burst_of_submissions_never_overfills_the_queue(lab, mixed_slide) -> None:
    """Three times the queue's bound at once, from nine users: a submission holds its place from
    admission until its job is recorded, so no two pass the bound together."""
    from concurrent.futures import ThreadPoolExecutor

    from wbc_ray.serve._db import ACTIVE

    root = client(lab, "root")
    deadline = time.time() + 300
    while lab["db"].count(ACTIVE) and time.time() < deadline:  # the earlier tests' jobs end
        time.sleep(1)
    assert lab["db"].count(ACTIVE) == 0
    tokens = [lab["db"].create_token(f"burst{i}", "submit")[1] for i in range(9)]

    def submit(token: str) -> httpx.Response:
        with httpx.Client(
            base_url=lab["base"], headers={"Authorization": f"Bearer {token}"}, timeout=120
        ) as c:
            return c.post("/jobs", json={"path": str(mixed_slide)})

    with ThreadPoolExecutor(9) as pool:
        answers = list(pool.map(submit, tokens))
    assert {r.status_code for r in answers} <= {202, 429}, [r.text for r in answers]
    accepted = [r.json()["job_id"] for r in answers if r.status_code == 202]
    # max_queued 3, plus the one the runner may have started meanwhile (max_running 1).
    assert 3 <= len(accepted) <= 4, [r.status_code for r in answers]
    for job in accepted:
        assert root.delete(f"/jobs/{job}").status_code == 200


def test_an_upload_that_would_fill_the_disk_is_refused_and_nothing_is_kept(lab, mixed_slide) -> None:
    ana = client(lab, "ana")
    before = sorted((lab["results"] / "uploads").iterdir())
    with open(mixed_slide, "rb") as fh:
        r = ana.post("/jobs/upload", files={"file": ("mixed.tiff", fh, "image/tiff")})
    assert r.status_code == 507, r.text
    assert "'mixed.tiff'" in r.json()["detail"] and "service.min_free_gb" in r.json()["detail"]
    assert sorted((lab["results"] / "uploads").iterdir()) == before  # no partial file left
    assert ana.get("/health").status_code == 200
    # Submitting by path writes nothing, so it still works.
    job = ana.post("/jobs", json={"path": str(mixed_slide)}).json()["job_id"]
    assert wait_done(ana, job)["status"] == "done"


def test_the_page_signs_in_with_a_token_and_shows_only_that_users_work(lab, mixed_slide) -> None:
    """The Gradio page against the service with accounts: refused without a token, a user's own
    analysis with one, and the list of earlier analyses is that user's alone."""
    from tests._browser import browser_page, ui_process, wait_status

    clara = lab["db"].create_token("clara", "submit")[1]
    others = {j["job_id"] for j in lab["db"].jobs()}
    with ui_process(lab["base"], 8125) as url, browser_page(url) as page:
        page.fill("#slide-path textarea, #slide-path input", str(mixed_slide))
        page.click("#analyse")
        assert "this service needs a bearer token" in wait_status(page, r"Error \(401\)", timeout_s=60)
        page.fill("#token input", "wbc_nope_nope")
        page.click("#analyse")
        wait_status(page, r"Error \(401\): unknown or revoked token", timeout_s=60)
        page.fill("#token input", clara)
        page.click("#analyse")
        done = wait_status(page, r"Done — .* job [0-9a-f]{16}", timeout_s=300)
        job = re.search(r"job ([0-9a-f]{16})", done).group(1)  # type: ignore[union-attr]
        assert job not in others and lab["db"].job(job)["user"] == "clara"
        assert "Verdict:" in page.inner_text("#verdict")
        # The earlier-analyses list: clara's one job, none of the others' (several are done).
        page.click("#jobs input")
        options = page.get_by_role("option").all_inner_texts()
        assert len(options) == 1 and mixed_slide.name in options[0], options
        assert client(lab, "ana").get(f"/jobs/{job}").status_code == 404
    # The token never reached the page's address or the service's audit log.
    assert clara not in (lab["results"] / "audit.log").read_text()


def test_the_review_workspace_shows_a_slide_to_its_owner_only(lab, mixed_slide) -> None:
    """The viewer with accounts: the owner's token opens the slide; another user's gets the same
    404 as for a job that does not exist, and sees nothing of it; no token asks for one."""
    from tests._browser import browser_page, need_chromium

    need_chromium()
    dana = lab["db"].create_token("dana", "submit")[1]
    eve = lab["db"].create_token("eve", "submit")[1]
    with client(lab, None) as anon:
        owner = httpx.Client(base_url=lab["base"], headers={"Authorization": f"Bearer {dana}"}, timeout=60)
        job = owner.post("/jobs", json={"path": str(mixed_slide)}).json()["job_id"]
        assert wait_done(owner, job)["status"] == "done"
        assert anon.get(f"/jobs/{job}/slide.dzi").status_code == 401
    view = f"{lab['base']}/viewer?job={job}"
    with browser_page(f"{view}#token={dana}", ready="body[data-ready='1']", height=900) as page:
        assert mixed_slide.name in page.inner_text("#slide-name")
        page.wait_for_function("() => window.wbcReview.queue.length > 0")
    with browser_page(f"{view}#token={eve}", ready="#error:not([hidden])", height=900) as page:
        assert f"404: no job '{job}'" in page.inner_text("#error")
        assert page.inner_text("#slide-name") == "" and page.inner_text("#verdict") == ""
    with browser_page(view, ready="#error:not([hidden])", height=900) as page:
        assert "401" in page.inner_text("#error") and page.is_visible("#token-bar")


def test_delete_cancels_a_running_job_and_removes_a_finished_one(
    lab, mixed_slide, slide_dir, test_items
) -> None:
    from wbc_ray.slides import compose_slide

    ana = client(lab, "ana")
    # Large enough (about 700 tiles) to be caught mid-slide.
    big = slide_dir / "to_delete.tiff"
    if not big.exists():
        compose_slide(test_items, big, grid=(24, 24), malignant_fraction=0.3, seed=21)
    job = ana.post("/jobs", json={"path": str(big)}).json()["job_id"]
    deadline = time.time() + 120
    while ana.get(f"/jobs/{job}").json()["status"] == "queued" and time.time() < deadline:
        time.sleep(0.2)
    # Mid-slide: some work units written, others still to come.
    while ana.get(f"/jobs/{job}").json()["progress"]["done"] == 0 and time.time() < deadline:
        time.sleep(0.1)
    r = ana.delete(f"/jobs/{job}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert ana.get(f"/jobs/{job}").json()["status"] == "cancelled"
    store = lab["results"] / "jobs" / f"{job}.zarr"
    assert not store.exists()
    time.sleep(3)  # its task was stopped before the files went: nothing writes them again
    assert not store.exists(), sorted(p.name for p in store.rglob("*"))[:10]
    assert ana.get(f"/jobs/{job}").json()["status"] == "cancelled"
    done = ana.post("/jobs", json={"path": str(mixed_slide)}).json()["job_id"]
    assert wait_done(ana, done)["status"] == "done"
    assert ana.delete(f"/jobs/{done}").json()["status"] == "removed"
    assert ana.get(f"/jobs/{done}").status_code == 404
    assert not (lab["results"] / "jobs" / f"{done}.zarr").exists()


def test_the_audit_log_says_who_did_what_without_secrets(lab) -> None:
    entries = [json.loads(line) for line in (lab["results"] / "audit.log").read_text().splitlines()]
    actions = {(e["user"], e["action"]) for e in entries}
    assert {("ana", "submit"), ("root", "view"), ("ana", "delete")} <= actions
    text = (lab["results"] / "audit.log").read_text()
    for token in lab["tokens"].values():
        assert token not in text and token.split("_", 2)[2] not in text
    assert all({"ts", "user", "role", "action"} <= set(e) for e in entries)


def test_schemathesis_all_checks_with_accounts(lab, mixed_slide) -> None:
    """Every route, every check, as an administrator; Schemathesis also sends each request without
    the token (the schema says it is required: the service must answer 401)."""
    schema = client(lab, "root").get("/openapi.json").json()
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            # Open: /health, and the review workspace's page and files (no data in them).
            needs = [] if path in ("/health", "/viewer", "/viewer/{name}") else [{"HTTPBearer": []}]
            assert op.get("security", []) == needs, f"{method} {path}"
    assert "Accounts are on" in schema["info"]["description"]
    run_schemathesis(lab["base"], mixed_slide, lab["tokens"]["root"])


def test_serving_beyond_loopback_without_accounts_is_refused(tmp_path) -> None:
    exe = str(Path(sys.executable).parent / "wbc-ray")
    r = subprocess.run(
        [exe, "serve", "--host", "0.0.0.0", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "WBC_RAY_AUTH": "0"},
    )
    assert r.returncode == 2, r.stderr
    assert "refusing to serve on 0.0.0.0 without accounts" in r.stderr and "WBC_RAY_AUTH=1" in r.stderr


def test_what_schemathesis_found_stays_fixed(lab) -> None:
    """Regressions of the contract faults Schemathesis found, each asked for directly."""
    root = client(lab, "root")
    paths = root.get("/openapi.json").json()["paths"]
    # Binary answers carry their content types in the schema.
    assert "image/png" in paths["/jobs/{job_id}/heatmap.png"]["get"]["responses"]["200"]["content"]
    assert "application/geo+json" in paths["/jobs/{job_id}/geojson"]["get"]["responses"]["200"]["content"]
    assert "text/csv" in paths["/jobs/{job_id}/tiles.csv"]["get"]["responses"]["200"]["content"]
    # Every error a route gives is documented on it.
    for code in ("401", "404", "409"):
        assert code in paths["/jobs/{job_id}/result"]["get"]["responses"]
    assert {"413", "429", "507"} <= set(paths["/jobs/upload"]["post"]["responses"])
    # A validation error is one {"detail": str}, as the Error model says, not FastAPI's list.
    r = root.post("/jobs", json={"path": 5})
    assert r.status_code == 422 and isinstance(r.json()["detail"], str) and "path" in r.json()["detail"]
    # 405 names every method the path has, not only the first route's.
    r = root.request("PATCH", "/jobs/0123456789abcdef")
    assert r.status_code == 405 and set(r.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "DELETE"}
    # Outside the slide folders is 403 whether or not the file exists (no existence oracle).
    assert root.post("/jobs", json={"path": "/etc/passwd"}).status_code == 403
    assert root.post("/jobs", json={"path": "/etc/no-such-file"}).status_code == 403
    # Another user's job list shows no server paths.
    assert all("path" not in j for j in client(lab, "ana").get("/jobs").json())
