"""Tool use for MAGE: task-plan schema and validator, tool registry, safe executor, stage-3 data and plan metrics.

Only the schema is imported eagerly (it needs nothing but the standard library); heavy parts load on use.
"""

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
]
