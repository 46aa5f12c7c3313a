"""Knowledge distillation (and plain fine-tuning) of a Keras student, for any number of inputs.

The student learns from the teacher's softened outputs (Hinton et al. 2015):

    loss = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(labels, softmax(z_s))

where z are logits. Models here end in a softmax, so logits are recovered as
log-probabilities (equal to the logits up to a constant, which softmax ignores).
With alpha = 0 it is ordinary training on hard labels: the from-scratch baseline
and the fine-tuning after pruning without a teacher. Without labels, alpha is 1.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

Batch = tuple[dict[str, np.ndarray], np.ndarray | None]  # inputs keyed by name, labels (or None)


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    epochs: int = 12
    temperature: float = 4.0
    alpha: float = 0.7  # weight of the teacher's soft targets; 0 = hard labels only
    batch_size: int = 64
    learning_rate: float = 2e-3
    seed: int = 0


def _loss(num_classes: int, temperature: float, alpha: float):
    from keras import ops

    t = float(temperature)

    def distillation_loss(y_true, y_pred):
        onehot, teacher = y_true[:, :num_classes], y_true[:, num_classes:]
        log_s = ops.log(ops.clip(y_pred, 1e-7, 1.0))
        ce = -ops.sum(onehot * log_s, axis=-1)
        if alpha == 0.0:
            return ce
        log_t = ops.log(ops.clip(teacher, 1e-7, 1.0))
        soft_t = ops.softmax(log_t / t, axis=-1)
        log_soft_s = ops.log_softmax(log_s / t, axis=-1)
        kd = ops.sum(soft_t * (ops.log(ops.clip(soft_t, 1e-12, 1.0)) - log_soft_s), axis=-1) * (t * t)
        return alpha * kd + (1.0 - alpha) * ce

    return distillation_loss


class ProgressBar:
    """A one-line progress bar on stderr for a terminal; one line per epoch otherwise (CI logs)."""

    def __init__(self, title: str, epochs: int, steps: int, log: Callable[[str], None]):
        import keras

        outer = self

        class _Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                outer.epoch, outer.started = epoch, time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                if outer.tty:
                    done = (batch + 1) / max(1, steps)
                    bar = "#" * int(30 * done) + "." * (30 - int(30 * done))
                    sys.stderr.write(f"\r  {title} epoch {outer.epoch + 1}/{epochs} [{bar}] {100 * done:5.1f}% "
                                     f"loss {logs.get('loss', float('nan')):.4f}")
                    sys.stderr.flush()

            def on_epoch_end(self, epoch, logs=None):
                if outer.tty:
                    sys.stderr.write("\r" + " " * 90 + "\r")
                log(f"  {title} epoch {epoch + 1}/{epochs}: loss {logs.get('loss', float('nan')):.4f} "
                    f"({time.perf_counter() - outer.started:.1f} s)")

        self.tty = sys.stderr.isatty()
        self.epoch, self.started = 0, time.perf_counter()
        self.callback = _Callback()


def train_student(
    student,
    data: Callable[[int], Batch],
    config: DistillConfig,
    teacher=None,
    log: Callable[[str], None] = print,
    title: str = "distill",
) -> dict:
    """Trains `student` in place on data(epoch) batches; soft targets from `teacher` when alpha > 0.

    `data(epoch)` returns the epoch's inputs (keyed by input name) and labels; it is
    called for the next epoch while the current one trains.
    """
    import keras

    keras.utils.set_random_seed(config.seed)
    first = data(0)
    num_classes = int(student.outputs[0].shape[-1])
    alpha = config.alpha if teacher is not None else 0.0
    if first[1] is None:
        if teacher is None:
            raise ValueError("training without labels needs a teacher")
        alpha = 1.0
    steps = int(np.ceil(len(next(iter(first[0].values()))) / config.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, steps * config.epochs, alpha=0.02)
    student.compile(keras.optimizers.Adam(schedule), _loss(num_classes, config.temperature, alpha))
    single = len(student.inputs) == 1
    progress = ProgressBar(title, config.epochs, steps, log)
    losses = []
    with ThreadPoolExecutor(1) as pool:
        pending = None
        for epoch in range(config.epochs):
            inputs, labels = first if epoch == 0 else pending.result()
            if epoch + 1 < config.epochs:
                pending = pool.submit(data, epoch + 1)
            n = len(next(iter(inputs.values())))
            onehot = np.zeros((n, num_classes), np.float32)
            if labels is not None:
                onehot[np.arange(n), labels] = 1.0
            x = next(iter(inputs.values())) if single else inputs
            soft = (teacher.predict(x, batch_size=256, verbose=0).reshape(n, -1) if alpha > 0
                    else np.zeros((n, num_classes), np.float32))
            history = student.fit(x, np.concatenate([onehot, soft], axis=1), batch_size=config.batch_size,
                                  initial_epoch=epoch, epochs=epoch + 1, verbose=0, shuffle=True,
                                  callbacks=[progress.callback])
            losses.append(round(float(history.history["loss"][-1]), 4))
    return {"epochs": config.epochs, "alpha": alpha, "temperature": config.temperature, "loss_per_epoch": losses}
