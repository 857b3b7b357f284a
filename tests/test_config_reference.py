"""docs/config_reference.md is what docs/gen_config_reference.py makes of configs/stiv.py now."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gen():
    spec = importlib.util.spec_from_file_location(
        "gen_config_reference", os.path.join(ROOT, "docs", "gen_config_reference.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_page_in_sync_with_configs():
    gen = _gen()
    page = open(gen.PAGE).read()
    assert page == gen.render(), (
        "docs/config_reference.md is stale: python docs/gen_config_reference.py"
    )


def test_every_field_listed_with_a_comment():
    gen = _gen()
    comments = gen.source_comments()
    fields = gen._flatten(gen._load_config_module().get_config("variant=S"))
    missing = [k for k in fields if not (comments.get(k) or comments.get(k.rsplit(".", 1)[0]))]
    assert not missing, f"config fields without a one-line comment in configs/stiv.py: {missing}"
    page = gen.render()
    assert all(f"| `{k}` |" in page for k in fields)
