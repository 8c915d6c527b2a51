"""Fault-injection figures for docs/RELIABILITY.md: cases tried, crashes, silent wrong
results, per fault family.

    python tools/fault_report.py [--quick] [--seed 0] [--out report.json]

Families:
- crafted checkpoints: pickles that run a command on load, in both file formats;
- corrupted checkpoints: single flipped bytes, truncations and header edits of a real
  ``last.pt`` (a "silent" case is one that loads without an error);
- kills: the training process dies (``os._exit``) just before its n-th ``os.replace``,
  for every n in a full run, then ``--resume``; "silent" = metrics differ from an
  uninterrupted run;
- raw ops: ``torch.ops.solid_ext.*`` called directly with invalid arguments (wrong
  shapes, dtypes, out-of-range indices, non-finite tau) in a subprocess; "crash" = the
  process died, "silent" = no error raised;
- malformed inputs: the reader corpus of tests/solidrec/test_reader_faults.py; "crash" =
  an exception other than ``DataFormatError``, "silent" = accepted, "wrong_location" =
  the error names another file or line;
- tampered model directories, tampered prepared arrays, oversized values: the cases of
  tests/solidrec/test_trust.py (manifest, config, items and weights edited and re-hashed,
  symlinks to /dev/zero; arrays edited with and without a re-hashed manifest; sizes no
  machine can allocate); "crash" = any exception but the named one (a raw traceback),
  "silent" = accepted, "wrong message" = refused with another message;
- second-order gradients: d(dL/dx)/dw through every differentiable op on every CPU
  backend and kernel variant against the reference's; "silent" = a different value.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "python"), str(ROOT)]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from solidrec.runs.checkpoint import _HEADER  # noqa: E402
from solidrec.testing import (  # noqa: E402
    KILL_AT_REPLACE,
    make_tiny_dataset,
    tiny_run_args,
    tiny_run_config,
)
from solidrec.train import CheckpointError, load_checkpoint, train  # noqa: E402


def _env() -> dict[str, str]:
    return dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(ROOT / "python"), str(ROOT)]),
    )


def _classify_load(path: Path, c: Counter, caught: str) -> None:
    """Count one load_checkpoint(path): ``silent`` if it loads, ``caught`` for a
    CheckpointError, ``crash`` for anything else."""
    c["cases"] += 1
    try:
        load_checkpoint(path)
        c["silent"] += 1
    except CheckpointError:
        c[caught] += 1
    except Exception:  # noqa: BLE001 - counted, reported
        c["crash"] += 1


# ----------------------------------------------------------------- crafted checkpoints
def _framed(body: bytes) -> bytes:
    import hashlib

    meta = {"format": 2, "sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
    return _HEADER + json.dumps(meta).encode() + b"\n" + body


def crafted(work: Path) -> Counter:
    marker = work / "executed"

    class Cmd:
        def __init__(self, fn: Callable, *args: object) -> None:
            self.fn, self.args = fn, args

        def __reduce__(self):
            return (self.fn, self.args)

    import builtins

    payloads = [
        Cmd(os.system, f"touch {marker}"),
        Cmd(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        Cmd(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        Cmd(subprocess.call, ["touch", str(marker)]),
        Cmd(Path.touch, marker),
    ]
    c: Counter = Counter()
    for obj in payloads:
        for where in ("model", "state", "top"):
            d = {"magic": "solidrec-checkpoint", "version": 1, "model": {}, "state": {}}
            if where == "top":
                d["x"] = obj
            else:
                d[where] = {"x": obj}
            buf = io.BytesIO()
            torch.save(d, buf)
            for blob in (buf.getvalue(), _framed(buf.getvalue())):
                path = work / "crafted.pt"
                path.write_bytes(blob)
                _classify_load(path, c, "refused")
                if marker.exists():
                    c["executed"] += 1
                    marker.unlink()
    return c


# --------------------------------------------------------------- corrupted checkpoints
def corrupted(work: Path, last: Path, n: int, rng: random.Random) -> Counter:
    good = last.read_bytes()
    c: Counter = Counter()
    cases: list[bytes] = []
    for _ in range(n):
        b = bytearray(good)
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
        cases.append(bytes(b))
    for _ in range(n // 4):
        cases.append(good[: rng.randrange(len(good))])
    header_end = good.index(b"\n", len(_HEADER))
    for edit in (b'{"format": 2}', b"{}", b"not json", b'{"format": 2, "sha256": "0", "size": 1}'):
        cases.append(good[: len(_HEADER)] + edit + good[header_end:])
    path = work / "corrupt.pt"
    for blob in cases:
        path.write_bytes(blob)
        _classify_load(path, c, "detected")
    return c


# ------------------------------------------------------------------------------- kills
def kills(work: Path, data: Path, reference: dict, quick: bool) -> Counter:
    probe = subprocess.run(
        [sys.executable, "-c", KILL_AT_REPLACE, "0", *tiny_run_args(data, work / "probe")],
        env=_env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    total = int(probe.stdout.rsplit("REPLACES", 1)[1])
    points = range(1, total + 1) if not quick else range(1, total + 1, max(1, total // 8))
    c: Counter = Counter()
    for n in points:
        run = work / f"kill{n}"
        subprocess.run(
            [sys.executable, "-c", KILL_AT_REPLACE, str(n), *tiny_run_args(data, run)],
            env=_env(), capture_output=True,
        )  # fmt: skip
        c["cases"] += 1
        try:
            got = train(tiny_run_config(data, run), resume=True)
        except Exception:  # noqa: BLE001
            c["crash"] += 1
            continue
        c["identical" if got == reference else "silent"] += 1
    c["replaces_per_run"] = total
    return c


# ------------------------------------------------------------------------------ raw ops
_RAW_OPS = textwrap.dedent(
    """
    import json, random, sys, torch, solid_ext  # noqa: F401 (registers the ops)
    ops = torch.ops.solid_ext
    rng = random.Random(int(sys.argv[1])); n = int(sys.argv[2])
    def t(*shape, dtype=torch.float32):
        return torch.randn(*shape).to(dtype)
    def bad_case():
        B, L, N, M = (rng.randint(1, 5) for _ in range(4))
        K, D = rng.randint(1, 6), rng.randint(1, 6)
        kind = rng.randrange(10)
        if kind == 0:  # bias of the wrong size
            return "dynamic_linear", (t(B, L, N), t(B, N, M), t(B, M + 1), None, None, 0.1)
        if kind == 1:  # branch weight undersized
            return "dynamic_linear", (t(B, L, N), t(B, N, M), None, t(B, N, M + 1), None, 0.1)
        if kind == 2:  # weight of another batch
            return "dynamic_linear", (t(B, L, N), t(B + 1, N, M), None, None, None, 0.1)
        if kind == 3:  # mixed dtypes
            return "dynamic_linear", (t(B, L, N), t(B, N, M, dtype=torch.float64), None,
                                      None, None, 0.1)
        if kind == 4:  # non-finite / negative tau with a branch
            tau = rng.choice([float("nan"), -1.0, float("inf")])
            return "dynamic_linear", (t(B, L, N), t(B, N, M), None, t(B, N, M), None, tau)
        if kind == 5:  # codebook of another dim
            return "codebook_quantize", (t(B, D), t(K, D + 1), False)
        if kind == 6:  # integer codebook
            return "codebook_quantize", (t(B, D), torch.ones(K, D, dtype=torch.int64), False)
        if kind == 7:  # index out of range
            idx = torch.randint(0, K, (B,)); idx[rng.randrange(B)] = rng.choice([K, -1, 10**9])
            return "codebook_quantize_backward", (t(B, D), None, t(B, D), t(K, D), idx, False)
        if kind == 8:  # indices of another length
            return "codebook_quantize_backward", (t(B, D), None, t(B, D), t(K, D),
                                                  torch.randint(0, K, (B + 1,)), False)
        return "codebook_quantize_backward", (t(B, D + 1), None, t(B, D), t(K, D),
                                              torch.randint(0, K, (B,)), False)
    counts = {"cases": 0, "clean_error": 0, "silent": 0}
    for _ in range(n):
        name, args = bad_case()
        counts["cases"] += 1
        try:
            getattr(ops, name)(*args)
            counts["silent"] += 1
        except (RuntimeError, ValueError, TypeError, IndexError):
            counts["clean_error"] += 1
    print(json.dumps(counts))
    """
)


def raw_ops(n: int, seed: int, batches: int = 4) -> Counter:
    c: Counter = Counter()
    per = max(1, n // batches)
    for b in range(batches):
        proc = subprocess.run(
            [sys.executable, "-c", _RAW_OPS, str(seed * 1000 + b), str(per)],
            env=_env(), capture_output=True, text=True,
        )  # fmt: skip
        if proc.returncode != 0:
            c["crash"] += 1  # the whole batch died: count one crash, rerun to isolate
            c["cases"] += per
            continue
        c.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    return c


# -------------------------------------------------------------------------- malformed
def _test_module(relpath: str):
    """A test module of this repository, loaded for its cases (their one owner)."""
    import importlib.util

    name = Path(relpath).stem
    spec = importlib.util.spec_from_file_location(name, ROOT / relpath)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def malformed(work: Path) -> Counter:
    """The corpus of tests/solidrec/test_reader_faults.py (one owner for the cases)."""
    from solidrec.data.errors import DataFormatError

    mod = _test_module("tests/solidrec/test_reader_faults.py")
    c: Counter = Counter()
    for k, case in enumerate(mod.CASES):
        d = work / "corpus" / str(k)
        d.mkdir(parents=True)
        mod._materialise(case, d)
        c["cases"] += 1
        try:
            mod._read(case, d)
            c["silent"] += 1
        except DataFormatError as e:
            right = e.path == str(d / case.bad) and case.line in (mod.ANY, e.line)
            c["clear error" if right else "wrong_location"] += 1
        except Exception:  # noqa: BLE001
            c["crash"] += 1
    return c


# ----------------------------------------------------------------- test_trust families
def _trust_module():
    return _test_module("tests/solidrec/test_trust.py")


def _expect(c: Counter, attempt: Callable[[], object], error: type, message: str) -> None:
    """Count one case: ``error`` whose text matches ``message`` is a clear error."""
    c["cases"] += 1
    try:
        attempt()
        c["silent"] += 1
    except error as e:
        c["clear error" if re.search(message, str(e)) else "wrong message"] += 1
    except Exception:  # noqa: BLE001
        c["crash"] += 1


def tampered_models(work: Path, data: Path) -> Counter:
    import shutil

    from solidrec.recommend import Recommender
    from solidrec.runs.checkpoint import save_checkpoint
    from solidrec.runs.model_dir import ModelDirError

    mod = _trust_module()
    run = work / "trust-run"
    train(tiny_run_config(data, run))
    c: Counter = Counter()
    cases: list[tuple[Callable[[Path], None], str]] = []
    for change, message in mod.MANIFEST_CASES.values():

        def manifest(d: Path, change=change) -> None:
            m = json.loads((d / "manifest.json").read_text())
            (d / "manifest.json").write_text(json.dumps(change(m)))

        cases.append((manifest, message))
    for change, message in mod.FILE_CASES.values():
        cases.append((lambda d, change=change: (change(d), mod._retouch(d)), message))

    def no_model_key(d: Path) -> None:
        save_checkpoint(d / "weights.pt", {"other": torch.zeros(1)})
        mod._retouch(d)

    cases.append((no_model_key, "no 'model' state dict"))
    for name in ("config.yaml", "items.json", "weights.pt"):

        def link(d: Path, name=name) -> None:
            (d / name).unlink()
            os.symlink("/dev/zero", d / name)

        cases.append((link, f"{name}: a symbolic link"))
    for k, (change, message) in enumerate(cases):
        d = work / "tampered" / str(k)
        shutil.copytree(run / "model", d)
        change(d)
        _expect(c, lambda d=d: Recommender.from_run(d, device="cpu"), ModelDirError, message)
    return c


def tampered_arrays(work: Path) -> Counter:
    from solidrec.data.prepared import PreparedFormatError, load_prepared

    mod = _trust_module()
    c: Counter = Counter()
    for k, (file, edit, message) in enumerate(mod.ARRAY_CASES):
        for rehash in (False, True):
            d = make_tiny_dataset(work / "arrays" / f"{k}-{rehash}")
            with np.load(d / file) as z:
                arrays = {n: z[n] for n in z.files}
            mod._rewrite(d, file, **edit(arrays))
            if rehash:
                mod._rehash(d)
            want = message if rehash else "content_hash"
            _expect(c, lambda d=d: load_prepared(d), PreparedFormatError, want)
    return c


def oversized(work: Path) -> Counter:
    from contextlib import redirect_stderr

    from solidrec.cli import main as cli_main

    mod = _trust_module()
    c: Counter = Counter()
    data = make_tiny_dataset(work / "sizes" / "data")
    for k, (overrides, message) in enumerate(mod.SIZE_CASES):
        out = work / "sizes" / f"r{k}"
        argv = ["train", "--data", str(data), "--out", str(out), "--quiet", "--set", *overrides]
        c["cases"] += 1
        err = io.StringIO()
        try:
            with redirect_stderr(err):
                rc = cli_main(argv)
        except Exception:  # noqa: BLE001
            c["crash"] += 1
            continue
        if rc == 0:
            c["silent"] += 1
        elif "Traceback" in err.getvalue():
            c["crash"] += 1
        else:
            c["clear error" if re.search(message, err.getvalue()) else "wrong message"] += 1
    return c


def second_order() -> Counter:
    """d(dL/dx)/dW through the generated-weight ops on every CPU backend and variant
    against the reference's (tests/solid_ext/test_double_backward.py's measure)."""
    import functools

    import solid_ext
    from solid_ext import ops
    from solid_ext.reference import dynamic_linear_ref, generated_linear_ref
    from solid_ext.testing import dynamic_linear_inputs, generated_linear_inputs

    second = _test_module("tests/solid_ext/test_double_backward.py")._second_order
    backends = [("reference", None)] + [
        ("cpu", isa) for isa in solid_ext.cpu_isas() if "cpu" in solid_ext.available_backends()
    ]
    pairs = (  # (fused, reference, inputs)
        (functools.partial(ops.dynamic_linear, tau=0.01), dynamic_linear_ref,
         lambda seed: dynamic_linear_inputs(4, 3, 5, 6, seed=seed)),
        (functools.partial(ops.generated_linear, tau=None),
         functools.partial(generated_linear_ref, tau=None),
         lambda seed: generated_linear_inputs(4, 3, 5, 6, 3, seed=seed)),
    )  # fmt: skip
    c: Counter = Counter()
    for backend, isa in backends:
        for seed in range(5):
            for fused, ref, inputs in pairs:
                leaves = [t.requires_grad_(True) for t in inputs(seed)]
                c["cases"] += 1
                try:
                    with (
                        solid_ext.use_backend(backend),
                        solid_ext.use_cpu_isa(isa) if isa else contextlib.nullcontext(),
                    ):
                        got = second(fused, leaves, 0, 1)
                    want = second(ref, leaves, 0, 1)
                except Exception:  # noqa: BLE001
                    c["crash"] += 1
                    continue
                ok = torch.allclose(got, want, rtol=1e-7, atol=1e-9) and got.abs().max() > 0
                c["exact" if ok else "silent"] += 1
    return c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer cases (CI-sized)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    report: dict[str, dict[str, int]] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = make_tiny_dataset(work / "data")
        reference = train(tiny_run_config(data, work / "ref"))
        report["crafted checkpoints"] = dict(crafted(work))
        report["corrupted checkpoints"] = dict(
            corrupted(
                work, work / "ref" / "checkpoints" / "last.pt", 60 if args.quick else 400, rng
            )
        )
        report["kill before the n-th os.replace, then --resume"] = dict(
            kills(work, data, reference, args.quick)
        )
        report["raw ops, invalid arguments"] = dict(raw_ops(200 if args.quick else 2000, args.seed))
        report["malformed reader inputs"] = dict(malformed(work))
        report["tampered model directories"] = dict(tampered_models(work, data))
        report["tampered prepared arrays"] = dict(tampered_arrays(work))
        report["oversized values"] = dict(oversized(work))
        report["second-order gradients"] = dict(second_order())
    keys = ["cases", "crash", "silent"]
    print("| family | cases | crashes | silent wrong results | other |")
    print("|---|---:|---:|---:|---|")
    for fam, c in report.items():
        other = ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k not in keys)
        print(
            f"| {fam} | {c.get('cases', 0)} | {c.get('crash', 0)} | "
            f"{c.get('silent', 0)} | {other} |"
        )
    print(
        f"\n{time.perf_counter() - t0:.0f} s, seed {args.seed}{', --quick' if args.quick else ''}"
    )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    bad = sum(
        c.get("crash", 0) + c.get("silent", 0) + c.get("executed", 0) for c in report.values()
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
