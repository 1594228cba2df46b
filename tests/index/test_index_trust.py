"""Trust never comes from a file: an index folder whose manifest says
``model_ref.trust_model_code: true`` and points at a pickle does not make `shiwu search` unpickle
it; only --trust-model-code on the command line (trust_model_code=True in Python) does."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from support.photos import DATA

from shiwu.index import Manifest, create_index, open_index
from shiwu.indexing import IndexingError, search
from shiwu.models.spec import UntrustedModel

SHIWU = str(Path(sys.executable).parent / "shiwu")


class _Payload:
    """Unpickling this creates the marker file: proof that code from the file ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def planted(tmp_path):
    """An index folder as an attacker ships it: a pickle model beside it, a manifest trusting it."""
    marker = tmp_path / "code-ran"
    model = tmp_path / "model.pth"
    model.write_bytes(pickle.dumps(_Payload(str(marker))))
    location = tmp_path / "index"
    manifest = Manifest(model=str(model), dimension=4, model_ref={"name": str(model)})
    create_index(location, manifest).close()
    # the manifest as written by hand: trust, and the table identity still matching
    path = location / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["model_ref"]["trust_model_code"] = True
    path.write_text(json.dumps(data), encoding="utf-8")
    return location, marker


@pytest.mark.slow
def test_search_does_not_unpickle_the_model_a_manifest_trusts(planted):
    location, marker = planted
    run = subprocess.run([SHIWU, "search", str(DATA / "coffee.jpg"), "--index", str(location)],
                         capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert not marker.exists(), "code from the index's model file ran"
    assert run.returncode == 2, run.stderr
    assert "--trust-model-code" in run.stderr and "Traceback" not in run.stderr
    with pytest.raises(UntrustedModel):
        search(str(location), images=[str(DATA / "coffee.jpg")])
    assert not marker.exists()


def test_trust_is_not_written_into_a_manifest(tmp_path):
    manifest = Manifest(model="m", dimension=4, model_ref={"name": "m.pth", "trust_model_code": True})
    with create_index(tmp_path / "index", manifest):
        pass
    written = json.loads((tmp_path / "index" / "manifest.json").read_text(encoding="utf-8"))
    assert "trust_model_code" not in written["model_ref"]
    with open_index(tmp_path / "index") as index:
        assert "trust_model_code" not in index.manifest.model_ref


def test_the_command_line_flag_is_what_grants_trust(planted):
    location, marker = planted
    # with the flag the person at the keyboard takes the responsibility: the pickle is loaded
    # (and, not being a model, then refused), so the flag reaches the model loader
    with pytest.raises((IndexingError, Exception)):
        search(str(location), images=[str(DATA / "coffee.jpg")], trust_model_code=True)
    assert marker.exists()
    os.unlink(marker)
