"""The code blocks a docs page shows for "your own training loop", for the tests that compile and run them."""
from __future__ import annotations

import re
from pathlib import Path


def own_loop_blocks(page: Path) -> dict[str, str]:
    """The ```python blocks of `page` marked `<!-- own-loop: NAME -->` on the line above, by NAME."""
    return dict(re.findall(r"^<!-- own-loop: ([\w ]+) -->\n```python\n(.*?)^```$", page.read_text(), re.S | re.M))
