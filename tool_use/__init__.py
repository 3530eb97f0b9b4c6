"""Tool use for MAGE: task-plan schema and validator, tool registry, safe executor, stage-3 data and plan metrics.

The schema is imported eagerly (standard library only); the rest loads on first attribute access::

    from tool_use import validate_plan, extract_plan          # cheap
    from tool_use import ToolRegistry, execute_plan           # loads registry/executor
"""

from importlib import import_module

from .schema import (
    DEFAULT_TASKS,
    PLAN_JSON_SCHEMA,
    PlanError,
    PlanParseError,
    TaskSpec,
    extract_plan,
    plan_to_text,
    tool_system_prompt,
    validate_plan,
)

_LAZY = {
    "ToolRegistry": "registry",
    "Tool": "registry",
    "pipeline_tool": "registry",
    "mage_tool": "registry",
    "shapeworld_tool": "registry",
    "registry_from_config": "registry",
    "execute_plan": "executor",
    "ExecutionResult": "executor",
    "evaluate_plans": "eval_plans",
    "evaluate_plan_model": "eval_plans",
    "convert_records": "convert",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'tool_use' has no attribute {name!r}")


__all__ = [
    "DEFAULT_TASKS",
    "PLAN_JSON_SCHEMA",
    "PlanError",
    "PlanParseError",
    "TaskSpec",
    "extract_plan",
    "plan_to_text",
    "tool_system_prompt",
    "validate_plan",
    *_LAZY,
]
