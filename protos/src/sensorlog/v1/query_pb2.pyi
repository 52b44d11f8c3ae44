import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Order(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORDER_UNSPECIFIED: _ClassVar[Order]
    ORDER_ASC: _ClassVar[Order]
    ORDER_DESC: _ClassVar[Order]

class Aggregation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATION_UNSPECIFIED: _ClassVar[Aggregation]
    AGGREGATION_AVG: _ClassVar[Aggregation]
    AGGREGATION_MIN: _ClassVar[Aggregation]
    AGGREGATION_MAX: _ClassVar[Aggregation]
    AGGREGATION_COUNT: _ClassVar[Aggregation]
    AGGREGATION_FIRST: _ClassVar[Aggregation]
    AGGREGATION_LAST: _ClassVar[Aggregation]

class Field(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FIELD_UNSPECIFIED: _ClassVar[Field]
    FIELD_TEMPERATURE: _ClassVar[Field]
    FIELD_CPU: _ClassVar[Field]
ORDER_UNSPECIFIED: Order
ORDER_ASC: Order
ORDER_DESC: Order
AGGREGATION_UNSPECIFIED: Aggregation
AGGREGATION_AVG: Aggregation
AGGREGATION_MIN: Aggregation
AGGREGATION_MAX: Aggregation
AGGREGATION_COUNT: Aggregation
AGGREGATION_FIRST: Aggregation
AGGREGATION_LAST: Aggregation
FIELD_UNSPECIFIED: Field
FIELD_TEMPERATURE: Field
FIELD_CPU: Field

class Sensor(_message.Message):
    __slots__ = ("id", "type", "location", "metadata", "updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: int
    type: str
    location: str
    metadata: _struct_pb2.Struct
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., type: _Optional[str] = ..., location: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Reading(_message.Message):
    __slots__ = ("sensor_id", "ts", "temperature", "cpu", "extra")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SENSOR_ID_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    sensor_id: int
    ts: _timestamp_pb2.Timestamp
    temperature: float
    cpu: float
    extra: _containers.ScalarMap[str, float]
    def __init__(self, sensor_id: _Optional[int] = ..., ts: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., temperature: _Optional[float] = ..., cpu: _Optional[float] = ..., extra: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ListSensorsRequest(_message.Message):
    __slots__ = ("type", "location", "page_size", "page_token")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    type: str
    location: str
    page_size: int
    page_token: str
    def __init__(self, type: _Optional[str] = ..., location: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSensorsResponse(_message.Message):
    __slots__ = ("sensors", "next_page_token")
    SENSORS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sensors: _containers.RepeatedCompositeFieldContainer[Sensor]
    next_page_token: str
    def __init__(self, sensors: _Optional[_Iterable[_Union[Sensor, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetSensorRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class ListReadingsRequest(_message.Message):
    __slots__ = ("sensor_ids", "start", "end", "page_size", "page_token", "order")
    SENSOR_IDS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    sensor_ids: _containers.RepeatedScalarFieldContainer[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    order: Order
    def __init__(self, sensor_ids: _Optional[_Iterable[int]] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., order: _Optional[_Union[Order, str]] = ...) -> None: ...

class ListReadingsResponse(_message.Message):
    __slots__ = ("readings", "next_page_token")
    READINGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    readings: _containers.RepeatedCompositeFieldContainer[Reading]
    next_page_token: str
    def __init__(self, readings: _Optional[_Iterable[_Union[Reading, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StreamReadingsRequest(_message.Message):
    __slots__ = ("sensor_ids", "start", "end", "order")
    SENSOR_IDS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    sensor_ids: _containers.RepeatedScalarFieldContainer[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    order: Order
    def __init__(self, sensor_ids: _Optional[_Iterable[int]] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., order: _Optional[_Union[Order, str]] = ...) -> None: ...

class StreamReadingsResponse(_message.Message):
    __slots__ = ("readings",)
    READINGS_FIELD_NUMBER: _ClassVar[int]
    readings: _containers.RepeatedCompositeFieldContainer[Reading]
    def __init__(self, readings: _Optional[_Iterable[_Union[Reading, _Mapping]]] = ...) -> None: ...

class AggregateReadingsRequest(_message.Message):
    __slots__ = ("sensor_ids", "start", "end", "bucket", "fields", "aggregations", "fill_gaps")
    SENSOR_IDS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATIONS_FIELD_NUMBER: _ClassVar[int]
    FILL_GAPS_FIELD_NUMBER: _ClassVar[int]
    sensor_ids: _containers.RepeatedScalarFieldContainer[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    bucket: _duration_pb2.Duration
    fields: _containers.RepeatedScalarFieldContainer[Field]
    aggregations: _containers.RepeatedScalarFieldContainer[Aggregation]
    fill_gaps: bool
    def __init__(self, sensor_ids: _Optional[_Iterable[int]] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bucket: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., fields: _Optional[_Iterable[_Union[Field, str]]] = ..., aggregations: _Optional[_Iterable[_Union[Aggregation, str]]] = ..., fill_gaps: _Optional[bool] = ...) -> None: ...

class AggregateValue(_message.Message):
    __slots__ = ("field", "aggregation", "value")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    field: Field
    aggregation: Aggregation
    value: float
    def __init__(self, field: _Optional[_Union[Field, str]] = ..., aggregation: _Optional[_Union[Aggregation, str]] = ..., value: _Optional[float] = ...) -> None: ...

class Bucket(_message.Message):
    __slots__ = ("sensor_id", "bucket_start", "count", "values")
    SENSOR_ID_FIELD_NUMBER: _ClassVar[int]
    BUCKET_START_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    sensor_id: int
    bucket_start: _timestamp_pb2.Timestamp
    count: int
    values: _containers.RepeatedCompositeFieldContainer[AggregateValue]
    def __init__(self, sensor_id: _Optional[int] = ..., bucket_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., count: _Optional[int] = ..., values: _Optional[_Iterable[_Union[AggregateValue, _Mapping]]] = ...) -> None: ...

class AggregateReadingsResponse(_message.Message):
    __slots__ = ("buckets",)
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    buckets: _containers.RepeatedCompositeFieldContainer[Bucket]
    def __init__(self, buckets: _Optional[_Iterable[_Union[Bucket, _Mapping]]] = ...) -> None: ...

class LatestReadingsRequest(_message.Message):
    __slots__ = ("sensor_ids", "before", "since")
    SENSOR_IDS_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    sensor_ids: _containers.RepeatedScalarFieldContainer[int]
    before: _timestamp_pb2.Timestamp
    since: _timestamp_pb2.Timestamp
    def __init__(self, sensor_ids: _Optional[_Iterable[int]] = ..., before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LatestReadingsResponse(_message.Message):
    __slots__ = ("readings",)
    READINGS_FIELD_NUMBER: _ClassVar[int]
    readings: _containers.RepeatedCompositeFieldContainer[Reading]
    def __init__(self, readings: _Optional[_Iterable[_Union[Reading, _Mapping]]] = ...) -> None: ...
