"""Gathered evaluation in a process of its own: python tests/gather_worker.py OUT.npz.

Run by tests/test_program.py with 1 or 8 forced CPU devices, or as one of two jax.distributed
processes (JAXCNN_COORDINATOR, JAXCNN_NUM_PROCESSES, JAXCNN_PROCESS_ID); process 0 saves the
gathered per-example outputs, the evaluator's metrics and the summed metrics to OUT.npz.
"""

from __future__ import annotations

import os
import sys

import numpy as np

NUM_EVAL, EVAL_BATCH = 13, 8  # two eval batches, the second padded (5 real rows)


def tiny_dataset():
    """A deterministic 10-class set of 32x32x1 images (16 train, 13 eval)."""
    from jaxcnn import data

    rng = np.random.default_rng(0)
    x = rng.random((16 + NUM_EVAL, 32, 32, 1), np.float32)
    y = rng.integers(0, 10, 16 + NUM_EVAL).astype(np.int32)
    return data.ArrayDataset("tiny", x[:16], y[:16], x[16:], y[16:], num_classes=10)


def gathered_task(config):
    """Classification whose eval also gathers logits and labels and scores them on the host."""
    from jaxcnn import train
    from jaxcnn.tasks import classification

    base = classification.make_task(train.resolve_platform(config), tiny_dataset())

    def metric(outputs):
        correct = outputs["logits"].argmax(-1) == outputs["label"]
        return {"gathered_top1": float(correct.mean()), "gathered_count": float(len(correct))}

    return train.Task(model=base.model, dataset=base.dataset, loss_fn=base.loss_fn,
                      eval_fn=base.eval_fn,
                      output_fn=lambda logits, batch: {"logits": logits, "label": batch["label"]},
                      make_evaluator=lambda: train.GatherAll(metric))


def main(out: str) -> None:
    import jax

    from jaxcnn import train

    if "JAXCNN_COORDINATOR" in os.environ:
        train.initialize_distributed(os.environ["JAXCNN_COORDINATOR"],
                                     int(os.environ["JAXCNN_NUM_PROCESSES"]),
                                     int(os.environ["JAXCNN_PROCESS_ID"]))
    config = train.default_config()
    config.update({"batch_size": 8, "eval_batch_size": EVAL_BATCH, "train_steps": 1})
    program = train.build_program(config, gathered_task(config))
    state = program.init_state()
    outputs = train.collect_outputs(program, state)
    metrics = train.evaluate(program, state)
    if jax.process_index() == 0:
        np.savez(out, **outputs, **{f"metric_{k}": v for k, v in metrics.items()})




def inspect_main(out: str) -> None:
    """The per-unit top-k of LeNet-5's two conv layers over the tiny eval set, gathered."""
    import jax

    from jaxcnn import inspection, train
    from jaxcnn.tasks import classification

    config = train.default_config()
    config.update({"batch_size": 8, "eval_batch_size": EVAL_BATCH, "train_steps": 1})
    base = classification.make_task(train.resolve_platform(config), tiny_dataset())
    task = inspection.inspection_task(base.model, base.dataset, ["act1", "act2"], 3)
    program = train.build_program(config, task)
    topk = inspection.top_patches(program, program.init_state(), ["act1", "act2"], 3)
    if jax.process_index() == 0:
        np.savez(out, **{f"{key}_{layer}": getattr(topk, key)[layer]
                         for key in ("values", "index", "position", "label")
                         for layer in ("act1", "act2")})


if __name__ == "__main__":
    (inspect_main if "--inspect" in sys.argv else main)(sys.argv[1])
