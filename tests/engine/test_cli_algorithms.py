"""Every algorithm trains from the CLI on the demo set with the bundled model; config keys apply per algorithm."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from engine import ALGORITHMS, ConfigError, RunStore, validate_config
from engine.cli import main
from engine.config import ALGORITHM_KEYS


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


EXTRA = {"reptile": ["outer_lr=0.5"], "lora_maml": ["inner_steps=1", "meta_batch_size=1", "lora_r=2"]}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_trains_on_the_demo_set(tmp_path, capsys, algorithm):
    db = tmp_path / "a.db"
    sets = [f"algorithm={algorithm}", "meta_iterations=3", "val_interval=3", "val_episodes=3", "device=cpu",
            "n_way=3", "k_shot=2", "q_query=2", *EXTRA.get(algorithm, [])]
    args = ["train", "--db", str(db), "--json"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    res = last_json(capsys.readouterr().out)
    assert res["status"] == "completed" and res["iterations"] == 3 and res["stop_reason"] == "max_iterations"
    final = res["final"]
    assert math.isfinite(final["outer_loss"]) and final["outer_loss"] > 0
    assert final["val_accuracy"] >= 1 / 3 and final["val_accuracy"] <= 1.0  # the bundled encoder separates demo intents well above chance
    if algorithm != "protonet":
        assert final["inner_loss_post"] < final["inner_loss_pre"]
    row = RunStore(db).get_run(res["run_id"])
    assert row["algorithm"] == algorithm and row["config"]["algorithm"] == algorithm


def test_algorithm_specific_keys_only_where_they_apply():
    for key, users in ALGORITHM_KEYS.items():
        default = validate_config({}).model_dump()[key]
        value = {bool: True, int: 2, float: 0.25, str: "query"}[type(default)]
        for algorithm in ALGORITHMS:
            data = {"algorithm": algorithm, key: value}
            if algorithm in users:
                assert getattr(validate_config(data), key) == value, (key, algorithm)
            else:
                with pytest.raises(ConfigError) as err:
                    validate_config(data)
                assert err.value.field == key, (key, algorithm, str(err.value))
    assert validate_config({"algorithm": "lora_maml", "lora_target_modules": ["query", "value"]}) \
        .lora_target_modules == "query,value"


def test_config_errors_are_one_line_with_exit_2(tmp_path):
    for args, needle in ((["--set", "algorithm=maml", "--set", "lora_r=4"], "lora_r"),
                         (["--set", "algorithm=anil", "--set", "adapt_layers=1"], "adapt_layers"),
                         (["--set", "adapt_layers=1", "--set", "train_layers=1", "--set",
                           "gradient_checkpointing=true"], "gradient_checkpointing"),
                         (["--set", "dataset=sinusoid", "--set", "algorithm=protonet"], "algorithm"),
                         (["--set", "dataset=hf:nobody/no-such-set"], "dataset")):
        p = subprocess.run([sys.executable, "-m", "engine.cli", "train", "--db", str(tmp_path / "x.db"), *args],
                           capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        lines = [ln for ln in p.stderr.splitlines() if ln.startswith("metastudio: error")]
        assert p.returncode == 2 and len(lines) == 1 and needle in lines[0], (args, p.stderr)
        assert "Traceback" not in p.stderr
