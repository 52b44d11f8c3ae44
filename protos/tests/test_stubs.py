import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from generate import OUT, generate


def test_committed_stubs_match_the_protos() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        assert fresh, "protoc produced nothing"
        for path in fresh:
            rel = path.relative_to(tmp)
            committed = OUT / rel
            assert committed.exists(), f"{committed} missing: run `make proto`"
            assert committed.read_bytes() == path.read_bytes(), (
                f"{committed} is stale: run `make proto` and commit the result"
            )


def test_stubs_import_and_describe_the_service() -> None:
    from sensorlog.v1 import query_pb2, query_pb2_grpc

    svc = query_pb2.DESCRIPTOR.services_by_name["QueryService"]
    assert {m.name for m in svc.methods} >= {
        "ListSensors",
        "GetSensor",
        "ListReadings",
        "StreamReadings",
        "AggregateReadings",
        "LatestReadings",
    }
    assert hasattr(query_pb2_grpc, "QueryServiceServicer")
