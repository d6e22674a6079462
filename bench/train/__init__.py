"""Training recipes: the two-stage refinement network (``hrbench train refine``)."""
