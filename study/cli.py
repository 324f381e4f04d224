"""`loopstudy`: the command line of looped-study."""
from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path
from typing import Sequence

from study import quiet_environment, quiet_libraries
from study.cluster.commands import add_cluster_commands, add_job_args
from study.stop_signals import interrupted_exit_code
from trainables.errors import ConfigError, UserError


def cmd_train(args) -> None:
    import trainables
    from trainables.config import load_config
    from trainables.run_folder import load_run_config
    from trainables.diverged import Diverged

    if args.resume:
        config, checkpoint = load_run_config(args.resume)
        out = args.resume
    else:
        if not args.config:
            raise ConfigError("train needs CONFIG (a preset name or a YAML path) or --resume DIR")
        config, checkpoint = load_config(args.config, args.set), None
        out = args.out
    try:
        summary = trainables.train(config, out_dir=out, resume_from=checkpoint,
                                   num_threads=args.threads, progress=True)
    except Diverged as exc:
        print(f"loopstudy: training diverged: {exc} (lower training.learning_rate?)", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"run folder: {summary['run_dir']}")
    print(f"eval/err_last = {summary['eval/err_last']:.4g}   eval/err_mean = {summary['eval/err_mean']:.4g}")
    print(f"figure: {summary['run_dir']}/eval.png   summary: {summary['run_dir']}/summary.json")


def cmd_probe(args) -> None:
    import trainables
    from trainables.config import load_config
    from trainables.plots import plot_probe
    from trainables.run_folder import new_run_dir

    overrides = list(args.set) + [f"probe.target={args.target}"] * bool(args.target)
    overrides += ["probe.control=true"] * args.control
    several = len(args.run_dirs) > 1
    root = Path(args.out) if args.out else new_run_dir("probe") if several else None
    summaries, names = [], set()
    for run_dir in args.run_dirs:
        config = load_config(Path(run_dir) / "config.yaml", overrides)
        name = Path(run_dir).resolve().name
        name = f"{name}-{len(names)}" if name in names else name
        names.add(name)
        out = root / name if several else root
        summary = trainables.probe(config, run_dir=run_dir, out_dir=out, num_threads=args.threads,
                                   progress=True)
        summaries.append(summary)
        print(f"{summary['label']}: probe error / d ({summary['target']}) after {summary['step']} steps")
        print("state  task" + "      control" * args.control)
        for i, err in enumerate(summary["err"]):
            print(f"{i:5d}  {err:.4f}" + (f"    {summary['control_err'][i]:.4f}" if args.control else ""))
        print(f"probe folder: {summary['run_dir']}   figure: {summary['run_dir']}/probe.png")
    if several:
        plot_probe(summaries, root / "probe.png")
        print(f"figure with all runs: {root / 'probe.png'}")


def cmd_presets(args) -> None:
    from trainables.preset_files import preset_data, preset_names

    names = preset_names()
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {preset_data(name)[1]}")


def _finish_study(spec, result) -> None:
    """The trial table; then the resume command, or the answer and the report (also logged to
    the study's parent MLflow run)."""
    from analysis.trials import read_record
    from study.publish import report
    from study.status import best_summary, format_status, loopstudy_command
    from study.storage.stores import Stores

    print(format_status(spec))
    if not result.finished:
        print(f"study interrupted: resume it with `{loopstudy_command()} resume {spec.results_dir}`")
        raise SystemExit(interrupted_exit_code())
    print(f"finished: {result.wall_s:.0f} s wall; trials {result.trials_s:.0f} s / {result.concurrency} "
          f"concurrent = {result.trials_s / result.concurrency:.0f} s; overhead {result.overhead:.0%}")
    record = read_record(Stores.of(spec))
    if not record.ranked():
        print(f"report: {report(spec, record=record)}")
        counts = ", ".join(f"{n} {state}" for state, n in record.by_state().items())
        print(f"loopstudy: no trial of study '{spec.name}' completed ({counts}): nothing to rank, replicate "
              f"or export; the reasons are in `{loopstudy_command()} status {spec.results_dir}`", file=sys.stderr)
        raise SystemExit(1)
    print(best_summary(spec, record))
    print(f"report: {report(spec, record=record)}")


