"""`hallmark evaluate --schemes uchida,trigger_set,forgery,removal [--quick] [--out docs/quality.md]`.

Runs `verifier.evaluation.<scheme>.evaluate(quick)` for each scheme named, merges the rows into
the JSON file beside `--out` (rows of other schemes are kept) and renders `--out` from it.
Names in `report.SECTIONS` ("forgery", "removal": docs/removal.md) are evaluations with a section of their own: their
result replaces that section of the JSON.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from verifier.cli import CommandError
from verifier.evaluation import report
from verifier.schemes import KNOWN

HELP = ("measure fidelity, power, robustness and false-positive rates of schemes; "
        "writes docs/quality.md and quality.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--schemes", required=True, metavar="A,B,...",
                        help="comma-separated scheme names, from: "
                             f"{', '.join(KNOWN + report.SECTIONS)}")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: fewer seeds, epochs and null pairs (rows say so)")
    parser.add_argument("--out", default="docs/quality.md", type=Path, metavar="FILE.md",
                        help="the Markdown report; the JSON record goes beside it "
                             "(default: docs/quality.md and docs/quality.json)")
    parser.add_argument("--targets", metavar="A,B,...", default=None,
                        help="with `removal`: attack only these targets and keep the other "
                             "targets' results in the JSON (default: every target)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="torch threads (default 1, so timings compare across machines)")


def run(args: argparse.Namespace) -> int:
    import torch

    names = parse_schemes(args.schemes)
    evaluators = {name: evaluator(name) for name in names}
    if args.out.suffix != ".md":
        raise CommandError(f"--out must name a .md file, received {args.out}")
    try:
        report.load(args.out.with_suffix(".json"))  # fail before hours of work, not after
    except report.ReportError as e:
        raise CommandError(str(e)) from None
    if args.threads < 1:
        raise CommandError(f"--threads must be >= 1, received {args.threads}")
    torch.set_num_threads(args.threads)
    targets = _removal_targets(args.targets, names)
    if targets is not None:
        from verifier.evaluation import removal

        evaluators["removal"] = functools.partial(removal.evaluate, targets=targets)
    new: list[dict[str, Any]] = []
    sections: dict[str, Any] = {}
    for name, evaluate in evaluators.items():
        print(f"evaluating {name}{' (quick)' if args.quick else ''} ...", flush=True)
        start = time.perf_counter()
        if name in report.SECTIONS:
            sections[name] = {**_with_progress(name, evaluate, args.quick),
                              "run": report.run_info(args.quick)}
            print(f"  {name}: done in {time.perf_counter() - start:.0f} s", flush=True)
            continue
        rows = rows_of(name, _with_progress(name, evaluate, args.quick))
        info = report.run_info(args.quick)
        for row in rows:
            row.setdefault("seconds", time.perf_counter() - start)
            row["run"] = info
            try:
                report.check_row(row)
            except report.ReportError as e:
                raise CommandError(f"verifier.evaluation.{name}: {e}") from None
        new += rows
        print(f"  {name}: {len(rows)} row(s) in {time.perf_counter() - start:.0f} s", flush=True)
    # Re-read just before writing, so rows another run wrote meanwhile are kept.
    old = args.out.with_suffix(".json")
    kept = report.load_sections(old)
    if targets is not None and "removal" in kept:  # the targets not re-run keep their results
        sections["removal"] = {**sections["removal"], "schemes": {
            **kept["removal"].get("schemes", {}), **sections["removal"]["schemes"]}}
    json_path = report.write(args.out, report.merge(report.load(old), new),
                             {**kept, **sections})
    print(f"wrote {json_path} and {args.out}")
    return 0


def _with_progress(name: str, evaluate: Callable[[bool], Mapping[str, Any]],
                   quick: bool) -> Mapping[str, Any]:
    """Run one evaluation under a progress bar (stderr) that counts its finished steps."""
    from tqdm import tqdm

    from verifier.evaluation import progress_to

    with tqdm(desc=f"  {name}", unit=" step", leave=False, dynamic_ncols=True) as bar:
        def step(label: str) -> None:
            bar.set_postfix_str(label, refresh=False)
            bar.update(1)

        with progress_to(step):
            return evaluate(quick)


def _removal_targets(text: str | None, names: list[str]) -> list[str] | None:
    """The removal targets `--targets` names (None: every target); CommandError on misuse."""
    if text is None:
        return None
    from verifier.evaluation.removal import TARGETS

    if "removal" not in names:
        raise CommandError("--targets selects removal-suite targets; add `removal` to --schemes")
    targets = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [t for t in targets if t not in TARGETS]
    if not targets or unknown:
        raise CommandError(f"--targets: unknown or no target(s) {', '.join(unknown) or '(none)'}; "
                           f"expected names from {', '.join(TARGETS)}")
    return targets


def parse_schemes(text: str) -> list[str]:
    """Scheme names from "a,b", in order, without duplicates; CommandError on an unknown one."""
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise CommandError("--schemes is empty; name at least one scheme, e.g. --schemes uchida")
    unknown = [n for n in names if n not in KNOWN + report.SECTIONS]
    if unknown:
        raise CommandError(f"unknown scheme(s) {', '.join(unknown)}; expected names from "
                           f"{', '.join(KNOWN + report.SECTIONS)}")
    return names


def evaluator(name: str) -> Callable[[bool], Mapping[str, Any]]:
    """`verifier.evaluation.<name>.evaluate`; CommandError if that scheme has no evaluation."""
    if importlib.util.find_spec(f"verifier.evaluation.{name}") is None:
        raise CommandError(f"scheme `{name}` has no evaluation module "
                           f"(verifier/evaluation/{name}.py)")
    module = importlib.import_module(f"verifier.evaluation.{name}")
    fn = getattr(module, "evaluate", None)
    if not callable(fn):
        raise CommandError(f"verifier.evaluation.{name} has no evaluate(quick) function")
    return fn  # type: ignore[no-any-return]


def rows_of(name: str, result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of one evaluate() result: a row, or {"rows": [...]}; each must be for `name`."""
    rows = [dict(r) for r in result["rows"]] if "rows" in result else [dict(result)]
    for r in rows:
        if r.get("scheme") != name:
            raise CommandError(f"verifier.evaluation.{name} returned a row for scheme "
                               f"`{r.get('scheme')}`")
    return rows
