"""The Models page under AppTest with a tiny random-weight checkpoint, and a model that cannot load."""

from __future__ import annotations

from tests.ui.ui_helpers import models_page, page_test, texts


def test_models_page_shows_catalog_loaded_model_and_cache(tiny_checkpoint, make_services):
    from feldspar.model.catalog import CATALOG

    svc = make_services(None, model=str(tiny_checkpoint), device="cpu", dtype="float32")
    at = page_test(models_page, svc)
    at.run()
    assert "is not loaded yet" in texts(at)
    assert len(at.dataframe[-1].value) == len(CATALOG)
    at.button(key="load-model").click().run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["kind"] == "moe-hybrid" and metrics["device"] == "cpu" and metrics["dtype"] == "float32"
    assert int(metrics["context window"].replace(",", "")) == svc.engine().context_window
    assert "RANDOM WEIGHTS" in texts(at)
    assert ("Chosen for this machine: dtype float32 (as configured) · weights none (as configured) · "
            "compiled decode off (as configured) · fp32 prefill matmuls by") in texts(at)
    assert metrics["snapshots"] == "0" and metrics["hit rate"] == "–"
    from feldspar.model.engine import GenerationParams

    short = GenerationParams(max_new_tokens=2)
    svc.engine().generate("hello there", short)  # a first prompt: computed; the same again: resumed
    svc.engine().generate("hello there", short)
    at.run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["hit rate"] == "50%" and int(metrics["snapshots"]) >= 1
    assert "budget" in at.get("progress")[0].proto.text


def test_model_that_fails_to_load_is_a_message_on_the_page(make_services):
    svc = make_services(None, model="granite-4.0-no-such-model")
    at = page_test(models_page, svc)
    at.run()
    at.button(key="load-model").click().run()
    assert not at.exception
    errors = "\n".join(e.value for e in at.error)
    assert "could not be loaded" in errors and "granite-4.0-no-such-model" in errors
    assert at.dataframe  # the catalog is still there
