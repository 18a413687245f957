"""`uchida` against free rewrites: permuted and rescaled units and channels (MLP, CNN, transformer
block), and host layers renamed, transposed or fused (found by shape, Bonferroni over readings)."""
from __future__ import annotations

import pytest
import torch
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertLayer

from verifier import Suspect, keyfile, toy
from verifier.schemes import uchida
from verifier.schemes.uchida import LayerMismatch, Params
from verifier.schemes.uchida.locate import MAX_PLACEMENTS, placements
from verifier.stats import log10_binom_sf

torch.set_num_threads(1)

# (layer, next layer, values per channel in the next layer's input: None = its dim 1 is channels)
CNN_CHAIN = (("conv1", "conv2", None), ("conv2", "fc1", 16), ("fc1", "fc2", None))


def permute_and_rescale(state: dict[str, torch.Tensor], chain, seed: int, rescale: bool = True,
                        ) -> dict[str, torch.Tensor]:
    """The same function: each layer's output units/channels permuted (and × c > 0), the next
    layer's inputs permuted (and × 1/c) to match."""
    g = torch.Generator().manual_seed(seed)
    w = {k: v.clone() for k, v in state.items()}
    for layer, nxt, per_channel in chain:
        n = w[f"{layer}.weight"].shape[0]
        perm = torch.randperm(n, generator=g)
        c = torch.exp(2 * torch.randn(n, generator=g)) if rescale else torch.ones(n)
        w[f"{layer}.weight"] = w[f"{layer}.weight"][perm] * c.reshape([n] + [1] * (w[f"{layer}.weight"].dim() - 1))
        w[f"{layer}.bias"] = w[f"{layer}.bias"][perm] * c
        nw = w[f"{nxt}.weight"]
        if per_channel is None:
            w[f"{nxt}.weight"] = nw[:, perm] / c.reshape([1, n] + [1] * (nw.dim() - 2))
        else:
            w[f"{nxt}.weight"] = (nw.reshape(nw.shape[0], n, per_channel)[:, perm]
                                  / c[None, :, None]).reshape(nw.shape)
    return w


def load(make, state):
    model = make()
    model.load_state_dict(state)
    return model.eval()


@pytest.fixture(scope="module")
def split() -> toy.Split:
    return toy.digits()


# ---------------------------------------------------------------- CNN: channels

def _marked_cnn(split: toy.Split, seed: int, host: str) -> tuple[torch.nn.Module, uchida.Key]:
    torch.manual_seed(seed)
    init = toy.CNN()
    key = uchida.generate_key(Params(host=host), seed=100 + seed, model=init)
    marked = uchida.embed(init, key, toy.batches(split.x_train, split.y_train, seed=seed, epochs=10),
                          epochs=1, lr=3e-3)
    return marked, key


@pytest.fixture(scope="module")
def marked_cnns(split) -> list[tuple[torch.nn.Module, uchida.Key]]:
    return [_marked_cnn(split, seed, "invariant") for seed in range(3)]


def test_the_invariant_host_of_a_cnn_does_not_move_under_channel_permutation_and_rescaling() -> None:
    torch.manual_seed(0)
    model = toy.CNN()
    key = uchida.generate_key(Params(host="invariant"), seed=5, model=model)
    before = uchida.host_vector(model.state_dict(), key, dtype=torch.float64)
    assert before.shape == (key.host_size,) == (729,)
    for seed in range(3):
        moved = permute_and_rescale(model.state_dict(), CNN_CHAIN, seed)
        after = uchida.host_vector(moved, key, dtype=torch.float64)
        assert torch.allclose(after, before, rtol=0, atol=1e-6)


def test_the_invariant_host_is_the_same_with_and_without_gradients_and_when_recomputed() -> None:
    torch.manual_seed(1)
    model = toy.CNN()
    key = uchida.generate_key(Params(host="invariant"), seed=6, model=model)
    with torch.no_grad():
        first = uchida.host_vector(model.state_dict(), key, dtype=torch.float64)
        again = uchida.host_vector(model.state_dict(), key, dtype=torch.float64)  # remembered φ
    differentiable = uchida.host_vector(dict(model.named_parameters()), key, dtype=torch.float64)
    assert differentiable.requires_grad
    assert torch.equal(first, again) and torch.equal(first, differentiable.detach())


