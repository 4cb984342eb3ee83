"""The project's library: config, prompts, data, models, training, evaluation, sandboxes, tasks, the trial.

Importing it drops the pinned stack's known harmless warnings by their exact messages (shared/console.py),
so every process that uses it (a trial in a Ray worker, a scoring task, a Serve replica) prints a clean
console, whichever of transformers, peft or bitsandbytes it imports first."""

from shared import console as _console

_console.install()
