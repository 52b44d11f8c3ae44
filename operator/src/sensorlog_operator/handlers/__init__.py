"""kopf handlers, one concern per module; registered in :mod:`sensorlog_operator.main`."""
