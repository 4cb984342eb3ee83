"""Where Ray itself breaks a promise of the sweep, and how the sweep keeps it.

A trial that runs out of memory must fail alone. Ray's memory monitor kills a worker that takes its node
past the threshold (95% of memory by default); waiting on that worker then raises
ray.exceptions.OutOfMemoryError, which derives from RayError only. Tune's actor manager (Ray 2.60:
ray/air/execution/_internal/actor_manager.py, RayActorManager._actor_task_failed) handles RayActorError
and RayTaskError and re-raises anything else as a RuntimeError out of Tuner.fit(): one trial out of memory
ends the whole sweep, the finished trials' summary and promotion with it. survive_oom_kills() hands that
failure to Tune as what it is, the worker's death, so the trial errors (and is retried up to
failure.max_retries) with the memory monitor's message, and the sweep goes on."""

from __future__ import annotations


def survive_oom_kills() -> None:
    """Idempotent; call before Tuner.fit() in the process that drives Tune."""
    from ray.air.execution._internal.actor_manager import RayActorManager
    from ray.exceptions import OutOfMemoryError, RayActorError

    original = RayActorManager._actor_task_failed
    if getattr(original, "_survives_oom", False):
        return

    class OutOfMemoryKill(RayActorError):
        """The trial's worker, killed by Ray's memory monitor."""

    def _actor_task_failed(self, tracked_actor_task, exception):
        if isinstance(exception, OutOfMemoryError) and not isinstance(exception, RayActorError):
            killed = OutOfMemoryKill(error_msg=str(exception))
            killed.__cause__ = exception
            exception = killed
        return original(self, tracked_actor_task, exception)

    _actor_task_failed._survives_oom = True
    RayActorManager._actor_task_failed = _actor_task_failed
