-- Kafka offsets stored in the same transaction as the rows they produced: on
-- partition assignment the writer seeks to next_offset, so a replay after a
-- crash never reaches sensor_data and the fast COPY path stays conflict-free.
CREATE TABLE IF NOT EXISTS consumer_offsets (
    consumer_group  text        NOT NULL,
    topic           text        NOT NULL,
    partition       integer     NOT NULL,
    next_offset     bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);
