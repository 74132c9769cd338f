"""Shape the generated project to the chosen options, record the answers, say what's next.

Which files belong to which option value is data, in `conditional_files.toml`; this
script only applies it. Adding an option means adding its table there.
"""

from __future__ import annotations

import json
import shutil
import sys
import tomllib
from pathlib import Path

MANIFEST = Path("conditional_files.toml")
ANSWERS_FILE = Path(".cookiecutter.json")


def remove_disabled(answers: dict[str, object]) -> list[str]:
    """Delete the files and folders that the manifest ties to the chosen values."""
    manifest = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))
    removed = []
    for option, by_value in manifest.items():
        for path in by_value.get(str(answers[option]), {}).get("remove", []):
            target = Path(path)
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            else:
                sys.exit(f"ERROR: conditional_files.toml names {path!r}, which the template lacks")
            removed.append(path)
    MANIFEST.unlink()
    return removed


def record_answers(answers: dict[str, object]) -> None:
    """Keep the answers in replay format: `cookiecutter --replay-file .cookiecutter.json`."""
    public = {k: v for k, v in answers.items() if not k.startswith("_")}
    ANSWERS_FILE.write_text(
        json.dumps({"cookiecutter": public}, indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )


def main() -> None:
    answers = json.loads(ANSWERS_FILE.read_text(encoding="utf-8"))
    remove_disabled(answers)
    record_answers(answers)
    print(
        f"\nCreated {answers['project_slug']} in {Path.cwd()}\n\n"
        "Next steps:\n"
        f"  cd {answers['project_slug']}\n"
        "  make install   # uv sync: .venv with runtime and dev dependencies, writes uv.lock\n"
        "  make dev       # serve with reload; starts an embedded PostgreSQL if no DSN is set\n"
        "  make test      # the test suite against a real PostgreSQL\n"
    )


if __name__ == "__main__":
    main()
