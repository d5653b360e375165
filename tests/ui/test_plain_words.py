"""No developer-speak in the web app (issue 23, item 10): lower layers state facts and carry a
remedy key, never a CLI flag; the CLI words the fix with its flags, the web app with its pages,
buttons and settings; the trace's counts have thousands separators."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.app.cli_runner import assert_one_error_line, run_cli
from tests.ui.ui_helpers import models_page, page_test

ROOT = Path(__file__).resolve().parents[2]
CLI_WORDS = re.compile(r"(?<![\w-])--[a-z][a-z-]+|`feldspar [a-z]")
# every layer but the CLI, the server it starts and the terminal's remedy table; setting descriptions
# (app/settings.py) document the settings; the README written into a random checkpoint names its command
NOT_SCANNED = {"app/errors.py", "app/settings.py", "model/checkpoint_random.py"}
SCANNED = ("model", "retrieval", "agents", "app", "ui")


def _strings(path: Path):
    """(line, text) of every string literal in ``path`` but docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs]


def test_no_message_outside_the_cli_words_a_cli_flag_or_command():
    found = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if name in NOT_SCANNED or name.startswith(("app/cli/", "app/serve/")):
                continue
            found += [f"{name}:{line}: {text[:80]!r}" for line, text in _strings(path) if CLI_WORDS.search(text)]
    assert not found, "\n".join(found)


def test_every_remedy_key_a_layer_raises_has_words_for_the_terminal_and_for_the_browser():
    from feldspar.errors import REMEDIES
    from feldspar.webui.remedies import WEB_REMEDIES

    raised = set()
    for top in ("model", "retrieval", "agents", "app"):
        for path in (ROOT / top).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.keyword) and node.arg == "fix" and isinstance(node.value, ast.Constant) \
                        and isinstance(node.value.value, str) and re.fullmatch(r"[a-z_]+", node.value.value):
                    raised.add(node.value.value)
    raised.add("home")  # HomeNotWritable's key is passed positionally
    assert raised <= set(REMEDIES), raised - set(REMEDIES)
    assert set(WEB_REMEDIES) == set(REMEDIES)
    assert not [words for words in WEB_REMEDIES.values() if CLI_WORDS.search(words)]


def test_a_server_overflow_states_the_fact_and_each_front_end_words_the_fix():
    from feldspar.agents.remote_errors import overflow_advice
    from feldspar.errors import user_message
    from feldspar.model.errors import ContextOverflowError
    from feldspar.webui.remedies import web_message

    error = overflow_advice(ContextOverflowError("the Granite server refused the prompt as too long"), 4)
    assert "shared by 4 slots" in str(error) and not CLI_WORDS.search(str(error))
    assert "fewer --workers" in user_message(error) and "bigger -c" in user_message(error)
    assert "context window" in web_message(error) and not CLI_WORDS.search(web_message(error))


def test_a_model_missing_from_the_cache_is_worded_for_the_browser_and_for_the_terminal(make_services, tmp_path,
                                                                                       capsys, monkeypatch):
    svc = make_services(None, model="granite-4.0-h-350m")  # not in the (offline) test cache
    at = page_test(models_page, svc)
    at.run()
    at.button(key="load-model").click().run()
    assert not at.exception, at.exception
    shown = "\n".join(e.value for e in at.error) + "\n".join(c.value for c in at.caption)
    assert "not in the local Hugging Face cache" in shown and "config.toml" in shown, shown
    assert not CLI_WORDS.search(shown), shown  # no "--model /path/to/…" in the browser

    line = assert_one_error_line(run_cli(["generate", "hi", "--model", "granite-4.0-h-350m", "--home",
                                          str(tmp_path / "home")], capsys, monkeypatch), 1, "Hugging Face cache")
    assert "--model /path/to/granite-4.0-h-350m" in line  # the CLI still gives its flag


def test_trace_counts_have_thousands_separators():
    from streamlit.testing.v1 import AppTest

    def page():
        from feldspar.ui.views_trace import render_trace

        render_trace([{"node": "model", "duration_s": 1.5, "prompt_tokens": 17356, "reused_tokens": 1058,
                       "computed_tokens": 16298, "ttft_s": 0.4, "finish_reason": "stop", "raw_text": "x",
                       "repairs": ["closed a bracket"]},
                      {"node": "summarise", "messages": 6, "tokens_before": 34496, "tokens_after": 2048}])

    at = AppTest.from_function(page).run()
    assert not at.exception, at.exception
    heads = " | ".join(m.value for m in at.markdown)
    assert "prompt 17,356 (reused 1,058, computed 16,298)" in heads, heads
    assert "repairs: closed a bracket" in heads and "['" not in heads, heads
    assert "prompt 34,496 -> 2,048 tokens" in heads, heads
