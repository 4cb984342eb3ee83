"""The app's page at /ui: the sweeps in the storage, the served adapters (promote, roll back, the canary split),
a playground for /v1/sql and /v1/code, and live metrics. Built with Gradio, whose assets ship in its wheel: the
page works with no network.

It is mounted in the ingress's FastAPI app (serving/app.py) as an ASGI app that builds the Gradio app at the
first request inside the replica: Serve copies the FastAPI app when the ingress class is decorated, and a
Gradio app holds a queue and tasks that must start in the replica's event loop. When the server has an API key
the page asks for it at a login (any user name, the key as the password); the name goes into the promotion
history.

What each view reads, and from where:
- Sweeps: the storage's sweep folders (shared/sweep_store.py): summary.json for a finished sweep, each trial's
  progress.csv as it trains. Accuracy intervals are Wilson intervals (shared/heldout.py) on the examples each
  figure was measured on: the re-scored examples for the re-scored trials, the rung slice for the others.
- Served adapters: the app's own registry and config, latest/<task>.json and its history (shared/promotion.py).
  Promotion runs the same gate as the sweep: both adapters scored on the frozen held-out set (a Ray task
  beside the replicas), the figures shown, then the click promotes.
- Playground: the app's /v1/sql and /v1/code handlers themselves; a valid query also runs on a small database
  synthesized from the schema (shared/data/synth.py), in the project's SQLite worker (shared/execution/sql.py).
- Live metrics: the cluster's Prometheus (page.prometheus_url), the series the app and Serve export.
"""

# (no `from __future__ import annotations`: Gradio reads the handlers' annotations to pass gr.Request)

import asyncio
import contextlib
import hashlib
import hmac
import math
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from serving import errors
from serving.http import settings
from shared.sweep_store import OBJECTIVE

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # read when gradio is imported: no calls home

PATH = "/ui"
ROUTE = SimpleNamespace(path=PATH)  # what the request metrics (serving/http.py) read as the route
TASKS = ("sql", "code")
CURVES = (OBJECTIVE, "accuracy", "eval/loss")
EXAMPLE_SCHEMA = ("CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);\n"
                  "CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, singer_id INTEGER, year INTEGER, venue TEXT)")
EXAMPLE_QUESTION = "How many singers are from France?"
NO_ROWS = pd.DataFrame(columns=["(no rows)"])
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac")  # Tableau 10


