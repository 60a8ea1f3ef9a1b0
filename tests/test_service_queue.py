"""Queue order, queued-job cancel and AutoGen, with a stand-in pipeline (no model needed)."""

import threading

import pytest

from engine.request import RequestError
from engine.service.core import EngineService
from simulators import wait_for
from simulators.pipelines import StandInPipeline


@pytest.fixture
def gated(tmp_path):
    gate = threading.Event()
    pipeline = StandInPipeline(steps=2, gate=gate)
    service = EngineService(pipeline, tmp_path / "results", log=lambda line: None)
    service.start()
    yield service, pipeline, gate
    gate.set()
    service.stop()


def _req(caption, **extra):
    return {"caption": caption, "duration": 1.0, **extra}


def test_interactive_jobs_run_before_background_and_fifo_within_priority(gated):
    service, pipeline, gate = gated
    first = service.submit(_req("first"), priority="background")
    wait_for(lambda: service.get(first.id).state == "running")
    ids = [service.submit(_req(name), priority=prio).id for name, prio in
           [("bg1", "background"), ("int1", "interactive"), ("bg2", "background"), ("int2", "interactive")]]
    positions = {service.get(i).request["caption"]: service.job_json(i)["queue_position"] for i in ids}
    assert positions == {"int1": 2, "int2": 3, "bg1": 4, "bg2": 5}
    gate.set()
    wait_for(lambda: all(service.get(i).state == "done" for i in ids))
    assert pipeline.order == ["first", "int1", "int2", "bg1", "bg2"]


def test_cancel_queued_job_removes_it_without_running(gated):
    service, pipeline, gate = gated
    running = service.submit(_req("running"))
    wait_for(lambda: service.get(running.id).state == "running")
    queued = service.submit(_req("queued"))
    after = service.submit(_req("after"))
    assert service.cancel(queued.id).state == "cancelled"
    assert service.job_json(after.id)["queue_position"] == 2
    gate.set()
    wait_for(lambda: service.get(after.id).state == "done")
    assert pipeline.order == ["running", "after"]
    assert service.get(queued.id).results == []


def test_bad_priority_and_autogen_values_name_the_field(gated):
    service, _, _ = gated
    with pytest.raises(RequestError) as info:
        service.submit(_req("x"), priority="urgent")
    assert info.value.field == "priority"
    with pytest.raises(RequestError) as info:
        service.submit(_req("x"), autogen="yes")
    assert info.value.field == "autogen"


def test_autogen_requeues_with_new_seeds_until_turned_off(tmp_path):
    pipeline = StandInPipeline(steps=1)
    service = EngineService(pipeline, tmp_path / "results", log=lambda line: None)
    service.start()
    try:
        root = service.submit(_req("loop", seed=7), autogen=True)

        def chain():
            jobs, job = [], service.get(root.id)
            while True:
                jobs.append(job)
                if not job.autogen_next:
                    return jobs
                job = service.get(job.autogen_next)

        wait_for(lambda: sum(j.state == "done" for j in chain()) >= 3)
        service.set_autogen(root.id, False)
        wait_for(lambda: all(j.state in ("done", "cancelled") for j in chain()))
        settled = chain()
        done = [j for j in settled if j.state == "done"]
        # the chain stops: nothing new appears after turning it off
        assert not any(j.autogen for j in settled)
        assert service.queue_counts() == {"interactive": 0, "background": 0, "running": 0}
        assert len(chain()) == len(settled)
        # follow-ups: background priority, same caption, random (not the fixed) seeds
        assert done[0].seeds == [7]
        for follow_up in settled[1:]:
            assert follow_up.priority == "background"
            assert follow_up.request["caption"] == "loop"
            assert follow_up.request["seed"] is None
            assert follow_up.autogen_parent is not None
        follow_seeds = [j.seeds[0] for j in done[1:]]
        assert len(set(follow_seeds)) == len(follow_seeds)

        # turning it on again on a finished chain queues a follow-up right away
        count = len(settled)
        service.set_autogen(root.id, True)
        wait_for(lambda: len(chain()) > count + 1)
        service.set_autogen(root.id, False)
    finally:
        service.stop()


def test_failure_in_one_job_leaves_the_worker_serving(tmp_path):
    pipeline = StandInPipeline(steps=1)
    service = EngineService(pipeline, tmp_path / "results", log=lambda line: None)
    service.start()
    try:
        pipeline.fail_with = ZeroDivisionError("boom")
        bad = service.submit(_req("bad"))
        wait_for(lambda: service.get(bad.id).state == "failed")
        assert "ZeroDivisionError: boom" in service.get(bad.id).error
        pipeline.fail_with = None
        good = service.submit(_req("good"))
        wait_for(lambda: service.get(good.id).state == "done")
    finally:
        service.stop()
