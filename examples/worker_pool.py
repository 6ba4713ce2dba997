"""
Several worker processes draining one queue of runs from a shared store.

    python examples/worker_pool.py                       # SQLite file in a temp dir
    python examples/worker_pool.py --dsn postgresql://user@host:5432/db

An API process creates runs; each worker process claims a few at a time (leased to
it), asks for a tool call, answers it (the run goes back to the queue), and completes
the runs it claims a second time. Claims are exclusive, so no run is worked twice;
afterwards every run's journal is checked.

With ``--dsn`` (or ``RUNFLOW_POSTGRES_DSN``) the store is PostgreSQL, in the schema
``--schema`` (default ``runflow_example``); the example discards its runs at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
from collections import Counter
from pathlib import Path

from runflow import Engine, open_store

WEATHER = {"type": "function", "function": {"name": "get_weather"}}
USAGE = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}


def work(url: str, schema: str | None, worker: str) -> int:
    """Claim and drive runs until the queue stays empty; return how many this worker ended."""
    options = {"schema": schema} if schema else {}
    engine = Engine(store=open_store(url, **options), lease=30)
    ended = 0
    idle = 0
    while idle < 3:
        runs = engine.claim(worker=worker, limit=5)
        idle = 0 if runs else idle + 1
        for run in runs:
            if any(e.to_status == "requires_action" for e in engine.history(run)):
                engine.complete(run, usage=USAGE, worker=worker)  # answered: finish it
                ended += 1
            else:
                engine.require_action(run, tool_calls=[CALL], worker=worker)
                engine.submit_tool_outputs(
                    run, tool_outputs=[{"tool_call_id": "call_1", "output": "sunny"}], worker=worker
                )
    engine.close()
    return ended


def main() -> None:
    parser = argparse.ArgumentParser(description="A pool of workers on one store.")
    parser.add_argument("--dsn", default=os.environ.get("RUNFLOW_POSTGRES_DSN", ""))
    parser.add_argument("--schema", default="runflow_example")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = args.dsn or f"sqlite:///{Path(tmp) / 'runs.db'}"
        schema = args.schema if args.dsn else None
        api = Engine(store=open_store(url, **({"schema": schema} if schema else {})))
        ids = [
            api.create(thread_id=f"thread_{i}", assistant_id="asst_a", tools=[WEATHER]).id
            for i in range(args.runs)
        ]
        # spawn: each worker opens its own connections (never share them across a fork)
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            ended = pool.starmap(work, [(url, schema, f"w{i}") for i in range(args.workers)])

        statuses = Counter(api.get(run_id).status.value for run_id in ids)
        paths = Counter(len(api.history(run_id)) for run_id in ids)
        print(f"store: {url.split('://')[0]}, {args.workers} workers ended {ended} runs")
        print(f"statuses: {dict(statuses)}; journal lengths: {dict(paths)}")
        assert statuses == {"completed": args.runs}
        assert paths == {6: args.runs}  # create, claim, require, submit, claim, complete
        for run_id in ids:
            api.discard(run_id)
        api.close()


if __name__ == "__main__":
    main()
