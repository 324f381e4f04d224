"""Bad input of every kind: each malformed config, override, space, study file or store gives one
clear error naming the file and the field (ConfigError / SpaceError / StudyError; exit 2 from the
CLI), never a library's traceback, and nothing already recorded is touched. Fast tier: no Ray
started. The properties are hypothesis searches over mutated valid inputs and raw garbage.
Damaged run folders (checkpoints, metrics): tests/test_damaged_run_folders.py."""
import copy
import datetime
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import search_spaces
from search_spaces import Space, SpaceError
from study.spec import STUDY_FILE, StudySpec, parse_study, read_study_file
from study.errors import StudyError
from studyfiles import ENV, cli_error
from trainables.config import Config, ConfigError, field_kind, from_dict, load_config
from trainables.preset_files import preset_data

BASE = "paper_linear_regression_looped_cpu"
VALID = preset_data("seed_dilation_cpu")[0]
FIELDS = sorted(Config().flat())
SECTIONS = sorted({key.rsplit(".", 1)[0] for key in FIELDS} | {key.split(".")[0] for key in FIELDS})
# the fields the search spaces' constraints read, where a bad value would reach arithmetic
CONSTRAINED = ["training.n_loop_window", "training.loop_dilation", "curriculum.loops.start",
               "curriculum.loops.end", "model.n_embd", "model.n_head", "model.family"]
YAML_SPECIAL = ["1e-4", "1.0e-4", "null", "Null", "~", "yes", "no", "on", "off", "True", ".inf", "-.inf",
                ".nan", "nan", "inf", "1e999", "0x10", "0o17", "1_000", "1:30", "2020-01-01", "2020-13-45",
                "", " ", "[", "{", "]", "[1, [2", "&a", "*a", "!!binary abc", "!!python/object:os.system",
                "'", '"', "- 1", "a: b", "#", "%YAML 1.1", "\x00", "\udcff", "-0", "+1", "007", ".5",
                "9" * 5000, "[1, [2, [3]]]", "{a: {b: {c: 1}}}", "!!set {a, b}", "!!float abc"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-300, 300), st.integers(2 ** 62, 2 ** 80),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
                    st.sampled_from(YAML_SPECIAL), st.dates())
garbage = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=4) | st.sampled_from(FIELDS), inner, max_size=3),
                       max_leaves=6)
dotted_keys = st.one_of(st.sampled_from(FIELDS), st.sampled_from(SECTIONS),
                        st.builds(str.__add__, st.sampled_from(FIELDS), st.sampled_from(["x", ".x", "_", ".."])),
                        st.text(alphabet="abcdeinrstg._", max_size=14))
FAST = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _real_field(name: str) -> bool:
    try:
        field_kind(re.sub(r"\[\d+\]", "", name))
        return True
    except ConfigError:
        return False


def assert_names_a_field(message: str) -> None:
    """The message starts with a config field that exists, or names an unknown key and the allowed ones."""
    unknown = re.match(r"unknown config key '([^']*)'.* \(allowed: ", message)
    if unknown:
        assert not _real_field(unknown.group(1)), message
        return
    named = re.match(r"'([^']+)'", message)
    assert named and _real_field(named.group(1)), message


def assert_valid(config: Config) -> None:
    """A Config that came through: every number finite and in 64 bits, and it reloads as itself."""
    for key, value in config.flat().items():
        for number in value if isinstance(value, list) else [value]:
            if isinstance(number, float):
                assert math.isfinite(number), (key, number)
            if isinstance(number, int):
                assert -2 ** 63 <= number < 2 ** 63, (key, number)
    assert from_dict(config.to_dict()) == config


def _set(tree: dict, key: str, value) -> None:
    """Set a dotted key by force (what a hand-edited file may hold), replacing whatever is in the way."""
    *sections, leaf = key.split(".")
    for part in sections:
        if not isinstance(tree.get(part), dict):
            tree[part] = {}
        tree = tree[part]
    tree[leaf] = value


# ---------------------------------------------------------------- configs

