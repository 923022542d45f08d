"""What a teacher's logit cache must hold: each training row's logits, as the teacher gives them for that row alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ftlit.core.distillation import LogitCache


@torch.no_grad()
def teacher_logits_alone(cli: Any) -> dict[bytes, torch.Tensor]:
    """The teacher's logits of each row of ``cli``'s training data, by cache key, from its model run on that row alone
    (a batch of one: no padding, no other rows), in the student's label order; a token classifier's for the row's
    tokens."""
    module, teacher = cli.model, cli.model.teacher
    logits = {}
    for batch in cli.datamodule.train_dataloader():
        inputs = module.model_inputs(batch)
        mask = LogitCache.mask(inputs)
        for i, key in enumerate(LogitCache.keys(inputs)):
            row = {k: v[i : i + 1, mask[i]] for k, v in inputs.items() if k in teacher.inputs}
            out = teacher.model(**row).logits[0]
            logits[key] = out if teacher.order is None else out[..., teacher.order]
    return logits


def assert_cache_holds_the_teachers_logits(cli: Any, folder: Path) -> int:
    """Every training row of ``cli``'s run is in the one cache file under ``folder``, with the logits the teacher
    gives that row alone; the number of rows cached."""
    [file] = folder.glob("*-rank0.pt")
    cached = LogitCache(folder, file.name.removesuffix("-rank0.pt"), 0).rows
    alone = teacher_logits_alone(cli)
    assert cached.keys() == alone.keys()
    for key, logits in alone.items():
        # float32 keeps 24 bits: a batch padded to another length (or another CPU's kernels) sums in another order
        # and moves a logit by a few units in its last place: up to 5e-7 here, for these teachers' |logits| < 3.
        # 1e-5 is 20 times that; the closest two rows of the toy teacher differ by 6e-5, a token and its neighbour
        # by far more.
        torch.testing.assert_close(cached[key], logits, rtol=0, atol=1e-5)
    return len(cached)
