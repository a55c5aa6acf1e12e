"""Celery workers as `factory status` shows them: asked through the broker, with a short timeout.

Every live `factory worker` answers the `factory_state` inspect command (see
`factory.workers.celery_worker`) with its pool, whether it is busy, seconds idle, tasks done and its
last heartbeat. A worker that exited or was killed does not answer, so it is not listed. Nothing is
asked when Celery mode is not configured, and a broker that does not answer is reported as such.
"""

import os
from collections import defaultdict

from factory.workers import celery_settings

INSPECT_TIMEOUT_S = 1.5


def celery_mode_configured(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return bool(
        (env.get(celery_settings.BROKER_ENV) or "").strip()
        or (env.get("FACTORY_EXECUTOR") or "").strip().lower() == "celery"
    )


def ask_workers(broker: str, timeout: float = INSPECT_TIMEOUT_S) -> list[dict]:
    """Every answering worker's `factory_state`, sorted by pool and name."""
    from celery import Celery

    app = Celery("factory-status", broker=broker)
    app.conf.update(celery_settings.celery_config(broker))
    try:
        from factory.workers.celery_worker import STATE_COMMAND

        replies = app.control.broadcast(STATE_COMMAND, reply=True, timeout=timeout) or []
    finally:
        app.close()
    workers = []
    for reply in replies:
        for node, state in reply.items():
            if isinstance(state, dict) and state.get("pool"):
                workers.append({**state, "name": state.get("name") or node})
    return sorted(workers, key=lambda w: (w["pool"], w["name"]))


def workers_report(
    environ: dict[str, str] | None = None, timeout: float = INSPECT_TIMEOUT_S
) -> dict | None:
    """Workers per pool, or None when Celery mode is not configured on this host."""
    env = dict(os.environ if environ is None else environ)
    if not celery_mode_configured(env):
        return None
    broker = celery_settings.broker_url(env)
    # Imported only in Celery mode: the broker helpers bring the service and registry code.
    from factory.services.local_broker import broker_problem

    problem = broker_problem(broker, timeout=timeout)
    if problem:
        return {"broker": broker, "error": problem, "pools": {}}
    try:
        workers = ask_workers(broker, timeout)
    except Exception as exc:  # kombu/redis errors of many kinds: report, never a traceback
        return {"broker": broker, "error": f"asking the workers failed: {exc}", "pools": {}}
    pools: dict[str, list[dict]] = defaultdict(list)
    for pool in celery_settings.POOLS:
        pools[pool] = []
    for worker in workers:
        pools[worker["pool"]].append(worker)
    return {"broker": broker, "error": None, "pools": dict(pools)}


def format_workers(report: dict) -> list[str]:
    """The workers section of `factory status` as text lines."""
    lines = [f"Celery workers (broker {report['broker']})"]
    if report.get("error"):
        return [*lines, f"  {report['error']}"]
    header = ["pool", "worker", "state", "idle", "tasks done", "last heartbeat", "engine"]
    rows = []
    for pool, workers in report["pools"].items():
        if not workers:
            rows.append([pool, "-", "no workers", "-", "-", "-", "-"])
        for w in workers:
            rows.append(
                [
                    pool,
                    w["name"],
                    "busy" if w.get("busy") else "idle",
                    "-" if w.get("busy") else f"{w.get('idle_s', 0):.0f}s",
                    str(w.get("tasks_done", 0)),
                    w.get("last_heartbeat") or "-",
                    w.get("docker_host") or "-",
                ]
            )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(c.ljust(wd) for c, wd in zip(row, widths, strict=True)).rstrip())
    return lines
