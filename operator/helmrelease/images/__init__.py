"""Pure image logic: references, detection in values, automation annotations, tag policies. No I/O."""
