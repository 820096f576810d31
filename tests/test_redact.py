"""Hiding an app's env values and build args in what Nephelios writes about a deployment."""

from __future__ import annotations

from pipeline.core.appmodel import BuildOptions
from pipeline.core.config import App
from pipeline.core.redact import MASK, hidden_values, redact

APP = App(
    name="site",
    repo="acme/site",
    env={"DB_PASSWORD": "pa$$word-42", "DEBUG": "1", "QUOTE": 'say "hi" now'},
    build=BuildOptions(args={"NPM_TOKEN": "npm-tok-9"}),
)


def test_env_values_and_build_args_are_hidden_in_every_form_the_stack_file_gives() -> None:
    hidden = hidden_values(APP, "ghp_token_value")
    text = 'failed: pa$$word-42 / pa$$$$word-42 / say \\"hi\\" now / npm-tok-9 / ghp_token_value'
    assert redact(text, hidden) == " / ".join([f"failed: {MASK}"] + [MASK] * 4)


def test_short_values_stay_so_that_messages_keep_their_numbers() -> None:
    assert redact("1/1 tasks running", hidden_values(APP)) == "1/1 tasks running"
