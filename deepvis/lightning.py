"""A PyTorch Lightning callback that snapshots a :class:`deepvis.Run` at the end of training epochs.

Conventions
-----------
* Lightning is optional: :func:`callback` imports ``lightning.pytorch`` (else ``pytorch_lightning``)
  only when called, and says in one line when neither is installed.
* A snapshot is taken after every ``every`` training epochs (not during the sanity check),
  at ``step = trainer.global_step``, with every scalar in ``trainer.callback_metrics``
  (``train_loss``, ``val_acc``, …) as the run's scalars.
* ``module`` picks the network inside the LightningModule (``lambda lm: lm.net``) when the
  run's model names the inner network rather than the LightningModule itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deepvis.errors import DeepvisError
from deepvis.run import Run


def snapshot_epoch(run: Run, trainer: Any, pl_module: Any, every: int = 1,
                   module: Callable[[Any], Any] | None = None) -> bool:
    """What the callback does at a training epoch's end; whether it took a snapshot."""
    if getattr(trainer, "sanity_checking", False) or (int(trainer.current_epoch) + 1) % every:
        return False
    scalars = {}
    for name, value in dict(getattr(trainer, "callback_metrics", {}) or {}).items():
        try:
            scalars[str(name)] = float(value)
        except (TypeError, ValueError):  # a non-scalar metric: not a number to chart
            continue
    run.snapshot(module(pl_module) if module is not None else pl_module, step=int(trainer.global_step), **scalars)
    return True


def callback(run: Run, every: int = 1, module: Callable[[Any], Any] | None = None):
    """A Lightning ``Callback`` that calls :func:`snapshot_epoch` at each training epoch's end."""
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback
        except ImportError:
            raise DeepvisError("the Lightning callback needs Lightning: pip install lightning (or record with "
                               "run.snapshot(model, step=...) in your loop)") from None

    class DeepvisCallback(Callback):
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            snapshot_epoch(run, trainer, pl_module, every, module)

    return DeepvisCallback()
