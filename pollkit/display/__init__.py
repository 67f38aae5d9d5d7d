"""What people see: progress sinks (tqdm bars) and the notebook HTML of results.

Nothing below it (`pollkit.models`, `pollkit.errors`) imports it: it registers how a `Result`
renders in Jupyter with `pollkit.models.register_html` when it is loaded.
"""

from typing import Any

from pollkit import models


def _render_result(result: Any) -> str:
    # The notebook module (and its HTML helpers) loads when a Result is first shown.
    from pollkit.display._notebook import render_result

    return render_result(result)


models.register_html(models.Result, _render_result)
