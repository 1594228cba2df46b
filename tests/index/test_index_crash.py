"""kill -9 in the middle of an indexing run, then resume: every file exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

from support.index_helpers import make_files, random_vectors, rows_for
from shiwu.index import Manifest, create_index, open_index
import pytest

DIM = 32
FILES = 10_000  # batches take ~1 ms: enough of them that the kill lands mid-run
BATCH = 10

WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from support.index_helpers import random_vectors, rows_for
    from shiwu.index import open_index

    paths = sys.argv[2:]
    vectors = random_vectors(len(paths), {dim})
    with open_index(sys.argv[1]) as index:
        todo = index.rows_needing(paths)
        for start in range(0, len(todo), {batch}):
            index.upsert(rows_for(todo[start:start + {batch}]),
                         vectors[start:start + {batch}])
            print(start // {batch}, flush=True)
            index.search(vectors[start], k=5)  # the engine is loaded and followed as it grows
""")


@pytest.mark.slow
def test_kill_during_upserts_then_resume(tmp_path):
    paths = [str(p) for p in make_files(tmp_path / "photos", FILES)]
    create_index(tmp_path / "index", Manifest(model="test-model", dimension=DIM)).close()
    script = WRITER.format(tests=os.path.dirname(os.path.dirname(__file__)), dim=DIM, batch=BATCH)
    writer = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "index"), *paths],
                              stdout=subprocess.PIPE, text=True)
    seen = 0
    deadline = time.monotonic() + 120
    while seen < 30 and time.monotonic() < deadline:  # well into the run, far from its end
        line = writer.stdout.readline()
        assert line, "the writer ended before it could be killed"
        seen += 1
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert writer.returncode == -signal.SIGKILL

    with open_index(tmp_path / "index") as index:
        stored = sorted(row.path for row in index.all_rows())
        assert len(stored) == len(set(stored)) >= 30 * BATCH
        assert len(stored) < FILES, "the kill came too late to test anything"
        # each batch was one transaction: stored rows are whole batches from the start
        assert stored == sorted(paths[:len(stored)]) and len(stored) % BATCH == 0
        remaining = index.rows_needing(paths)
        assert remaining == paths[len(stored):]
        vectors = random_vectors(FILES, DIM)
        index.upsert(rows_for(remaining), vectors[len(stored):])
    with open_index(tmp_path / "index") as index:
        assert index.counts() == {"rows": FILES, "vectors": FILES, "errors": 0}
        assert index.rows_needing(paths) == []
        scores, _ = index.search_ids(vectors[::97], 1)
        assert np.allclose(scores[:, 0], 1.0, atol=1e-5)
        hits = index.search(vectors[[0, -1]], k=1)
        assert [h[0][1].path for h in hits] == [paths[0], paths[-1]]
