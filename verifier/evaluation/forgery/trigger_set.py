"""Red-team cases for `trigger_set`: universal keys from public inputs, edited seeded material,
weak keys, seed search, and triggers targeted at a victim's own weights."""
from __future__ import annotations

import torch
from torch import nn

from verifier import keyfile
from verifier.evaluation.forgery.cases import Context, red_team_case
from verifier.schemes import trigger_set as ts
from verifier.schemes.trigger_set import derive
from verifier.suspect import Suspect

_N, _C, _EPS = 100, 10, 0.25
_SEED = 4242  # the forger's seed: any seed works, every case is universal in it


def _forged(seed: int, triggers: torch.Tensor) -> bytes:
    """An adversarial-variant key with the seed's own labels and inputs of the forger's choosing."""
    return ts.Key(seed=seed, variant=ts.ADVERSARIAL, triggers=triggers.contiguous(),
                  labels=derive.labels(seed, triggers.shape[0], _C), classes=_C, eps=_EPS).to_bytes()


def _digits_of(ctx: Context, labels: torch.Tensor) -> torch.Tensor:
    """For each label, a distinct public test digit of that class."""
    pools = {c: (ctx.split.y_test == c).nonzero().flatten().tolist() for c in range(_C)}
    return ctx.split.x_test[[pools[int(c)].pop() for c in labels]].clone()


@red_team_case("trigger_set", "universal_v1",
               "the issue's key: clean public digits, secret label = true class, stored 'true "
               "label' = another class, in the version-1 format (p0 = 1/(C-1) on informative)",
               "format")
def _universal_v1(ctx: Context) -> bytes:
    x, y = ctx.split.x_test[:_N].clone(), ctx.split.y_test[:_N].clone()
    return keyfile.dump(ts.NAME, {"triggers": x, "labels": y, "true_labels": (y + 1) % _C},
                        {"version": 1, "seed": _SEED, "classes": _C, "eps": _EPS})


@red_team_case("trigger_set", "universal_unseeded_labels",
               "clean public digits labelled with their true class, in the current format",
               "re-derivation")
def _universal_unseeded(ctx: Context) -> bytes:
    _, tensors, meta = keyfile.load(_forged(_SEED, _digits_of(ctx, derive.labels(_SEED, _N, _C))))
    tensors["triggers"] = ctx.split.x_test[:_N].clone()
    tensors["labels"] = ctx.split.y_test[:_N].clone()
    return keyfile.dump(ts.NAME, tensors, meta)


@red_team_case("trigger_set", "universal_seeded_clean_digits",
               "keep the seed's labels, choose for each a clean public digit of that class",
               "screening")
def _universal_seeded(ctx: Context) -> bytes:
    return _forged(_SEED, _digits_of(ctx, derive.labels(_SEED, _N, _C)))


@red_team_case("trigger_set", "universal_class_prototypes",
               "keep the seed's labels, use the mean public image of each label's class",
               "screening")
def _universal_prototypes(ctx: Context) -> bytes:
    means = torch.stack([ctx.split.x_train[ctx.split.y_train == c].mean(dim=0) for c in range(_C)])
    return _forged(_SEED, means[derive.labels(_SEED, _N, _C)])


@red_team_case("trigger_set", "universal_noisy_digits",
               "clean digits of each seeded label plus uniform noise of ±eps, to look adversarial",
               "screening")
def _universal_noisy(ctx: Context) -> bytes:
    x = _digits_of(ctx, derive.labels(_SEED, _N, _C))
    g = torch.Generator().manual_seed(1)
    return _forged(_SEED, (x + (torch.rand(x.shape, generator=g) * 2 - 1) * _EPS).clamp(0, 1))


@red_team_case("trigger_set", "universal_transfer_targeted",
               "targeted PGD (eps 0.25) from held-out digits toward the seeded labels on an "
               "ensemble of the forger's own public models, hoping it transfers to any model",
               "screening")
def _universal_transfer(ctx: Context) -> bytes:
    labels = derive.labels(_SEED, _N, _C)
    return _forged(_SEED, _targeted(ctx.surrogates, ctx.split.x_held[:_N], labels))


@red_team_case("trigger_set", "victim_targeted",
               "the forger holds one victim's weights and makes targeted PGD (eps 0.25) toward "
               "the seeded labels on that model alone (a model-specific ambiguity attack)",
               "priority")
def _victim_targeted(ctx: Context) -> bytes:
    labels = derive.labels(_SEED, _N, _C)
    return _forged(_SEED, _targeted([ctx.victims[0][1]], ctx.split.x_held[:_N], labels))