def test_an_invariant_cnn_key_round_trips_and_a_blob_whose_layers_do_not_chain_is_refused() -> None:
    key = uchida.generate_key(Params(host="invariant"), seed=8, model=toy.CNN())
    assert uchida.Key.from_bytes(key.to_bytes()) == key
    _, tensors, meta = keyfile.load(key.to_bytes(), "uchida")
    meta["layers"], meta["shapes"] = meta["layers"][::-1], meta["shapes"][::-1]  # fc2 ... conv1
    with pytest.raises(keyfile.KeyFormatError, match="malformed uchida key.*do not chain"):
        uchida.Key.from_bytes(keyfile.dump("uchida", tensors, meta))


def test_a_permuted_and_rescaled_cnn_keeps_its_invariant_mark_on_three_seeds(marked_cnns, split) -> None:
    for seed, (marked, key) in enumerate(marked_cnns):
        assert toy.accuracy(marked, split.x_test, split.y_test) > 0.93
        stolen = load(toy.CNN, permute_and_rescale(marked.state_dict(), CNN_CHAIN, 10 + seed))
        assert torch.allclose(stolen(split.x_test), marked(split.x_test), atol=1e-4)  # same function
        result = uchida.test(Suspect.from_module(stolen), key)
        assert result.log10_p <= -24 and result.null == "exact"
        assert result.statistic == uchida.test(Suspect.from_module(marked), key).statistic


def test_a_permuted_and_rescaled_cnn_loses_the_plain_mark(split) -> None:
    marked, key = _marked_cnn(split, 0, "mean")
    assert uchida.test(Suspect.from_module(marked), key).log10_p <= -24
    stolen = load(toy.CNN, permute_and_rescale(marked.state_dict(), CNN_CHAIN, 10))
    assert uchida.test(Suspect.from_module(stolen), key).p_value > 1e-6  # why "invariant" exists


def test_an_invariant_cnn_key_gives_fair_coin_counts_on_an_independent_cnn(split) -> None:
    from scipy import stats

    torch.manual_seed(900)
    other = toy.train(toy.CNN(), toy.batches(split.x_train, split.y_train, seed=900, epochs=3))
    stolen = load(toy.CNN, permute_and_rescale(other.state_dict(), CNN_CHAIN, 1))
    results = [uchida.test(Suspect.from_module(stolen), uchida.generate_key(
        Params(host="invariant"), seed=s, model=other)) for s in range(60)]
    assert min(r.p_value for r in results) > 1e-4
    matches = [r.statistic for r in results]  # each Binomial(256, 1/2): sd 8
    assert stats.kstest([(m - 128) / 8 for m in matches], "norm").pvalue > 1e-3


# ---------------------------------------------------------------- transformer block (BERT-style)

