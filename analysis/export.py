"""Best configs out of a study: our own YAML (reruns with `loopstudy train`), the reference
implementation's layout, and the mapping of a CPU-sized winner back to the full-size problem."""
from __future__ import annotations

from trainables.config import Config, ConfigError, load_config
from trainables.preset_files import CPU_SUFFIX, preset_names

# keys of the reference implementation's config (Leiay/looped_transformer configs/*.yaml)
REFERENCE_FAMILY = {"standard": "gpt2", "looped": "gpt2_loop"}
# what the reference hard-codes: a config with another value would silently train another task
REFERENCE_FIXED = {"training.loop_dilation": (None, 1), "training.precision": (None, "fp32"),
                   "task.depth": ("decision_tree", 4), "task.hidden": ("relu_2nn_regression", 100),
                   "task.noise_std": ("noisy_linear_regression", 0.1)}


def to_reference(config: Config, out_dir: str = "./results") -> dict:
    """The reference trainer's config for `config`; refuses what it cannot express."""
    tr, c, m = config.training, config.curriculum, config.model
    flat = config.flat()
    for key, (task, fixed) in REFERENCE_FIXED.items():
        if (task is None or config.task.name == task) and flat[key] != fixed:
            raise ConfigError(f"'{key}' is {flat[key]!r}: the reference implementation hard-codes "
                              f"{fixed!r}, so its config would train something else; "
                              "export --format loopstudy")
    schedule = lambda s: {"start": s.start, "end": s.end, "inc": s.inc, "interval": s.interval}  # noqa: E731
    training = {"seed": tr.seed, "task_name": config.task.name, "batch_size": tr.batch_size,
                "learning_rate": tr.learning_rate, "weight_decay": tr.weight_decay,
                "train_steps": tr.train_steps, "save_every_steps": tr.checkpoint_every,
                "keep_every_steps": -1,
                "curriculum": {"dims": schedule(c.dims), "points": schedule(c.points),
                               "loops": schedule(c.loops)},
                "n_loop_window": tr.n_loop_window}
    if config.task.name == "sparse_linear_regression":
        training["sparsity"] = config.task.sparsity
    return {"out_dir": out_dir, "gpu": {"cuda": True, "n_gpu": 0},
            "model": {"family": REFERENCE_FAMILY[m.family], "n_embd": m.n_embd, "n_layer": m.n_layer,
                      "n_head": m.n_head, "n_dims": m.n_dims, "n_positions": m.n_positions},
            "training": training,
            "wandb": {"project": "looped-study-export", "notes": "", "log_every_steps": tr.log_every},
            "debug_mode": False}


def full_size_preset(base: str) -> str:
    """The full-size preset a CPU-sized study ran a variant of."""
    if base.endswith(CPU_SUFFIX) and base[:-len(CPU_SUFFIX)] in preset_names():
        return base[:-len(CPU_SUFFIX)]
    raise ConfigError(f"study base '{base}' is not a CPU-sized preset variant (NAME{CPU_SUFFIX}); "
                      "--scale full maps such a study's winners to preset NAME")


def scale_full(base: str, sampled: dict[str, object]) -> Config:
    """The full-size preset with the searched values kept (problem size, steps from the preset)."""
    try:
        return load_config(full_size_preset(base), sampled)
    except ConfigError as exc:
        raise ConfigError(f"the searched values {sampled} do not fit the full-size preset "
                          f"'{full_size_preset(base)}': {exc}") from None
