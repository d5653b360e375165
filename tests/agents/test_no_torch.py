"""agents/ never imports torch or transformers, not even transitively: checked in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import importlib, json, pkgutil, sys
import feldspar.agents as agents
names = sorted(m.name for m in pkgutil.walk_packages(agents.__path__, "feldspar.agents."))
for name in names:
    importlib.import_module(name)
heavy = sorted(m for m in ("torch", "transformers", "tokenizers", "safetensors") if m in sys.modules)
print(json.dumps({"modules": names, "heavy": heavy}))
"""


def test_importing_every_agents_module_loads_no_torch():
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"feldspar.agents.chat_model", "feldspar.agents.scripted", "feldspar.agents.backend"} <= set(report["modules"])
    assert report["heavy"] == []