def colors(series) -> dict[str, str]:
    """A color per series, given with every update: a Gradio plot otherwise keeps the legend of its first value."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(set(series)))}
GATE_DEFAULTS = {"split": "test", "examples": 200, "level": 0.05}  # sweeps/config.py's promotion defaults


# ------------------------------------------------------------------------------------------- the mount


class PageMount:
    """The ASGI app at /ui: 404 when page.enabled is false, else the Gradio app, built at the first request."""

    def __init__(self):
        self.app = None
        self._lock: asyncio.Lock | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" and scope["type"] != "websocket":
            return
        st = settings(scope.get("app"))
        svc = getattr(st, "service", None)
        if svc is None or not svc.cfg.page.enabled:
            if scope["type"] == "http":
                await errors.response(404, "the page is off on this server (page.enabled: false)",
                                      code="not_found")(scope, receive, send)
            return
        if self.app is None:
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if self.app is None:
                    self.app = await self._build(lambda: settings(scope.get("app")).service,
                                                 getattr(st, "key_hash", None))
        try:
            await self.app(scope, receive, send)
        finally:
            scope["route"] = ROUTE  # the page's requests counted as one route in qlora_serve_requests, not per asset

    async def _build(self, service, key_hash: str | None):
        import gradio as gr
        from fastapi import FastAPI

        def auth(user: str, password: str) -> bool:
            got = hashlib.sha256((password or "").encode()).hexdigest()
            return hmac.compare_digest(got, key_hash)

        holder = FastAPI()
        gr.mount_gradio_app(holder, page(service), path=PATH, auth=auth if key_hash else None, ssr_mode=False,
                            footer_links=[], show_error=True, run_history=False,
                            auth_message="The server's API key is the password (any user name).")
        app = holder.routes[-1].app
        await self._stack.enter_async_context(app.router.lifespan_context(app))
        app.get_blocks().run_startup_events()
        await app.get_blocks().run_extra_startup_events()
        return app


# -------------------------------------------------------------------------------------------- sweeps


def _short(location: str | None) -> str:
    """An adapter's location as a person reads it: <sweep id>/best_adapter, or the folder's name."""
    if not location:
        return "(none)"
    parts = location.rstrip("/").split("/")
    return "/".join(parts[-2:]) if parts[-1] == "best_adapter" else parts[-1]


def sweep_list(storage: str) -> list[str]:
    from shared.sweep_store import sweep_ids

    return sweep_ids(storage)


def sweep_view(storage: str, sweep_id: str, curve_metric: str | None = None
               ) -> tuple[str, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(what the sweep found, its leaderboard, its learning curves of curve_metric (default: the objective
    ASHA compares, sweep/objective; "accuracy": the task's metric; or eval/loss), its parameter importances)."""
    from shared.heldout import wilson
    from shared.sweep_store import SUMMARY, SWEEP_STATE, read_json, trial_number, trial_progress

    state = read_json(storage, sweep_id, SWEEP_STATE) or {}
    summary = read_json(storage, sweep_id, SUMMARY)
    config = state.get("config", {})
    n_rung = int((config.get("objective") or {}).get("eval_slice") or 0)
    max_steps = int(((config.get("trial") or {}).get("overrides") or {}).get("train.max_steps") or 0)
    progress = trial_progress(storage, sweep_id)
    metric = (summary or {}).get("objective", {}).get("metric") or _metric_of(progress)
    curve_metric = curve_metric or OBJECTIVE

    if summary is None:
        head = (f"**{sweep_id}** is in progress (no summary.json yet): {len(progress)} trial(s) have reported. "
                "The table shows each trial's last report.")
        trials = [{"trial_number": trial_number(folder), "state": "in progress", "steps": _last(df, "train/steps"),
                   "objective": _last(df, OBJECTIVE), metric: _last(df, metric),
                   "eval/loss": _last(df, "eval/loss"), "position": None, "sample": {}}
                  for folder, df in progress.items()]
        rescored = {}
    else:
        trials = summary.get("trials", [])
        sel = summary.get("selection") or {}
        rescored = {r["trial_number"]: r for r in sel.get("rescored", [])}
        promo = summary.get("promotion") or {}
        head = "\n".join([
            f"**{sweep_id}**: {len(trials)} trials, objective `{metric}` ({summary['objective'].get('mode')}).",
            f"- Winner: {sel.get('why', 'the leaderboard first')}.",
            f"- Promotion: **{promo.get('action', 'none')}**: {promo.get('why', '')}",
            f"- Best adapter: `{_short(summary.get('best_adapter'))}`",
        ])
    rows = []
    for t in sorted(trials, key=lambda t: (t.get("position") is None, t.get("position") or 0,
                                           t.get("trial_number") or 0)):
        number, value = t.get("trial_number"), t.get(metric)
        if number in rescored:
            r = rescored[number]
            acc, (lo, hi), n, on = r["accuracy"], r["interval"], r["n"], "re-scored"
        elif isinstance(value, int | float) and not math.isnan(value) and n_rung:
            acc, n, on = value, n_rung, "rung slice"
            lo, hi = wilson(round(value * n), n)
        else:
            acc = lo = hi = None
            n, on = None, ""
        state_text = t.get("state", "")
        if state_text == "stopped":
            state_text = f"stopped by ASHA at step {t.get('steps')}"
        elif state_text == "failed" and t.get("error"):
            state_text = f"failed: {t['error']}"
        rows.append({"#": t.get("position"), "trial": number, "state": state_text, "steps": t.get("steps"),
                     "objective": _round(t.get("objective")), metric: _round(value),
                     "eval/loss": _round(t.get("eval/loss")),
                     **{k: _round(v) for k, v in (t.get("sample") or {}).items()},
                     "accuracy": _round(acc),
                     "95% interval": f"[{lo:.3f}, {hi:.3f}]" if lo is not None else "",
                     "on": f"{n} {on}" if n else ""})
    states = {t.get("trial_number"): t for t in trials}
    curves = []
    for folder, df in progress.items():
        number = trial_number(folder)
        column = metric if curve_metric == "accuracy" else curve_metric
        if df.empty or "train/steps" not in df.columns or column not in df.columns:
            continue
        t = states.get(number, {})
        label = f"trial {number}"
        if t.get("state") == "stopped":
            label += f" (ASHA stop at {t.get('steps')})"
        elif t.get("state") == "failed":
            label += " (failed)"
        for step, value in zip(df["train/steps"], df[column], strict=True):
            if not pd.isna(value):
                curves.append({"step": int(step), "value": float(value), "trial": label})
    curves_df = pd.DataFrame(curves, columns=["step", "value", "trial"])
    curves_df.attrs["metric"] = metric if curve_metric == "accuracy" else curve_metric
    imp = (summary or {}).get("importances") or {}
    imp_df = pd.DataFrame([{"parameter": k, "importance": round(v, 4)} for k, v in (imp.get("values") or {}).items()],
                          columns=["parameter", "importance"])
    if imp.get("note"):
        head += f"\n- Parameter importances: {imp['note']}."
    if max_steps:
        head += f"\n- Step budget {max_steps}; a stopped trial's curve ends where ASHA stopped it."
    return head, pd.DataFrame(rows), curves_df, imp_df


