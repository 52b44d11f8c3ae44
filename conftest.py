# Real local stack fixtures (PostgreSQL 15, TimescaleDB, Kafka, kube-apiserver, Consul).
pytest_plugins = [
    "sensorlog_stack.fixtures",
    "sensorlog_stack.fixtures_kafka",
    "sensorlog_stack.fixtures_timescale",
    "sensorlog_stack.fixtures_apiserver",
    "sensorlog_stack.fixtures_consul",
]
