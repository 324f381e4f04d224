"""`loopstudy`: the command line of looped-study."""
from __future__ import annotations

import argparse
import sys

from trainables.config import ConfigError


def cmd_train(args) -> None:
    import trainables
    from trainables.config import load_config
    from trainables.run_folder import load_run_config

    if args.resume:
        config, checkpoint = load_run_config(args.resume)
        out = args.resume
    else:
        if not args.config:
            raise ConfigError("train needs CONFIG (a preset name or a YAML path) or --resume DIR")
        config, checkpoint = load_config(args.config, args.set), None
        out = args.out
    summary = trainables.train(config, out_dir=out, resume_from=checkpoint,
                               num_threads=args.threads, progress=True)
    print(f"run folder: {summary['run_dir']}")
    print(f"eval/err_last = {summary['eval/err_last']:.4g}   eval/err_mean = {summary['eval/err_mean']:.4g}")
    print(f"figure: {summary['run_dir']}/eval.png   summary: {summary['run_dir']}/summary.json")


def cmd_presets(args) -> None:
    from trainables.config import preset_data, preset_names

    names = preset_names()
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {preset_data(name)[1]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loopstudy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one model (a preset name or a YAML config)")
    p.add_argument("config", nargs="?", help="preset name (see `loopstudy presets`) or YAML path")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, e.g. --set training.loop_dilation=2 (repeatable)")
    p.add_argument("--out", help="run folder (default: runs/<preset>-<time>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("presets", help="list the shipped presets")
    p.set_defaults(func=cmd_presets)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ConfigError as exc:
        print(f"loopstudy: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("loopstudy: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