@FAST
@given(st.lists(st.tuples(dotted_keys, garbage), min_size=1, max_size=3))
def test_a_mutated_config_loads_or_names_the_field(mutations):
    data = copy.deepcopy(VALID)
    for key, value in mutations:
        _set(data, key, value)
    try:
        config = from_dict(data)
    except ConfigError as exc:
        assert_names_a_field(str(exc))
    else:
        assert_valid(config)


@FAST
@given(dotted_keys, st.one_of(st.sampled_from(YAML_SPECIAL), st.text(max_size=10)))
def test_a_dotted_override_loads_or_names_the_field(key, text):
    try:
        config = load_config(VALID, [f"{key}={text}"])
    except ConfigError as exc:
        assert_names_a_field(str(exc))
    else:
        assert_valid(config)


@FAST
@given(st.dictionaries(dotted_keys | st.integers() | st.none(), garbage, min_size=1, max_size=3))
def test_overrides_given_as_a_mapping_load_or_name_the_field(overrides):
    try:
        config = load_config(VALID, overrides)
    except ConfigError as exc:
        assert_names_a_field(str(exc))
    else:
        assert_valid(config)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "nan", "1e999"])
@pytest.mark.parametrize("field", ["training.learning_rate", "training.weight_decay", "probe.learning_rate",
                                   "task.noise_std", "synthetic.seed_sd"])
def test_no_nan_or_infinity_reaches_a_config(field, value, tmp_path):
    with pytest.raises(ConfigError, match=f"'{field}' must be a finite number"):
        load_config(BASE, [f"{field}={value}"])
    section, name = field.split(".")
    path = tmp_path / "c.yaml"
    path.write_text(f"extends: {BASE}\n{section}: {{{name}: {value}}}\n")
    with pytest.raises(ConfigError, match=f"'{field}' must be a finite number"):
        load_config(path)


def test_integers_beyond_64_bits_are_refused_not_overflowed():
    with pytest.raises(ConfigError, match=r"'training.seed' must be an integer in \[-2\*\*63, 2\*\*63\)"):
        from_dict({"training": {"seed": 10 ** 400}})
    with pytest.raises(ConfigError, match=r"'training.learning_rate' must be a finite number"):
        from_dict({"training": {"learning_rate": 10 ** 400}})


def test_a_config_file_that_is_not_text_names_the_file(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"training: {seed: 1}\n\xff\xfe\x00")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: not UTF-8 text"):
        load_config(path)


# ---------------------------------------------------------------- search spaces

numbers = st.one_of(st.integers(-5, 300), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["1e-4", "x", None, True, 1e308, -1e308, 1e-300, 2 ** 63 - 1, -2 ** 63]))
param_specs = st.one_of(
    garbage,
    st.fixed_dictionaries({"categorical": st.lists(scalars, max_size=4)}),
    st.fixed_dictionaries({"int": st.lists(numbers, max_size=3)}, optional={"step": numbers, "log": scalars}),
    st.fixed_dictionaries({"float": st.lists(numbers, max_size=3)}, optional={"step": numbers, "log": scalars}),
    st.dictionaries(st.sampled_from(["categorical", "int", "float", "step", "log", "x"]), garbage, max_size=3))
space_keys = st.one_of(st.sampled_from(CONSTRAINED), dotted_keys, st.integers(), st.none())


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(space_keys, param_specs, max_size=4), st.booleans())
def test_a_random_space_is_a_valid_space_or_names_its_field(params, wrapped):
    mapping = {"description": "fuzz", "params": params} if wrapped else params
    try:
        space = Space.from_mapping(mapping, "fuzz")
        space.check("seed_dilation_cpu")
    except SpaceError as exc:
        message = str(exc)
        assert message.startswith("space 'fuzz'"), message
        field = re.match(r"space 'fuzz', field '([^']*)'", message)
        assert field is None or field.group(1) in {str(k) for k in params}, message
    else:
        assert set(space.params) == {str(k) for k in params}


def test_an_unknown_space_lists_the_shipped_ones():
    with pytest.raises(SpaceError, match="no shipped space named 'dilaton'; did you mean 'dilation'") as info:
        search_spaces.load_space("dilaton")
    assert all(name in str(info.value) for name in search_spaces.space_names())


