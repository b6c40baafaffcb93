"""`mnist-pipeline runs`: the runs recorded in the workdir's run store, newest first."""

from __future__ import annotations

import argparse
import datetime as _dt

from pipeline.config import Config

NAME = "runs"
HELP = "list the recorded runs: status, duration, pushed version, accuracy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=20, metavar="N", help="show the newest N runs (default 20)")
    parser.add_argument("--run-id", metavar="ID", help="show this run's stage executions instead")


def _duration(started: str, ended: str | None) -> str:
    if not ended:
        return "-"
    seconds = (_dt.datetime.fromisoformat(ended) - _dt.datetime.fromisoformat(started)).total_seconds()
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def run(config: Config, args: argparse.Namespace) -> int:
    from pipeline import paths
    from pipeline.errors import PipelineError
    from pipeline.lock import close_interrupted_runs
    from pipeline.store import RunStore

    path = paths.store_path(config.workdir)
    if not path.is_file():
        raise PipelineError(f"no run store at {str(path)!r}; start a run with `mnist-pipeline run` (or pass --workdir)")
    with RunStore(path) as store:
        close_interrupted_runs(config.workdir, store)  # a SIGKILLed run would show 'running' forever
        if args.run_id:
            run_ = store.get_run(args.run_id)
            if run_ is None:
                raise PipelineError(f"no run {args.run_id!r} in {str(path)!r}; `mnist-pipeline runs` lists them")
            print(f"run {run_.id}: {run_.status}, code {run_.code_version}" +
                  (f", failed at {run_.failed_stage}: {run_.error}" if run_.failed_stage else ""))
            for ex in store.executions(run_.id):
                outs = ", ".join(o["uri"] for o in ex.outputs.values())
                why = f" ({ex.error})" if ex.error else ""
                dur = f"{ex.duration:.1f}s" if ex.duration is not None else "-"
                print(f"  {ex.stage:<14} {ex.status:<9} {dur:>8}  {outs}{why}")
            return 0
        runs = store.list_runs(args.limit)
        if not runs:
            print(f"no runs recorded in {path}")
            return 0
        print(f"{'RUN ID':<25} {'STATUS':<12} {'DURATION':>8}  {'DATASET':<13} {'PUSHED':<8} {'ACCURACY':<8}  NOTE")
        for r in runs:
            pushed, accuracy, rollback = "-", "-", None
            for ex in store.executions(r.id):
                if ex.stage == "rollback" and ex.status == "succeeded":
                    rollback = ex
                if ex.stage in ("push", "rollback") and ex.status in ("succeeded", "cached"):
                    v = ex.properties.get("version")
                    pushed = f"v{v}" if ex.properties.get("pushed") and v is not None else "no"
                if ex.stage == "evaluate" and ex.status in ("succeeded", "cached"):
                    acc = ex.properties.get("accuracy")
                    accuracy = f"{acc:.4f}" if isinstance(acc, (int, float)) else "-"
            note = f"failed at {r.failed_stage}: {r.error}" if r.failed_stage else ""
            if rollback is not None and not note:
                note = (f"rollback: copy of v{rollback.properties.get('copy_of_version')}, "
                        f"was serving v{rollback.properties.get('rolled_back_from')}")
            if len(note) > 90:
                note = note[:87] + "..."
            dataset = (r.config.get("data") or {}).get("dataset") or "-"
            print(f"{r.id:<25} {r.status:<12} {_duration(r.started, r.ended):>8}  {dataset:<13} {pushed:<8} {accuracy:<8}  "
                  f"{note}")
    return 0