def _metric_of(progress: dict) -> str:
    for df in progress.values():
        for column in df.columns:
            if column.startswith("eval/") and column not in ("eval/loss",) and ("acc" in column or "pass" in column):
                return column
    return OBJECTIVE


def _last(df: pd.DataFrame, column: str):
    if df.empty or column not in df.columns:
        return None
    value = df[column].iloc[-1]
    return None if pd.isna(value) else value.item() if hasattr(value, "item") else value


def _round(value, digits: int = 4):
    return round(value, digits) if isinstance(value, float) else value


# ------------------------------------------------------------------------------------ served adapters


def candidates(storage: str, task: str) -> list[str]:
    """Every sweep's best adapter for this task, newest sweep first."""
    from shared.sweep_store import SUMMARY, read_json, sweep_ids

    out = []
    for sweep_id in sweep_ids(storage):
        summary = read_json(storage, sweep_id, SUMMARY) or {}
        if summary.get("best_adapter") and _task_of(summary) == task:
            out.append(summary["best_adapter"])
    return out


def _task_of(summary: dict) -> str | None:
    return summary.get("task") or (summary.get("promotion") or {}).get("task")


def gate_settings(storage: str, candidate: str) -> dict:
    """The promotion gate of the sweep that made the candidate (its split, examples, level), else the defaults."""
    from shared.sweep_store import SWEEP_STATE, read_json

    sweep_id = candidate.rstrip("/").split("/")[-2] if candidate.rstrip("/").endswith("best_adapter") else None
    state = read_json(storage, sweep_id, SWEEP_STATE) if sweep_id else None
    promotion = ((state or {}).get("config") or {}).get("promotion") or {}
    return {k: promotion.get(k, v) for k, v in GATE_DEFAULTS.items()}


def served_view(svc, task: str) -> tuple[str, pd.DataFrame]:
    """(what the task serves now: latest, the names and their model ids, the default, the canary split;
    the promotion history, newest first)."""
    from shared.promotion import read_history
    from shared.storage import read_latest

    storage = svc.cfg.storage_path
    latest = read_latest(storage, task) or {}
    names = [a for a in svc.registry.adapters.values() if a.task == task]
    lines = [f"**latest/{task}** names `{_short(latest.get('adapter'))}`"
             + (f" (since {latest['updated']})" if latest.get("updated") else "")]
    for a in names:
        lines.append(f"- adapter `{a.name}` serves model id `{a.model_id}` ({Path(a.path).name if a.path else ''})")
    lines += [f"- adapter `{n}`: not available: {why}" for n, why in svc.registry.problems.items()
              if svc.cfg.adapters.get(n) == f"latest:{task}"]
    default = svc.cfg.defaults.get(task)
    split = svc.cfg.traffic.get(task)
    if split:
        total = sum(s.weight for s in split)
        lines.append("- Canary split of the default: " + ", ".join(f"`{s.adapter}` {s.weight / total:.0%}"
                                                                   for s in split))
    elif default:
        lines.append(f"- Default for /v1/{task}: `{default}` (no canary split)")
    history = [{"when": e.get("when"), "action": e.get("action"), "who": e.get("who"), "source": e.get("source"),
                "from": _short(e.get("from")), "to": _short(e.get("to")), "figures": _figures_text(e.get("figures")),
                "why": e.get("why")}
               for e in reversed(read_history(storage, task))]
    return "\n".join(lines), pd.DataFrame(history, columns=["when", "action", "who", "source", "from", "to",
                                                           "figures", "why"])


