"""Command line: fill data/, run a notebook stage at a scale.

    magictokens data [--source DIR | --from-hub]
    magictokens run STAGE [STAGE ...] [--scale default|cpu|paper|smoke] [--out-root DIR] [--set key=value ...] [--redraw]
    magictokens search [--scale paper] [--family F] [--minutes M] [--shard I/N]   (searches only, resumable)
    accelerate launch --multi_gpu --num_processes N -m magictokens.pipeline search ...   (one process per device)
    magictokens merge [--scale paper]   (shard logs of finished --shard runs -> one log per family)
    magictokens report      (README's numbers from results/*.json)
    magictokens metrics [--scale S]   (results/<scale>/metrics/: DVC's headline numbers, from results/*.json)
    magictokens reach --x0 TEXT --target TOKEN [--model M] [--max-k 10]   (paper A's question, asked once)
    accelerate launch --multi_gpu --num_processes N -m magictokens.pipeline run STAGE ...   (stages that split)

A stage is a jupytext ``py:percent`` notebook ``notebooks/NN_<stage>.py``. The
runner renders it to .ipynb and executes it with papermill (kernel python3,
cwd = repo root), passing ``scale``, ``out_root`` and ``overrides`` into its
``parameters`` cell. The executed notebook lands in
``<out_root>/results/<scale>/executed/``. Under a launcher rank 0 executes
the notebook and every other process runs the notebook's stage beside it
(`SPLIT_STAGES`: they share its searches and generation and write nothing).
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from .config import REPO_ROOT, SCALES, parse_sets
from .errors import MagicTokensError

NOTEBOOKS = REPO_ROOT / "notebooks"
SPLIT_STAGES = ("reachability", "cotraining", "mode_reachability")   # share their work under `accelerate launch`


def stages() -> dict[str, Path]:
    """stage name -> notebook source, from notebooks/NN_<name>.py."""
    return {p.stem.split("_", 1)[1]: p for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))}


def check_stages(names: list[str], n_processes: int = 1) -> None:
    """One clear error for the first name that is no stage, or that does not split over `n_processes` > 1."""
    known = stages()
    for stage in names:
        if stage not in known:
            raise MagicTokensError(f"unknown stage {stage!r}: choose one of {sorted(known)}")
    if n_processes > 1 and len(names) > 1:
        # a second stage would need a second rendezvous of the same processes, which hangs (torch's
        # elastic store keeps the first one's keys): measured with two re-joins under `accelerate launch`
        raise MagicTokensError(f"one stage per launch: launch {', '.join(names)} one after another")
    for stage in names:
        if n_processes > 1 and stage not in SPLIT_STAGES:
            raise MagicTokensError(f"stage {stage!r} does not split over processes: run it without a launcher "
                                   f"(these do: {', '.join(SPLIT_STAGES)})")


def skip_iri_grammar() -> None:
    """Keep nbformat's import from compiling a grammar no notebook needs.

    nbformat validates with jsonschema, whose "iri" format checker imports `rfc3987_syntax` when it is
    installed (jupyterlab's dependencies install it), and that module compiles a Lark grammar at import:
    2.2 s of every notebook run on a 2-core CPU (`python -X importtime -c "import papermill"`). No notebook
    schema has an "iri" field, and jsonschema leaves the checker out when the import fails, which a None in
    sys.modules makes it do. A process that imported the module already keeps it.
    """
    sys.modules.setdefault("rfc3987_syntax", None)


def run_stage(stage: str, scale: str = "default", out_root: str | Path | None = None,
              overrides: dict | None = None, log_output: bool = False, redraw: bool = False) -> Path | None:
    """Render + execute one notebook stage; returns the executed notebook path.

    `redraw`: the notebook draws the committed result of the scale from
    results/ (no model, no search; stages that support it). Under a launcher
    (`distributed.world`), processes other than rank 0 run the stage's `run`
    only, whose result rank 0's notebook writes, and return None.
    """
    # here, not at the top: `data`, `search` and `report` run without the notebook machinery
    skip_iri_grammar()
    import jupytext
    import papermill as pm

    from .distributed import world

    known = stages()
    if scale not in SCALES:
        raise MagicTokensError(f"unknown scale {scale!r}: use one of {SCALES}")
    rank, n = world()
    check_stages([stage], n)
    if rank != 0:   # the notebook's kernel (rank 0) calls the same `run`: the two meet at its barriers
        if not redraw:
            importlib.import_module(f"{__package__}.stages.{stage}").run(scale, out_root, overrides)
        return None
    root = Path(out_root or REPO_ROOT).resolve()
    executed = root / "results" / scale / "executed"
    executed.mkdir(parents=True, exist_ok=True)
    nb = jupytext.read(known[stage])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = executed / f"{known[stage].stem}.source.ipynb"
    jupytext.write(nb, src)
    out = executed / f"{known[stage].stem}.ipynb"
    try:
        pm.execute_notebook(str(src), str(out), kernel_name="python3", cwd=str(REPO_ROOT),
                            parameters={"scale": scale, "out_root": str(root), "overrides": overrides or {},
                                        **({"redraw": True} if redraw else {})},
                            log_output=log_output, progress_bar=False)
    except pm.PapermillExecutionError as exc:
        if exc.ename == "MagicTokensError":
            raise MagicTokensError(exc.evalue) from None
        raise
    finally:
        src.unlink(missing_ok=True)
    return out


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'I/N' -> (I, N); one clear error otherwise."""
    if text is None:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise MagicTokensError(f"--shard {text!r}: write I/N, e.g. 0/4 (0 <= I < N)") from None
    if not 0 <= i < n:
        raise MagicTokensError(f"--shard {text!r}: want 0 <= I < N, e.g. 0/4")
    return i, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="magictokens", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data", help="fill data/ from a local copy of shared/data (or the hub)")
    d.add_argument("--source", help="source directory (default: $MAGICTOKENS_DATA_SOURCE or ../shared/data)")
    d.add_argument("--from-hub", action="store_true", help="fetch Wikitext-2 with `datasets` (needs internet)")
    r = sub.add_parser("run", help="execute notebook stages, in the order given")
    r.add_argument("stage", nargs="+", help="one or more stages (`magictokens stages` lists them)")
    r.add_argument("--scale", default="default", choices=SCALES)
    r.add_argument("--out-root", default=None, help="write results/ and figures under this root (default: repo)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one params.yaml value of the scale, e.g. model=gpt2")
    r.add_argument("--log-output", action="store_true", help="stream the notebook's output")
    r.add_argument("--redraw", action="store_true", help="draw the figures from results/ only (no model, no search)")
    sr = sub.add_parser("search", help="run/resume the reachability searches only (no notebook), e.g. on a GPU")
    sr.add_argument("--scale", default="paper", choices=SCALES)
    sr.add_argument("--family", action="append", default=None, help="true_token | top75 | uniform_rank (repeatable)")
    sr.add_argument("--minutes", type=float, default=None, help="start no new instance after this many minutes")
    sr.add_argument("--out-root", default=None)
    sr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sr.add_argument("--shard", default=None, metavar="I/N",
                    help="search every N-th instance from the I-th (0-based): N processes on one GPU")
    mg = sub.add_parser("merge", help="merge the shard logs of finished `search --shard I/N` runs into one log")
    mg.add_argument("--scale", default="paper", choices=SCALES)
    mg.add_argument("--out-root", default=None)
    rc = sub.add_parser("reach", help="the shortest control prompt u that makes TARGET the next token after X0")
    rc.add_argument("--model", default="smollm2-135m-instruct", help="alias, local HF dir or .gguf, or hub name")
    rc.add_argument("--x0", required=True, help="the state text, e.g. 'The capital of France is'")
    rc.add_argument("--target", required=True, help="one token as text, with its space, e.g. ' Berlin'")
    rc.add_argument("--max-k", type=int, default=10, help="longest prompt tried (default 10)")
    rc.add_argument("--seed", type=int, default=0)
    rc.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    rc.add_argument("--search-dtype", default="auto", help="auto (bf16 where native, else fp32) | float32 | bfloat16")
    rc.add_argument("--out", default=str(REPO_ROOT / "results" / "reach" / "reach.jsonl"),
                    help="append the result here as one JSON row ('' = do not write)")
    mt = sub.add_parser("metrics", help="rewrite results/<scale>/metrics/ (DVC's headline numbers) from results JSONs")
    mt.add_argument("--scale", action="append", default=None, choices=SCALES, help="default: every scale present")
    sub.add_parser("stages", help="list the stages")
    sub.add_parser("report", help="rewrite README's results block from results/*.json")
    args = ap.parse_args(argv)
    try:
        # each command imports what it runs: `data` and `stages` start without torch
        if args.cmd == "data":
            from .data import fill_data, fill_from_hub

            print(fill_from_hub() if args.from_hub else fill_data(args.source))
        elif args.cmd == "search":
            from .distributed import world
            from .stages.reachability import search

            done = search(args.scale, args.out_root, parse_sets(args.set), args.family, args.minutes,
                          parse_shard(args.shard))
            if world()[0] == 0:   # under a launcher every process searched its share; one reports
                print(json.dumps(done))
        elif args.cmd == "merge":
            from .stages.reachability import merge_shards

            print(json.dumps(merge_shards(args.scale, args.out_root)))
        elif args.cmd == "report":
            from .report import update_readme

            print("README.md and docs/ updated" if update_readme() else "README.md and docs/ already current")
        elif args.cmd == "reach":
            from .shortest_prompt import ReachConfig, reach_model

            res = reach_model(args.model, args.x0, args.target, ReachConfig(max_k=args.max_k, seed=args.seed),
                              args.device, args.search_dtype, args.out or None)
            print(res.summary())
            if args.out:
                print(f"row appended to {args.out}")
        elif args.cmd == "metrics":
            from .headline import write_scale

            scales = args.scale or [s for s in SCALES if (REPO_ROOT / "results" / s).is_dir()]
            print(json.dumps({s: write_scale(REPO_ROOT / "results" / s) for s in scales}))
        elif args.cmd == "stages":
            print(json.dumps({k: str(v.relative_to(REPO_ROOT)) for k, v in stages().items()}, indent=2))
        else:
            from .distributed import world

            # every name before any stage runs: a typo in the last must not come after the first stage's run
            check_stages(args.stage, world()[1])
            for stage in args.stage:   # one process (one launch) for several stages: imports paid once
                executed = run_stage(stage, args.scale, args.out_root, parse_sets(args.set), args.log_output,
                                     args.redraw)
                if executed is not None:   # under a launcher: rank 0's notebook
                    print(executed, flush=True)
    except MagicTokensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
