"""Config loading: unknown keys and wrong types are refused with file, key and type named."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from kalshiflow.config import DEFAULT_CONFIG, AppConfig, ConfigError, load_config, parse_set, to_dict


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_default_config_loads_and_is_frozen() -> None:
    config = load_config(DEFAULT_CONFIG, environ={})
    assert config.exchange.environment == "simulator"
    assert config.exchange.allow_production_orders is False
    with pytest.raises(AttributeError):
        config.simulator.markets = 3  # type: ignore[misc]


def test_every_default_toml_key_matches_struct_defaults_or_is_valid() -> None:
    # The shipped file must be accepted as-is, and every config file in configs/ too.
    for path in DEFAULT_CONFIG.parent.glob("*.toml"):
        # generator.toml and train.toml are read by their own loaders, with their own schemas.
        if path.name.startswith(("train", "generator")):
            continue
        load_config(path, environ={})


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[simulator]\nmarket = 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert str(path) in str(err.value)
    assert "simulator.market" in str(err.value)


def test_unknown_section_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "[simulater]\nmarkets = 3\n")
    with pytest.raises(ConfigError, match="unknown key `simulater`"):
        load_config(path, environ={})


def test_wrong_type_names_file_key_and_expected_type(tmp_path: Path) -> None:
    path = write(tmp_path, '[simulator]\nmarkets = "many"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    text = str(err.value)
    assert str(path) in text and "simulator.markets" in text and "int" in text


def test_bad_literal_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[exchange]\nenvironment = "prod"\n')
    with pytest.raises(ConfigError, match="exchange.environment"):
        load_config(path, environ={})


def test_env_overrides_file_and_cli_overrides_env(tmp_path: Path) -> None:
    path = write(tmp_path, "[simulator]\nmarkets = 3\n")
    env = {"KALSHIFLOW_SIMULATOR_MARKETS": "7", "KALSHIFLOW_SIMULATOR_STARTING_BALANCE_DOLLARS": "500.00"}
    config = load_config(path, environ=env)
    assert config.simulator.markets == 7
    assert config.simulator.starting_balance_dollars == "500.00"  # str keys keep the raw text
    section, key, value = parse_set("simulator.markets=11")
    config = load_config(path, environ=env, overrides={(section, key): value})
    assert config.simulator.markets == 11


def test_env_list_and_bool_values(tmp_path: Path) -> None:
    env = {"KALSHIFLOW_COLLECTOR_TICKERS": "A-1,B-2", "KALSHIFLOW_EXCHANGE_ALLOW_PRODUCTION_ORDERS": "true"}
    config = load_config(write(tmp_path, ""), environ=env)
    assert config.collector.tickers == ["A-1", "B-2"]
    assert config.exchange.allow_production_orders is True


def test_env_wrong_type_names_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KALSHIFLOW_SIMULATOR_MARKETS.*int"):
        load_config(write(tmp_path, ""), environ={"KALSHIFLOW_SIMULATOR_MARKETS": "lots"})


def test_unknown_env_variable_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KALSHIFLOW_SIMULATOR_MARKET\\b"):
        load_config(write(tmp_path, ""), environ={"KALSHIFLOW_SIMULATOR_MARKET": "3"})


def test_cli_set_syntax_errors() -> None:
    with pytest.raises(ConfigError):
        parse_set("markets=3")
    with pytest.raises(ConfigError):
        parse_set("simulator.markets")


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", environ={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[x\n"), environ={})


def test_no_secret_fields_in_config() -> None:
    # Secrets only come from the environment: the config schema has no place for them, so a
    # committed config that tries to hold one is refused as an unknown key.
    names = str(msgspec.json.schema(AppConfig)).lower()
    for word in ("password", "private_key", "api_key", "database_url", "secret"):
        assert word not in names
    assert "database_url" not in str(to_dict(load_config(DEFAULT_CONFIG, environ={}))).lower()


def test_configuration_reference_is_current() -> None:
    from kalshiflow.config import PROJECT_ROOT, reference_markdown

    doc = PROJECT_ROOT / "docs" / "configuration.md"
    regenerate = "regenerate: python -m kalshiflow.config --reference"
    assert doc.read_text() == reference_markdown() + "\n", regenerate