def _figures_text(f: dict | None) -> str:
    if not f:
        return ""
    return (f"{f['candidate_acc']:.3f} vs {f['current_acc']:.3f} on {f['n']}, diff {f['difference']:+.3f} "
            f"[{f['interval'][0]:+.3f}, {f['interval'][1]:+.3f}], p {f['p_value']:.3g}")


def _score_adapter(location: str, examples: list[dict]) -> list[bool]:
    from shared.heldout import score_adapter

    return score_adapter(location, examples)


def scorer():
    """Scores an adapter on examples: a Ray task (1 CPU) beside the replicas when Ray is up, else here."""
    import ray

    if not ray.is_initialized():
        return _score_adapter
    remote = ray.remote(num_cpus=1, max_retries=0)(_score_adapter)
    return lambda location, examples: ray.get(remote.remote(location, examples))


def check_gate(storage: str, task: str, candidate: str, score=None) -> tuple[str, dict]:
    """Both adapters scored on the frozen held-out set: (the figures as text, what promote() needs to reuse them)."""
    from shared.heldout import examples_digest, heldout_examples, paired_test
    from shared.storage import read_latest

    gate = gate_settings(storage, candidate)
    current = (read_latest(storage, task) or {}).get("adapter")
    examples = heldout_examples(candidate, gate["split"], int(gate["examples"]))
    digest = examples_digest(examples)
    score = score or scorer()
    scores = {candidate: score(candidate, examples)}
    if current is None:
        return (f"Nothing is served for {task}: promoting `{_short(candidate)}` needs no test.",
                {"candidate": candidate, "current": None, "scores": scores, "examples": examples, "digest": digest,
                 "level": gate["level"]})
    if current == candidate:
        return f"`{_short(candidate)}` is already latest/{task}.", {}
    scores[current] = score(current, examples)
    f = paired_test(scores[candidate], scores[current], float(gate["level"]))
    verdict = ("shown better: Promote moves latest" if f["better"] else
               "NOT shown better: Promote records a rejection unless forced")
    text = (f"Held-out `{gate['split']}`, first {len(examples)} examples (digest {digest}):\n"
            f"- candidate `{_short(candidate)}`: **{f['candidate_acc']:.3f}**\n"
            f"- served `{_short(current)}`: **{f['current_acc']:.3f}**\n"
            f"- difference {f['difference']:+.3f}, 95% interval [{f['interval'][0]:+.3f}, {f['interval'][1]:+.3f}];"
            f" {f['candidate_only']} right only for the candidate, {f['current_only']} only for the served one;"
            f" exact one-sided paired test p = {f['p_value']:.3g} at level {gate['level']}: {verdict}.")
    return text, {"candidate": candidate, "current": current, "scores": scores, "examples": examples, "digest": digest,
                  "level": gate["level"]}


def promote_checked(storage: str, task: str, checked: dict, force: bool, who: str | None = None) -> dict:
    """promote() with the examples and scores of the check (refused if the served adapter changed since)."""
    from shared.promotion import promote
    from shared.storage import read_latest

    if not checked:
        raise ValueError("check the candidate against the served adapter first")
    current = (read_latest(storage, task) or {}).get("adapter")
    if current != checked["current"]:
        raise ValueError(f"latest/{task} changed since the check ({_short(checked['current'])} -> "
                         f"{_short(current)}): check again")
    return promote(storage, task, checked["candidate"], scorer=lambda location, _: checked["scores"][location],
                   examples=checked["examples"], digest=checked["digest"], level=float(checked["level"]), force=force,
                   source="page", who=who)


def rollback_preview(storage: str, task: str) -> str:
    from shared.promotion import read_history
    from shared.storage import read_latest

    current = (read_latest(storage, task) or {}).get("adapter")
    made = [e for e in read_history(storage, task) if e["action"] == "promoted" and e["to"] == current]
    if current is None or not made or not made[-1]["from"]:
        return f"Rollback: no earlier {task} adapter is recorded before `{_short(current)}`."
    return f"Rollback would point latest/{task} from `{_short(current)}` back to `{_short(made[-1]['from'])}`."


