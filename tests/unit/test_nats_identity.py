"""How a service connects to NATS: its own inbox prefix, its NKey seed and TLS, and a clear
one-line refusal for a seed or CA file that is missing, not what it says, or damaged."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import pytest
import trustme

from services.cli.deploy import new_nkey
from shared.bus import connect_options, inbox_prefix
from shared.errors import ConfigError, EngageError
from shared.settings import Settings


def test_each_identity_has_its_own_inbox_and_nothing_else_without_files() -> None:
    assert connect_options(Settings(), "survey") == {"inbox_prefix": "_INBOX_survey"}
    assert inbox_prefix("intake") != inbox_prefix("survey")


def test_a_new_seed_is_private_never_overwritten_and_connects(tmp_path: Path) -> None:
    seed = tmp_path / "intake.nk"
    public = new_nkey(seed)
    assert public.startswith("U") and len(public) == 56
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600
    with pytest.raises(EngageError, match="already exists; a seed is never overwritten"):
        new_nkey(seed)
    options = connect_options(Settings(nats_nkey_seed_file=seed), "intake")
    assert options["nkeys_seed_str"] == seed.read_text().strip()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot be read"),
        ("not a seed", "not a user NKey seed"),
        ("SAAB" + "A" * 54, "not a user NKey seed"),  # an account seed's shape, not a user's
    ],
)
def test_a_missing_or_foreign_seed_is_refused_naming_the_setting(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    seed = tmp_path / "seed.nk"
    if content is not None:
        seed.write_text(content)
    with pytest.raises(ConfigError, match=rf"^ENGAGE_NATS_NKEY_SEED_FILE='.*seed.nk': {reason}"):
        connect_options(Settings(nats_nkey_seed_file=seed), "intake")


def test_a_seed_with_one_character_changed_is_refused(tmp_path: Path) -> None:
    seed = tmp_path / "intake.nk"
    new_nkey(seed)
    text = seed.read_text().strip()
    for at in (10, 30, len(text) - 5):
        changed = text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]
        damaged = tmp_path / f"damaged-{at}.nk"
        damaged.write_text(changed)
        with pytest.raises(ConfigError, match="or a damaged one"):
            connect_options(Settings(nats_nkey_seed_file=damaged), "intake")


def test_tls_trusts_only_the_given_ca_and_a_bad_ca_file_is_refused(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    context = connect_options(Settings(nats_ca_file=ca), "analytics")["tls"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert len(context.get_ca_certs()) == 1
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"^ENGAGE_NATS_CA_FILE='.*junk.pem': not a readable CA certificate"):
        connect_options(Settings(nats_ca_file=junk), "analytics")
