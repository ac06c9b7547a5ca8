"""After a crash: make the registry's versions, their gate verdicts and their jobs' rows agree.

A retrain registers its version with the gate's verdict as tags (`gate_verdict`, `job_id`),
then moves an alias (`production` when promoted, else `staging`), then writes its job's row.
A worker killed between those steps left a version tagged `promoted` that never became
production while its job said "failed; production is unchanged", and the models page said
promoted. This runs where such a crash is noticed (the server's and the worker's start, and the
worker's sweep when it fails a stale job) and repairs each version of a job that has ended:

- the gate said promote and production never moved to it (no alias, no `promoted_at` tag):
  production is NOT moved now (a version whose job failed must not start serving silently);
  the version is re-tagged `gate_verdict: interrupted` with the reason (the gate's words kept
  in `gate_reason_before`), and the job's row names the version and says production is
  unchanged. An admin who wants it promotes it by hand.
- the gate said staging and the job did not finish: tagged `interrupted` the same way (no
  alias moves).
- production did move to it (the crash came after the alias): the job did all it had to do, so
  its row becomes `succeeded` with the version, its metrics and the gate's reason.

A version whose job is still queued or running is left alone (its worker may be registering it
right now), and so is a version without a `job_id` tag while any job runs. Idempotent: a
repaired version no longer matches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from catdog.db import jobs
from catdog.db.models import ACTIVE_RETRAIN_STATUSES, RetrainJob, RetrainStatus

if TYPE_CHECKING:
    from catdog.registry import ModelVersionInfo, Registry
    from catdog.settings import Settings

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted"  # gate_verdict of a version whose job stopped while registering it


@dataclass(frozen=True)
class Repair:
    """One repaired version: what was wrong and what was done (for the log and the tests)."""

    version: int
    job_id: str | None
    action: str  # "interrupted" (re-tagged, not promoted) or "job completed" (its row now succeeded)
    detail: str


def reconcile_registrations(registry: Registry, session: Session) -> list[Repair]:
    """Repair every retrained version whose tags, aliases and job row disagree; returns what was done."""
    aliases = registry.aliases()
    production = aliases.get("production")
    any_active = jobs.active_job(session) is not None
    repairs = []
    for info in registry.versions():
        if info.source != "retrain" or info.tags.get("gate_verdict") == INTERRUPTED:
            continue
        job_id = info.tags.get("job_id") or None
        job = jobs.get_job(session, job_id) if job_id else None
        if (job is not None and job.status in ACTIVE_RETRAIN_STATUSES) or (job is None and any_active):
            continue  # its job may be registering it right now
        repair = _repair(registry, session, info, job, became_production=_became_production(info, production))
        if repair is not None:
            log.warning("version %d: %s (%s)", repair.version, repair.action, repair.detail)
            repairs.append(repair)
    return repairs


def reconcile(settings: Settings) -> list[Repair]:
    """reconcile_registrations on the configured registry and database; a failure is logged, never raised.

    The database is migrated first (as the app and the worker do at their start), and only
    opened at all when the registry holds a retrained version.
    """
    from catdog.db.session import make_engine, migrate, session_factory
    from catdog.registry import Registry

    try:
        registry = Registry(settings)
        if not any(info.source == "retrain" for info in registry.versions()):
            return []
        engine = make_engine(settings.sqlalchemy_url)
        try:
            migrate(engine)
            with session_factory(engine)() as session:
                return reconcile_registrations(registry, session)
        finally:
            engine.dispose()
    except Exception as exc:  # the next start tries again; serving and consuming go on
        log.warning("could not reconcile the registry with the jobs: %s: %s", type(exc).__name__, exc)
        return []


def _became_production(info: ModelVersionInfo, production: int | None) -> bool:
    """Production points at it now, or did once (promoted_at; a rollback may have moved it on since)."""
    return info.version == production or "promoted_at" in info.tags


def _repair(
    registry: Registry, session: Session, info: ModelVersionInfo, job: RetrainJob | None, *, became_production: bool
) -> Repair | None:
    verdict = info.tags.get("gate_verdict")
    finished = job is not None and job.status == RetrainStatus.SUCCEEDED.value
    if became_production:
        if job is None or finished or (job.result or {}).get("version") == info.version:
            return None
        reason = info.tags.get("gate_reason") or "promoted by the gate"
        note = "the worker stopped after production moved to it; the job's row was completed at the next start"
        jobs.amend_finished_job(
            session, job.id, RetrainStatus.SUCCEEDED, error=None, result=_result(info, promoted=True, reason=reason)
        )
        return Repair(info.version, job.id, "job completed", f"{note} (it had said {job.status}: {job.error})")
    if finished or verdict not in ("promoted", "staging"):
        return None  # staging by a finished job, or a verdict this module does not own
    said = "promote" if verdict == "promoted" else "keep it as staging"
    reason = (
        f"interrupted while registering: the gate said {said} ({info.tags.get('gate_reason') or 'no reason kept'}), "
        "but its job stopped before any alias moved; production is unchanged. Promote it by hand if it should serve"
    )
    registry.set_tags(
        info.version,
        {"gate_verdict": INTERRUPTED, "gate_reason": reason, "gate_reason_before": info.tags.get("gate_reason", "")},
    )
    if job is not None:
        error = (
            f"the worker stopped while registering version {info.version}; production is unchanged "
            f"(version {info.version} is kept, tagged '{INTERRUPTED}': promote it by hand if it should serve)"
        )
        result = _result(info, promoted=False, reason=reason)
        jobs.amend_finished_job(session, job.id, RetrainStatus(job.status), error=error, result=result)
    return Repair(info.version, job.id if job else None, INTERRUPTED, reason)


def _result(info: ModelVersionInfo, *, promoted: bool, reason: str) -> dict[str, Any]:
    """A job's result as retrain() writes it, from what the registry kept of the version."""
    return {
        "version": info.version,
        "model_version": info.model_version,
        "backbone": info.backbone,
        "metrics": dict(info.metrics),
        "gate": {"promoted": promoted, "reason": reason},
        "recovered": True,
    }
