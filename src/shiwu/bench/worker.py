"""The worker side of ``shiwu bench``: one configuration in a fresh process.

``python -m shiwu.bench --worker JOB`` imports only what the configuration itself needs, so an
onnxruntime row does not pay for importing torch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .measure import call_times, peak_rss_mb


def _worker(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    out = Path(job["result"])
    result: dict = {"status": "ok"}
    try:
        result.update(_work(job))
    except Exception as exc:  # every failure becomes a row that says why
        from ..backends import BackendUnavailable

        result = {"status": "unavailable" if isinstance(exc, BackendUnavailable) else "failed",
                  "error": str(exc) if isinstance(exc, BackendUnavailable) else f"{type(exc).__name__}: {exc}"}
    out.write_text(json.dumps(result), encoding="utf-8")
    return 0


def _work(job: dict) -> dict:
    import numpy as np

    from ..recognizer import Recognizer

    mode = job["mode"]
    batches = [int(b) for b in job["batches"]]
    result: dict = {}
    recognizer = Recognizer(job["model"], backend=job["backend"], precision=job["precision"],
                            threads=job["threads"], size=job["size"], batch_size=max(batches))
    if mode != "reference":
        recognizer.predict(job["photo"], topk=5)  # the first answer, as `shiwu predict` gives it
        result["first_answer_at"] = time.monotonic()
        result["runs_as"] = recognizer.backend.name
        if mode == "cold":
            result["peak_rss_mb"] = round(peak_rss_mb(), 1)
            return result
    inputs = np.load(job["inputs"], mmap_mode="r")
    run = recognizer.backend.run
    if mode == "measure":
        timings = {}
        for n in batches:
            reps = -(-n // len(inputs))
            batch = np.ascontiguousarray(np.concatenate([inputs] * reps)[:n] if reps > 1 else inputs[:n])
            timings[str(n)] = call_times(lambda: run(batch), float(job["seconds"]))
        result["timings"] = timings
        result["peak_rss_mb"] = round(peak_rss_mb(), 1)  # before the agreement pass below
    chunk = max(batches)
    top1, embeddings = [], []
    for i in range(0, len(inputs), chunk):
        batch = np.ascontiguousarray(inputs[i:i + chunk])
        if recognizer.backend.has_embedding:  # same inference: logits and embedding
            logits, features = recognizer.logits_and_embeddings(batch)
            embeddings.append(features)
        else:
            logits = run(batch)
        top1.append(logits.argmax(1))
    result["top1"] = np.concatenate(top1).tolist()
    if embeddings:  # beside the result: too many numbers for its JSON
        path = Path(job["result"] + ".embeddings.npy")
        np.save(path, np.concatenate(embeddings))
        result["embeddings"] = str(path)
    return result

