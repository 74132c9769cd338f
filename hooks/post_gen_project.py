"""Shape the generated project to the chosen options, record the answers, say what's next.

Which files belong to which option value is data, in `conditional_files.toml`; this
script only applies it. Adding an option means adding its table there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

MANIFEST = Path("conditional_files.toml")
ANSWERS_FILE = Path(".cookiecutter.json")
NOT_ANSWERS = frozenset({"__prompts__", "__answers_checked"})


def remove_disabled(answers: dict[str, object]) -> list[str]:
    """Delete the files and folders that the manifest ties to the chosen values."""
    manifest = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))
    removed = []
    for option, by_value in manifest.items():
        for path in by_value.get(str(answers[option]), {}).get("remove", []):
            target = Path(path)
            if any(Path(gone) in (target, *target.parents) for gone in removed):
                continue  # listed under two chosen values (e.g. broker=none and metrics=none)
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            elif any(path == done or path.startswith(done + "/") for done in removed):
                continue  # a file two options need, gone with the first
            else:
                sys.exit(f"ERROR: conditional_files.toml names {path!r}, which the template lacks")
            removed.append(path)
    # One module name for several implementations (e.g. the broker): the chosen one is
    # renamed into place after the others were removed.
    for option, by_value in manifest.items():
        for source, destination in by_value.get(str(answers[option]), {}).get("rename", {}).items():
            Path(source).rename(destination)
    MANIFEST.unlink()
    return removed


def record_answers(answers: dict[str, object]) -> None:
    """Keep the answers in replay format: `cookiecutter --replay-file .cookiecutter.json`.

    A replay renders only what the file lacks, and without the recorded answers in
    reach, so values derived from answers (``__env_prefix``) are recorded too. Keys
    with one underscore (``_extensions``, ``_template``, the output and checkout paths)
    belong to the template or this machine, ``__prompts__`` to the questions and
    ``__answers_checked`` to the checks: the template in use supplies those.
    """
    public = {
        k: v
        for k, v in answers.items()
        if not k.startswith("_") or (k.startswith("__") and k not in NOT_ANSWERS)
    }
    ANSWERS_FILE.write_text(
        json.dumps({"cookiecutter": public}, indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )


def generate_ops_pack() -> None:
    """Write the Prometheus rules, dashboard and runbook for the options that remain.

    They are generated from ops/slo.toml and the fragments of the options kept (the
    project's `make ops` does the same), so every bake starts with them committed.
    """
    generator = Path("ops/generate.py")
    if generator.exists():  # metrics=none has no ops pack
        subprocess.run([sys.executable, str(generator)], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    answers = json.loads(ANSWERS_FILE.read_text(encoding="utf-8"))
    remove_disabled(answers)
    generate_ops_pack()
    record_answers(answers)
    print(
        f"\nCreated {answers['project_slug']} in {Path.cwd()}\n\n"
        "Next steps:\n"
        f"  cd {answers['project_slug']}\n"
        "  make install   # uv sync: .venv with runtime and dev dependencies, writes uv.lock\n"
        "  make dev       # the service and its dependencies, embedded where no URL is set\n"
        "  make test      # the test suite against a real PostgreSQL\n"
    )


if __name__ == "__main__":
    main()
