import json
from datetime import UTC, datetime, timedelta

import pytest

from sensorlog_writer.payloads import parse_readings, parse_sensors

NOW = datetime(2024, 6, 1, tzinfo=UTC)
KW = {"now": NOW, "future_tolerance": timedelta(minutes=5), "max_bytes": 4096, "max_elements": 50}


def readings(doc: object) -> tuple[list, list]:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return parse_readings(raw, **KW)


def test_the_seed_sample_parses_with_extra_fields_kept() -> None:
    rows, bad = readings(
        [{"ts": 1646409307, "sensor_id": 1, "temperature": 30, "cpu": 20, "humidity": 41}]
    )
    assert bad == []
    assert rows == [
        (datetime(2022, 3, 4, 15, 55, 7, tzinfo=UTC), 1, 30.0, 20.0, {"humidity": 41.0})
    ]


def test_a_single_object_is_accepted() -> None:
    rows, bad = readings({"ts": 1646409307, "sensor_id": 7})
    assert bad == [] and rows[0][1] == 7 and rows[0][4] is None


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (1646409307, datetime(2022, 3, 4, 15, 55, 7, tzinfo=UTC)),
        (1646409307123, datetime(2022, 3, 4, 15, 55, 7, 123000, tzinfo=UTC)),
        (1646409307.5, datetime(2022, 3, 4, 15, 55, 7, 500000, tzinfo=UTC)),
        ("2022-03-04T15:55:07Z", datetime(2022, 3, 4, 15, 55, 7, tzinfo=UTC)),
        ("2022-03-04T17:55:07.250+02:00", datetime(2022, 3, 4, 15, 55, 7, 250000, tzinfo=UTC)),
        # The documented rule: magnitude up to 2e10 is seconds, above is milliseconds.
        (20_000_000_000, datetime(2603, 10, 11, 11, 33, 20, tzinfo=UTC)),
        (20_000_000_001, datetime(1970, 8, 20, 11, 33, 20, 1000, tzinfo=UTC)),
    ],
)
def test_seconds_milliseconds_and_rfc3339(ts: object, expected: datetime) -> None:
    now = datetime(2700, 1, 1, tzinfo=UTC)  # let the far-future seconds case through
    for doc in ({"ts": ts, "sensor_id": 1}, [{"ts": ts, "sensor_id": 1}]):
        rows, bad = parse_readings(json.dumps(doc).encode(), **(KW | {"now": now}))
        assert bad == [] and rows[0][0] == expected
    # The per-element path (a bad neighbour) gives the same time.
    rows, _ = parse_readings(
        json.dumps([{"ts": ts, "sensor_id": 1}, 5]).encode(), **(KW | {"now": now})
    )
    assert rows[0][0] == expected


@pytest.mark.parametrize(
    ("element", "reason"),
    [
        ({"ts": 1, "sensor_id": "1"}, "sensor_id"),
        ({"ts": 1, "sensor_id": True}, "sensor_id"),
        ({"ts": 1, "sensor_id": -1}, "sensor_id"),
        ({"ts": 1, "sensor_id": 2**63}, "sensor_id"),
        ({"sensor_id": 1}, "ts"),
        ({"ts": 1}, "sensor_id"),
        ({"ts": "yesterday", "sensor_id": 1}, "ts: Input should be a valid datetime"),
        ({"ts": "2022-03-04T15:55:07", "sensor_id": 1}, "timezone"),
        ({"ts": 1e300, "sensor_id": 1}, "ts: Input should be a valid datetime"),
        ({"ts": 1, "sensor_id": 1, "cpu": "high"}, "cpu"),
        ({"ts": 1, "sensor_id": 1, "humidity": "wet"}, "humidity must be a number"),
        ({"ts": 1, "sensor_id": 1, "flag": True}, "flag must be a number"),
        ({"ts": 2_000_000_000, "sensor_id": 1}, "future tolerance"),
        ("not an object", "must be a JSON object"),
    ],
)
def test_a_bad_element_is_rejected_and_its_neighbours_kept(element: object, reason: str) -> None:
    good = {"ts": 1646409307, "sensor_id": 1, "cpu": 1}
    rows, bad = readings([good, element, good | {"sensor_id": 2}])
    assert [r[1] for r in rows] == [1, 2]
    assert len(bad) == 1
    assert bad[0].index == 1
    assert reason in bad[0].reason
    assert json.loads(bad[0].value) == element


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_numbers_are_refused_per_element(token: bytes) -> None:
    raw = b'[{"ts":1,"sensor_id":1,"temperature":' + token + b'},{"ts":1,"sensor_id":2}]'
    rows, bad = readings(raw)
    assert [r[1] for r in rows] == [2]
    assert "finite" in bad[0].reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[" * 2000 + b"]" * 2000, "nested too deeply"),
        (b'{"ts":1,"sensor_id":1,"pad":"' + b"x" * 5000 + b'"}', "over the 4096-byte limit"),
        (json.dumps([{"ts": 1, "sensor_id": i} for i in range(51)]).encode(), "over the 50"),
    ],
)
def test_whole_record_rejections(raw: bytes, reason: str) -> None:
    rows, bad = readings(raw)
    assert rows == []
    assert len(bad) == 1 and bad[0].index is None and bad[0].value is None
    assert reason in bad[0].reason


def test_null_record_is_rejected() -> None:
    rows, bad = parse_readings(None, **KW)
    assert rows == [] and "empty record" in bad[0].reason


def test_sensor_payloads() -> None:
    raw = json.dumps(
        [
            {"id": 1, "type": "thermo", "location": "rack-1", "metadata": {"v": 2}},
            {"sensor_id": 2, "updated_at": "2024-01-01T00:00:00Z"},
            {"id": "x"},
            {"id": 3, "unknown": 1},
            {"id": 4, "type": "a\u0000b"},
        ]
    ).encode()
    rows, bad = parse_sensors(raw, record_time=NOW, max_bytes=4096, max_elements=10)
    assert [(r.id, r.type, r.updated_at) for r in rows] == [
        (1, "thermo", NOW),
        (2, None, datetime(2024, 1, 1, tzinfo=UTC)),
    ]
    assert [b.index for b in bad] == [2, 3, 4]
    assert "NUL" in bad[2].reason
