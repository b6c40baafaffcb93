"""`mnist-pipeline lineage VERSION`: which data, configuration, run and code produced a pushed version."""

from __future__ import annotations

import argparse
import json

from pipeline.config import Config

NAME = "lineage"
HELP = "which data, configuration, run and code version produced a pushed model version, and its metrics"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("version", type=int, help="the pushed model version (the folder name under the model base path)")
    parser.add_argument("--model-name", default=None, help="the served model's name (default: push.model_name)")
    parser.add_argument("--json", action="store_true", help="print the whole record as JSON")


def run(config: Config, args: argparse.Namespace) -> int:
    from pipeline import paths
    from pipeline.config import model_base_path
    from pipeline.errors import PipelineError
    from pipeline.lineage import lineage_record
    from pipeline.store import RunStore

    path = paths.store_path(config.workdir)
    if not path.is_file():
        raise PipelineError(f"no run store at {str(path)!r}; pass the --workdir the model was pushed from")
    name = args.model_name or config.push.model_name
    with RunStore(path) as store:
        record = lineage_record(store, args.version, name, model_base_path(config))
        if record is None:
            known = sorted({str(a.properties.get("version")) for a in store.pushed_versions()
                            if a.properties.get("model_name") == name}, key=lambda v: int(v) if v.isdigit() else -1)
            raise PipelineError(
                f"no pushed version {args.version} of model {name!r} is recorded in {str(path)!r}; "
                f"recorded versions: {', '.join(known) or 'none'}"
            )
    if args.json:
        print(json.dumps(record, indent=2, sort_keys=True, default=str))
        return 0
    m = record["model"]
    print(f"model {m['name']} version {m['version']}: {m['uri']}" + ("" if m["exists"] else "  (no longer on disk)"))
    if m.get("copy_of_version") is not None:
        print(f"  rollback:     a copy of version {m['copy_of_version']} (version {m.get('rolled_back_from')} was served)")
    if record.get("run"):
        r = record["run"]
        print(f"  run:          {r['id']} ({r['status']}), code {r['code_version']}")
    data = record.get("data") or {}
    if data:
        counts = ", ".join(f"{k} {v}" for k, v in sorted((data.get("num_examples") or {}).items()))
        print(f"  data:         {data.get('dataset')} {data.get('version')} ({counts}) at {data.get('uri')}")
        print(f"  source:       {data.get('source')}" +
              (f" (fingerprint {data['source_fingerprint']})" if data.get("source_fingerprint") else ""))
        if data.get("statistics"):
            print(f"  statistics:   {data['statistics']}")
    if record.get("config"):
        c = record["config"]
        print(f"  config:       train {json.dumps(c.get('train'), sort_keys=True)}")
        print(f"                evaluate {json.dumps(c.get('evaluate'), sort_keys=True)}")
    metrics = record.get("metrics") or {}
    if metrics:
        shown = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
        print("  metrics:      " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in sorted(shown.items())))
    print("  executions:")
    for ex in record["executions"]:
        print(f"    {ex['stage']:<10} run {ex['run_id']}  {ex['status']:<9} code {ex['code_version']}  "
              f"config {ex['config_fingerprint'] or '-'}")
    return 0
