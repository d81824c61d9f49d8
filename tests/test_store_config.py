"""The store's keying and append-only behaviour; configuration from flags and YAML."""
from __future__ import annotations

from dataclasses import replace

import pytest

from cotbench.pipeline.config import build_config
from cotbench.pipeline.store import Store
from cotbench.records import GenParams, Request, Response

MSGS = ({"role": "user", "content": "What is 2+2?"},)


def req(**kw) -> Request:
    base = Request(model="m", model_revision="r1", backend="llamacpp", messages=MSGS, params=GenParams())
    return replace(base, **kw)


def test_key_changes_with_every_input():
    k = req().key
    assert req().key == k  # deterministic
    others = [
        req(model="m2"), req(model_revision="r2"), req(backend="openai"), req(sample_index=1),
        req(messages=({"role": "user", "content": "What is 2+3?"},)), req(prefill="The answer is"),
        req(params=GenParams(max_tokens=513)), req(params=GenParams(temperature=0.7)),
        req(params=GenParams(top_p=0.9)), req(params=GenParams(stop=("\n",))), req(params=GenParams(seed=1)),
    ]
    keys = {o.key for o in others}
    assert k not in keys and len(keys) == len(others)


def test_store_put_get_and_no_duplicates(tmp_path):
    s = Store(tmp_path / "s.sqlite")
    r = req()
    s.put(r, Response(text="4", tokens_in=5, tokens_out=1, finish_reason="stop"))
    s.put(r, Response(text="five", tokens_in=5, tokens_out=1, finish_reason="stop"))  # ignored: first write wins
    got = s.get_many([r.key, "missing"])
    assert list(got) == [r.key] and got[r.key].text == "4"
    assert s.count() == 1
    s.close()
    s2 = Store(tmp_path / "s.sqlite")  # persisted
    assert s2.get_many([r.key])[r.key].tokens_in == 5


def test_store_unopenable_gives_clear_error(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")  # a file where the store's folder should be (permission bits don't stop root)
    with pytest.raises(OSError, match="cannot open the store"):
        Store(blocker / "s.sqlite")
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OSError, match="cannot open the store"):
        Store(corrupt)


def test_yaml_and_flags_say_the_same(tmp_path):
    y = tmp_path / "run.yaml"
    y.write_text("model: gpt-4o-mini\ndatasets: [gsm8k, mmlu]\nsettings: zs_direct zs_cot\nlimit: 3\n")
    from_yaml = build_config(str(y), {})
    from_flags = build_config(None, {"model": "gpt-4o-mini", "datasets": ["gsm8k", "mmlu"],
                                     "settings": ["zs_direct", "zs_cot"], "limit": 3})
    assert from_yaml == from_flags and from_yaml.hash() == from_flags.hash()
    assert build_config(str(y), {"limit": 7}).generation.limit == 7  # flags win


@pytest.mark.parametrize("text,needle", [
    ("limit: [\n", "invalid YAML"),
    ("bogus_option: 1\n", "unknown option"),
    ("- a\n- b\n", "mapping"),
    ("limit: many\n", "limit"),
    ("settings: [zs_magic]\n", "unknown setting"),
    ("temperature: hot\n", "option 'temperature' must be a number, got 'hot'"),
    ('max_tokens_cot: "512"\n', "option 'max_tokens_cot' must be an integer or null, got '512'"),
    ("chance_credit: maybe\n", "option 'chance_credit' must be true or false"),
    ("seed: true\n", "option 'seed' must be an integer"),
    ("datasets: [gsm8k, 7]\n", "option 'datasets' must be a list of strings"),
    ("extra_body: [1, 2]\n", "option 'extra_body' must be a mapping or null"),
    ("price_in: cheap\n", "option 'price_in' must be a number or null"),
])
def test_bad_yaml_config_names_the_problem(tmp_path, text, needle):
    y = tmp_path / "bad.yaml"
    y.write_text(text)
    with pytest.raises(ValueError, match=needle) as e:
        build_config(str(y), {})
    assert "bad.yaml" in str(e.value)


def test_whole_numbers_for_float_options_make_the_same_request(tmp_path):
    """`temperature: 1` in YAML and `--temperature 1` on the command line are one configuration and one key."""
    y = tmp_path / "run.yaml"
    y.write_text("temperature: 1\ntop_p: 1\n")
    from_yaml, from_flag = build_config(str(y), {}), build_config(None, {"temperature": 1.0})
    t = from_yaml.generation.temperature
    assert t == 1.0 and isinstance(t, float)
    assert from_yaml.hash() == from_flag.hash()
