"""Fleet planning: a configuration per device class and the verifier replicas to run.

>>> from configspec.plan import load_fleet, plan_fleet            # doctest: +SKIP
>>> plan = plan_fleet(load_fleet("examples/fleet.yaml"), profiles)  # doctest: +SKIP

The model is :mod:`configspec.model.fleet` (closed-loop MVA with a batching verifier);
the file format is :mod:`configspec.plan.spec`; documentation: ``docs/fleet.md``.
"""

from configspec.errors import SloInfeasible
from configspec.plan.candidates import Candidates, batch_curve, build_candidates
from configspec.plan.search import FleetPlan, plan_fleet, plan_record
from configspec.plan.spec import DeviceClass, FleetSpec, Verifier, load_fleet, parse_fleet

__all__ = [
    "Candidates",
    "DeviceClass",
    "FleetPlan",
    "FleetSpec",
    "SloInfeasible",
    "Verifier",
    "batch_curve",
    "build_candidates",
    "load_fleet",
    "parse_fleet",
    "plan_fleet",
    "plan_record",
]
