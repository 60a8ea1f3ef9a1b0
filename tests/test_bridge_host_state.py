import threading

import pytest

from bridge.grid import Region
from bridge.host_state import HostState


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_fields_record_source_and_time():
    clock = FakeClock()
    state = HostState(clock=clock)
    state.update("reaper", tempo=96.0, meter=(3, 4))
    snap = state.snapshot()
    assert snap["tempo"] == {"value": 96.0, "source": "reaper", "updated_at": 1000.0}
    assert snap["meter"]["value"] == [3, 4]
    assert state.values() == {"tempo": 96.0, "meter": (3, 4)}
    with pytest.raises(KeyError, match="bogus"):
        state.update("reaper", bogus=1)


def test_fallback_source_does_not_override_a_fresh_host():
    clock = FakeClock()
    state = HostState(fallback_after_s=3.0, clock=clock)
    state.update("ableton", tempo=120.0)
    clock.now += 1
    assert not state.update("midi", fallback=True, tempo=119.0)
    assert state.get("tempo") == 120.0
    clock.now += 5  # the host went quiet: the clock takes over
    assert state.update("midi", fallback=True, tempo=119.0)
    assert state.field("tempo").source == "midi"


def test_subscribers_get_only_changes_and_can_unsubscribe():
    state = HostState()
    seen = []
    unsubscribe = state.subscribe(seen.append)
    state.update("reaper", tempo=100.0, playing=False)
    state.update("reaper", tempo=100.0, playing=True)
    assert [set(c) for c in seen] == [{"tempo", "playing"}, {"playing"}]
    unsubscribe()
    state.update("reaper", tempo=101.0)
    assert len(seen) == 2


def test_broken_subscriber_does_not_break_updates():
    state = HostState()
    state.subscribe(lambda changes: 1 / 0)
    assert state.set("tempo", 90.0, "osc")
    assert state.get("tempo") == 90.0


def test_region_from_seconds_or_beats_and_tempo_map():
    state = HostState()
    assert state.region() is None and state.tempo_map() is None
    state.update("ableton", tempo=96.0, meter=(3, 4), region_qn=(6.0, 30.0))
    assert state.region() == Region(3.75, 18.75)
    assert state.region_beats() == (6.0, 30.0)
    state.update("reaper", tempo_map=[{"qn": 0, "bpm": 120, "num": 4, "den": 4},
                                      {"qn": 8, "bpm": 60, "num": 3, "den": 4}])
    assert state.tempo_map().qn_to_seconds(11) == pytest.approx(7)
    state.update("reaper", region_s=(2.0, 4.0))
    assert state.region() == Region(2.0, 4.0)
    assert state.region_beats() == pytest.approx((4.0, 8.0))  # 120 BPM from the tempo map


def test_thread_safety_under_concurrent_writers():
    state = HostState()
    count = []
    state.subscribe(lambda c: count.append(1))

    def writer(source):
        for i in range(300):
            state.update(source, position_s=float(i), tempo=100.0 + i % 3)
    threads = [threading.Thread(target=writer, args=(f"s{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state.get("position_s") == 299.0
    assert len(count) > 0
