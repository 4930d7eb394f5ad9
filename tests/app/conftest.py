"""Fixtures for the app tests: flower-init's run-config renderer, the app's package, and
real federations on loopback (tests/app/harness.py)."""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import harness as H  # noqa: E402

sys.path.insert(0, str(H.APP_DIR))


@pytest.fixture(scope="session")
def schema_file(tmp_path_factory) -> Path:
    """The app's pyproject.toml as JSON, the way the image build puts it in the manifest."""
    path = tmp_path_factory.mktemp("schema") / "pyproject.json"
    with (H.APP_DIR / "pyproject.toml").open("rb") as f:
        path.write_text(json.dumps(tomllib.load(f)))
    return path


@pytest.fixture(scope="session")
def runconfig_bin() -> Path:
    """flower-init's renderer (examples/runconfig.rs): given by the make target, else built."""
    given = os.environ.get("APP_TEST_RUNCONFIG")
    if given:
        return Path(given)
    subprocess.run(["cargo", "build", "--quiet", "--example", "runconfig"], cwd=H.ROOT, check=True)
    return H.ROOT / "target" / "debug" / "examples" / "runconfig"


class Renderer:
    def __init__(self, binary: Path, schema: Path):
        self.binary, self.schema = binary, schema

    def __call__(self, values: dict) -> str:
        """The --run-config argument flower-init renders and validates for `values`."""
        p = self.run(values)
        if p.returncode != 0:
            raise AssertionError(f"flower-init refused {values}: {p.stderr}")
        return p.stdout.rstrip("\n")

    def run(self, values: dict) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.binary), str(self.schema)], input=json.dumps(values),
                              capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="session")
def render(runconfig_bin, schema_file) -> Renderer:
    return Renderer(runconfig_bin, schema_file)


class Parser:
    """flower-init's parsers (runconfig --parse) fed with what the real flwr printed."""

    def __init__(self, binary: Path):
        self.binary = binary

    def __call__(self, kind: str, text: str):
        p = subprocess.run([str(self.binary), "--parse", kind], input=text, capture_output=True,
                           text=True, timeout=60)
        if p.returncode != 0:
            raise AssertionError(f"flower-init cannot parse this {kind} output: {p.stderr}\n{text}")
        return json.loads(p.stdout)


@pytest.fixture(scope="session")
def parse(runconfig_bin) -> Parser:
    return Parser(runconfig_bin)
