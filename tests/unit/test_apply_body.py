"""The body of a server-side apply (act/apply.py): JSON the API server's YAML reader accepts."""

from __future__ import annotations

import json
import re

import pytest

from visionfleet.act.apply import apply_patch_body


@pytest.mark.parametrize("text", ["plain", "caf\u00e9", "x\U0001F600y", "c1\x85control", "nul\x00", "tab\tnewline\n"])
def test_apply_patch_body_is_json_the_api_servers_yaml_reader_accepts(text):
    """Found by fuzzing specs: json.dumps' surrogate-pair escapes (and, with ensure_ascii=False, raw
    C1 controls) are refused by the API server's YAML reader. ASCII escapes stay, except for astral
    characters, which are sent raw."""
    body = apply_patch_body({"metadata": {"annotations": {"a": text}}})
    assert json.loads(body) == {"metadata": {"annotations": {"a": text}}}
    assert not re.search(rb"\\u[dD][89abAB]", body), body
    assert not any(0x7F <= ord(ch) <= 0x9F or ord(ch) < 0x20 for ch in body.decode()), body
