"""Jupyter rendering: the HTML of a `Result` and of `Results`, and a real notebook run in a real
kernel (`nbclient` + `ipykernel`) that uses the blocking `Client` in its cells."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

from pollkit import ErrorInfo, JobState, Result, Results, Status
from pollkit.batch.journal._records import spec_key
from pollkit.display._notebook import MAX_EMBED_BYTES, MAX_THUMBNAILS, render_result, render_results

NOTEBOOK = Path(__file__).parent / "data" / "pollkit_in_a_cell.ipynb"
DATA_URI = re.compile(r'<img src="data:([a-z/]+);base64,([^"]*)"')
HOSTILE = '<script>alert("x")</script>'


def make_result(
    job_id: str = "job-1",
    status: Status = Status.COMPLETE,
    paths: tuple[Path, ...] = (),
    *,
    native_status: str | None = None,
    state_error: ErrorInfo | None = None,
    **kwargs: Any,
) -> Result:
    state = JobState(
        provider="magichour",
        job_id=job_id,
        status=status,
        native_status=status.value if native_status is None else native_status,
        observed_at=datetime(2025, 1, 1, tzinfo=timezone.utc),
        error=state_error,
        kind="image",
    )
    return Result(state=state, downloaded_paths=paths, **kwargs)


def embedded(html: str) -> list[tuple[str, bytes]]:
    """Every inline image: its media type and its decoded bytes (strict base64)."""
    return [
        (media_type, base64.b64decode(data, validate=True))
        for media_type, data in DATA_URI.findall(html)
    ]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_the_table_shows_digest_keys_short_with_the_full_key_in_a_tooltip() -> None:
    digest = spec_key({"prompt": "a lighthouse"})
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    chosen = "sha256:not-a-digest"
    html = render_results([make_result("a", key=digest), make_result("b", key=chosen)])
    cells = re.findall(r"<tr><td [^>]*>(.*?)</td>", html)
    assert cells == [
        f'<code title="{digest}">{digest[7:19]}</code>',
        f"<code>{chosen}</code>",  # a key the user chose stays whole
    ]
    assert html.count(digest[7:]) == 1  # only in the tooltip
    # The page of one result has the room: it keeps the whole key.
    assert f"<code>{digest}</code>" in render_result(make_result("a", key=digest))


def test_hostile_strings_are_escaped(tmp_path: Path) -> None:
    image = write(tmp_path / '"><script>x<.png', b"\x89PNG")
    result = make_result(
        job_id=HOSTILE,
        status=Status.ERROR,
        native_status='"><img src=x onerror=alert(1)>',
        state_error=ErrorInfo(code="<b>bold</b>", message=HOSTILE),
        paths=(image,),
        key="<i>key</i>",
    )
    failed_batch = make_result(job_id="ok", error=RuntimeError(HOSTILE))
    for html in (render_result(result), render_results([result, failed_batch])):
        assert "<script>" not in html
        assert "<b>bold</b>" not in html
        assert "<i>key</i>" not in html
        assert "onerror=alert(1)>" not in html
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
        assert "&lt;i&gt;key&lt;/i&gt;" in html
        assert "&quot;&gt;&lt;script&gt;x&lt;.png" in html  # the file name, escaped
    assert "&lt;b&gt;bold&lt;/b&gt;" in render_result(result)
    assert "RuntimeError: &lt;script&gt;" in render_results([failed_batch])


def test_images_are_embedded_as_data_uris_of_the_exact_file_bytes(tmp_path: Path) -> None:
    every_byte = bytes(range(256)) * 3
    files = {
        "a.png": ("image/png", every_byte),
        "b.jpg": ("image/jpeg", every_byte[::-1]),
        "c.JPEG": ("image/jpeg", b"\xff\xd8\xff"),
        "d.gif": ("image/gif", b"GIF89a"),
        "e.webp": ("image/webp", b"RIFF\x00\x00\x00\x00WEBP"),
    }
    paths = tuple(write(tmp_path / name, data) for name, (_, data) in files.items())
    video = write(tmp_path / "f.mp4", b"not an image")
    html = render_result(make_result(paths=(*paths, video)))

    assert embedded(html) == list(files.values())
    assert "f.mp4" in html  # listed among the files, not in the gallery
    assert "(768 B)" in html
    assert "max-width:" in html


def test_an_image_over_the_cap_is_named_not_embedded(tmp_path: Path) -> None:
    at_cap = write(tmp_path / "small.png", b"x" * 100)
    over = write(tmp_path / "big.png", b"x" * 101)
    html = render_result(make_result(paths=(at_cap, over)), max_embed_bytes=100)
    assert embedded(html) == [("image/png", b"x" * 100)]
    assert "big.png" in html
    assert "not embedded" in html

    huge = write(tmp_path / "huge.png", b"\0" * (MAX_EMBED_BYTES + 1))
    html = render_results([make_result(paths=(huge,))])
    assert embedded(html) == []
    assert "huge.png" in html
    assert "(2.0 MiB) not embedded" in html


def test_missing_files_are_reported_not_raised(tmp_path: Path) -> None:
    gone = tmp_path / "gone.png"
    result = make_result(paths=(gone, tmp_path / "gone.mp4"))
    html = render_result(result)
    assert embedded(html) == []
    assert "gone.png" in html
    assert "missing" in html
    assert "<td" in render_results([result])


def test_batch_table_has_one_row_per_job_and_counts_per_status(tmp_path: Path) -> None:
    image = write(tmp_path / "one.png", b"png bytes")
    statuses = [Status.COMPLETE] * 3 + [Status.ERROR, Status.CANCELED, Status.RENDERING]
    results = Results(
        make_result(job_id=f"job-{i}", status=s, paths=(image,) if s is Status.COMPLETE else ())
        for i, s in enumerate(statuses)
    )

    assert isinstance(results, list)
    assert results.counts() == {
        Status.RENDERING: 1,
        Status.COMPLETE: 3,
        Status.ERROR: 1,
        Status.CANCELED: 1,
    }
    html = results._repr_html_()
    assert "<b>6 jobs</b>: 1 rendering, 3 complete, 1 error, 1 canceled" in html
    body = html.split("<tbody>")[1].split("</tbody>")[0]
    assert body.count("<tr>") == 6
    for i in range(6):
        assert f"<code>job-{i}</code>" in body
    assert len(embedded(html)) == 3
    assert "<b>0 jobs</b>" in Results()._repr_html_()


def test_batch_gallery_caps_the_number_of_thumbnails(tmp_path: Path) -> None:
    results = [
        make_result(
            job_id=f"job-{i}",
            paths=(write(tmp_path / f"{i}-0.png", b"a"), write(tmp_path / f"{i}-1.png", b"b")),
        )
        for i in range(MAX_THUMBNAILS // 2 + 1)
    ]
    html = render_results(results)
    assert len(embedded(html)) == MAX_THUMBNAILS
    assert "… and 2 more images" in html

    html = render_results(results[:2], max_thumbnails=3)
    assert len(embedded(html)) == 3
    assert "… and 1 more image<" in html


def test_jupyter_hooks_delegate_to_the_renderers(tmp_path: Path) -> None:
    result = make_result(paths=(write(tmp_path / "a.png", b"a"),))
    assert result._repr_html_() == render_result(result)
    results = Results([result, result])
    assert results._repr_html_() == render_results(results)


def test_a_result_renders_once_display_is_loaded_and_models_never_import_it() -> None:
    # A fresh interpreter: in this one a client loaded pollkit.display long ago.
    program = """
