"""`wbc-ray review export --out DIR`: the tiles pathologists reviewed in the service, as a
labelled image set (`manifest.csv` and images at the models' scale) for `wbc-ray adapt` and
`wbc-ray train`. The same as the REST route `GET /reviews/export.zip`, read from the service's
results folder.
"""

from __future__ import annotations

import argparse

from ..errors import InvalidInput, OutputExists
from ._shared import settings

NAME = "review"
HELP = "export the reviewed tiles as a labelled image set that adapt and train take"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["export"])
    p.add_argument("--out", required=True, help="new folder: manifest.csv and images/")
    p.add_argument("--results", help="the service's results folder (default: settings results_dir)")
    p.add_argument("--job", action="append", help="only this job (repeatable; default: every job)")
    p.add_argument("--user", help="only this user's jobs")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..serve import ServiceDB, export_reviewed, job_paths

    s = settings(args)
    results = Path(args.results or s.results_dir)
    if not (results / "service.db").is_file():
        raise InvalidInput(f"no service database in {results} (give the service's folder: --results DIR)")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise OutputExists(f"{out} is not empty: give a new folder")
    db = ServiceDB(results / "service.db")
    jobs = db.jobs(args.user)
    if args.job:
        known = {j["job_id"]: j for j in jobs}
        missing = [j for j in args.job if j not in known]
        if missing:
            whose = f" of {args.user}" if args.user else ""
            raise InvalidInput(f"no job {', '.join(missing)} in {results}{whose}")
        jobs = [known[j] for j in args.job]
    counts = export_reviewed(db, job_paths(results), jobs, out, s.slides.default_mpp)
    per = ", ".join(f"{n} {c}" for c, n in counts["per_class"].items())
    print(f"{counts['tiles']} reviewed tiles ({per}) -> {counts['manifest']}")
    for why in counts["skipped"]:
        print(f"skipped {why}")
    if not counts["tiles"]:
        print("nothing reviewed yet: review tiles in the viewer (/viewer?job=ID) or over REST")
    else:
        print(f"next: wbc-ray adapt --manifest {counts['manifest']} --out NEW_RELEASE")
    return 0