def cmd_run(args) -> None:
    from study.spec import read_study_file

    spec = read_study_file(args.study)         # refused before Ray is even imported
    if args.results:
        spec.results_dir = Path(args.results).resolve()
    _drive(spec, num_gpus=args.num_gpus)


def cmd_resume(args) -> None:
    from study.spec import find_study

    spec = find_study(args.name, args.results_root)      # a missing study is said before Ray is imported
    if args.address:
        from study.cluster.commands import submit_study

        if args.num_gpus is not None:
            raise ConfigError("--num-gpus declares GPUs to a local Ray, not to the cluster at --address "
                             "(its nodes declare their own: `ray start --num-gpus`)")

        submit_study(spec, args, resume=True)
        return
    _drive(spec, resume=True, num_gpus=args.num_gpus)


def _drive(spec, resume: bool = False, num_gpus: int | None = None) -> None:
    """Run or resume `spec` in this process, then `_finish_study`; a second interrupt (which
    cuts Tune's save short) still ends with the resume command and the signal's exit code."""
    from study.runner import run_study
    from study.status import loopstudy_command

    try:
        result = run_study(spec, resume=resume, num_gpus=num_gpus)
    except KeyboardInterrupt:
        print(f"study stopped at once: resume it with `{loopstudy_command()} resume {spec.results_dir}`",
              file=sys.stderr)
        raise SystemExit(interrupted_exit_code())
    _finish_study(spec, result)


def cmd_status(args) -> None:
    from study.spec import find_study
    from study.status import format_status

    print(format_status(find_study(args.name, args.results_root)))


def cmd_sync(args) -> None:
    from study.spec import find_study
    from study.storage.stores import Stores

    stores = Stores.of(find_study(args.name, args.results_root))
    from study.tracking.runs import Tracker

    tracker = Tracker(stores)
    kept = len(tracker.backlog)
    if not kept:
        print(f"nothing to send: no trial events are kept for MLflow ({tracker.backlog.path} does not exist)")
        return
    tracker.wait_for_mlflow(deadline=0)
    print(f"sent {kept} kept trial events to MLflow at {tracker.stores.mlflow_shown}")


def cmd_ui(args) -> None:
    from study.spec import find_study

    spec = find_study(args.name, args.results_root)
    from study.ui import serve

    serve(spec, optuna=args.optuna, port=args.port)


def cmd_report(args) -> None:
    from study.spec import find_study

    spec = find_study(args.name, args.results_root)
    from study.publish import report

    path = report(spec, args.out)
    print(f"report: {path}  (figures beside it; also logged to the study's parent MLflow run)")


def cmd_export(args) -> None:
    from study.spec import find_study

    spec = find_study(args.name, args.results_root)
    from study.publish import export

    for path in export(spec, args.top, args.format, args.scale, args.out):
        print(path)


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port, 1 to 65535, got {text!r}")
    return int(text)


def whole_number(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def _num_gpus_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-gpus", type=whole_number, metavar="N",
                   help="GPUs the local Ray declares (default: the ones it detects); not with a cluster")


def _study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="study name (under --results-root) or its results folder")
    p.add_argument("--results-root", default="results", help="where studies live (default: results)")