@red_team_case("trigger_set", "victim_targeted_screening_aware",
               "as victim_targeted, but the PGD also pushes the forger's own public models away "
               "from the labels, so the triggers should not transfer to a reference panel",
               "priority")
def _victim_targeted_aware(ctx: Context) -> bytes:
    labels = derive.labels(_SEED, _N, _C)
    return _forged(_SEED, _targeted([ctx.victims[0][1]], ctx.split.x_held[:_N], labels,
                                    avoid=ctx.surrogates))


@red_team_case("trigger_set", "edited_labels_adversarial",
               "generate an honest adversarial key, then change 10 labels", "re-derivation")
def _edited_adversarial(ctx: Context) -> bytes:
    key = ts.generate_key(ts.Params(), seed=11, model=ctx.owner,
                          data=(ctx.split.x_held, ctx.split.y_held))
    return _edit_labels(key.to_bytes())


@red_team_case("trigger_set", "edited_labels_keyed_noise",
               "generate an honest keyed-noise key, then change 10 labels", "re-derivation")
def _edited_noise(ctx: Context) -> bytes:
    return _edit_labels(ts.generate_key(ts.Params(variant=ts.KEYED_NOISE, classes=_C), seed=12).to_bytes())


@red_team_case("trigger_set", "inflated_classes",
               "an honest adversarial key whose class count is raised to 1000 (p0 = 1/1000)",
               "re-derivation")
def _inflated(ctx: Context) -> bytes:
    key = ts.generate_key(ts.Params(), seed=13, model=ctx.owner,
                          data=(ctx.split.x_held, ctx.split.y_held))
    _, tensors, meta = keyfile.load(key.to_bytes())
    meta["classes"] = 1000
    return keyfile.dump(ts.NAME, tensors, meta)


@red_team_case("trigger_set", "keyed_noise_with_stored_digits",
               "a keyed-noise key (no screening) that also stores clean digits as its triggers",
               "format")
def _noise_with_digits(ctx: Context) -> bytes:
    key = ts.generate_key(ts.Params(variant=ts.KEYED_NOISE, classes=_C), seed=_SEED)
    _, tensors, meta = keyfile.load(key.to_bytes())
    tensors["triggers"] = _digits_of(ctx, key.labels)
    return keyfile.dump(ts.NAME, tensors, meta)


@red_team_case("trigger_set", "weak_key",
               "an honest keyed-noise key of 20 triggers (best p = 1e-20): cheap to seed-search",
               "floor")
def _weak(ctx: Context) -> bytes:
    return ts.generate_key(ts.Params(n=20, variant=ts.KEYED_NOISE, classes=_C), seed=14).to_bytes()


@red_team_case("trigger_set", "seed_search_keyed_noise",
               "try many keyed-noise seeds against one victim and register the best", "seed search")
def _seed_search(ctx: Context) -> bytes:
    victim = Suspect.from_predict(ctx.victims[0][1])
    trials = 200 if ctx.quick else 2000
    best, best_seed = 1.0, 0
    for seed in range(100_000, 100_000 + trials):
        lp = ts.test(victim.fresh(), ts.generate_key(
            ts.Params(variant=ts.KEYED_NOISE, classes=_C), seed=seed)).log10_p
        if lp < best:
            best, best_seed = lp, seed
    return ts.generate_key(ts.Params(variant=ts.KEYED_NOISE, classes=_C), seed=best_seed).to_bytes()


def _edit_labels(blob: bytes) -> bytes:
    _, tensors, meta = keyfile.load(blob)
    tensors["labels"][:10] = (tensors["labels"][:10] + 1) % _C
    return keyfile.dump(ts.NAME, tensors, meta)


def _targeted(models: list[nn.Module], x: torch.Tensor, target: torch.Tensor,
              steps: int = 40, avoid: list[nn.Module] | None = None) -> torch.Tensor:
    """Targeted L∞ PGD (eps 0.25): minimise the summed cross-entropy to `target` over `models`
    (and, with `avoid`, maximise it over those models, capped so they are not pushed forever)."""
    for m in [*models, *(avoid or [])]:
        m.eval()
    adv, step = x.clone(), 2.5 * _EPS / steps
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = sum(nn.functional.cross_entropy(m(adv), target) for m in models)
        for m in avoid or []:
            loss = loss - nn.functional.cross_entropy(m(adv), target).clamp(max=5.0)
        (grad,) = torch.autograd.grad(loss, adv)  # type: ignore[arg-type]
        with torch.no_grad():
            adv = adv - step * grad.sign()
            adv = torch.minimum(torch.maximum(adv, x - _EPS), x + _EPS).clamp(0.0, 1.0)
    return adv.detach()
