"""The paper's experiment grid and reported numbers: what ``solidrec reproduce`` runs and
what ``solidrec report`` sets our results beside."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: Table 1's sequential-recommendation backbones (config name -> the paper's name), in
#: the table's row order.
BACKBONE_NAMES = {"din": "DIN", "gru4rec": "GRU4Rec", "sasrec": "SASRec", "bert4rec": "BERT4Rec"}

#: Table 1's dynamic-scenario rows of each backbone: (generator, solid) -> the paper's
#: name, in the table's row order.
DSR_NAMES = {
    ("none", "off"): "-",
    ("apg", "off"): "APG",
    ("apg", "full"): "Ours (APG)",
    ("duet", "off"): "DUET",
    ("duet", "full"): "Ours (DUET)",
}
TABLE1 = list(DSR_NAMES)

#: Table 2's ablation (SOLID's modules one at a time) on :data:`ABLATION_BACKBONE` with
#: DUET; its "off" and "full" rows are Table 1's.
ABLATION = [("duet", "spg"), ("duet", "spg+sml"), ("duet", "spg+scl")]
ABLATION_BACKBONE = "sasrec"

#: Table 1 on Amazon Scientific: (backbone, DSR name) -> AUC, UAUC, NDCG@10, Recall@10,
#: NDCG@20 (the first five of :data:`solidrec.metrics.METRIC_KEYS`; Recall@20 is not in
#: the extracted table).
SCIENTIFIC_TABLE1 = {
    ("din", "-"): (0.6100, 0.5971, 0.1337, 0.2609, 0.1648),
    ("din", "APG"): (0.7310, 0.6969, 0.1700, 0.3238, 0.2099),
    ("din", "Ours (APG)"): (0.7315, 0.6989, 0.1746, 0.3429, 0.2147),
    ("din", "DUET"): (0.6714, 0.6266, 0.1428, 0.2736, 0.1748),
    ("din", "Ours (DUET)"): (0.7138, 0.6682, 0.1589, 0.3012, 0.1989),
    ("gru4rec", "-"): (0.7424, 0.7094, 0.1621, 0.3214, 0.2049),
    ("gru4rec", "APG"): (0.7273, 0.6933, 0.1592, 0.3159, 0.1988),
    ("gru4rec", "Ours (APG)"): (0.7402, 0.7133, 0.1859, 0.3535, 0.2273),
    ("gru4rec", "DUET"): (0.7270, 0.6881, 0.1658, 0.3224, 0.2036),
    ("gru4rec", "Ours (DUET)"): (0.7410, 0.7054, 0.1792, 0.3415, 0.2196),
    ("sasrec", "-"): (0.7175, 0.6772, 0.1587, 0.3145, 0.1960),
    ("sasrec", "APG"): (0.6952, 0.6610, 0.1523, 0.3040, 0.1910),
    ("sasrec", "Ours (APG)"): (0.7161, 0.6728, 0.1634, 0.3122, 0.2002),
    ("sasrec", "DUET"): (0.6992, 0.6565, 0.1579, 0.3040, 0.1944),
    ("sasrec", "Ours (DUET)"): (0.7111, 0.6738, 0.1548, 0.3016, 0.1957),
    ("bert4rec", "-"): (0.7329, 0.7000, 0.1744, 0.3306, 0.2108),
    ("bert4rec", "APG"): (0.7255, 0.6953, 0.1699, 0.3306, 0.2069),
    ("bert4rec", "Ours (APG)"): (0.7456, 0.7132, 0.1760, 0.3508, 0.2183),
    ("bert4rec", "DUET"): (0.7325, 0.6962, 0.1707, 0.3262, 0.2090),
    ("bert4rec", "Ours (DUET)"): (0.7420, 0.7108, 0.1826, 0.3477, 0.2235),
}

#: Table 6's Scientific as a prepared manifest counts it (``counts``): how ``solidrec
#: report`` recognises the paper's dataset whatever the prepared directory is called.
SCIENTIFIC_COUNTS = {"users": 8442, "items": 4385, "interactions": 59427}

#: The paper's protocol (§4.1) as prepared-manifest ``params``: the paper's numbers were
#: measured on these candidate lists, so another protocol on the same data is not comparable.
PAPER_PROTOCOL = {"history_len": 10, "neg_train": 4, "neg_eval": 99}

#: Table 7's settings as flat config keys (``section.key``), plus full epochs (smoke runs
#: cap them with ``max_steps_per_epoch``): runs with other values get no paper row.
PAPER_SETTINGS = {
    "model.dim": 32,
    "model.hidden": 32,
    "model.tau": 0.01,
    "model.lam": 0.1,
    "train.lr": 1e-3,
    "train.batch_size": 1024,
    "train.max_steps_per_epoch": 0,
}


def is_paper_dataset(manifest: Mapping[str, Any]) -> bool:
    """Whether a prepared dataset's manifest is the paper's Scientific under its protocol:
    :data:`SCIENTIFIC_COUNTS` and :data:`PAPER_PROTOCOL` (the name is the user's choice)."""
    counts, params = manifest.get("counts") or {}, manifest.get("params") or {}
    return all(counts.get(k) == v for k, v in SCIENTIFIC_COUNTS.items()) and all(
        params.get(k) == v for k, v in PAPER_PROTOCOL.items()
    )


def settings_off_paper(config: Mapping[str, Any]) -> list[str]:
    """The :data:`PAPER_SETTINGS` keys on which a flat run config differs from the paper."""
    return [
        k
        for k, v in PAPER_SETTINGS.items()
        if not isinstance(config.get(k), int | float)
        or isinstance(config.get(k), bool)
        or not math.isclose(config[k], v, rel_tol=1e-9)
    ]