class Parser(argparse.ArgumentParser):
    """argparse's, with the arguments it quotes in its usage errors made printable (its
    sub-commands' parsers are of this class too)."""

    def error(self, message: str):
        super().error(escaped(message))     # argparse's messages are one line: any break is the user's


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="loopstudy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one model (a preset name or a YAML config)")
    p.add_argument("config", nargs="?", help="preset name (see `loopstudy presets`) or YAML path")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, e.g. --set training.loop_dilation=2 (repeatable)")
    p.add_argument("--out", help="run folder (default: runs/<preset>-<time>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--threads", type=positive_int, help="torch threads (default: torch's choice)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("probe", help="fit probes to every layer / loop iteration of trained runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folder(s) of `loopstudy train`")
    p.add_argument("--target", choices=("wols", "grad"), help="what to decode (default: probe.target)")
    p.add_argument("--control", action="store_true", help="also fit control probes (trained on w = 1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, e.g. --set probe.steps=2000 (repeatable)")
    p.add_argument("--out", help="probe folder (default: RUN_DIR/probe_<target>); with several "
                                 "runs, one sub-folder each and the joint figure")
    p.add_argument("--threads", type=positive_int, help="torch threads (default: torch's choice)")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("presets", help="list the shipped presets")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("run", help="run a study file (Ray Tune + Optuna + ASHA, tracked in MLflow)")
    p.add_argument("study", help="study YAML, e.g. study/studies/dilation_cpu.yaml")
    p.add_argument("--results", help="results folder (default: ./results/<study name>)")
    _num_gpus_arg(p)
    p.set_defaults(func=cmd_run)

    for name, func, text in (("resume", cmd_resume, "continue an interrupted or crashed study"),
                             ("status", cmd_status, "table of a study's trials"),
                             ("sync", cmd_sync, "send MLflow the trial events kept while its server was away"),
                             ("ui", cmd_ui, "serve the MLflow UI (or optuna-dashboard) on a study")):
        p = sub.add_parser(name, help=text)
        _study_args(p)
        p.set_defaults(func=func)
    p.add_argument("--optuna", action="store_true", help="serve optuna-dashboard on the Optuna storage")
    p.add_argument("--port", type=port, default=5000, help="port on 127.0.0.1 (default 5000)")
    _num_gpus_arg(sub.choices["resume"])
    add_job_args(sub.choices["resume"])          # resume --address URL: as a job on that cluster
    add_cluster_commands(sub)

    p = sub.add_parser("report", help="report.md and figures of a finished study (also logged to MLflow)")
    _study_args(p)
    p.add_argument("--out", help="folder (default: <results>/report)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="YAML configs of a study's best trials")
    _study_args(p)
    p.add_argument("--top", type=positive_int, default=1, help="how many of the best completed trials (default 1)")
    p.add_argument("--format", default="loopstudy", choices=("loopstudy", "reference"),
                   help="loopstudy: reruns with `loopstudy train`; reference: the reference code's layout")
    p.add_argument("--scale", choices=("full",), help="full: map a CPU-sized winner to the full-size preset")
    p.add_argument("--out", help="folder (default: <results>/export)")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    # only a driver that may start its own Ray gets the local Ray's environment (loopback, token)
    quiet_environment(local_ray=args.command in ("run", "resume") and not getattr(args, "address", None))
    quiet_libraries()
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("loopstudy: interrupted", file=sys.stderr)
        return interrupted_exit_code()
    except Exception as exc:
        error = user_error(exc)
        if error is None:
            raise                               # a bug: its traceback is the report
        print(f"loopstudy: error: {printable(str(error), argv)}", file=sys.stderr)
        return error.EXIT_CODE
    return 0


def escaped(text: str) -> str:
    """`text` on one line, every character a terminal would not show as written escaped."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def printable(message: str, given: Sequence[str] = ()) -> str:
    """`message` with what a terminal would not show as written (a control character or a line
    separator inside a name the user gave) escaped as Python writes it; its own line breaks kept,
    but not those inside a word of the command line (`given`) that it quotes."""
    for word in sorted({w for w in given if "\n" in w}, key=len, reverse=True):
        message = message.replace(word, escaped(word))
    return "\n".join(escaped(line) for line in message.split("\n"))


def user_error(exc: Exception) -> UserError | None:
    """What the user is told of `exc`, with its exit code (trainables/errors.py): itself when it
    is a UserError; a ConfigError for a path that cannot name a file at all (too long, a loop of
    links: it came from the command line); an Unavailable when MLflow's tracking server does not
    answer (status, report, ...); None for anything else."""
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, OSError) and exc.errno in (errno.ENAMETOOLONG, errno.ELOOP) and exc.filename:
        return ConfigError(f"{exc.filename}: {exc.strerror}: not a usable path")
    from study.tracking.delivery import TrackingUnavailable, is_outage, why

    if is_outage(exc):
        return TrackingUnavailable(f"MLflow's tracking server does not answer ({why(exc)}): start it, or wait "
                                   "for it, and run the command again")
    return None


if __name__ == "__main__":
    sys.exit(main())