def test_an_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match="no preset or file named 'nope'") as info:
        load_config("nope")
    assert "seed_dilation_cpu" in str(info.value) and "paper_relu_2nn_standard" in str(info.value)


# ---------------------------------------------------------------- study files

def _study(tmp: Path) -> dict:
    return {"name": "fuzz", "trainable": "synthetic", "base": BASE,
            "overrides": {"training.train_steps": 40, "training.eval_every": 10},
            "space": {"training.loop_dilation": {"categorical": [1, 2]}, "curriculum.loops.start": None},
            "objectives": [{"metric": "eval/err_last", "mode": "min"}], "budget": {"num_samples": 2},
            "results_dir": str(tmp / "results")}


STUDY_KEYS = ["name", "trainable", "base", "overrides", "space", "objectives", "budget", "scheduler",
              "resources", "seeds_per_config", "replicates", "results_dir", "sampler", "sampler_seed",
              "storage", "budget.num_samples", "budget.time_limit_s", "scheduler.grace_period", "resources.cpu",
              "resources.gpu", "replicates.seeds", "storage.optuna", "storage.storage_path", "objectives",
              "overrides.training.seed", "space.training.loop_dilation", "nmae"]


def _mutated_study(tmp: Path, mutations) -> bytes:
    study = _study(tmp)
    for key, value in mutations:
        section, _, rest = key.partition(".")
        if rest and isinstance(study.get(section), dict):
            study[section][rest] = value       # overrides and space keys are dotted themselves
        else:
            study[key] = value
    return yaml.safe_dump(study, allow_unicode=True).encode("utf-8", "surrogatepass")


def _non_utf8(text: bytes, at: int) -> bytes:
    at %= len(text) + 1
    return text[:at] + b"\xff\xc3(" + text[at:]


def study_bytes(tmp: Path):
    valid = yaml.safe_dump(_study(tmp)).encode()
    return st.one_of(
        st.lists(st.tuples(st.sampled_from(STUDY_KEYS), garbage), min_size=1, max_size=2).map(
            lambda m: _mutated_study(tmp, m)),
        st.binary(max_size=200),
        st.integers(0, 10_000).map(lambda at: _non_utf8(valid, at)),
        st.sampled_from([b"- a\n- b\n", b"42\n", b"just a string\n", b"", b"~\n", b"[1, {a: b}]\n",
                         b"name: " + b"9" * 5000 + b"\n", b"- &a [*a]\n",
                         b"a: &a [1, 1, 1]\nb: &b [*a, *a, *a]\nbudget: {num_samples: *b}\n"]),
        st.sampled_from([3, 300, 1500]).map(lambda depth: b"name: " + b"{a: " * depth + b"1" + b"}" * depth),
        st.sampled_from([3, 300, 1500]).map(lambda depth: b"[" * depth + b"]" * depth))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad_input")


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_malformed_study_file_is_refused_naming_the_file(scratch, data):
    path = scratch / "study file.yaml"
    path.write_bytes(data.draw(study_bytes(scratch)))
    try:
        spec = read_study_file(path)
    except StudyError as exc:
        assert str(exc).startswith(f"{path}: "), str(exc)
        assert "\n" not in str(exc), str(exc)
    else:
        assert isinstance(spec, StudySpec) and spec.name
    assert not (scratch / "results").exists()


# ---------------------------------------------------------------- the CLI, end to end

