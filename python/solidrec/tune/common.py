"""What every part of a study shares: the metrics it may maximise, the samplers, the
study's fixed name and settings attribute, and Optuna's optional import."""

from __future__ import annotations

from typing import Any

from solidrec.metrics import FULL_METRIC_KEYS, METRIC_KEYS

#: Metrics a study may maximise (either protocol).
STUDY_METRICS = METRIC_KEYS + FULL_METRIC_KEYS


SAMPLERS = ("grid", "random", "tpe")


#: One study per directory, so the name is fixed: the directory is the identity.
STUDY_NAME = "solidrec-tune"


#: Study user attribute holding what every trial of the study must share.
SETTINGS_ATTR = "solidrec"


class OptunaMissingError(ImportError):
    """``solidrec tune`` needs optuna, which is not installed."""


def import_optuna() -> Any:
    """The ``optuna`` module; :class:`OptunaMissingError` naming the install command."""
    try:
        import optuna
    except ImportError:
        raise OptunaMissingError(
            "optuna is not installed: pip install optuna "
            "(or install solidrec with its 'tune' extra: pip install -e '.[tune]')"
        ) from None
    return optuna


# -- search space -------------------------------------------------------------------
