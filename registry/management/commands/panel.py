"""`python manage.py panel`: the reference panel that screens keys with owner-chosen inputs.

    manage.py panel list
    manage.py panel add NAME FILE --format onnx --input-shape 64
    manage.py panel add NAME FILE --format safetensors --architecture digits-cnn
    manage.py panel remove NAME
    manage.py panel add-digits          # the built-in digits panel (21 models, 40-100 s once)
"""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from registry import panel
from registry.models import ReferenceModel


class Command(BaseCommand):
    help = "List, add or remove reference panel models (ONNX, or safetensors + architecture)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list", help="the panel, by domain")
        add = sub.add_parser("add", help="add one model file")
        add.add_argument("name")
        add.add_argument("file", type=Path)
        add.add_argument("--format", choices=panel.FORMATS, required=True)
        add.add_argument("--architecture", default="", choices=["", *panel.ARCHITECTURES],
                         help="the architecture of a safetensors state dict")
        add.add_argument("--input-shape", default=None,
                         help="input shape without batch, e.g. 64 or 1x8x8 (ONNX; default: the "
                              "architecture's)")
        rm = sub.add_parser("remove", help="remove one model by name")
        rm.add_argument("name")
        sub.add_parser("add-digits", help="build and add the built-in digits panel (if missing)")

    def handle(self, *args: object, **options: object) -> None:
        action = options["action"]
        if action == "list":
            for m in ReferenceModel.objects.defer("data"):
                self.stdout.write(f"{m.domain:<28} {m.name:<28} {m.format:<12} "
                                  f"{m.architecture or '-':<16} {m.sha256[:16]}…")
        elif action == "add":
            self._add(options)
        elif action == "remove":
            deleted, _ = ReferenceModel.objects.filter(name=options["name"]).delete()
            if not deleted:
                raise CommandError(f"no panel model is named {options['name']!r}; see `panel list`")
            self.stdout.write(f"removed {options['name']}")
        elif action == "add-digits":
            import torch

            torch.set_num_threads(1)  # tiny models: one thread is fastest and leaves the rest
            added = panel.ensure_digits_panel(progress=lambda n: self.stdout.write(f"added {n}"))
            self.stdout.write(f"digits panel: {added} model(s) added")

    def _add(self, options: dict[str, object]) -> None:
        path = options["file"]
        assert isinstance(path, Path)
        shape = options["input_shape"]
        try:
            data = path.read_bytes()
            m = panel.add_model(str(options["name"]), data, str(options["format"]),
                                str(options["architecture"]),
                                [int(d) for d in str(shape).split("x")] if shape else None)
        except OSError as e:
            raise CommandError(f"cannot read {path}: {e.strerror}") from None
        except ValueError as e:  # PanelError, or a malformed --input-shape
            raise CommandError(str(e)) from None
        self.stdout.write(f"added {m.name} to domain {m.domain} ({m.sha256[:16]}…)")
