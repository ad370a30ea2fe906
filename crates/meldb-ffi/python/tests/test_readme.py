"""The README's Python example, run as written (from the repository's
root, where its schema path points), printing what its comments say."""
import contextlib
import io
import os
import re

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))


def readme_python_block():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme[readme.index("### Python\n"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_and_prints_what_it_says(monkeypatch):
    code = readme_python_block()
    expected = re.search(r"print\(db\.get_json.*?#\s*(\{.*\})", code).group(1)
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md (Python example)", "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[0] == expected
    assert lines[1].startswith("refused:") and "already exists" in lines[1]
