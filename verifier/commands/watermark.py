"""`hallmark watermark SCHEME MODEL --out OUT --key-out KEY`: mark a model file after training."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from verifier import forgery
from verifier.cli import CommandError
from verifier.owners.errors import OwnerToolError
from verifier.owners.marking import POST_TRAINING, watermark_file
from verifier.owners.modelsig import model_signing_lib, sign_model
from verifier.owners.output import refuse_existing
from verifier.schemes import get

HELP = ("mark a model file with a post-training scheme (lsb, output_signature, advparams); "
        "writes the marked model and its key (mode 0600)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scheme", metavar="SCHEME",
                        help=f"one of {', '.join(POST_TRAINING)} (training-time schemes: see "
                             "docs/owners.md)")
    parser.add_argument("model", type=Path, metavar="MODEL",
                        help="safetensors file, PEFT adapter folder or ONNX file")
    parser.add_argument("--out", required=True, type=Path,
                        help="where to write the marked model (must not exist; output_signature "
                             "writes ONNX)")
    parser.add_argument("--key-out", required=True, type=Path, metavar="KEY",
                        help="where to write the watermark key (mode 0600; register it, keep it "
                             "secret)")
    parser.add_argument("--arch", metavar="MODULE:FACTORY",
                        help="your model's torch class or factory, e.g. mypkg.nets:Classifier "
                             "(advparams; output_signature from safetensors weights)")
    parser.add_argument("--data", type=Path, metavar="DATA.safetensors",
                        help="labelled data for advparams: tensors `x` and `y`")
    parser.add_argument("--input-shape", metavar="D1,D2,...",
                        help="one input's shape without the batch (output_signature; read from "
                             "the ONNX model when static)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a scheme parameter, e.g. --param k=4 (repeatable)")
    parser.add_argument("--sign", type=Path, metavar="EC_KEY.pem",
                        help="also write OUT.sig, an OpenSSF model-signing signature of the "
                             "marked model with this elliptic-curve key (needs hallmark[signing])")
    parser.add_argument("--seed", type=int,
                        help="derive the key from this integer (reproducible tests only: "
                             "anyone who guesses it can re-derive the key)")


def _shape(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise CommandError(f"--input-shape {text!r}: expected integers separated by commas, "
                           "e.g. 3,32,32") from None
    if not shape or min(shape) < 1:
        raise CommandError(f"--input-shape {text!r}: every dimension must be >= 1")
    return shape


def run(args: argparse.Namespace) -> int:
    sig_path = args.out.with_name(f"{args.out.name}.sig")
    try:
        if args.sign is not None:
            model_signing_lib()  # fail before marking, not after
            refuse_existing(sig_path, "--out")
        marked = watermark_file(args.scheme, args.model, args.out, args.key_out,
                                params=args.param, seed=args.seed, arch=args.arch,
                                data=args.data, input_shape=_shape(args.input_shape))
    except OwnerToolError as e:
        raise CommandError(str(e)) from None
    scheme = get(marked.scheme)
    check = marked.check
    bits = forgery.forgery_bits(check.log10_p)
    print(f"marked model: {marked.out}")
    print(f"key: {marked.key_out} (mode 0600; keep it secret, register it with "
          f"`hallmark register {marked.out} {marked.key_out}`)")
    for note in marked.notes:
        print(f"  {note}")
    print(f"self-check: the marked file read back tests positive ({check.statistic:g}/{check.n}, "
          f"log10 p = {check.log10_p:.1f}, forgery cost "
          f"{'unbounded' if math.isinf(bits) else f'{bits:.0f} bits'})")
    print(f"access needed to check it: {scheme.ACCESS}")
    print(f"what it proves and does not: {scheme.CLAIM}")
    if args.sign is not None:
        try:
            sign_model(marked.out, args.sign, sig_path)
        except OwnerToolError as e:
            raise CommandError(f"the marked model and key were written, but not the signature: "
                               f"{e}") from None
        print(f"model-signing signature: {sig_path} (verify with `hallmark check-signature "
              f"{marked.out} --signature {sig_path} --public-key PUBLIC.pem`)")
    return 0
