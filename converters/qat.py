"""Quantization-aware fine-tuning of the converter's calibrated TFLite model, on the calibration samples only.

Where post-training int8 misses the target and the target is full int8 (the Edge TPU: no float ops, no
16-bit activations), the remaining lever is the weights and ranges themselves. The calibrated float model
(converters/tflite_ranges.py) is computed with TensorFlow ops (converters/tflite_graph.py) with every tensor
that gets an int8 range fake-quantized at that range and every conv/dense weight fake-quantized as the
converter quantizes it (symmetric int8, per output channel or per tensor); straight-through rounding passes
gradients. The weights, biases and activation ranges (in log scale, so one learning rate serves ranges
of 0.1 and of 30; an end at 0, a ReLU's, stays at 0) are trained to reproduce the float model's outputs
(a softmax's input where an output is a softmax: its probabilities hide the logits' error) by distillation
on the calibration samples that do not measure it, and the epoch whose held-out outputs are closest is kept.
The trained weights and ranges are written back into the calibrated model, which the converter's own
`mlir_quantize` then quantizes: the same tensors, by index.

Measured on the zoo (RESULTS.md, "Quantization-aware fine-tuning on the converter's graph"): it helps only
a few dB, which is why the convert step runs it only when the int8 TFLite misses the target.

The graph's inputs and outputs keep their calibrated ranges (ranges.py says why).
"""

from __future__ import annotations

import time

import numpy as np

from converters import ranges, tflite_graph

EPOCHS = 12
BATCH = 16
# Adam, cosine decay to 0 over EPOCHS. fer_emotion, by hand: 1e-4 for the weights made every epoch worse than
# the start, 3e-5 was no closer than 1e-5; 1e-2 and 3e-3 for the log ranges were within 0.4 dB.
WEIGHT_LR = 1e-5
RANGE_LR = 3e-3
MAX_TARGET_BYTES = 512 << 20  # the float model's targets for every calibration sample are held in memory
MIN_MATCH_DB = 60.0  # the graph computed here against LiteRT's run of the same float model


def _ste_round(tf, v):
    return v + tf.stop_gradient(tf.round(v) - v)


class _FakeQuant:
    """Fake quantization of the activations that have int8 ranges (learnt unless fixed) and of the weights."""

    def __init__(self, tf, graph: tflite_graph.Graph, stats: dict[int, tuple[float, float]], learnt: set[int],
                 per_channel: bool):
        self.tf, self.graph, self.per_channel = tf, graph, per_channel
        self.start = stats
        self.log_low = {t: tf.Variable(0.0) for t in stats if t in learnt and stats[t][0] < 0}
        self.log_high = {t: tf.Variable(0.0) for t in stats if t in learnt and stats[t][1] > 0}

    @property
    def variables(self) -> list:
        return [*self.log_low.values(), *self.log_high.values()]

    def range(self, t: int):
        low, high = self.start[t]
        if t in self.log_low:
            low = low * self.tf.exp(self.log_low[t])
        if t in self.log_high:
            high = high * self.tf.exp(self.log_high[t])
        return low, high

    def activation(self, t: int, x):
        """int8 asymmetric fake quantization on [low, high], zero exactly representable (as TFLite's)."""
        if t not in self.start:
            return x
        tf = self.tf
        low, high = self.range(t)
        scale = tf.maximum((high - low) / 255.0, 1e-12)
        zero = tf.stop_gradient(tf.round(-low / scale))
        return (tf.clip_by_value(_ste_round(tf, x / scale) + zero, 0.0, 255.0) - zero) * scale

    def weight(self, t: int, w):
        """Symmetric int8 in [-127, 127] with the scale of max |w|, per output channel or per tensor."""
        tf = self.tf
        axis = self.graph.channel_axis[t]
        reduce = [i for i in range(len(w.shape)) if i != axis or not self.per_channel]
        scale = tf.maximum(tf.stop_gradient(tf.reduce_max(tf.abs(w), axis=reduce, keepdims=True)) / 127.0, 1e-12)
        return tf.clip_by_value(_ste_round(tf, w / scale), -127.0, 127.0) * scale


def _targets(graph: tflite_graph.Graph) -> list[int]:
    """The tensors the distillation matches: each output, or the input of a softmax that writes it."""
    writers = {int(op.outputs[0]): op for op in graph.graph.operators}
    softmax = graph.builtin.SOFTMAX
    return [int(writers[t].inputs[0]) if t in writers and graph.codes[writers[t].opcodeIndex] == softmax else int(t)
            for t in graph.graph.outputs]