# ----------------------------------------------------------------------------------------- playground


def sql_result(schema: str, sql: str, seed: int = 0) -> tuple[pd.DataFrame, str]:
    """The query's rows on a small database synthesized from the schema, run in the project's SQLite worker."""
    from shared.data.synth import synthesize_database
    from shared.execution.sql import run_query

    with tempfile.TemporaryDirectory(prefix="ui-db-") as tmp:
        try:
            db = synthesize_database(schema, Path(tmp) / "db.sqlite", seed=seed)
        except ValueError as e:
            return NO_ROWS, f"no database could be built from the schema: {e}"
        result = run_query(db, sql, timeout_s=2.0, max_rows=50)
        if not result.ok:
            return NO_ROWS, f"the query failed on the synthesized database: {result.error}"
        rows = result.rows or []
        width = max((len(r) for r in rows), default=0)
        return (pd.DataFrame([list(r) for r in rows], columns=[f"col {i + 1}" for i in range(width)]),
                f"{len(rows)} row(s) on a database synthesized from the schema (seed {seed})")


# -------------------------------------------------------------------------------------- live metrics

# Per chart: (title, PromQL, the series a result is counted in, from its labels; the series the chart can have).
# A chart's series are fixed, so its legend is too (a Gradio plot keeps the legend of its first value); requests
# by route come as a table. Ray exports counters with a _total suffix.
REQUESTS = '{__name__=~"ray_qlora_serve_requests(_total)?"}'
LATENCY = "sum by (le) (rate(ray_qlora_serve_latency_seconds_bucket[1m]))"
CHARTS = {
    "requests": ("Requests/s by status", f"sum by (status) (rate({REQUESTS}[1m]))",
                 lambda m: f"{m.get('status', '?')[:1]}xx", ("2xx", "4xx", "5xx")),
    "latency": ("Latency p50 / p95 (s)", f'histogram_quantile(0.5, {LATENCY}) or label_replace('
                f'histogram_quantile(0.95, {LATENCY}), "q", "p95", "", "")', lambda m: m.get("q", "p50"),
                ("p50", "p95")),
    "tokens": ("Tokens generated/s", 'sum(rate({__name__=~"ray_qlora_serve_tokens_generated(_total)?"}[1m]))',
               lambda m: "tokens/s", ("tokens/s",)),
    "batch": ("Mean batch size (rows per forward pass)",
              'sum(rate({__name__=~"ray_qlora_serve_batch_rows(_total)?"}[1m])) '
              "/ sum(rate(ray_qlora_serve_batch_size_count[1m]))",
              lambda m: "rows", ("rows",)),
    "replicas": ("Healthy replicas by deployment", 'sum by (deployment) (ray_serve_deployment_replica_healthy)',
                 lambda m: m.get("deployment", "?"), ("Api", "Generator")),  # serving/app.py's deployment names
    "loads": ("Adapter loads/min", 'sum(increase({__name__=~"ray_qlora_serve_adapter_loads(_total)?"}[1m]))',
              lambda m: "loads", ("loads",)),
}
EMPTY_SERIES = pd.DataFrame(columns=["time", "value", "series"])


def _prometheus(url: str, path: str, **params) -> list[dict]:
    import requests

    r = requests.get(f"{url.rstrip('/')}/api/v1/{path}", params=params, timeout=5)
    r.raise_for_status()
    return r.json()["data"]["result"]


def prometheus_series(url: str, key: str, minutes: int, step_s: int = 5) -> pd.DataFrame:
    """One chart's query_range over the last minutes -> rows (time, value, series), summed within a series."""
    _, query, series_of, domain = CHARTS[key]
    end = time.time()
    rows = [{"time": float(t), "value": float(v), "series": series_of(s["metric"])}
            for s in _prometheus(url, "query_range", query=query, start=end - 60 * minutes, end=end, step=step_s)
            for t, v in s["values"]]
    df = pd.DataFrame(rows, columns=["time", "value", "series"])
    df = df[df["series"].isin(domain) & df["value"].map(math.isfinite)]
    if df.empty:
        return EMPTY_SERIES
    df = df.groupby(["time", "series"], as_index=False)["value"].sum()
    df["time"] = pd.to_datetime(df["time"], unit="s")
    return df[["time", "value", "series"]]


