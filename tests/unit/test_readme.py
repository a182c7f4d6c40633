"""The README's configuration table is the config module's, row for row."""

from api.settings import describe
from tests.support import REPO


def test_readme_lists_every_setting_with_its_default():
    readme = (REPO / "README.md").read_text()
    for name, default, why in describe():
        assert f"| `{name}` | `{default}` | {why} |" in readme, name
