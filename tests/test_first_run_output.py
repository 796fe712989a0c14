"""What a new user sees: the demo pipeline's CLI path prints our tables and bars, and nothing else —
no library warning, no raw Trainer dict, no error line (`COTFACTORY_DEBUG=1` brings warnings back)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_demo_pipeline_stderr_holds_only_our_output(smollm2: str, tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "pipelines" / "quickstart.yaml").read_text())
    config["out"] = str(tmp_path / "run")
    config["generate"].update(limit=24)
    config["generate"]["input"] = str(ROOT / config["generate"]["input"])
    config["generate"]["replay"] = str(ROOT / config["generate"]["replay"])
    config["students"][0].update(max_steps=2, logging_steps=1)
    config["eval"].update(limit=4, input=str(ROOT / config["eval"]["input"]))
    pipeline = tmp_path / "tiny.yaml"
    pipeline.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "COTFACTORY_DEBUG"}
    command = [sys.executable, "-m", "cotfactory", "run", str(pipeline)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    shown = done.stdout + done.stderr
    for unwanted in ("Warning", "warnings.warn", "{'loss'", "'grad_norm'", "ERROR", "Traceback", "it/s]"):
        assert unwanted not in shown, f"{unwanted!r} in the demo's output:\n{shown}"
    assert "trained label-only" in shown and "label-only: accuracy" in shown