def requests_table(url: str, minutes: int) -> pd.DataFrame:
    """Requests by route and status: how many over the last minutes, and per second over the last one."""
    total = _prometheus(url, "query", query=f"sum by (route, status) (increase({REQUESTS}[{minutes}m]))")
    now = {(s["metric"].get("route"), s["metric"].get("status")): float(s["value"][1])
           for s in _prometheus(url, "query", query=f"sum by (route, status) (rate({REQUESTS}[1m]))")}
    rows = [{"route": s["metric"].get("route"), "status": s["metric"].get("status"),
             f"requests, last {minutes} min": round(float(s["value"][1])),
             "requests/s, last minute": round(now.get((s["metric"].get("route"), s["metric"].get("status")), 0.0), 3)}
            for s in total]
    return pd.DataFrame(sorted(rows, key=lambda r: (r["route"] or "", r["status"] or "")))


def live_metrics(url: str, minutes: int) -> tuple[str, dict[str, pd.DataFrame], pd.DataFrame]:
    """(what the page says about its source, each chart's series, the requests by route and status)."""
    try:
        table = requests_table(url, minutes)
        out = {key: prometheus_series(url, key, minutes) for key in CHARTS}
    except Exception as e:  # noqa: BLE001 -- the view says why it is empty; the page goes on
        why = f"{type(e).__name__}: {str(e).split('(Caused by')[0][:160]}"
        return (f"Prometheus at {url} did not answer ({why}). Start the cluster with `make cluster` (it starts "
                "one), or set page.prometheus_url.", {key: EMPTY_SERIES for key in CHARTS}, pd.DataFrame())
    return (f"From Prometheus at {url}, the last {minutes} minutes, refreshed every 5 s: "
            f"{sum(len(df) for df in out.values())} points.", out, table)


# ----------------------------------------------------------------------------------------- the page


