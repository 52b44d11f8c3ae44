"""Operator tests, as a package of their own.

Why a package: under pytest's importlib mode a module file directly in
``operator/tests`` is imported as ``operator.tests.<name>``, which replaces the
standard library's ``operator`` module in ``sys.modules`` and breaks later imports
of it (hypothesis, sortedcontainers). Inside this package the modules are named
``sensorlog_operator_tests.<name>`` instead.
"""
