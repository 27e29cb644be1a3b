"""The report's sections: run-level ones here in ``run``, and one module per probe section.

A probe's section is declared on the probe class (``Probe.section``); the report asks every
declared probe whose record is in the run for its section, in ``Probe.report_order``.
"""
