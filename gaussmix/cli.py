"""The ``gaussmix`` command."""

import argparse
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gaussmix import datasets

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("sm1", "sm2"):
        x, labels = getattr(datasets, name)()
        figure, axis = plt.subplots(figsize=(5, 5))
        axis.scatter(x[:, 0], x[:, 1], c=labels, s=6, cmap="tab10")
        axis.set_title(f"{name.upper()}: {len(x)} points, {labels.max() + 1} components")
        axis.set_aspect("equal")
        figure.tight_layout()
        figure.savefig(out / f"{name}.png", dpi=100)
        plt.close(figure)
        print(f"wrote {out / f'{name}.png'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gaussmix", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the tour on the bundled datasets")
    demo.add_argument("--out", default="demo", help="output folder (default: demo)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