import sys
from datetime import datetime, timezone
from pollkit.models import JobState, Result, Status
state = JobState("magichour", "p1", Status.COMPLETE, "complete", datetime.now(timezone.utc))
result = Result(state=state)
assert result._repr_html_() is None, "rendered before pollkit.display was loaded"
assert "pollkit.display" not in sys.modules
import pollkit.display
assert "<table" in result._repr_html_()
"""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


# A real kernel: the notebook starts a simulator, uses the blocking Client inside the kernel's
# running event loop, and displays a Result and a Results as the last expression of cells.


def outputs(cell: Any, kind: str) -> list[Any]:
    return [output for output in cell.outputs if output.output_type == kind]


def stdout_json(cell: Any) -> Any:
    (text,) = [o.text for o in outputs(cell, "stream") if o.name == "stdout"]
    return json.loads(text)


def html_of(cell: Any) -> str:
    (result,) = outputs(cell, "execute_result")
    html: str = result.data["text/html"]
    return html


def test_notebook_runs_in_a_real_kernel(tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    runner = NotebookClient(
        notebook,
        timeout=60,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    # The notebook saves into tempfile.mkdtemp(): point it under tmp_path.
    runner.execute(env={**os.environ, "TMPDIR": str(tmp_path)})
    assert runner.kc is None  # nbclient shut the kernel down

    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [outputs(cell, "error") for cell in cells] == [[]] * len(cells)
    setup, single, batch, summary = cells

    started_in = stdout_json(setup)
    assert started_in["loop_running"] is True  # the case where asyncio.run would refuse
    out = Path(started_in["out"])
    assert out.parent == tmp_path
    files = stdout_json(summary)
    assert files["counts"] == {"complete": 3}
    assert len(files["single"]) == 2
    assert len(files["batch"]) == 6
    for path, digest in {**files["single"], **files["batch"]}.items():
        assert Path(path).is_relative_to(out)
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest

    html = html_of(single)
    assert 'class="pollkit-result"' in html
    assert ">complete</b>" in html
    assert [data for _, data in embedded(html)] == [Path(p).read_bytes() for p in files["single"]]
    assert html.count("data:image/png;base64,") == 2

    html = html_of(batch)
    assert "<b>3 jobs</b>: 3 complete" in html
    for key in ("a lighthouse", "a paper boat", "a harbour at dawn"):
        assert f"<code>{key}</code>" in html
    assert html.count("data:image/png;base64,") == 6
    assert sorted(data for _, data in embedded(html)) == sorted(
        Path(p).read_bytes() for p in files["batch"]
    )
    bars = "".join(o.text for o in outputs(batch, "stream") if o.name == "stderr")
    assert "jobs: 100%" in bars  # tqdm.auto drew the jobs bar in the kernel
    assert "3/3" in bars