def page(service):
    """The Gradio Blocks. service(): the app's serving.app.Service as it is now (reconfigure replaces it)."""
    import gradio as gr

    from serving.app import code as code_route
    from serving.app import sql as sql_route
    from serving.errors import APIError
    from serving.schemas import CodeRequest, SqlRequest
    from serving.sqlcheck import DIALECTS

    def storage() -> str:
        return service().cfg.storage_path

    def who(request: gr.Request | None) -> str | None:
        """The page's login name, recorded as who promoted or rolled back (else the server's user@host)."""
        user = getattr(request, "username", None)
        return f"{user} (page)" if user else None

    with gr.Blocks(title="qlora-sweep") as blocks:
        gr.Markdown("## qlora-sweep: sweeps, served adapters, playground, live metrics")
        with gr.Tab("Sweeps", elem_id="tab-sweeps"):
            with gr.Row():
                sweep = gr.Dropdown(label="Sweep", choices=[], elem_id="sweep-choice", scale=4)
                reload_sweeps = gr.Button("Reload", elem_id="sweeps-reload", scale=1)
            sweep_head = gr.Markdown(elem_id="sweep-head")
            leaderboard = gr.Dataframe(label="Leaderboard (best first; stop reasons; accuracy with its 95% interval)",
                                       interactive=False, elem_id="leaderboard", wrap=True)
            curve_metric = gr.Radio(list(CURVES), value=OBJECTIVE, label="Learning curves of", elem_id="curve-metric")
            with gr.Row():
                curves = gr.LinePlot(x="step", y="value", color="trial", label="Learning curves",
                                     elem_id="curves", scale=3)
                importances = gr.BarPlot(x="parameter", y="importance", label="Parameter importances (PED-ANOVA)", y_lim=[0, 1],
                                         elem_id="importances", scale=2)

            def list_sweeps():
                ids = sweep_list(storage())
                return gr.Dropdown(choices=ids, value=ids[0] if ids else None)

            def show(sweep_id, curve_of):
                if not sweep_id:
                    return ("No sweep in the storage yet.", pd.DataFrame(), gr.LinePlot(value=None),
                            gr.BarPlot(value=None))
                head, rows, curve_df, imp_df = sweep_view(storage(), sweep_id, curve_of)
                return (head, rows, gr.LinePlot(value=curve_df, y_title=curve_df.attrs["metric"],
                                                color_map=colors(curve_df["trial"])),
                        gr.BarPlot(value=imp_df if not imp_df.empty else None))

            reload_sweeps.click(list_sweeps, None, sweep)
            sweep.change(show, [sweep, curve_metric], [sweep_head, leaderboard, curves, importances])
            curve_metric.change(show, [sweep, curve_metric], [sweep_head, leaderboard, curves, importances])
            blocks.load(list_sweeps, None, sweep)

        with gr.Tab("Served adapters", elem_id="tab-served"):
            task = gr.Radio(list(TASKS), value="sql", label="Task", elem_id="served-task")
            served_head = gr.Markdown(elem_id="served-head")
            with gr.Row():
                with gr.Column():
                    candidate = gr.Dropdown(label="Candidate (each sweep's best adapter)", choices=[],
                                            elem_id="candidate")
                    check = gr.Button("Check against the served adapter", elem_id="gate-check")
                    gate_text = gr.Markdown(elem_id="gate-figures")
                    force = gr.Checkbox(label="Force (promote even if not shown better; the record says so)",
                                        value=False, elem_id="gate-force")
                    promote_btn = gr.Button("Promote", variant="primary", interactive=False, elem_id="promote")
                with gr.Column():
                    rollback_text = gr.Markdown(elem_id="rollback-preview")
                    rollback_btn = gr.Button("Roll back", variant="stop", elem_id="rollback")
            action_text = gr.Markdown(elem_id="served-action")
            history = gr.Dataframe(label="Promotion history (newest first)", interactive=False, wrap=True,
                                   elem_id="history",
                                   column_widths=["11%", "8%", "9%", "12%", "14%", "14%", "16%", "16%"])
            checked = gr.State({})

            def show_served(t):
                head, hist = served_view(service(), t)
                cands = candidates(storage(), t)
                return (head, hist, gr.Dropdown(choices=[(_short(c), c) for c in cands], value=cands[0] if cands else None),
                        rollback_preview(storage(), t), "", {}, gr.Button(interactive=False))

            served_outputs = [served_head, history, candidate, rollback_text, gate_text, checked, promote_btn]
            task.change(show_served, task, served_outputs)
            blocks.load(show_served, task, served_outputs)

            def do_check(t, cand):
                if not cand:
                    return "Pick a candidate first.", {}, gr.Button(interactive=False)
                try:
                    text, state = check_gate(storage(), t, cand)
                except (ValueError, OSError) as e:
                    return f"The gate could not run: {e}", {}, gr.Button(interactive=False)
                return text, state, gr.Button(interactive=bool(state))

            check.click(do_check, [task, candidate], [gate_text, checked, promote_btn])

            async def do_promote(t, state, forced, request: gr.Request):
                svc = service()
                try:
                    entry = await asyncio.to_thread(promote_checked, storage(), t, state, forced, who(request))
                except (ValueError, OSError) as e:
                    message = f"Not promoted: {e}"
                else:
                    await svc.refresh_latest()
                    message = f"**{entry['action']}**: {entry['why']}"
                return (message, *show_served(t))

            promote_btn.click(do_promote, [task, checked, force], [action_text, *served_outputs])

            async def do_rollback(t, request: gr.Request):
                from shared.promotion import rollback

                svc = service()
                try:
                    entry = await asyncio.to_thread(rollback, storage(), t, "page", who(request))
                except (ValueError, OSError) as e:
                    message = f"Not rolled back: {e}"
                else:
                    await svc.refresh_latest()
                    message = f"**rolled back** {t}: `{_short(entry['from'])}` -> `{_short(entry['to'])}`"
                return (message, *show_served(t))

            rollback_btn.click(do_rollback, task, [action_text, *served_outputs])

        with gr.Tab("Playground", elem_id="tab-playground"):
            with gr.Tab("SQL"):
                with gr.Row():
                    with gr.Column():
                        schema = gr.Code(EXAMPLE_SCHEMA, language="sql", label="Schema (CREATE TABLE statements)",
                                         elem_id="pg-schema", interactive=True)
                        question = gr.Textbox(EXAMPLE_QUESTION, label="Question", elem_id="pg-question")
                        with gr.Row():
                            dialect = gr.Dropdown(list(DIALECTS), value="sqlite", label="Dialect",
                                                  elem_id="pg-dialect")
                            sql_adapter = gr.Textbox("", label="Adapter (empty: the route's default)",
                                                     elem_id="pg-sql-adapter")
                        ask = gr.Button("Write SQL", variant="primary", elem_id="pg-sql-go")
                    with gr.Column():
                        sql_out = gr.Code(language="sql", label="SQL", elem_id="pg-sql", interactive=False)
                        sql_verdict = gr.Markdown(elem_id="pg-sql-verdict")
                        sql_rows = gr.Dataframe(label="Result on a synthesized database", interactive=False,
                                                elem_id="pg-sql-rows")

                async def write_sql(schema_text, q, d, name):
                    svc = service()
                    try:
                        req = SqlRequest.model_validate({"question": q, "schema": schema_text, "dialect": d,
                                                         "adapter": name or None})
                        out = await sql_route(req, svc)
                    except APIError as e:
                        return "", f"**{e.status}**: {e.message}", NO_ROWS
                    except ValueError as e:  # pydantic's ValidationError: an empty question, a bad dialect
                        return "", f"**400**: {e}", NO_ROWS
                    if not out.valid:
                        return out.sql, f"**not valid** for the schema: {out.reason} (adapter `{out.adapter_id}`)", \
                            NO_ROWS
                    rows, note = await asyncio.to_thread(sql_result, schema_text, out.raw)
                    return out.sql, f"**valid** for the schema (adapter `{out.adapter_id}`); {note}", rows

                ask.click(write_sql, [schema, question, dialect, sql_adapter], [sql_out, sql_verdict, sql_rows])
            with gr.Tab("Code"):
                with gr.Row():
                    with gr.Column():
                        instruction = gr.Textbox("Write a function that returns the sum of a list of numbers.",
                                                 label="Instruction", lines=3, elem_id="pg-instruction")
                        code_input = gr.Textbox("", label="Input (optional, e.g. a signature)", elem_id="pg-input")
                        code_adapter = gr.Textbox("", label="Adapter (empty: the route's default)",
                                                  elem_id="pg-code-adapter")
                        write = gr.Button("Write code", variant="primary", elem_id="pg-code-go")
                    with gr.Column():
                        code_out = gr.Code(language="python", label="Code", elem_id="pg-code", interactive=False)
                        code_verdict = gr.Markdown(elem_id="pg-code-verdict")

                async def write_code(text, extra, name):
                    svc = service()
                    try:
                        req = CodeRequest.model_validate({"instruction": text, "input": extra or None,
                                                          "adapter": name or None})
                        out = await code_route(req, svc)
                    except APIError as e:
                        return "", f"**{e.status}**: {e.message}"
                    except ValueError as e:
                        return "", f"**400**: {e}"
                    verdict = "**syntax ok** (ast.parse; nothing was run)" if out.valid else f"**syntax error**: {out.reason}"
                    return out.code, f"{verdict} (adapter `{out.adapter_id}`)"

                write.click(write_code, [instruction, code_input, code_adapter], [code_out, code_verdict])

        with gr.Tab("Live metrics", elem_id="tab-metrics"):
            metrics_status = gr.Markdown(elem_id="metrics-status")
            plots = {}
            keys = list(CHARTS)
            for i in range(0, len(keys), 2):
                with gr.Row():
                    for key in keys[i:i + 2]:
                        plots[key] = gr.LinePlot(x="time", y="value", color="series", label=CHARTS[key][0],
                                                 color_map=colors(CHARTS[key][3]), elem_id=f"metric-{key}")
            routes = gr.Dataframe(label="Requests by route and status", interactive=False, elem_id="metric-routes")
            timer = gr.Timer(5.0)

            def refresh_metrics():
                cfg = service().cfg.page
                status, frames, table = live_metrics(cfg.prometheus_url, cfg.metrics_minutes)
                return (status, *(frames[k] if not frames[k].empty else None for k in keys), table)

            outputs = [metrics_status, *plots.values(), routes]
            timer.tick(refresh_metrics, None, outputs)
            blocks.load(refresh_metrics, None, outputs)
    return blocks
