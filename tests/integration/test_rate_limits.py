"""A token that writes too fast is told to wait (429 with Retry-After); other tokens are not held back."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from services.survey.app import build_app
from shared.http import TooManyAnswer
from shared.settings import Settings, TokenSpec
from tests.conftest import TOKENS

pytestmark = [pytest.mark.integration, pytest.mark.fault]


async def test_writes_beyond_a_token_s_burst_get_429_and_other_tokens_write_on(
    make_settings: Callable[..., Settings],
) -> None:
    other = TokenSpec(token="test-survey-partner-" + "p" * 20, scopes=["survey:write"])
    settings = make_settings(write_burst=2, write_rate=0.2, tokens={**TOKENS, "partner": other})
    app = build_app(settings)
    survey = {"Authorization": f"Bearer {TOKENS['survey'].token}"}
    partner = {"Authorization": f"Bearer {other.token}"}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://survey") as client:
            body = {"profile": {"region": "central"}}
            statuses = [(await client.post("/responses", json=body, headers=survey)).status_code for _ in range(3)]
            assert statuses == [201, 201, 429]
            refused = await client.post("/responses", json=body, headers=survey)
            assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
            TooManyAnswer.model_validate(refused.json())
            assert (await client.post("/responses", json=body, headers=partner)).status_code == 201
