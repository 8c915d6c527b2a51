"""SolidModel: shapes, gradients to every parameter, the clip, the codebook, configs."""

from __future__ import annotations

import itertools

import pytest
import torch
from solidrec.config import ModelConfig, RunConfig, config_differences
from solidrec.models import SolidModel, count_parameters
from solidrec.modes import MODES, SEMANTIC, SOLID_MODES

N_ITEMS, N_SEM, L = 40, 5, 6


def _data(b: int = 8, c: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sem = torch.randint(1, N_SEM + 1, (N_ITEMS + 1,), generator=g)
    sem[0] = 0
    hist = torch.randint(1, N_ITEMS + 1, (b, L), generator=g)
    hist[0] = 0  # empty history
    hist[1, :4] = 0  # left padding
    items = torch.randint(1, N_ITEMS + 1, (b, c), generator=g)
    return sem, hist, items


def _model(backbone: str, generator: str, solid: str, **kw) -> SolidModel:
    torch.manual_seed(0)
    sem, _, _ = _data()
    cfg = ModelConfig(backbone=backbone, generator=generator, solid=solid, **kw)
    return SolidModel(cfg, sem, N_SEM, L)


COMBOS = [
    (b, g, s)
    for b, g, s in itertools.product(
        ("din", "gru4rec", "sasrec", "bert4rec"),
        ("none", "apg", "duet"),
        ("off", "spg", "spg+sml", "spg+scl", "scl", "full"),
    )
    if not (g == "none" and s != "off")
]


@pytest.mark.parametrize(("backbone", "generator", "solid"), COMBOS)
def test_shapes_and_finite(backbone: str, generator: str, solid: str) -> None:
    m = _model(backbone, generator, solid)
    _, hist, items = _data()
    for stage in (1, 2) if solid == "full" else (1,):
        m.set_stage(stage)
        logits, aux = m(hist, items)
        assert logits.shape == (8, 3) and aux.shape == ()
        assert torch.isfinite(logits).all()


def _grads_after_steps(m: SolidModel, steps: int = 2) -> dict[str, torch.Tensor]:
    """Train a few Adam steps at the paper's lr (zero-initialised generator heads need one
    step before gradients flow through them to the encoders; a larger lr saturates the
    ±T clip, which masks the branch gradient by design), then return one step's grads."""
    _, hist, items = _data(b=16)
    y = torch.randint(0, 2, items.shape).float()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    for _ in range(steps + 1):
        opt.zero_grad()
        logits, aux = m(hist, items)
        (torch.nn.functional.binary_cross_entropy_with_logits(logits, y) + aux).backward()
        grads = {n: p.grad.clone() if p.grad is not None else None for n, p in m.named_parameters()}
        opt.step()
    return grads


@pytest.mark.parametrize(
    ("backbone", "generator", "solid", "stage"),
    [
        ("sasrec", "duet", "full", 1),
        ("sasrec", "duet", "full", 2),
        ("din", "apg", "full", 2),
        ("gru4rec", "duet", "off", 1),
        ("bert4rec", "apg", "spg+scl", 1),
        ("bert4rec", "none", "off", 1),
    ],
)
def test_gradients_reach_every_used_parameter(
    backbone: str, generator: str, solid: str, stage: int
) -> None:
    m = _model(backbone, generator, solid)
    m.set_stage(stage)
    grads = _grads_after_steps(m)
    # In stage 1 of "full" the codebook is not used yet (Eq. 12 has no codebook).
    unused = {"codebook.codebook"} if (solid == "full" and stage == 1) else set()
    for name, g in grads.items():
        if name in unused:
            assert g is None
            continue
        assert g is not None, f"{name} got no gradient"
        assert g.abs().sum() > 0, f"{name} got an all-zero gradient"
    if generator == "duet":
        assert any("weight_head" in n for n in grads)
    if solid in ("full", "spg+scl") and stage == 2 or solid == "spg+scl":
        assert grads["codebook.codebook"].abs().sum() > 0


def test_branch_is_clipped_trunk_is_not() -> None:
    """Blowing up the branch generator changes the output by at most what ±T allows;
    blowing up the trunk changes it without bound."""
    m = _model("sasrec", "duet", "spg+sml", tau=0.01)
    _, hist, items = _data()
    m.eval()
    base, _ = m(hist, items)
    with torch.no_grad():
        for layer in m.head:
            layer.branch_head.bias.fill_(100.0)
    clipped, _ = m(hist, items)
    with torch.no_grad():
        for layer in m.head:
            layer.branch_head.bias.fill_(0.01)  # exactly at the clip
    at_tau, _ = m(hist, items)
    torch.testing.assert_close(clipped, at_tau)
    assert not torch.allclose(clipped, base)
    with torch.no_grad():
        for layer in m.head:
            layer.weight_head.bias.fill_(100.0)
    blown, _ = m(hist, items)
    assert (blown - clipped).abs().max() > 100 * (clipped - base).abs().max()


def test_metacode_initialises_codebook_and_stage2_uses_codes() -> None:
    m = _model("sasrec", "duet", "full")
    _, hist, items = _data()
    m.set_stage(1)
    _, aux1 = m(hist, items)
    assert aux1.item() == 0.0  # Eq. 12: no codebook loss
    m.init_codebook("metacode")
    torch.testing.assert_close(m.codebook.codebook, m.sem_emb.weight[1:])
    m.set_stage(2)
    _, aux2 = m(hist, items)
    assert aux2.item() > 0  # Eq. 13: + λ·MSE(E_v, E'_v)
    m.init_codebook("kmeans")
    assert not torch.allclose(m.codebook.codebook, m.sem_emb.weight[1:])


def test_generator_none_is_static() -> None:
    m = _model("gru4rec", "none", "off")
    assert all(layer.weight_head is None and layer.branch_head is None for layer in m.head)
    assert m.trunk_encoder is None and count_parameters(m) > 0


def test_invalid_configs_rejected() -> None:
    with pytest.raises(ValueError, match="generator"):
        ModelConfig(generator="none", solid="full").validate()
    with pytest.raises(ValueError, match="backbone"):
        ModelConfig(backbone="mlp").validate()


def test_config_yaml_and_overrides(tmp_path) -> None:
    cfg = RunConfig(data="d", out="o")
    cfg.override(["tau=0.02", "train.lr=5e-4", "batch_size=64", "model.backbone=din"])
    assert (cfg.model.tau, cfg.train.lr, cfg.train.batch_size) == (0.02, 5e-4, 64)
    path = tmp_path / "c.yaml"
    cfg.save(path)
    back = RunConfig.load(path)
    assert back == cfg and back.model.backbone == "din"
    with pytest.raises(ValueError, match="unknown config key"):
        cfg.override(["nope=1"])


@pytest.mark.parametrize("backbone", ["din", "sasrec"])
def test_category_features_feed_the_backbone(backbone: str) -> None:
    """item_features=id+category adds a category embedding to every item the backbone
    sees (history and candidates); it is trained, and changing it changes the scores."""
    m = _model(backbone, "duet", "off", item_features="id+category")
    assert m.cat_feat is not None and m.cat_feat.weight.shape == (N_SEM + 1, 32)
    grads = _grads_after_steps(m)
    assert grads["cat_feat.weight"] is not None and grads["cat_feat.weight"].abs().sum() > 0
    _, hist, items = _data()
    with torch.no_grad():
        before, _ = m(hist, items)
        m.cat_feat.weight[1:] += 1.0
        after, _ = m(hist, items)
    assert not torch.allclose(before, after)
    plain = _model(backbone, "duet", "off")
    assert plain.cat_feat is None
    assert count_parameters(m) == count_parameters(plain) + (N_SEM + 1) * 32
    with pytest.raises(ValueError, match="item_features"):
        _model(backbone, "duet", "off", item_features="text")


# --- the mode table, the stage, checkpoints --------------------------------------------


@pytest.mark.parametrize("solid", SOLID_MODES)
def test_model_follows_the_mode_table(solid: str) -> None:
    mode = MODES[solid]
    m = _model("sasrec", "apg", solid)
    assert m.mode is mode and (m.sem_emb is not None) == (mode.trunk == SEMANTIC)
    assert (m.branch_encoder is not None) == mode.has_branch
    assert (m.codebook is not None) == mode.has_codebook == (mode.codebook_stage is not None)
    assert all((layer.branch_head is not None) == mode.has_branch for layer in m.head)
    _, hist, items = _data()
    for stage in range(1, mode.stages + 1):
        m.set_stage(stage)
        _, aux = m(hist, items)
        assert (aux.item() > 0) == mode.uses_codebook(stage)
    with pytest.raises(ValueError, match=f"1..{mode.stages}"):
        m.set_stage(mode.stages + 1)


def test_codebook_init_auto_and_no_silent_rewrite() -> None:
    for solid, want in (("spg+scl", "random"), ("scl", "kmeans"), ("full", "metacode")):
        cfg = ModelConfig(solid=solid)
        cfg.validate()
        assert cfg.codebook_init == "auto" and cfg.resolved_codebook_init == want
        cfg = ModelConfig(solid=solid, codebook_init="kmeans")
        cfg.validate()
        assert cfg.resolved_codebook_init == "kmeans"
    assert ModelConfig(solid="spg").resolved_codebook_init is None
    for solid in ("spg+scl", "scl"):
        cfg = ModelConfig(solid=solid, codebook_init="metacode")
        with pytest.raises(ValueError, match="codebook_init=metacode"):
            cfg.validate()
        assert cfg.codebook_init == "metacode"  # not rewritten
    ModelConfig(solid="off", codebook_init="metacode").validate()  # no codebook: any value
    # scl: set_stage(1) initialises the codebook by k-means (its auto default).
    m = _model("sasrec", "duet", "scl")
    before = m.codebook.codebook.detach().clone()
    m.set_stage(1)
    assert not torch.equal(before, m.codebook.codebook)


def test_saved_configs_of_older_versions_compare_equal() -> None:
    """Older versions wrote the rewritten codebook_init (kmeans for scl, random for
    spg+scl) and metacode everywhere else: the same runs as ``auto`` today."""
    for solid, saved in (
        ("scl", "kmeans"),
        ("scl", "metacode"),
        ("spg+scl", "random"),
        ("full", "metacode"),
        ("off", "metacode"),
        ("spg+sml", "random"),
    ):
        old = RunConfig(model=ModelConfig(solid=solid)).to_dict()
        old["model"]["codebook_init"] = saved
        now = RunConfig(model=ModelConfig(solid=solid))
        assert config_differences(old, now) == {}, (solid, saved)
    old = RunConfig(model=ModelConfig(solid="scl")).to_dict()
    old["model"]["codebook_init"] = "random"
    assert config_differences(old, now := RunConfig(model=ModelConfig(solid="scl"))) == {
        "model.codebook_init": ("random", "kmeans")
    }
    assert now.model.codebook_init == "auto"


def test_stage_travels_in_the_state_dict() -> None:
    m = _model("sasrec", "duet", "full")
    m.set_stage(2)
    sd = m.state_dict()
    assert int(sd["stage"]) == 2
    fresh = _model("sasrec", "duet", "full")
    assert fresh.stage == 1
    fresh.load_state_dict(sd)
    assert fresh.stage == 2
    _, hist, items = _data()
    torch.testing.assert_close(fresh(hist, items), m(hist, items), rtol=0, atol=0)
    del sd["stage"]
    with pytest.raises(RuntimeError, match="stage"):
        fresh.load_state_dict(sd)
    with pytest.raises(RuntimeError, match="stage"):
        fresh.load_state_dict({**m.state_dict(), "stage": torch.tensor(3)})


def test_semantic_map_travels_in_the_state_dict() -> None:
    """A checkpoint alone serves: the item -> semantic id map is saved and restored;
    checkpoints written before it was saved still load (the built map is kept)."""
    m = _model("sasrec", "duet", "full")
    sd = m.state_dict()
    torch.testing.assert_close(sd["semantic_id"], m.semantic_id)
    other = _model("sasrec", "duet", "full")
    with torch.no_grad():
        other.semantic_id.copy_(other.semantic_id.roll(1))
    other.load_state_dict(sd)
    torch.testing.assert_close(other.semantic_id, m.semantic_id, rtol=0, atol=0)
    old = {k: v for k, v in sd.items() if k != "semantic_id"}
    fresh = _model("sasrec", "duet", "full")
    before = fresh.semantic_id.clone()
    fresh.load_state_dict(old)  # strict: no missing-key error
    torch.testing.assert_close(fresh.semantic_id, before, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:The tensor attributes")  # the GRU's flat weights
def test_stage_is_not_read_from_a_tensor_in_forward() -> None:
    """No host sync on the stage: the model exports (a buffer's .item() would not)."""
    m = _model("sasrec", "duet", "full").eval()
    _, hist, items = _data()
    ep = torch.export.export(m, (hist, items))
    torch.testing.assert_close(ep.module()(hist, items)[0], m(hist, items)[0])


def _legacy_name(name: str) -> str:
    """A parameter's name in APG checkpoints of versions before the generator interface
    (generators in trunk_gen / branch_gen lists beside the head)."""
    parts = name.split(".")
    if parts[0] == "head" and parts[2] in ("weight_head", "branch_head"):
        slot = "trunk_gen" if parts[2] == "weight_head" else "branch_gen"
        return ".".join([slot, parts[1], *parts[3:]])
    return name


def _legacy(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state_dict as those versions wrote it: the generators after all head layers."""
    gens = [k for k in sd if _legacy_name(k) != k]
    trunk = [k for k in gens if ".weight_head." in k]
    branch = [k for k in gens if ".branch_head." in k]
    return {_legacy_name(k): sd[k] for k in [*(k for k in sd if k not in gens), *trunk, *branch]}


def test_apg_checkpoints_of_older_versions_load_with_their_optimizer_state() -> None:
    src = _model("din", "apg", "full")
    src.set_stage(2)
    legacy_sd = _legacy(src.state_dict())
    assert any(k.startswith("trunk_gen.") for k in legacy_sd)
    params = dict(src.named_parameters())
    legacy_order = sorted(params, key=lambda k: list(legacy_sd).index(_legacy_name(k)))
    assert legacy_order != list(params)
    opt = torch.optim.Adam([params[k] for k in legacy_order], lr=1e-3)
    _, hist, items = _data()
    for _ in range(2):
        opt.zero_grad()
        logits, aux = src(hist, items)
        (logits.square().mean() + aux).backward()
        opt.step()
    legacy_sd = _legacy(src.state_dict())
    dst = _model("din", "apg", "full")
    dst.load_state_dict(legacy_sd)  # strict
    assert dst.stage == 2
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v, rtol=0, atol=0)
    dst_opt = torch.optim.Adam(dst.parameters(), lr=1e-3)
    dst_opt.load_state_dict(dst.optimizer_state_for(legacy_sd, opt.state_dict()))
    dst_params = dict(dst.named_parameters())
    for k, p in params.items():
        for s in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(dst_opt.state[dst_params[k]][s], opt.state[p][s])
    # A current checkpoint's optimizer state is used as it is.
    state = opt.state_dict()
    assert dst.optimizer_state_for(dst.state_dict(), state) is state


@pytest.mark.parametrize("solid", ["full", "scl"])
def test_codebook_stage_searches_only_valid_positions_with_the_same_result(
    solid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a CPU the codebook stage quantises the valid positions only; logits, loss and
    every gradient equal those of quantising every position and masking (the path
    compile and export take), in float64."""
    _, hist, items = _data()
    hist[2, :7] = 0
    results = []
    for compiling in (False, True):
        m = _model("sasrec", "duet", solid).double()
        m.set_stage(m.mode.stages)
        rows = []
        real = m.codebook.forward
        monkeypatch.setattr(
            m.codebook, "forward", lambda z, *a, r=rows, f=real: r.append(z.shape) or f(z, *a)
        )
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda c=compiling: c)
        logits, aux = m(hist, items)
        (logits.square().sum() + aux).backward()
        results.append((logits, aux, {n: p.grad for n, p in m.named_parameters()}))
        want = hist.numel() if compiling else int((hist > 0).sum())
        assert [s.numel() // s[-1] for s in rows] == [want]
    (l0, a0, g0), (l1, a1, g1) = results
    torch.testing.assert_close(l0, l1)
    torch.testing.assert_close(a0, a1)
    assert a0 > 0
    assert g0.keys() == g1.keys()
    for name in g0:
        if g0[name] is None:
            assert g1[name] is None, name
        else:
            torch.testing.assert_close(g0[name], g1[name], msg=name)


@pytest.mark.filterwarnings("ignore:The tensor attributes")  # the GRU's flat weights
def test_codebook_stage_exports() -> None:
    m = _model("sasrec", "duet", "full")
    m.set_stage(2)
    m.eval()
    _, hist, items = _data()
    ep = torch.export.export(m, (hist, items))
    got, aux = ep.module()(hist, items)
    want, want_aux = m(hist, items)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(aux, want_aux)


@pytest.mark.parametrize(
    ("generator", "solid"), [("none", "off"), ("apg", "full"), ("duet", "full")]
)
def test_din_generates_head_weights_once_per_history(generator: str, solid: str) -> None:
    """DIN scores each (history, candidate) pair, but the head's weights depend on the
    history only: they are generated for B histories, not B x C pairs, and the logits
    and gradients equal generating them per pair (float64)."""
    _, hist, items = _data(b=6, c=4)
    b, c = items.shape
    m = _model("din", generator, solid).double()
    conds = []
    for layer in m.head:
        for gen in (layer.weight_head, layer.branch_head):
            if gen is not None:
                gen.register_forward_pre_hook(lambda _, args: conds.append(args[0].shape[0]))
    got, _ = m(hist, items)
    assert conds == [b] * len(conds)
    (got.square().sum()).backward()
    g_got = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    m.zero_grad()
    seq, mask, trunk, branch, _ = m._user(hist)

    def rep(t):
        return None if t is None else t.repeat_interleave(c, 0)

    tgt = m.item_vectors(items).reshape(b * c, -1)
    feats = m.backbone.encode(rep(seq), rep(mask), tgt)
    want = m._head(feats, rep(trunk), rep(branch)).view(b, c)
    torch.testing.assert_close(got, want)
    (want.square().sum()).backward()
    for n, p in m.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(g_got[n], p.grad, msg=n)


@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec"])
@pytest.mark.parametrize(
    ("block", "embed"), [("post_ln", "scale"), ("pre_ln", "norm"), ("post_ln", "norm")]
)
def test_transformer_variants_train_every_parameter(backbone: str, block: str, embed: str) -> None:
    m = _model(backbone, "duet", "full", block=block, embed=embed, dropout=0.1)
    assert isinstance(m.backbone.ln, torch.nn.Identity) == (block == "post_ln")
    assert (m.backbone.embed_norm is None) == (embed == "scale")
    m.set_stage(2)
    for name, g in _grads_after_steps(m).items():
        assert g is not None and g.abs().sum() > 0, f"{name} got no gradient"


def test_post_ln_blocks_end_normalised() -> None:
    m = _model("sasrec", "none", "off", block="post_ln", layers=1)
    m.eval()
    _, hist, _ = _data()
    x = m.item_emb(hist)
    out = m.backbone.blocks[0](x, torch.ones(8, L, L, dtype=torch.bool))
    torch.testing.assert_close(out.mean(-1), torch.zeros(8, L), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(8, L), atol=1e-3, rtol=0)


@pytest.mark.parametrize("layers", [0, 1, 3])
def test_head_layers(layers: int) -> None:
    m = _model("sasrec", "none", "off", head_layers=layers)
    assert len(m.head) == layers
    _, hist, items = _data()
    user, _ = m(hist, None, return_user=True)
    if layers == 0:  # the backbone's output is the user vector
        torch.testing.assert_close(user, m.backbone.encode(m.item_emb(hist), hist > 0, None))
    logits, _ = m(hist, items)
    assert logits.shape == (8, 3) and torch.isfinite(logits).all()


def test_init_std_sets_the_id_tables() -> None:
    for std in (0.02, 0.3):
        m = _model("sasrec", "none", "off", init_std=std, item_features="id+category")
        for table in (m.item_emb.weight[1:], m.cat_feat.weight[1:]):
            assert abs(table.std().item() - std) < 0.25 * std


def test_architecture_keys_reject_bad_values() -> None:
    for kw, key in (
        ({"block": "sandwich"}, "block"),
        ({"embed": "sum"}, "embed"),
        ({"init_std": 0.0}, "init_std"),
        ({"head_layers": -1}, "head_layers"),
        ({"head_layers": 0, "generator": "duet"}, "head_layers"),
        ({"head_layers": 0, "generator": "none", "backbone": "din"}, "head_layers"),
    ):
        with pytest.raises(ValueError, match=key):
            ModelConfig(**kw).validate()


def test_default_architecture_is_the_model_of_older_versions() -> None:
    """A config saved before the architecture keys existed compares equal to today's
    defaults, which build the model of before: the same parameters, a 2-layer head."""
    old = RunConfig(model=ModelConfig(backbone="sasrec")).to_dict()
    for key in ("head_layers", "block", "embed", "init_std"):
        del old["model"][key]
    assert config_differences(old, RunConfig(model=ModelConfig(backbone="sasrec"))) == {}
    m = _model("sasrec", "duet", "full")
    names = [n for n, _ in m.named_parameters()]
    assert "backbone.ln.weight" in names and not any("embed_norm" in n for n in names)
    assert [tuple(layer.weight.shape) for layer in m.head] == [(32, 32), (32, 32)]
