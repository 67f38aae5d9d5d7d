"""Every provider takes its key and base URL from the environment when they are not passed."""

from __future__ import annotations

import pytest

from pollkit import ConfigurationError, MagicHour, Pixy, Pixyz, Provider

PROVIDERS: list[tuple[type[Provider], str, str, str]] = [
    (MagicHour, "MAGIC_HOUR_API_KEY", "MAGIC_HOUR_BASE_URL", "https://api.magichour.ai"),
    (Pixy, "PIXY_API_KEY", "PIXY_BASE_URL", "https://media.pixy.ir"),
    (Pixyz, "PIXYZ_API_KEY", "PIXYZ_BASE_URL", "http://127.0.0.1:8001"),
]


@pytest.mark.parametrize(("cls", "key_var", "url_var", "default"), PROVIDERS)
def test_settings_come_from_the_environment_when_not_given(
    cls: type[Provider], key_var: str, url_var: str, default: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(key_var, "key-from-env")
    assert cls().base_url == default  # type: ignore[call-arg]
    monkeypatch.setenv(url_var, "http://127.0.0.1:9/")
    provider = cls()  # type: ignore[call-arg]
    assert provider.secrets == ("key-from-env",)
    assert provider.base_url == "http://127.0.0.1:9"
    passed = cls(api_key="passed", base_url="http://h")  # type: ignore[call-arg]
    assert (passed.secrets, passed.base_url) == (("passed",), "http://h")


@pytest.mark.parametrize(("cls", "key_var", "url_var", "default"), PROVIDERS)
def test_no_key_anywhere_names_the_variable(
    cls: type[Provider], key_var: str, url_var: str, default: str
) -> None:
    with pytest.raises(ConfigurationError, match=key_var):
        cls()  # type: ignore[call-arg]


def test_pixy_sso_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXY_SSO_URL", "https://sso.example")
    request = Pixy(api_key="k").startup_request()
    assert request is not None
    assert request.url == "https://sso.example/api_key/verify"
