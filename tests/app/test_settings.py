"""Settings precedence: defaults < TOML file < FELDSPAR_* env < explicit overrides (CLI flags)."""

from __future__ import annotations

import pytest

from feldspar.settings import Settings, SettingsError, default_home, load_settings


def test_defaults_use_the_isolated_home(feldspar_home):
    settings = load_settings()
    assert settings.home == feldspar_home
    assert settings.chroma_dir.parent == feldspar_home and settings.packs_dir.parent == feldspar_home


def test_default_home_is_a_user_data_dir_when_nothing_is_set(monkeypatch):
    monkeypatch.delenv("FELDSPAR_HOME")
    assert Settings().home == default_home()
    assert "feldspar" in str(default_home()).lower()


def test_toml_file_in_home_is_read(feldspar_home):
    feldspar_home.mkdir(parents=True)
    (feldspar_home / "config.toml").write_text('model = "granite-4.0-h-350m"\nprefill_chunk = 512\n')
    settings = load_settings()
    assert (settings.model, settings.prefill_chunk) == ("granite-4.0-h-350m", 512)


def test_env_beats_toml_and_flags_beat_env(feldspar_home, monkeypatch):
    feldspar_home.mkdir(parents=True)
    (feldspar_home / "config.toml").write_text('model = "from-toml"\ntemperature = 0.3\n')
    monkeypatch.setenv("FELDSPAR_MODEL", "from-env")
    settings = load_settings()
    assert settings.model == "from-env" and settings.temperature == 0.3
    assert load_settings(model="from-flag").model == "from-flag"


def test_unset_flags_fall_through(monkeypatch):
    monkeypatch.setenv("FELDSPAR_MAX_NEW_TOKENS", "77")
    assert load_settings(max_new_tokens=None).max_new_tokens == 77


def test_home_flag_overrides_env_and_reads_that_homes_config(tmp_path):
    other = tmp_path / "other-home"
    other.mkdir()
    (other / "config.toml").write_text('collection = "papers"\n')
    settings = load_settings(home=other)
    assert settings.home == other and settings.collection == "papers"


def test_explicit_config_file_via_env(tmp_path, monkeypatch):
    config = tmp_path / "elsewhere.toml"
    config.write_text("snapshot_interval = 1024\n")
    monkeypatch.setenv("FELDSPAR_CONFIG", str(config))
    assert load_settings().snapshot_interval == 1024


def test_invalid_value_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("FELDSPAR_PREFILL_CHUNK", "-5")
    with pytest.raises(SettingsError, match="prefill_chunk"):
        load_settings()


def test_broken_toml_is_one_clear_error(feldspar_home):
    feldspar_home.mkdir(parents=True)
    (feldspar_home / "config.toml").write_text("model = [unclosed\n")
    with pytest.raises(SettingsError, match="config"):
        load_settings()