def tune(model, calib: dict[str, np.ndarray], starts: dict[str, dict[int, tuple[float, float]]], learnt: set[int],
         per_channel: bool, seconds: float, litert: dict[str, np.ndarray]) -> dict:
    """Trains the weights of `model` (a calibrated float TFLite ModelT, changed in place: weights and the min/max
    of every tensor with a range) and the ranges of the `learnt` tensors, from whichever of the `starts` (name ->
    tensor index -> (min, max)) is closer to the float model's targets on the held-out samples: fer_emotion's
    logits are 29.6 dB from min/max ranges and 26.2 dB from the ranges chosen for its probabilities. Raises
    tflite_graph.Unsupported for a model it cannot compute, or computes otherwise than LiteRT does (`litert`: the
    float model's outputs on the held-out samples, by signature output name). Returns what it measured: the
    start, epochs, seconds, held-out SQNR before and after."""
    import tensorflow as tf

    from converters.metrics import sqnr_db

    started = time.perf_counter()
    graph = tflite_graph.Graph(model)
    signature = model.signatureDefs[0] if model.signatureDefs else None
    def by_name(signature_tensors, tensors) -> dict[str, int]:
        if signature:
            return {t.name.decode(): int(t.tensorIndex) for t in signature_tensors}
        return {model.subgraphs[0].tensors[t].name.decode(): int(t) for t in tensors}

    names = by_name(signature and signature.inputs, model.subgraphs[0].inputs)
    output_names = by_name(signature and signature.outputs, model.subgraphs[0].outputs)
    if set(names) != set(calib):
        raise tflite_graph.Unsupported(f"inputs {sorted(names)} are not the calibration arrays {sorted(calib)}")
    count = len(next(iter(calib.values())))
    held = ranges.held_out_samples(count)
    fit = np.setdiff1d(np.arange(count), held)
    targets = _targets(graph)
    size = 4 * count * sum(int(np.prod(graph.graph.tensors[t].shape[1:])) for t in targets)
    if size > MAX_TARGET_BYTES:
        raise tflite_graph.Unsupported(f"the outputs of {count} calibration samples take {size >> 20} MB "
                                       f"(at most {MAX_TARGET_BYTES >> 20})")
    quant = None

    def feeds(samples) -> dict:
        return {names[k]: tf.constant(v[samples], tf.float32) for k, v in calib.items()}

    def outputs(samples, fake: bool) -> list:
        values = graph.run(feeds(samples), quant.activation, quant.weight) if fake else graph.run(feeds(samples))
        return [values[t] for t in targets]

    def batched(samples, fake: bool) -> list[np.ndarray]:
        parts = [outputs(samples[i:i + BATCH], fake) for i in range(0, len(samples), BATCH)]
        return [np.concatenate([p[k].numpy() for p in parts]) for k in range(len(targets))]

    computed = graph.run(feeds(held))
    match = min(sqnr_db(v, computed[output_names[k]].numpy()) for k, v in litert.items())
    if match < MIN_MATCH_DB:
        raise tflite_graph.Unsupported(f"its graph computed here is {match:.1f} dB from LiteRT's (at least "
                                       f"{MIN_MATCH_DB:g})")
    teacher_start = time.perf_counter()
    teacher = batched(np.arange(count), fake=False)
    # the first epoch's time, guessed: a training step costs about three forward passes
    epoch_seconds = 3 * (time.perf_counter() - teacher_start) * len(fit) / count
    scale = [float(np.mean(np.square(t))) + 1e-12 for t in teacher]

    def held_out_db() -> float:
        return min(sqnr_db(t[held], s) for t, s in zip(teacher, batched(held, fake=True), strict=True))

    quants, closeness = {name: _FakeQuant(tf, graph, s, learnt, per_channel) for name, s in starts.items()}, {}
    for name, quant in quants.items():
        closeness[name] = held_out_db()
    start = max(closeness, key=closeness.__getitem__)
    quant = quants[start]

    weights, range_vars = list(graph.weights.values()), quant.variables
    steps = EPOCHS * max(1, -(-len(fit) // BATCH))
    optimizers = (tf.keras.optimizers.Adam(tf.keras.optimizers.schedules.CosineDecay(WEIGHT_LR, steps)),
                  tf.keras.optimizers.Adam(tf.keras.optimizers.schedules.CosineDecay(RANGE_LR, steps)))
    trained = [*weights, *range_vars]
    before = best = closeness[start]
    kept = [v.numpy() for v in trained]
    order, epochs = np.random.default_rng(0), 0
    while epochs < EPOCHS and time.perf_counter() - started + epoch_seconds < seconds:
        epoch_start = time.perf_counter()
        shuffled = order.permutation(fit)
        for i in range(0, len(shuffled), BATCH):
            batch = shuffled[i:i + BATCH]
            with tf.GradientTape() as tape:
                loss = tf.add_n([tf.reduce_mean(tf.square(s - t[batch])) / n
                                 for s, t, n in zip(outputs(batch, fake=True), teacher, scale, strict=True)])
            grads = tape.gradient(loss, trained)
            optimizers[0].apply_gradients(zip(grads[:len(weights)], weights))
            if range_vars:
                optimizers[1].apply_gradients(zip(grads[len(weights):], range_vars))
        epochs += 1
        db = held_out_db()
        if db > best:
            best, kept = db, [v.numpy() for v in trained]
        epoch_seconds = time.perf_counter() - epoch_start
    for v, value in zip(trained, kept, strict=True):
        v.assign(value)
    graph.write_weights(model)
    tensors = model.subgraphs[0].tensors
    for t in starts[start]:
        low, high = quant.range(t)
        tensors[t].quantization.min = np.array([float(low)], np.float32)
        tensors[t].quantization.max = np.array([float(high)], np.float32)
    return {"start": start, "epochs": epochs, "seconds": round(time.perf_counter() - started, 1),
            "held_out_sqnr_db": {"before": round(before, 2), "after": round(best, 2)},
            "weights": len(weights), "ranges": len(range_vars)}
