"""solidrec: the SOLID recommender package (data preparation, models, training).

The Python API (docs/API.md)::

    import solidrec

    solidrec.prepare(solidrec.PrepareConfig(format="generic", input=..., out="data"))
    cfg = solidrec.RunConfig(data="data", out="run", model=solidrec.ModelConfig(solid="full"))
    metrics = solidrec.fit(cfg)
    rec = solidrec.Recommender.from_run("run")
    rec.recommend(["item-a", "item-b"], k=10)

Names are imported on first use, so ``import solidrec`` stays light. Training is
``fit`` (``solidrec.train`` is the training package).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that owns it.
_EXPORTS = {
    "PrepareConfig": "solidrec.data.pipeline",
    "prepare": "solidrec.data.pipeline",
    "load_prepared": "solidrec.data.prepared",
    "RunConfig": "solidrec.config",
    "ModelConfig": "solidrec.config",
    "TrainConfig": "solidrec.config",
    "fit": "solidrec.train.loop",
    "evaluate_run": "solidrec.evaluate",
    "Recommender": "solidrec.recommend",
    "run_study": "solidrec.tune",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'solidrec' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
