"""The micro-batcher on its own, with a stand-in model that records the batches it is given."""

import asyncio
import threading
import time

import numpy as np
import pytest

from shiwu.server.batcher import MicroBatcher, QueueFull


class FakeModel:
    """predict(batch, topk): each row's 'prediction' is its own first value, repeated topk times."""

    def __init__(self, delay=0.0, fail=False):
        self.delay = delay
        self.fail = fail
        self.batches = []
        self.threads = set()

    def __call__(self, batch, topk):
        self.threads.add(threading.current_thread().name)
        self.batches.append(len(batch))
        if self.delay:
            time.sleep(self.delay)  # a real backend holds its thread just like this
        if self.fail:
            raise RuntimeError("backend exploded")
        return [[float(row.flat[0])] * topk for row in batch]


def item(value):
    return np.full((3, 4, 4), value, np.float32)


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_submissions_share_batches_and_keep_their_own_answers():
    model = FakeModel(delay=0.05)

    async def main():
        batcher = MicroBatcher(model, max_batch_size=4, max_wait_ms=50)
        batcher.start()
        answers = await asyncio.gather(*(batcher.submit([item(i)], topk=1 + i % 3) for i in range(10)))
        await batcher.close()
        return answers

    answers = run(main())
    assert answers == [[[float(i)] * (1 + i % 3)] for i in range(10)]
    assert sum(model.batches) == 10 and max(model.batches) <= 4
    assert len(model.batches) <= 4  # 10 images, batches of up to 4: not 10 batches of 1
    assert model.threads == {"shiwu-infer_0"}


def test_a_request_with_several_images_gets_them_back_in_order():
    model = FakeModel()

    async def main():
        batcher = MicroBatcher(model, max_batch_size=3, max_wait_ms=1)
        batcher.start()
        answer = await batcher.submit([item(i) for i in range(7)], topk=1)
        await batcher.close()
        return answer

    assert run(main()) == [[float(i)] for i in range(7)]
    assert model.batches == [3, 3, 1]


def test_inference_does_not_block_the_event_loop():
    model = FakeModel(delay=0.3)

    async def main():
        batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=0)
        batcher.start()
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        await batcher.submit([item(1)], topk=1)
        task.cancel()
        await batcher.close()
        return ticks

    assert run(main()) >= 10  # ~30 ticks fit in 0.3 s if the loop stayed free


def test_backend_errors_reach_every_waiting_request():
    async def main():
        batcher = MicroBatcher(FakeModel(fail=True), max_batch_size=8, max_wait_ms=20)
        batcher.start()
        results = await asyncio.gather(batcher.submit([item(1)], 1), batcher.submit([item(2)], 1),
                                       return_exceptions=True)
        await batcher.close()
        return results

    results = run(main())
    assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results)


def test_a_cancelled_request_is_not_computed():
    model = FakeModel()

    async def main():
        batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=200)
        batcher.start()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(batcher.submit([item(1), item(2)], 1), 0.05)
        assert batcher.queued == 0  # given up on: out of the queue at once
        answer = await batcher.submit([item(3)], 1)
        await batcher.close()
        return answer

    assert run(main()) == [[3.0]]
    assert model.batches == [1]


def test_a_full_queue_refuses_new_work():
    async def main():
        batcher = MicroBatcher(FakeModel(), max_batch_size=8, max_wait_ms=500, max_queue=3)
        batcher.start()
        waiting = asyncio.create_task(batcher.submit([item(1), item(2)], 1))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await batcher.submit([item(3), item(4)], 1)
        assert await batcher.submit([item(5)], 1) == [[5.0]]  # 2 + 1 still fits
        await waiting
        await batcher.close()

    run(main())


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        MicroBatcher(FakeModel(), max_batch_size=0)
    with pytest.raises(ValueError):
        MicroBatcher(FakeModel(), max_wait_ms=-1)


def test_embedding_and_plain_requests_share_a_batch_and_each_gets_its_own_kind_of_answer():
    model = FakeModel(delay=0.05)
    embed_calls = []

    def predict_embed(batch, topk):
        embed_calls.append(len(batch))
        return model(batch, topk), np.stack([row.reshape(-1)[:2] * 2 for row in batch])

    async def main():
        batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=100, predict_embed=predict_embed)
        batcher.start()
        plain, embedded = await asyncio.gather(batcher.submit([item(1), item(2)], topk=1),
                                               batcher.submit([item(3)], topk=2, embed=True))
        alone = await batcher.submit([item(4)], topk=1)
        await batcher.close()
        return plain, embedded, alone

    plain, embedded, alone = run(main())
    assert plain == [[1.0], [2.0]] and alone == [[4.0]]
    (predictions, vector), = embedded
    assert predictions == [3.0, 3.0] and vector.tolist() == [6.0, 6.0]
    # one inference for the three images together (through predict_embed), then a plain one
    assert embed_calls == [3] and model.batches == [3, 1]


def test_asking_for_embeddings_without_a_way_to_make_them_is_refused():
    async def main():
        batcher = MicroBatcher(FakeModel())
        batcher.start()
        try:
            with pytest.raises(RuntimeError, match="predict_embed"):
                await batcher.submit([item(1)], topk=1, embed=True)
        finally:
            await batcher.close()

    run(main())