def test_the_cli_gives_one_error_line_and_writes_nothing(tmp_path):
    """Malformed study files and overrides through `python -m study.cli` (concurrently: each
    process pays the imports)."""
    unclosed = tmp_path / "unclosed.yaml"
    unclosed.write_text("name: bad\nbase: [unclosed\n")
    cases = {("run", str(unclosed)): f"{unclosed}: not valid YAML: line 3",
             ("train", BASE, "--set", "training.seed=["): "'training.seed' (override value '['): not valid YAML"}
    running = {args: subprocess.Popen([sys.executable, "-m", "study.cli", *args], cwd=tmp_path, env=ENV,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for args in cases}
    for args, process in running.items():
        out, err = process.communicate(timeout=180)
        assert process.returncode == 2, (args, out, err)
        assert "Traceback" not in out + err, (args, err)
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("loopstudy: error: "), (args, err)
        assert cases[args] in lines[0], (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unclosed.yaml"]


@pytest.mark.parametrize("args, message", [
    (["train", BASE, "--set", "training.learning_rate=.inf"], "'training.learning_rate' must be a finite number"),
    (["train", BASE, "--set", "training=5", "--set", "training.seed=1"], "'training' must be a mapping"),
    (["train", BASE, "--set", "training.sed=1"], "unknown config key 'training.sed'; did you mean 'training.seed'"),
    (["run", "binary.yaml"], "binary.yaml: not UTF-8 text"),
    (["run", "nan.yaml"], "nan.yaml: 'base'/'overrides': 'training.learning_rate' must be a finite number"),
    (["run", "list.yaml"], "list.yaml: a study file must be a mapping at the top level")])
def test_more_bad_input_through_the_cli_writes_nothing(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "binary.yaml").write_bytes(_non_utf8(yaml.safe_dump(_study(tmp_path)).encode(), 40))
    (tmp_path / "list.yaml").write_text("- name: x\n")
    nan = {**_study(tmp_path), "overrides": {"training.learning_rate": float("nan")}}
    (tmp_path / "nan.yaml").write_text(yaml.safe_dump(nan))
    assert message in cli_error(capsys, *args)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["binary.yaml", "list.yaml", "nan.yaml"]


# ---------------------------------------------------------------- results folders and their stores

@pytest.fixture
def results(tmp_path) -> Path:
    """A results folder as `run` leaves it before any trial: study.yaml, and a real Optuna store."""
    study = {**_study(tmp_path), "results_dir": str(tmp_path / "fuzz")}
    spec = parse_study(study)
    spec.results_dir.mkdir()
    (spec.results_dir / STUDY_FILE).write_text(spec.to_yaml())
    optuna.create_study(study_name="fuzz", storage=f"sqlite:///{spec.results_dir / 'optuna.db'}")
    return spec.results_dir


def _damaged(kind: str, good: bytes) -> bytes:
    return {"garbage": bytes(range(256)) * 12, "cut": good[:len(good) // 2], "text": b"not a database\n"}[kind]


@pytest.mark.parametrize("kind", ["garbage", "cut", "text"])
@pytest.mark.parametrize("store", ["optuna.db", "mlflow.db"])
def test_a_damaged_store_is_named_and_left_as_it_is(results, capsys, store, kind):
    good = (results / "optuna.db").read_bytes()
    (results / store).write_bytes(_damaged(kind, good))
    before = (results / store).read_bytes()
    for command in ("status", "report", "resume", "export"):
        line = cli_error(capsys, command, "fuzz", "--results-root", str(results.parent))
        assert f"{results / store}: not {'Optuna' if store == 'optuna.db' else 'MLflow'}'s store" in line
    assert (results / store).read_bytes() == before
    assert sorted(p.name for p in results.iterdir()) == sorted({"optuna.db", "study.yaml", store})


def test_a_store_a_running_driver_holds_locked_is_not_called_damaged(results):
    """A driver paused in a write transaction holds SQLite's lock: `status` or a second driver
    must not call the file damaged (the second driver is then refused as running: study_lock)."""
    import sqlite3

    from study.storage.databases import check_sqlite_store

    writer = sqlite3.connect(results / "optuna.db", isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    try:
        check_sqlite_store(f"sqlite:///{results / 'optuna.db'}", "studies", "Optuna")
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_one_store_in_place_of_the_other_is_refused_unwritten(results, capsys):
    shutil.copy(results / "optuna.db", results / "mlflow.db")
    before = (results / "mlflow.db").read_bytes()
    line = cli_error(capsys, "status", str(results))
    assert f"{results / 'mlflow.db'}: not MLflow's store: a SQLite database without MLflow's tables" in line
    assert (results / "mlflow.db").read_bytes() == before


def test_an_unreadable_mlflow_store_read_from_python_names_it(results):
    from analysis.trials import read_record
    from study.storage.stores import Stores

    (results / "mlflow.db").write_bytes(bytes(range(256)) * 12)
    with pytest.raises(ConfigError, match=f"{results / 'mlflow.db'}: not a readable MLflow store"):
        read_record(Stores(results, "fuzz"))


def test_a_garbage_optuna_journal_is_named(tmp_path):
    from study.storage.stores import Storage, Stores

    journal = tmp_path / "optuna.log"
    journal.write_bytes(b"\xde\xad\xbe\xef\n{not json}\n")
    stores = Stores(tmp_path, "fuzz", Storage(optuna=f"journal://{journal}"))
    with pytest.raises(ConfigError, match=f"^{journal}: not an Optuna journal"):
        stores.optuna_study()
    assert journal.read_bytes() == b"\xde\xad\xbe\xef\n{not json}\n"


def test_an_edited_study_yaml_is_named(results, capsys):
    (results / STUDY_FILE).write_text("name: fuzz\nbudget: {num_samples: 2\n")
    line = cli_error(capsys, "status", "fuzz", "--results-root", str(results.parent))
    assert f"{results / STUDY_FILE}: not valid YAML: line 3" in line


def test_a_missing_study_lists_the_studies_found(results, capsys):
    line = cli_error(capsys, "status", "fuz", "--results-root", str(results.parent))
    assert "no study 'fuz'" in line and "did you mean 'fuzz'?" in line and "studies in" in line


def test_a_yaml_date_is_no_number():
    with pytest.raises(ConfigError, match="'training.seed' must be an integer, got datetime.date"):
        from_dict({"training": {"seed": datetime.date(2020, 1, 1)}})


def test_a_key_given_twice_is_refused_naming_it_and_its_line(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text(yaml.safe_dump(_study(tmp_path), sort_keys=False) + "name: other\n")   # PyYAML keeps the last
    with pytest.raises(StudyError, match=r"twice.yaml: not valid YAML: line \d+, column 1: the key 'name' is "
                                         r"given twice"):
        read_study_file(path)
    config = tmp_path / "config.yaml"
    config.write_text("training:\n  learning_rate: 0.001\n  learning_rate: 0.01\n")
    with pytest.raises(ConfigError, match=r"line 3, column 3: the key 'learning_rate' is given twice"):
        load_config(config)


def test_cli_arguments_out_of_range_are_refused_before_anything_runs(capsys):
    for argv, field in ((["export", "x", "--top", "0"], "--top"), (["ui", "x", "--port", "70000"], "--port")):
        with pytest.raises(SystemExit) as exited:
            from study.cli import main
            main(argv)
        assert exited.value.code == 2 and f"argument {field}: expected" in capsys.readouterr().err


VERBS = ["run", "resume", "status", "sync", "ui", "report", "export", "train", "probe"]
OPTIONS = ["--top", "--port", "--format", "--scale", "--out", "--results", "--results-root", "--num-gpus",
           "--set", "--target", "--threads", "--resume", "--optuna", "--control", "--address", "-h"]
cli_words = st.one_of(st.sampled_from(OPTIONS), st.sampled_from(YAML_SPECIAL), st.text(max_size=8),
                      st.integers(-5, 70000).map(str), st.sampled_from([".", "..", "/", "results"]))


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(verb=st.sampled_from(VERBS), words=st.lists(cli_words, max_size=5))
@example(verb="run", words=["\n"])                 # found: the path's line break split the error line
@example(verb="run", words=["1e-4", "\n"])         # found: so did argparse's "unrecognized arguments"
def test_any_command_line_ends_in_help_or_one_error_line_and_writes_nothing(tmp_path, capsys, verb, words):
    from study.cli import main

    before = sorted(tmp_path.rglob("*"))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code = main([verb, *words])
    except SystemExit as exited:        # argparse's own errors and --help
        code = exited.code
    finally:
        os.chdir(cwd)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, (verb, words, err)
    if code == 0:
        assert "-h" in words or any(w.startswith("--h") for w in words), (verb, words, out)   # help only
        assert out.startswith("usage: loopstudy ")
    else:
        assert code == 2, (verb, words, code, err)
        assert re.match(r"loopstudy( [a-z]+)?: error: ", err.splitlines()[-1]), (verb, words, err)
        assert all(line.isprintable() for line in err.split("\n")), (verb, words, err)
    assert sorted(tmp_path.rglob("*")) == before, (verb, words)