_HEADS, _HIDDEN = 4, 128
_BERT = BertConfig(hidden_size=_HIDDEN, num_attention_heads=_HEADS, intermediate_size=4 * _HIDDEN,
                   hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
MLP_LAYERS = ("intermediate.dense.weight", "output.dense.weight")
HEAD_LAYERS = ("attention.self.value.weight", "attention.output.dense.weight")


def _block(seed: int) -> BertLayer:
    torch.manual_seed(seed)
    return BertLayer(_BERT).eval()


def _embed_only(state: dict[str, torch.Tensor], key: uchida.Key, steps: int = 200
                ) -> dict[str, torch.Tensor]:
    """Mark the key's layers of a pretrained block with λ·BCE plus a pull to the original weights."""
    block = load(lambda: BertLayer(_BERT), state)
    names = set(key.layers) | {n.removesuffix("weight") + "bias" for n in key.layers}
    params = {n: p for n, p in block.named_parameters() if n in names}
    reg = uchida.regularizer(key)
    opt = torch.optim.Adam(params.values(), lr=1e-2)
    for _ in range(steps):
        loss = reg(block) + 1e-2 * sum(((p - state[n]) ** 2).sum() for n, p in params.items())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {n: t.detach().clone() for n, t in block.state_dict().items()}


def _permute_heads(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Whole heads permuted (q, k, v rows and the output's columns, by head block); each value
    dimension rescaled by c > 0 and the output's matching column by 1/c."""
    g = torch.Generator().manual_seed(seed)
    d = _HIDDEN // _HEADS
    heads = torch.randperm(_HEADS, generator=g)
    perm = (heads[:, None] * d + torch.arange(d)[None, :]).reshape(-1)
    c = torch.exp(torch.randn(_HIDDEN, generator=g))
    w = dict(state)
    for n in ("query", "key", "value"):
        w[f"attention.self.{n}.weight"] = state[f"attention.self.{n}.weight"][perm]
        w[f"attention.self.{n}.bias"] = state[f"attention.self.{n}.bias"][perm]
    w["attention.self.value.weight"] = w["attention.self.value.weight"] * c[:, None]
    w["attention.self.value.bias"] = w["attention.self.value.bias"] * c
    w["attention.output.dense.weight"] = state["attention.output.dense.weight"][:, perm] / c[None, :]
    return w


def _rewritten_block(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """MLP hidden units permuted (GELU: no rescaling) and heads permuted and rescaled."""
    mlp = permute_and_rescale(state, (("intermediate.dense", "output.dense", None),), seed,
                              rescale=False)
    return _permute_heads(mlp, seed)


def _same_function(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    x = torch.randn(2, 7, _HIDDEN, generator=torch.Generator().manual_seed(0))
    ya, yb = (load(lambda: BertLayer(_BERT), s)(x)[0] for s in (a, b))
    return torch.allclose(ya, yb, atol=1e-4)


@pytest.mark.parametrize("layers", [MLP_LAYERS, HEAD_LAYERS], ids=["mlp-units", "attention-heads"])
def test_a_transformer_block_keeps_its_invariant_mark_after_units_and_heads_are_permuted(layers) -> None:
    block = _block(1).state_dict()
    key = uchida.generate_key(Params(host="invariant", layers=layers), seed=77, model=block)
    marked = _embed_only(block, key)
    own = uchida.test(Suspect.from_weights(marked), key)
    assert own.log10_p <= -24
    stolen = _rewritten_block(marked, seed=3)
    assert _same_function(stolen, marked)
    result = uchida.test(Suspect.from_weights(stolen), key)
    assert result.log10_p <= -24 and result.null == "exact" and result.statistic == own.statistic
    plain = uchida.generate_key(Params(layers=layers), seed=77, model=block)
    plain_marked = _embed_only(block, plain)
    assert uchida.test(Suspect.from_weights(plain_marked), plain).log10_p <= -24
    # the plain host keeps the part that sits before the permuted units, not enough to attribute
    assert uchida.test(Suspect.from_weights(_rewritten_block(plain_marked, 3)), plain).log10_p > -24


# ---------------------------------------------------------------- host layers found by shape

@pytest.fixture(scope="module")
def marked_mlp(split) -> tuple[torch.nn.Module, uchida.Key]:
    torch.manual_seed(0)
    init = toy.MLP()
    key = uchida.generate_key(Params(), seed=31, model=init)
    return uchida.embed(init, key, toy.batches(split.x_train, split.y_train, seed=0, epochs=10),
                        epochs=1, lr=3e-3), key


def _renamed(state: dict[str, torch.Tensor], transpose: bool) -> dict[str, torch.Tensor]:
    """`fc1.weight` -> `h.0.mlp.weight` etc.; weights stored (in, out) as GPT-2's Conv1D does."""
    out = {}
    for i, layer in enumerate(("fc1", "fc2", "fc3")):
        w = state[f"{layer}.weight"]
        out[f"h.{i}.mlp.weight"] = w.T.contiguous() if transpose else w
        out[f"h.{i}.mlp.bias"] = state[f"{layer}.bias"]
    return out


@pytest.mark.parametrize("transpose", [False, True], ids=["renamed", "renamed-and-transposed"])
def test_it_finds_renamed_and_transposed_host_layers_and_pays_for_every_reading(marked_mlp,
                                                                              transpose) -> None:
    marked, key = marked_mlp
    direct = uchida.test(Suspect.from_module(marked), key)
    result = uchida.test(Suspect.from_weights(_renamed(marked.state_dict(), transpose)), key)
    search = result.details["host_search"]
    # fc2 is square: both orientations of h.1 are readings, so two placements
    assert search["placements"] == 2
    assert search["chosen"] == ["h.0.mlp.weight.T" if transpose else "h.0.mlp.weight",
                                "h.1.mlp.weight.T" if transpose else "h.1.mlp.weight",
                                "h.2.mlp.weight.T" if transpose else "h.2.mlp.weight"]
    assert result.statistic == direct.statistic
    assert result.log10_p == pytest.approx(log10_binom_sf(int(direct.statistic), 256, 0.5) + 0.30103)
    assert result.null == "conservative" and result.log10_p <= -24


def test_an_invariant_key_finds_a_renamed_permuted_and_rescaled_copy(split) -> None:
    marked, key = _marked_cnn(split, 1, "invariant")
    stolen = permute_and_rescale(marked.state_dict(), CNN_CHAIN, 4)
    renamed = {k.replace("conv", "features.").replace("fc", "classifier."): v for k, v in stolen.items()}
    result = uchida.test(Suspect.from_weights(renamed), key)
    assert result.details["host_search"]["placements"] == 1 and result.log10_p <= -24


def test_it_finds_a_value_projection_inside_a_fused_qkv_stored_like_gpt2() -> None:
    block = _block(2).state_dict()
    key = uchida.generate_key(Params(host="invariant", layers=HEAD_LAYERS), seed=78, model=block)
    marked = _embed_only(block, key)
    a = "attention.self."
    fused = {k: v for k, v in marked.items() if not k.startswith(a)}
    fused["attn.c_attn.weight"] = torch.cat([marked[f"{a}{n}.weight"] for n in ("query", "key", "value")]).T
    fused["attn.c_attn.bias"] = torch.cat([marked[f"{a}{n}.bias"] for n in ("query", "key", "value")])
    result = uchida.test(Suspect.from_weights(fused), key)
    assert "attn.c_attn.weight.T[2/3]" in result.details["host_search"]["chosen"]
    assert result.log10_p <= -24


def test_readings_depend_on_shapes_only_not_on_values() -> None:
    key = uchida.generate_key(Params(bits=8, layers=("a.weight", "b.weight"),
                                     shapes=((6, 4), (3, 6))), seed=1)
    g = torch.Generator().manual_seed(0)
    shapes = {"x.weight": (4, 6), "y.weight": (6, 4), "z.weight": (6, 3), "q.weight": (9, 6)}
    one = {n: torch.randn(*s, generator=g) for n, s in shapes.items()}
    two = {n: torch.randn(*s, generator=g) for n, s in shapes.items()}
    assert [p.sources for p in placements(one, key)] == [p.sources for p in placements(two, key)]
    assert [p.sources for p in placements(one, key)] == [
        ("x.weight.T", "z.weight.T"), ("x.weight.T", "q.weight[0/3]"), ("x.weight.T", "q.weight[1/3]"),
        ("x.weight.T", "q.weight[2/3]"), ("y.weight", "z.weight.T"), ("y.weight", "q.weight[0/3]"),
        ("y.weight", "q.weight[1/3]"), ("y.weight", "q.weight[2/3]")]


def test_one_tensor_is_never_read_as_two_host_layers() -> None:
    key = uchida.generate_key(Params(bits=8, layers=("a.weight", "b.weight"),
                                     shapes=((5, 5), (5, 5))), seed=1)
    found = placements({"only.weight": torch.ones(5, 5)}, key)
    assert found == []
    r = uchida.test(Suspect.from_weights({"only.weight": torch.ones(5, 5)}), key)
    assert not r.applicable and "no tensor has a compatible shape" in r.details["reason"]


def test_it_refuses_a_search_over_too_many_readings_naming_the_fix() -> None:
    key = uchida.generate_key(Params(bits=4, layers=("a.weight", "b.weight"),
                                     shapes=((4, 4), (4, 4))), seed=1)
    many = {f"t{i}.weight": torch.ones(4, 4) for i in range(50)}  # 100 readings per layer
    with pytest.raises(LayerMismatch, match=f"more than {MAX_PLACEMENTS}: rename"):
        placements(many, key)
    r = uchida.test(Suspect.from_weights(many), key)
    assert not r.applicable and "rename the suspect's tensors" in r.details["reason"]


def test_the_search_manufactures_no_match_on_independent_models(split) -> None:
    """20 independent MLPs, renamed and transposed, each against 5 fresh keys: 100 pairs."""
    worst = 0.0
    for i in range(20):
        torch.manual_seed(5_000 + i)
        other = toy.train(toy.MLP(), toy.batches(split.x_train, split.y_train, seed=5_000 + i, epochs=2))
        suspect = Suspect.from_weights(_renamed(other.state_dict(), transpose=i % 2 == 1))
        for j in range(5):
            key = uchida.generate_key(Params(host="invariant" if j % 2 else "mean"),
                                      seed=60_000 + 10 * i + j, model=other)
            r = uchida.test(suspect, key)
            assert r.details["host_search"]["placements"] == 2
            worst = min(worst, r.log10_p)
    assert worst > -6  # 0 false positives at α = 1e-6 over 100 pairs


def test_it_finds_the_host_in_an_onnx_file_whose_initializers_were_renamed(marked_mlp, tmp_path) -> None:
    import onnx

    from verifier.models import load_suspect

    marked, key = marked_mlp
    path = tmp_path / "model.onnx"
    torch.onnx.export(marked, (torch.zeros(2, 64),), str(path), dynamo=False,
                      input_names=["input"], output_names=["logits"])
    graph = onnx.load(str(path))
    rename = {i.name: "w_" + i.name.replace(".", "_") for i in graph.graph.initializer}
    for init in graph.graph.initializer:
        init.name = rename[init.name]
    for node in graph.graph.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
    onnx.save(graph, str(tmp_path / "renamed.onnx"))
    suspect = load_suspect(tmp_path / "renamed.onnx").suspect
    assert "fc1.weight" not in suspect.weights and "w_fc1_weight" in suspect.weights
    result = uchida.test(suspect, key)
    assert result.details["host_search"]["chosen"] == ["w_fc1_weight", "w_fc2_weight", "w_fc3_weight"]
    assert result.log10_p <= -24


def test_it_stacks_split_q_k_v_back_into_the_fused_layer_a_key_was_made_on() -> None:
    owner = torch.nn.Module()
    owner.attn = torch.nn.Module()
    owner.attn.qkv = torch.nn.Linear(128, 384)  # a fused qkv, as timm's ViT stores it
    key = uchida.generate_key(Params(bits=120), seed=9, model=owner)
    reg = uchida.regularizer(key)
    opt = torch.optim.Adam(owner.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        reg(owner).backward()
        opt.step()
    w = owner.attn.qkv.weight.detach()
    g = torch.Generator().manual_seed(3)
    split = {f"layer.attention.self.{n}.weight": w[i * 128:(i + 1) * 128]
             for i, n in enumerate(("query", "key", "value"))}  # as BERT stores it
    split["layer.attention.output.dense.weight"] = torch.randn(128, 128, generator=g)
    result = uchida.test(Suspect.from_weights(split), key)
    assert result.details["host_search"]["chosen"] == [
        "layer.attention.self.query.weight+layer.attention.self.key.weight+layer.attention.self.value.weight"]
    assert result.details["host_search"]["placements"] == 2  # both orientations of the square parts
    assert result.log10_p <= -24
